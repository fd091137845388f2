"""One goal-driven SCRUB run (`ScrubConfig.from_preset("auto")`, nothing else set) on a quality-benchmark scenario.

    python benchmarks/auto_probe.py class            # or selective, text_selective; add `quick` for the CI sizes, -v
                                                     # for every step's test

Trains the scenario's original model (cached in $TMPDIR), evaluates it, runs the `auto` preset with only the
scenario's evaluation-size settings, and prints both reports, the seconds, why the run stopped and each epoch's
errors and goal decisions. A probe for development scenarios only (never a held-out one: benchmarks/quality.py),
not the benchmark: one seed, no Retrain run.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import datasets
import quality
import torch
import yaml
from transformers import Trainer

from hf_scrub import ScrubConfig, ScrubTrainer

if "-v" in sys.argv:  # every goal-driven step's test and decision
    logging.basicConfig(format="%(message)s")
    logging.getLogger("hf_scrub.trainer").setLevel(logging.DEBUG)

KEYS = (
    "forget_error",
    "retain_error",
    "test_error",
    "mia",
    "test_forget_classes_accuracy",
    "test_retain_classes_accuracy",
)


def main() -> None:
    name, quick, seed = sys.argv[1], "quick" in sys.argv[2:], 0
    scenario = yaml.safe_load((quality.HERE / "configs" / "quality.yaml").read_text())["scenarios"][name]
    settings = scenario["quick" if quick else "settings"]
    raw = quality.scenario_splits(scenario, seed, quick)
    task = quality.Task(scenario, raw.class_names)
    splits = {n: task.prepare(getattr(raw, n)) for n in ("forget", "retain", "test", "forget_validation")}
    original = task.new_model(seed)
    cache = Path(tempfile.gettempdir()) / f"auto-probe-{name}-{seed}-{quick}.pt"
    if cache.exists():
        original.load_state_dict(torch.load(cache))
        original_seconds = json.loads(cache.with_suffix(".json").read_text())["seconds"]
    else:
        train_all = task.prepare(datasets.concatenate_datasets([raw.forget, raw.retain]))
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            args = quality.train_args(out, settings["original"], seed)
            Trainer(model=original, args=args, train_dataset=train_all, data_collator=task.collator).train()
            original_seconds = time.perf_counter() - start
        torch.save(original.state_dict(), cache)
        cache.with_suffix(".json").write_text(json.dumps({"seconds": original_seconds}))
    with tempfile.TemporaryDirectory() as out:
        evaluator = quality.prediction_trainer(
            original, quality.train_args(out, settings["original"], seed), task.collator
        )
        report = quality.evaluate(evaluator, splits, raw.forget_classes, seed, None)
    print("original", {k: round(report[k], 4) for k in KEYS if k in report}, f"training {original_seconds:.1f} s")
    evaluation = {k: settings["defaults"][k] for k in quality.AUTO_SCENARIO_KEYS if k in settings.get("defaults", {})}
    with tempfile.TemporaryDirectory() as out:
        common = {**quality.COMMON, "output_dir": out, "seed": seed, "remove_unused_columns": False}
        trainer = ScrubTrainer(
            model=copy.deepcopy(original), args=ScrubConfig.from_preset("auto", **common, **evaluation),
            forget_dataset=splits["forget"], retain_dataset=splits["retain"],
            forget_validation_dataset=splits["forget_validation"], data_collator=task.collator,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
        report = quality.evaluate(trainer, splits, raw.forget_classes, seed, None)
    print("auto", {k: round(report[k], 4) for k in KEYS if k in report}, f"unlearning {seconds:.1f} s")
    print(f"request {trainer.goal.kind.value}; {trainer.stopped_because}; returned epoch {trainer.returned_epoch}")
    for entry in trainer.state.log_history:
        if "scrub_epoch" in entry or "goal_epoch" in entry:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in entry.items() if k != "step"})


if __name__ == "__main__":
    main()
