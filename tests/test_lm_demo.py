"""The LLM demo end to end (`scripts/scrub.py --demo llm`), slow: SmolLM2-135M from the offline GGUF, fine-tuned on
invented people's facts (cached), then SCRUB with the causal-LM defaults forgets four people's facts.

Greedy decoding is the evidence a deletion request asks for: the forgotten answers are no longer produced while the
kept ones still are. Measured on 2 CPU cores: docs in README.md ("Causal language models") and BENCHMARKS.md.
"""

import json

import pytest

from hf_scrub import cli

FORGET_MAX = 0.125  # at most 1 of the 8 forgotten answers still produced (measured: 0 of 8)
RETAIN_MIN = 0.95  # of the 32 kept answers (measured: all 32)


@pytest.mark.slow
def test_llm_demo_forgets_the_chosen_facts_and_keeps_the_others(tmp_path, capsys):
    out = tmp_path / "llm-demo"
    assert cli.main(["--demo", "llm", "--output_dir", str(out)]) == 0
    results = json.loads((out / "unlearning_results.json").read_text())
    original, unlearned = results["original"], results["unlearned"]
    assert original["forget_answer_accuracy"] == original["retain_answer_accuracy"] == 1.0  # the facts were learnt
    assert unlearned["forget_answer_accuracy"] <= FORGET_MAX  # no longer produced ...
    assert unlearned["retain_answer_accuracy"] >= RETAIN_MIN  # ... while the kept facts still are
    assert results["verdict"]["forget_target_met"] is True and results["verdict"]["retain_kept"] is True
    assert (out / "adapter_model.safetensors").is_file()
    assert "forget_answer_accuracy" in capsys.readouterr().out
