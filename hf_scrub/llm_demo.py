"""The LLM demo: `scripts/scrub.py --demo llm` forgets the facts about a few invented people from a small LM.

`hf_scrub.lm_models.prepare_llm_demo` builds (once, cached) the data set of fictitious facts and the "original"
model, a block-truncated SmolLM2-135M fine-tuned until it answers every train fact. The demo then forgets every
fact about the first `DEMO_FORGET_PEOPLE` people (their row indices are written next to the data set) with the CLI's
defaults for a causal LM (LoRA, the goal-driven `llm_auto` preset), evaluates on the held-out people
(`--test_split holdout`) and prints the before/after table, where `forget_answer_accuracy` (facts still produced by
greedy decoding) should fall and `retain_answer_accuracy` stay.
"""

from __future__ import annotations

import json
from pathlib import Path

DEMO_FORGET_PEOPLE = 4
LLM_DEMO_OUTPUT_DIR = "scrub-llm-demo-output"
LLM_DEMO_HYPERPARAMETERS = [
    # The causal-LM default (`llm_auto`), with forget batches of 2: the forget set is 8 rows, so each forget pass
    # makes 4 max-steps (chosen under the fixed `llm` preset, where batches of 4 left 2 of the 8 answers produced:
    # BENCHMARKS.md).
    "--per_device_forget_batch_size", "2",
    "--logging_steps", "5",
    "--per_device_eval_batch_size", "32",
    "--save_strategy", "no",
    "--report_to", "none",
    "--max_length", "64",
]  # fmt: skip


def forget_rows_file(dataset_dir: Path, num_people: int = DEMO_FORGET_PEOPLE) -> Path:
    """A JSON list of the train rows about the first `num_people` people, written next to the data set."""
    import datasets

    train = datasets.load_from_disk(str(dataset_dir))["train"]
    people = list(dict.fromkeys(train["person"]))[:num_people]
    rows = [index for index, person in enumerate(train["person"]) if person in people]
    path = dataset_dir.parent / f"forget_first_{num_people}_people.json"
    if not path.is_file() or json.loads(path.read_text()) != rows:
        path.write_text(json.dumps(rows))
    return path


def llm_demo_arguments(output_dir: str = LLM_DEMO_OUTPUT_DIR) -> list[str]:
    """Command-line arguments of the LLM demo, building (once) its original model and data set."""
    from .lm_models import prepare_llm_demo

    assets = prepare_llm_demo()
    return [
        "--model_name_or_path", str(assets.model_dir),
        "--dataset_name", str(assets.dataset_dir),
        "--test_split", "holdout",
        "--forget_indices_file", str(forget_rows_file(Path(assets.dataset_dir))),
        "--output_dir", output_dir,
        *LLM_DEMO_HYPERPARAMETERS,
    ]  # fmt: skip
