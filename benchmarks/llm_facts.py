"""LLM unlearning benchmark (issue 12), scenario `llm_facts`: a TOFU-like set of invented people's facts.

Data and models (`hf_scrub.lm_models`, all offline): `make_fictitious_facts` with 20 train people and 10 holdout
people (2 facts each: 40 and 20 question/answer rows, each with a paraphrased answer and 3 perturbed wrong answers);
the original is the full 30-block SmolLM2-135M-Instruct fine-tuned on the 40 train rows until greedy decoding
reproduces every one of them, plus one epoch (`prepare_llm_demo`, cached per seed); the forget set is every fact of
the first 4 people (8 rows); Retrain is the same base fine-tuned with the same recipe on the other 32 rows
(`prepare_llm_retrain`, cached). Sizing (2 CPU cores): the full model, not a block-truncated one (cut anywhere below
30 blocks, SmolLM2 starts at ~25 nats on these answers and 8 blocks still missed facts after 20 epochs), but 40 short
rows, with the tied embedding frozen; an original or a Retrain takes ~1.5-3 min, each unlearning run ~1-2 min plus
its evaluations.

Every method runs through `scripts/scrub.py` (hf_scrub.cli.main) with the causal-LM defaults (LoRA, the `llm_auto`
preset for SCRUB), `--retrain_model_name_or_path` pointing at that seed's Retrain model, so each run's results hold the
original, the unlearned and the Retrain columns with every LLM metric (hf_scrub.lm_evaluation), PrivLeak and forget
quality included. Methods (METHODS): scrub (the CLI's defaults for a causal LM: the goal-driven `llm_auto` preset),
scrub_llm (the paper-style fixed `llm` preset), scrub_demo (the `llm` preset with the old demo's forget batches of 2;
only with --methods), neggrad (gradient ascent), graddiff, npo,
simnpo, rmu (block 7 of SmolLM2's 30, OpenUnlearning's defaults otherwise).

The columns are on the field's conventions (docs/design.md §21, hf_scrub/metrics/README.md): forget truth ratio =
TOFU's mean(min(R, 1/R)) of geometric-mean truth ratios, forget quality = TOFU's KS p-value on them, model utility =
TOFU's harmonic mean of the retain set's answer probability, ROUGE-L recall and truth ratio (the data has no
real-authors or world-facts sets), PrivLeak = MUSE's formula on the Min-K% AUC (negative = still leaks), ROUGE-L =
recall with stemming on answers of up to 200 new tokens.

    python benchmarks/quality.py --scenarios llm_facts           # 3 seeds (about an hour on 2 CPU cores)
    python benchmarks/quality.py --scenarios llm_facts --quick   # CI: seed 0, scrub only
    python benchmarks/llm_facts.py --report-only                 # tables from benchmarks/results/quality/llm_facts
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np

from hf_scrub import cli
from hf_scrub.llm_demo import DEMO_FORGET_PEOPLE, forget_rows_file
from hf_scrub.lm_models import LLM_DEMO_INFO_FILE, prepare_llm_demo, prepare_llm_retrain

HERE = Path(__file__).resolve().parent
SCENARIO = "llm_facts"
# scenario -> (facts variant of `prepare_llm_demo`, people forgotten). `llm_facts_heldout` (issue 25's held-out causal
# LM): facts with other templates and another size (14 people x 3 facts, the first 3 people forgotten: 9 rows),
# never used while a rule of the goal-driven schedule was chosen.
SCENARIOS: dict[str, tuple[str, int]] = {SCENARIO: ("demo", DEMO_FORGET_PEOPLE), "llm_facts_heldout": ("heldout", 3)}
COMMON = ["--test_split", "holdout", "--per_device_eval_batch_size", "32", "--max_length", "64", "--save_strategy",
          "no", "--report_to", "none", "--logging_steps", "50", "--disable_tqdm", "true"]  # fmt: skip
METHODS: dict[str, list[str]] = {
    "scrub": [],
    "scrub_llm": ["--preset", "llm"],
    "scrub_demo": ["--preset", "llm", "--per_device_forget_batch_size", "2"],
    "neggrad": ["--method", "neggrad"],
    "graddiff": ["--method", "graddiff"],
    "npo": ["--method", "npo"],
    "simnpo": ["--method", "simnpo"],
    "rmu": ["--method", "rmu"],
}
# scrub_demo on request (--methods)
DEFAULT_METHODS = ["scrub", "scrub_llm", "neggrad", "graddiff", "npo", "simnpo", "rmu"]
QUICK_METHODS = ["scrub"]
METHOD_ORDER = ["original", "retrain", *METHODS]
# The combined distance to Retrain: mean absolute difference over these (all in [0, 1]).
DISTANCE_METRICS = ("forget_answer_accuracy", "retain_answer_accuracy", "forget_rouge_l_recall", "auc_min_k")
COLUMNS = [
    ("forget_answer_accuracy", "forget ans %", 100),
    ("retain_answer_accuracy", "retain ans %", 100),
    ("test_answer_accuracy", "holdout ans %", 100),
    ("forget_rouge_l_recall", "forget ROUGE-L", 1),
    ("retain_rouge_l_recall", "retain ROUGE-L", 1),
    ("forget_answer_probability", "forget P(ans)", 1),
    ("auc_min_k", "Min-K% AUC", 1),
    ("privleak_min_k", "PrivLeak Min-K% % (MUSE)", 1),
    ("forget_truth_ratio", "forget truth ratio (TOFU)", 1),
    ("forget_quality", "forget quality p", 1),
    ("model_utility", "model utility (TOFU, retain)", 1),
    ("generic_perplexity_ratio", "generic ppl ratio", 1),
    ("distance_to_retrain", "dist. to Retrain", 1),
    ("seconds", "seconds", 1),
    ("speedup_vs_retrain", "speed-up vs Retrain", 1),
]


def numbers(report: dict[str, Any]) -> dict[str, float]:
    """The report's scalar metrics (the per-row truth ratios stay in the run's own results file)."""
    return {key: value for key, value in report.items() if isinstance(value, (int, float))}


def run_seed(seed: int, methods: list[str], sink, scenario: str = SCENARIO, provenance: dict | None = None) -> None:
    """Original and Retrain (cached builds) for `seed`, then each method through the CLI; `provenance` (the scenario's
    protocol role and the rules' commit, from benchmarks/quality.py) goes into the unlearning runs' records."""
    variant, forget_people = SCENARIOS[scenario]
    assets = prepare_llm_demo(seed=seed, variant=variant)
    forget_file = forget_rows_file(Path(assets.dataset_dir), forget_people)
    retrain_dir = prepare_llm_retrain(json.loads(forget_file.read_text()), seed=seed, variant=variant)
    infos = {name: json.loads((path / LLM_DEMO_INFO_FILE).read_text())
             for name, path in (("original", assets.model_dir), ("retrain", retrain_dir))}  # fmt: skip
    first = True
    for method in methods:
        with tempfile.TemporaryDirectory() as out:
            argv = ["--model_name_or_path", str(assets.model_dir), "--dataset_name", str(assets.dataset_dir),
                    "--forget_indices_file", str(forget_file), "--retrain_model_name_or_path", str(retrain_dir),
                    "--output_dir", out, "--seed", str(seed), *COMMON, *METHODS[method]]  # fmt: skip
            cli.main(argv)
            results = json.loads((Path(out) / "unlearning_results.json").read_text())
        if first:  # the original's and Retrain's reports are the same in every run of the seed
            for name in ("original", "retrain"):
                sink(dict(scenario=scenario, seed=seed, method=name, seconds=infos[name]["train_seconds"],
                          epochs=infos[name]["epochs"], report=numbers(results[name])))  # fmt: skip
            first = False
        sink(dict(scenario=scenario, seed=seed, method=method, seconds=results["unlearning_seconds"],
                  report=numbers(results["unlearned"]), verdict=results["verdict"]["summary"],
                  hyperparameters=results["hyperparameters"], **(provenance or {})))  # fmt: skip


def aggregate(runs: list[dict]) -> dict:
    """method -> metric -> (mean, std, n), with the distance to Retrain and the speed-up over it per seed."""
    runs = list({(r["seed"], r["method"]): r for r in runs}.values())
    retrain = {r["seed"]: r for r in runs if r["method"] == "retrain"}
    table: dict = {}
    for method in [m for m in METHOD_ORDER if any(r["method"] == m for r in runs)]:
        values: dict[str, list[float]] = {}
        for run in (r for r in runs if r["method"] == method):
            entry = dict(run["report"], seconds=run["seconds"])
            reference = retrain.get(run["seed"])
            if reference is not None:
                entry["distance_to_retrain"] = float(
                    np.mean([abs(run["report"][k] - reference["report"][k]) for k in DISTANCE_METRICS])
                )
                if method not in ("original", "retrain"):
                    entry["speedup_vs_retrain"] = reference["seconds"] / max(run["seconds"], 1e-9)
            for key, value in entry.items():
                values.setdefault(key, []).append(value)
        table[method] = {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in values.items()}
    return table


def markdown(table: dict) -> str:
    header = "| method | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 1)]
    for method, metrics in table.items():
        cells = []
        for key, _, scale in COLUMNS:
            if key in metrics:
                mean, std, _ = metrics[key]
                cells.append(f"{scale * mean:.3g} ± {scale * std:.2g}")
            else:
                cells.append("–")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    seeds = max((m["seconds"][2] for m in table.values()), default=0)
    return "\n".join(lines) + f"\n\nMean ± std over {seeds} seed(s).\n"


# Issue 25's causal-LM targets against the same seed's Retrain (and Original) model.
ANSWER_POINTS, KEPT_POINTS, AUC_TOLERANCE, FORGET_QUALITY_MIN = 5.0, 5.0, 0.05, 0.05


def target_rows(runs: list[dict], method: str = "scrub") -> list[dict]:
    """Per seed: `method` against Retrain on issue 25's causal-LM targets, and whether the run's own verdict (forget
    target met or not) agrees with the forgotten-answer comparison against Retrain."""
    runs = list({(r["seed"], r["method"]): r for r in runs}.values())
    by_key = {(r["seed"], r["method"]): r for r in runs}
    rows = []
    for run in sorted((r for r in runs if r["method"] == method), key=lambda r: r["seed"]):
        retrain, original = by_key.get((run["seed"], "retrain")), by_key.get((run["seed"], "original"))
        if retrain is None or original is None:
            continue
        mine, ref = run["report"], retrain["report"]
        checks = {
            "forgotten answers": 100 * abs(mine["forget_answer_accuracy"] - ref["forget_answer_accuracy"])
            <= ANSWER_POINTS,
            "kept answers": 100 * (original["report"]["retain_answer_accuracy"] - mine["retain_answer_accuracy"])
            <= KEPT_POINTS,
            "LOSS AUC": abs(mine["auc_loss"] - ref["auc_loss"]) <= AUC_TOLERANCE,
            "Min-K% AUC": abs(mine["auc_min_k"] - ref["auc_min_k"]) <= AUC_TOLERANCE,
            "forget quality": mine["forget_quality"] >= FORGET_QUALITY_MIN,
        }
        met = str(run.get("verdict", "")).startswith("forget target met")
        rows.append(dict(seed=run["seed"], report=mine, retrain=ref, original=original["report"], checks=checks,
                         verdict_met=met, verdict_agrees=met == checks["forgotten answers"],
                         speedup=retrain["seconds"] / max(run["seconds"], 1e-9), role=run.get("role"),
                         rules_commit=run.get("rules_commit")))  # fmt: skip
    return rows


def target_markdown(rows: list[dict]) -> str:
    """One line per seed: the unlearned model (Retrain, Original) on each target's metric, and what was missed."""
    lines = [
        "| seed | forget ans % (Retrain) | kept ans % (Original) | LOSS AUC (Retrain) | Min-K% AUC (Retrain) | "
        "forget quality p | verdict | agrees | missed | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for row in rows:
        mine, ref, original = row["report"], row["retrain"], row["original"]
        missed = ", ".join(name for name, ok in row["checks"].items() if not ok) or "none"
        lines.append(
            f"| {row['seed']} "
            f"| {100 * mine['forget_answer_accuracy']:.1f} ({100 * ref['forget_answer_accuracy']:.1f}) "
            f"| {100 * mine['retain_answer_accuracy']:.1f} ({100 * original['retain_answer_accuracy']:.1f}) "
            f"| {mine['auc_loss']:.2f} ({ref['auc_loss']:.2f}) | {mine['auc_min_k']:.2f} ({ref['auc_min_k']:.2f}) "
            f"| {mine['forget_quality']:.3g} | {'met' if row['verdict_met'] else 'not met'} "
            f"| {'yes' if row['verdict_agrees'] else 'NO'} | {missed} | {row['speedup']:.2f} |"
        )
    commits = sorted({str(row["rules_commit"]) for row in rows if row["rules_commit"]})
    return "\n".join(lines) + (f"\n\nRules at commit(s): {', '.join(commits)}\n" if commits else "\n")


PLOTTED = [
    ("forget_answer_accuracy", "forgotten answers produced (%)", 100),
    ("retain_answer_accuracy", "kept answers produced (%)", 100),
    ("auc_min_k", "Min-K% AUC, forget vs holdout", 1),
    ("forget_truth_ratio", "forget truth ratio, mean min(R, 1/R)", 1),
    ("generic_perplexity_ratio", "generic perplexity / original's", 1),
]


def plot(table: dict, path: Path, scenario: str = SCENARIO) -> None:
    """One panel per PLOTTED metric, a bar per method (mean +/- std over seeds), Retrain's value dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PLOTTED), figsize=(3.2 * len(PLOTTED), 3.2))
    for ax, (key, title, scale) in zip(axes, PLOTTED, strict=True):
        names = [m for m in table if key in table[m]]
        colors = ["#888888" if m == "original" else "#2a9d8f" if m == "retrain" else
                  "#e76f51" if m.startswith("scrub") else "#8ab6d6" for m in names]  # fmt: skip
        ax.bar(range(len(names)), [scale * table[m][key][0] for m in names],
               yerr=[scale * table[m][key][1] for m in names], color=colors, capsize=3)  # fmt: skip
        if key in table.get("retrain", {}):
            ax.axhline(scale * table["retrain"][key][0], color="#2a9d8f", linestyle="--", linewidth=1)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{scenario}: closer to the dashed Retrain line is better", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def run(
    seeds: list[int],
    methods: list[str] | None,
    quick: bool,
    results_dir: Path,
    report_only: bool,
    scenario: str = SCENARIO,
    provenance: dict | None = None,
) -> str:
    """Run (unless `report_only`) and write `tables.md`, `summary.json` and the plot under `results_dir`; return the
    table."""
    results_dir.mkdir(parents=True, exist_ok=True)
    runs_file = results_dir / "runs.jsonl"
    if not report_only:
        logging.getLogger("transformers").setLevel(logging.ERROR)

        def sink(record: dict) -> None:
            with runs_file.open("a") as file:
                file.write(json.dumps(dict(record, quick=quick)) + "\n")

        for seed in seeds[:1] if quick else seeds:
            run_seed(seed, methods or (QUICK_METHODS if quick else DEFAULT_METHODS), sink, scenario, provenance)
    runs = [json.loads(line) for line in runs_file.read_text().splitlines() if line.strip()]
    table = aggregate([r for r in runs if r.get("quick", False) == quick])
    text = markdown(table)
    rows = target_rows([r for r in runs if r.get("quick", False) == quick])
    if rows:
        text += "\n#### scrub (the causal-LM default) against issue 25's targets, per seed\n\n" + target_markdown(rows)
    (results_dir / "tables.md").write_text(text)
    (results_dir / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    plot(table, results_dir / f"{scenario}.png", scenario)
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=list(SCENARIOS), default=SCENARIO)
    parser.add_argument("--methods", nargs="+", choices=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="seed 0 and the methods of QUICK_METHODS (CI)")
    parser.add_argument("--results-dir", type=Path, help="default: benchmarks/results/quality/<scenario>")
    parser.add_argument("--report-only", action="store_true", help="rebuild the table from runs.jsonl")
    args = parser.parse_args()
    results_dir = args.results_dir or HERE / "results" / "quality" / args.scenario
    print(run(args.seeds, args.methods, args.quick, results_dir, args.report_only, args.scenario))


if __name__ == "__main__":
    main()
