"""The embedded demo, exactly as the README runs it: `scripts/scrub.py` with no arguments (issue 2, 7)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scrub.py"


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
    assert "forget_accuracy" in result.stdout  # the before/after table is printed
    card = (tmp_path / "scrub-demo-output" / "README.md").read_text()
    assert "![" in card and "(unlearning_history.png)" in card  # the card shows the plot it ships with
    assert (tmp_path / "scrub-demo-output" / "unlearning_history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"{unlearned['forget_accuracy'] * 100:.1f}" in card  # the table carries the measured numbers
