"""The small SCRUB sweep behind benchmarks/configs/quality.yaml: per scenario, one seed, a grid of SCRUB settings,
each scored by its mean distance to the retrained model (forget / retain / test error and MIA, as in the quality
tables). The original and the retrained model are trained once and shared by every grid point.

    python benchmarks/sweep.py --scenario selective --grid '{"learning_rate": [5e-4, 1e-3], "forget_epochs": [1, 2]}'
    python benchmarks/sweep.py --scenario text_selective --quick --grid '{"learning_rate": [1e-5, 2e-5]}'

Prints one line per grid point, best first; the chosen values go into quality.yaml by hand, with the sweep's output
quoted in BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
from pathlib import Path

import datasets
import numpy as np
import yaml
from transformers import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import (  # noqa: E402
    DISTANCE_METRICS,
    HERE,
    Task,
    evaluate,
    run_method,
    scenario_splits,
    train_args,
)


def distance(report: dict, reference: dict) -> float:
    return float(np.mean([abs(report[k] - reference[k]) / (100 if k == "mia" else 1) for k in DISTANCE_METRICS]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", required=True, help="JSON: SCRUB setting -> list of values")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--config", type=Path, default=HERE / "configs" / "quality.yaml")
    args = parser.parse_args()
    scenario = yaml.safe_load(args.config.read_text())["scenarios"][args.scenario]
    settings = scenario["quick"] if args.quick else scenario["settings"]
    raw = scenario_splits(scenario, args.seed, args.quick)
    task = Task(scenario, raw.class_names)
    splits = {n: task.prepare(getattr(raw, n)) for n in ("forget", "retain", "test", "forget_validation")}
    train_all = task.prepare(datasets.concatenate_datasets([raw.forget, raw.retain]))
    noise = scenario.get("noise")
    with tempfile.TemporaryDirectory() as out:
        original = task.new_model(args.seed)
        recipe = train_args(out, settings["original"], args.seed)
        Trainer(model=original, args=recipe, train_dataset=train_all, data_collator=task.collator).train()
    retrain, _ = run_method("retrain", dict(settings["original"]), task, original, splits, args.seed)
    reference = evaluate(retrain, splits, raw.forget_classes, args.seed, noise)
    print("retrain", json.dumps({k: round(reference[k], 4) for k in DISTANCE_METRICS}), flush=True)
    grid = json.loads(args.grid)
    base = {**settings.get("defaults", {}), **settings["scrub"]}
    results = []
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        for method in ("scrub", "scrub_r"):
            trainer, seconds = run_method(method, {**base, **point}, task, original, splits, args.seed)
            report = evaluate(trainer, splits, raw.forget_classes, args.seed, noise)
            results.append((distance(report, reference), method, point, report, seconds))
            shown = json.dumps({k: round(report[k], 4) for k in DISTANCE_METRICS})
            print(f"{method:8} {point} distance {results[-1][0]:.4f} {shown} {seconds:.1f}s", flush=True)
    print("\nbest first:")
    for dist, method, point, _, _ in sorted(results, key=lambda r: r[0]):
        print(f"  {dist:.4f} {method:8} {point}")


if __name__ == "__main__":
    main()
