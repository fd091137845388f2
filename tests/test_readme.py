"""The README's claims, checked against what the code does (issue 13): its Python example runs as written."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_block(after_heading: str) -> str:
    text = README.read_text()
    section = text[text.index(after_heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_python_api_example_runs_as_written_and_writes_the_evidence(tmp_path):
    (tmp_path / "example.py").write_text(python_block("## Python API"))
    result = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folder = tmp_path / "unlearned"
    results = json.loads((folder / "unlearning_results.json").read_text())
    for name in ("model.safetensors", "preprocessor_config.json", "README.md", "unlearning_history.png"):
        assert (folder / name).is_file(), name
    assert not list(folder.glob("checkpoint-*"))  # no stray checkpoint beside the result
    assert results["method"] == "scrub" and results["task"] == "image-classification"
    assert results["forget"]["classes"] == [3] and results["original"]["forget_accuracy"] > 0.9
    assert results["unlearned"]["forget_accuracy"] < 0.1  # the threes are forgotten...
    assert (
        results["unlearned"]["test_retain_classes_accuracy"]
        > results["original"]["test_retain_classes_accuracy"] - 0.03
    )
    printed = result.stdout.strip().splitlines()[-1]
    assert printed == f"{results['original']['forget_accuracy']} -> {results['unlearned']['forget_accuracy']}"
    assert len(results["history"]) == 4 and results["history"][0]["epoch"] == 0
