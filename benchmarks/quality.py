"""Unlearning-quality benchmark (issue 4): is SCRUB closer to the retrain oracle than the baselines, and cheaper?

Scenarios, on data that ships inside packages (docs/design.md §6):
- class          MNIST (5k digits), small HF ResNet: forget every "3".
- selective      MNIST: forget 100 random "3"s (privacy-style; SCRUB+R is the paper's recommendation).
- label_noise    MNIST: the labels of 50 "3"s and 50 "8"s are swapped before training; forget those 100 examples;
                 interclass-confusion metrics (IC error, FGT) on the 3/8 test examples.
- text_selective Rotten Tomatoes snippets, all-MiniLM-L6-v2 fine-tuned until it memorises: forget 100 random
                 "fresh" reviews.
Methods: original (no unlearning), retrain (same recipe as the original, retain only: the oracle), scrub,
scrub_r (SCRUB+R), finetune, neggrad_plus, bad_teacher; every metric of docs/design.md §3; the mean over seeds +/- std.

    python benchmarks/quality.py                          # all scenarios, 3 seeds (~45 min on 2 CPU cores)
    python benchmarks/quality.py --quick                  # the CI smoke run (minutes), see QUICK_METHODS
    python benchmarks/quality.py --scenarios class --seeds 0 1 2 --results-dir benchmarks/results/quality

Hyperparameters per scenario and method: benchmarks/configs/quality.yaml (the SCRUB values come from the sweep
documented in BENCHMARKS.md). Each finished run is appended to `<results-dir>/runs.jsonl` at once, so an
interrupted benchmark keeps what it measured; `--report-only` rebuilds the tables and plots from that file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import datasets
import numpy as np
import torch
import yaml
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
    default_data_collator,
)

from hf_scrub import ScrubConfig, ScrubTrainer, make_unlearning_splits
from hf_scrub.baselines import METHODS, fresh_model_like
from hf_scrub.demo import build_demo_image_processor, build_demo_model
from hf_scrub.evaluation import predict_splits, prediction_trainer, unlearning_report
from hf_scrub.metrics import interclass_confusion
from hf_scrub.offline import load_mnist, load_rotten_tomatoes, minilm_model_path
from hf_scrub.tasks import image_transform, prepare_dataset

HERE = Path(__file__).resolve().parent
METHOD_ORDER = ["original", "retrain", "scrub", "scrub_r", "finetune", "neggrad_plus", "bad_teacher"]
# --quick (CI): one seed, 1,500 training / 500 test digits, and only the methods its check needs: SCRUB against the
# Retrain oracle and one baseline (finetune, which does not forget a class); `--methods` still selects others.
QUICK_METHODS = ["original", "retrain", "scrub", "finetune"]
# Settings that change only how a model is evaluated, not how it trains; under --quick the Retrain oracle takes
# them from the scenario's "defaults" like every other method (its per-epoch history is otherwise the slowest part).
EVALUATION_KEYS = ("per_device_eval_batch_size", "history_retain_examples")
DISTANCE_METRICS = ("forget_error", "retain_error", "test_error", "mia")
COMMON = dict(report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True)


# ---- data and original models ------------------------------------------------------------------------------------


def image_data(scenario: dict, seed: int, quick: bool) -> tuple[datasets.DatasetDict, dict, list[int]]:
    """MNIST, optionally with swapped labels; returns the data, the forget request and the swapped rows."""
    data = load_mnist(seed=0)
    if quick:
        data["train"] = data["train"].shuffle(seed=0).select(range(1500))
        data["test"] = data["test"].shuffle(seed=0).select(range(500))
    noise = scenario.get("noise")
    if not noise:
        return data, dict(scenario["forget"]), []
    class_a, class_b, per_class = noise["classes"][0], noise["classes"][1], noise["per_class"]
    labels = np.asarray(data["train"]["label"])
    rng = np.random.default_rng(seed)
    rows_a = rng.choice(np.flatnonzero(labels == class_a), per_class, replace=False)
    rows_b = rng.choice(np.flatnonzero(labels == class_b), per_class, replace=False)
    noisy = labels.copy()
    noisy[rows_a], noisy[rows_b] = class_b, class_a
    swapped = sorted(int(r) for r in np.concatenate([rows_a, rows_b]))
    features = data["train"].features
    data["train"] = data["train"].remove_columns("label").add_column("label", noisy.tolist()).cast(features)
    return data, {"forget_indices": swapped}, swapped


def text_data(quick: bool) -> datasets.DatasetDict:
    return load_rotten_tomatoes(seed=0, max_examples=700 if quick else 1200)


def train_args(out: str, recipe: dict, seed: int) -> TrainingArguments:
    return TrainingArguments(output_dir=out, seed=seed, remove_unused_columns=False, **COMMON, **recipe)


class Task:
    """Model construction, preprocessing and collation for one scenario's modality."""

    def __init__(self, kind: str, label_names: list[str]) -> None:
        self.kind, self.label_names = kind, label_names
        if kind == "image":
            self.processor = build_demo_image_processor()
            self.collator = default_data_collator
        else:
            self.processor = AutoTokenizer.from_pretrained(minilm_model_path())
            self.collator = DataCollatorWithPadding(self.processor)

    def new_model(self, seed: int) -> torch.nn.Module:
        if self.kind == "image":
            return build_demo_model(self.label_names, seed=seed)
        torch.manual_seed(seed)
        return AutoModelForSequenceClassification.from_pretrained(
            minilm_model_path(), num_labels=len(self.label_names),
            id2label=dict(enumerate(self.label_names)), label2id={n: i for i, n in enumerate(self.label_names)},
        )  # fmt: skip

    def retrain_start(self, original: torch.nn.Module, seed: int) -> torch.nn.Module:
        return fresh_model_like(original, seed, None if self.kind == "image" else minilm_model_path())

    def prepare(self, dataset: datasets.Dataset) -> datasets.Dataset:
        if self.kind == "image":
            return dataset.with_transform(image_transform(self.processor))
        return prepare_dataset(dataset, "text-classification", self.processor, max_length=48)


# ---- one run -----------------------------------------------------------------------------------------------------


def evaluate(trainer: Trainer, splits: dict, forget_classes: list[int], seed: int, noise: dict | None) -> dict:
    predictions = predict_splits(trainer, splits)
    report = unlearning_report(predictions, forget_classes, seed)
    for name in ("forget", "retain", "test"):
        report[f"{name}_error"] = 1.0 - report.pop(f"{name}_accuracy")
    if noise:
        test = predictions["test"]
        report.update(interclass_confusion(test.predictions, test.labels, *noise["classes"]))
    return report


def run_method(method: str, settings: dict, task: Task, original: torch.nn.Module, splits: dict, seed: int) -> Any:
    """Unlearn with one method; returns (trainer, seconds)."""
    with tempfile.TemporaryDirectory() as out:
        kwargs = {**COMMON, "output_dir": out, "seed": seed, "remove_unused_columns": False, **settings}
        if method in ("scrub", "scrub_r"):
            trainer_class, config = ScrubTrainer, ScrubConfig(**kwargs, rewind=method == "scrub_r")
            model = _copy(original)
        else:
            trainer_class, config_class = METHODS[method]
            config = config_class(**kwargs)
            model = task.retrain_start(original, seed) if method == "retrain" else _copy(original)
        trainer = trainer_class(
            model=model, args=config, forget_dataset=splits["forget"], retain_dataset=splits["retain"],
            forget_validation_dataset=splits["forget_validation"], data_collator=task.collator,
        )  # fmt: skip
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return trainer, seconds


def _copy(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


def run_scenario(name: str, scenario: dict, settings: dict, seed: int, quick: bool, methods: list[str], sink) -> None:
    if scenario["modality"] == "image":
        data, request, _ = image_data(scenario, seed, quick)
    else:
        data, request = text_data(quick), dict(scenario["forget"])
    raw = make_unlearning_splits(data, seed=seed, **request)
    task = Task(scenario["modality"], raw.class_names)
    splits = {n: task.prepare(getattr(raw, n)) for n in ("forget", "retain", "test", "forget_validation")}
    train_all = task.prepare(datasets.concatenate_datasets([raw.forget, raw.retain]))
    recipe = settings["original"]
    noise = scenario.get("noise")
    with tempfile.TemporaryDirectory() as out:
        original = task.new_model(seed)
        start = time.perf_counter()
        Trainer(model=original, args=train_args(out, recipe, seed), train_dataset=train_all,
                data_collator=task.collator).train()  # fmt: skip
        original_seconds = time.perf_counter() - start
        evaluator = prediction_trainer(original, train_args(out, recipe, seed), task.collator)
        report = evaluate(evaluator, splits, raw.forget_classes, seed, noise)
    sink(dict(scenario=name, seed=seed, method="original", seconds=original_seconds, report=report))
    for method in methods:
        if method == "original":
            continue
        method_settings = {**settings.get("defaults", {}), **settings.get(method, {})}
        if method == "retrain":
            method_settings = {**recipe}
            if quick:
                defaults = settings.get("defaults", {})
                method_settings |= {key: defaults[key] for key in EVALUATION_KEYS if key in defaults}
        trainer, seconds = run_method(method, method_settings, task, original, splits, seed)
        report = evaluate(trainer, splits, raw.forget_classes, seed, noise)
        entry = dict(scenario=name, seed=seed, method=method, seconds=seconds, report=report)
        if getattr(trainer, "rewind_epoch", None) is not None:
            entry["rewind_epoch"] = trainer.rewind_epoch
        sink(entry)
        del trainer


# ---- aggregation -------------------------------------------------------------------------------------------------


def aggregate(runs: list[dict]) -> dict:
    """scenario -> method -> metric -> (mean, std); plus the distance to retrain and the speed-up over it."""
    table: dict = {}
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        rows = [r for r in runs if r["scenario"] == scenario]
        retrain = {r["seed"]: r for r in rows if r["method"] == "retrain"}
        table[scenario] = {}
        for method in [m for m in METHOD_ORDER if any(r["method"] == m for r in rows)]:
            mine = [r for r in rows if r["method"] == method]
            metrics = {key: [r["report"][key] for r in mine if key in r["report"]] for key in mine[0]["report"]}
            metrics["seconds"] = [r["seconds"] for r in mine]
            distances = []
            for r in mine:
                if r["seed"] in retrain:
                    reference = retrain[r["seed"]]["report"]
                    parts = [abs(r["report"][k] - reference[k]) / (100 if k == "mia" else 1)
                             for k in DISTANCE_METRICS if k in r["report"] and k in reference]  # fmt: skip
                    distances.append(float(np.mean(parts)))
                    if method != "original":  # the original's seconds are its training, not an unlearning
                        metrics.setdefault("speedup_vs_retrain", []).append(
                            retrain[r["seed"]]["seconds"] / max(r["seconds"], 1e-9)
                        )
            metrics["distance_to_retrain"] = distances
            table[scenario][method] = {
                key: (float(np.mean(values)), float(np.std(values)) if len(values) > 1 else 0.0, len(values))
                for key, values in metrics.items()
                if values
            }
    return table


def markdown(table: dict) -> str:
    columns = [
        ("forget_error", "forget err", 100), ("retain_error", "retain err", 100), ("test_error", "test err", 100),
        ("mia", "MIA", 1), ("ic_error", "IC err", 100), ("fgt", "FGT", 1),
        ("distance_to_retrain", "dist. to retrain", 100), ("seconds", "seconds", 1),
        ("speedup_vs_retrain", "speed-up", 1),
    ]  # fmt: skip
    lines = []
    for scenario, methods in table.items():
        present = [c for c in columns if any(c[0] in m for m in methods.values())]
        lines.append(f"\n#### {scenario}\n")
        lines.append("| method | " + " | ".join(label for _, label, _ in present) + " |")
        lines.append("|---|" + "---:|" * len(present))
        for method, metrics in methods.items():
            cells = []
            for key, _, scale in present:
                if key in metrics:
                    mean, std, n = metrics[key]
                    cells.append(f"{mean * scale:.1f} ± {std * scale:.1f}" if n > 1 else f"{mean * scale:.1f}")
                else:
                    cells.append("–")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(table: dict, results_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for scenario, methods in table.items():
        keys = [k for k in ("forget_error", "retain_error", "test_error", "mia") if k in methods.get("retrain", {})]
        fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.2))
        for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
            names = [m for m in methods if key in methods[m]]
            scale = 1 if key == "mia" else 100
            means = [methods[m][key][0] * scale for m in names]
            stds = [methods[m][key][1] * scale for m in names]
            colors = ["#888888" if m == "original" else "#2a9d8f" if m == "retrain" else
                      "#e76f51" if m.startswith("scrub") else "#8ab6d6" for m in names]  # fmt: skip
            ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=3)
            ax.axhline(methods["retrain"][key][0] * scale, color="#2a9d8f", linestyle="--", linewidth=1)
            ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
            ax.set_title(key.replace("_", " ") + (" (%)" if key != "mia" else " (attack acc. %)"), fontsize=9)
        fig.suptitle(f"{scenario}: closer to the dashed retrain line is better", fontsize=10)
        fig.tight_layout()
        fig.savefig(results_dir / f"{scenario}.png", dpi=110, metadata={"Software": None})
        plt.close(fig)


# ---- main --------------------------------------------------------------------------------------------------------


class Sink:
    """Appends each finished run to runs.jsonl at once (an interrupted benchmark keeps what it measured)."""

    def __init__(self, path: Path, quick: bool) -> None:
        self.path, self.quick = path, quick

    def __call__(self, entry: dict) -> None:
        entry["quick"] = self.quick
        with self.path.open("a") as handle:
            handle.write(json.dumps(entry) + "\n")
        report = entry["report"]
        print(
            f"{entry['scenario']:>15} seed {entry['seed']} {entry['method']:>12}: forget err "
            f"{report['forget_error']:.3f} test err {report['test_error']:.3f} "
            f"mia {report.get('mia', float('nan')):.1f} {entry['seconds']:.1f}s",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=HERE / "configs" / "quality.yaml")
    parser.add_argument("--scenarios", nargs="+")
    parser.add_argument("--methods", nargs="+", help=f"default: all; with --quick {' '.join(QUICK_METHODS)}")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="one seed, smaller data, fewer epochs and methods (CI)")
    parser.add_argument("--results-dir", type=Path, default=HERE / "results" / "quality")
    parser.add_argument("--report-only", action="store_true", help="rebuild tables and plots from runs.jsonl")
    args = parser.parse_args()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    config = yaml.safe_load(args.config.read_text())
    scenarios = args.scenarios or list(config["scenarios"])
    seeds = [args.seeds[0]] if args.quick else args.seeds
    methods = args.methods or (QUICK_METHODS if args.quick else METHOD_ORDER)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    runs_file = args.results_dir / "runs.jsonl"
    if not args.report_only:
        for name in scenarios:
            scenario = config["scenarios"][name]
            settings = scenario["quick"] if args.quick and "quick" in scenario else scenario["settings"]
            for seed in seeds:
                run_scenario(name, scenario, settings, seed, args.quick, methods, Sink(runs_file, args.quick))
    runs = [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()]
    runs = [r for r in runs if r.get("quick", False) == args.quick and r["scenario"] in scenarios]
    table = aggregate(runs)
    text = markdown(table)
    (args.results_dir / "tables.md").write_text(text)
    (args.results_dir / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    plot(table, args.results_dir)
    print(text)
    print(f"median seconds per run: {statistics.median(r['seconds'] for r in runs):.1f}")


if __name__ == "__main__":
    main()
