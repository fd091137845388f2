"""The embedded demo, exactly as the README runs it: `scripts/scrub.py` with no arguments (issue 2, 7)."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scrub.py"


def printed_table(stdout):
    """The before/after table the script prints (`metric  original  unlearned` ...): metric -> {column: number}."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["metric"])
    columns = lines[start].split()[1:]
    table = {}
    for line in lines[start + 1 :]:
        cells = line.split()
        if len(cells) != len(columns) + 1:
            break
        values = [None if cell == "-" else float(cell) for cell in cells[1:]]
        table[cells[0]] = dict(zip(columns, values, strict=True))
    return table


def card_row(card, metric):
    """The numbers of `metric`'s row in the card's metrics table, by column header (percent for accuracies)."""
    lines = [line for line in card.splitlines() if line.startswith("| ")]
    header_line = next(line for line in lines if line.startswith("| Metric |"))
    header = [cell.strip() for cell in re.split(r"(?<!\\)\|", header_line.strip("|"))]  # `\|` is an escaped pipe
    row = next(line for line in lines if f"(`{metric}`)" in line)
    cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip("|"))]
    return {label: float(cell.removesuffix(" %")) for label, cell in zip(header, cells, strict=True)
            if label in ("Original", "Unlearned", "Retrain")}  # fmt: skip


@pytest.mark.slow
def test_demo_forgets_digit_three_and_keeps_the_rest(tmp_path):
    env = {**os.environ, "HF_SCRUB_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-5000:]
    results = json.loads((tmp_path / "scrub-demo-output" / "unlearning_results.json").read_text())
    original, unlearned = results["original"], results["unlearned"]
    assert results["forget"] | {"type": "class", "classes": [3], "num_examples": 400} == results["forget"]
    assert original["forget_accuracy"] > 0.95
    assert unlearned["forget_accuracy"] <= 0.05  # issue 2 acceptance
    assert unlearned["test_retain_classes_accuracy"] >= original["test_retain_classes_accuracy"] - 0.02
    # ... and the verdict says so, measured against what a model that never saw a three would do.
    assert results["verdict"]["forget_target_met"] is True and results["verdict"]["retain_kept"] is True
    assert f"verdict: {results['verdict']['summary']}" in result.stdout.splitlines()
    # The printed before/after table and the card's table carry the measured numbers, each in its own column.
    table = printed_table(result.stdout)
    card = (tmp_path / "scrub-demo-output" / "README.md").read_text()
    for metric in ("forget_accuracy", "retain_accuracy", "test_accuracy", "test_retain_classes_accuracy", "mia"):
        printed_digits = 2 if metric == "mia" else 4
        assert table[metric] == {
            "original": pytest.approx(original[metric], abs=0.51 * 10**-printed_digits),
            "unlearned": pytest.approx(unlearned[metric], abs=0.51 * 10**-printed_digits),
        }, metric
        if metric != "mia":  # the card shows fractions as percentages with 2 decimals
            assert card_row(card, metric) == {
                "Original": pytest.approx(100 * original[metric], abs=0.0051),
                "Unlearned": pytest.approx(100 * unlearned[metric], abs=0.0051),
            }, metric
    assert table["forget_accuracy"]["unlearned"] <= 0.05 < 0.95 < table["forget_accuracy"]["original"]
    assert "![" in card and "(unlearning_history.png)" in card  # the card shows the plot it ships with
    assert (tmp_path / "scrub-demo-output" / "unlearning_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_readme_matches(table, results)


README = Path(__file__).resolve().parents[1] / "README.md"


def close_enough(metric: str, claimed: float, measured: float) -> bool:
    """A README number is 'of the right size' when a rerun on another machine could print it (issue 13)."""
    if "loss" in metric:  # losses span orders of magnitude (0.008 -> 40): same order, or both tiny
        return abs(claimed - measured) <= 0.05 or 1 / 3 <= claimed / measured <= 3
    if metric.startswith("mia"):  # attack accuracy / AUC in %, over a few hundred examples: the same landed commit
        # (40ab609, same seed) printed unlearned mia 59 / mia_auc 63.8 on the CI machine and 47 / 42.8 on another
        return abs(claimed - measured) <= 25
    return abs(claimed - measured) <= 0.05  # accuracies


def check_readme_matches(table: dict, results: dict) -> None:
    """The README's printed demo table has the demo's rows and numbers of the right size; its results example
    names only keys a real results file has, with values of the right size."""
    text = README.read_text()
    block = text[text.index("It prints:") :]
    readme_table = printed_table(block[block.index("```") + 3 : block.index("```", block.index("```") + 3)])
    assert list(readme_table) == list(table), "README demo table rows differ from what the demo prints"
    for metric, columns in readme_table.items():
        for column, claimed in columns.items():
            assert close_enough(metric, claimed, table[metric][column]), (metric, column, claimed, table[metric])
    section = text[text.index("## Results file") :]
    example = json.loads(re.search(r"```json\n(.*?)```", section, re.S).group(1))

    def compare(claimed, measured, path):
        if isinstance(claimed, dict):
            for key, value in claimed.items():
                if key != "..." and value != "...":
                    assert key in measured, f"README results example has {path}.{key}, a real file has not"
                    compare(value, measured[key], f"{path}.{key}")
        elif isinstance(claimed, float) and path.split(".")[-1] != "unlearning_seconds":  # seconds: machine-made
            assert close_enough(path.split(".")[-1], claimed, measured), (path, claimed, measured)
        elif not isinstance(claimed, float):
            assert claimed == measured, (path, claimed, measured)

    compare(example, results, "results")
