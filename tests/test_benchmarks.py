"""The quality benchmark's --quick mode as a CI smoke test (issue 4, deliverable 4), on one scenario."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
METHODS = ["original", "retrain", "scrub", "scrub_r", "finetune", "neggrad_plus", "bad_teacher"]


@pytest.mark.slow
def test_quick_class_unlearning_benchmark(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--scenarios", "class", "--results-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    runs = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [run["method"] for run in runs] == METHODS
    by_method = {run["method"]: run["report"] for run in runs}
    # Retrain never saw a "3": it gets every forgotten example wrong; the original got them right.
    assert by_method["retrain"]["forget_error"] == 1.0
    assert by_method["original"]["forget_error"] < 0.1
    assert by_method["scrub"]["forget_error"] > 0.9  # SCRUB forgets the class too
    summary = json.loads((tmp_path / "summary.json").read_text())["class"]
    assert summary["retrain"]["distance_to_retrain"][0] == 0.0
    assert summary["scrub"]["speedup_vs_retrain"][0] > 0
    tables = (tmp_path / "tables.md").read_text()
    assert all(f"| {method} |" in tables for method in METHODS)
    assert (tmp_path / "class.png").read_bytes()[:4] == b"\x89PNG"
