"""The evidence that ships with an unlearned model, written by one code path for the CLI and for Python users.

`save_unlearning_report(trainer, output_dir, splits, eval_splits, original)` (also `trainer.save_unlearning_report`)
evaluates the trained model, assembles `unlearning_results.json` (the original's and the unlearned model's reports,
what was forgotten, the verdict of `hf_scrub.judge`, the per-epoch history, the hyperparameters, warnings) and
writes the output folder: model, processor, evaluation card, plot and results, completely or not at all
(docs/design.md §15). `scripts/scrub.py` calls the same function, adding what only it knows (Retrain column, relearn
time, resume, wall time).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .card import write_card
from .data import UnlearningSplits
from .evaluation import evaluate_model
from .judge import verdict as judge_verdict
from .lm_evaluation import add_comparisons
from .output import RESULTS_FILE, STAGING_DIR, replace_folder_contents
from .tasks import IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION

logger = logging.getLogger(__name__)

REPORTED_HYPERPARAMETERS = (
    "schedule",
    "npo_beta",
    "simnpo_beta",
    "simnpo_delta",
    "rmu_layer",
    "rmu_steering_coeff",
    "forget_weight",
    "retain_weight",
    "alpha",
    "gamma",
    "kd_temperature",
    "forget_epochs",
    "num_train_epochs",
    "per_device_forget_batch_size",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "learning_rate",
    "optim",
    "weight_decay",
    "max_grad_norm",
    "lr_scheduler_type",
    "retain_fraction",
    "retain_steps_per_forget_step",
    "beta",
    "rewind",
    "seed",
)
# A retain accuracy lower than the original's by more than this is reported as a warning.
RETAIN_DROP_WARNING = 0.05


def model_reference(model_name_or_path: str) -> str:
    """How the results name a model: a Hub id as given, a local folder by its name only (no local paths)."""
    path = Path(model_name_or_path).expanduser()
    return path.resolve().name if path.exists() else model_name_or_path


def check_finite_model(trainer: Any) -> None:
    """Refuse to save a model with non-finite weights: it would load, and answer garbage, without any error."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    bad = [name for name, p in model.named_parameters() if p.numel() and not torch.isfinite(p.detach()).all()]
    flag = torch.tensor(float(bool(bad)), device=trainer.args.device)
    if trainer.accelerator.num_processes > 1:  # under ZeRO-3 / FSDP each process holds a shard
        flag = trainer.accelerator.reduce(flag, reduction="max")
    if flag.item():
        raise FloatingPointError(
            f"The unlearned model has non-finite weights ({', '.join(bad[:3]) or 'in another process'}...): the run "
            "diverged. Nothing was written. Lower learning_rate or enable gradient clipping (max_grad_norm)."
        )


def check_finite_results(results: Any, where: str = "results") -> None:
    """Every reported number must be finite: a NaN metric is a failed evaluation, not a result."""
    if isinstance(results, dict):
        for key, value in results.items():
            check_finite_results(value, f"{where}.{key}")
    elif isinstance(results, (list, tuple)):
        for index, value in enumerate(results):
            check_finite_results(value, f"{where}[{index}]")
    elif isinstance(results, float) and not math.isfinite(results):
        raise FloatingPointError(
            f"{where} is {results}: the evaluation produced a non-finite number (a diverged model?). Nothing was "
            "written. Lower learning_rate or enable gradient clipping (max_grad_norm)."
        )


def outcome_warnings(trainer: Any, reports: Mapping[str, Mapping[str, float]]) -> list[str]:
    """What a reader of the results must know about this run's outcome (also printed and shown on the card)."""
    warnings = []
    if trainer.args.learning_rate == 0:
        warnings.append("learning_rate is 0: no step changes the model, so the 'unlearned' model is the original.")
    if trainer.rewind_epoch == 0:
        warnings.append(
            "SCRUB+R chose epoch 0: the returned model is the original model, unchanged (the judge ranked no "
            "later epoch above the original; see the verdict)."
        )
    before = reports["original"].get("retain_accuracy")
    after = reports["unlearned"].get("retain_accuracy")
    if before is not None and after is not None and after < before - RETAIN_DROP_WARNING:
        warnings.append(
            f"Retain accuracy fell from {before:.4f} to {after:.4f}: the unlearned model lost much of what it should "
            "keep. Lower learning_rate, or raise gamma / the number of retain epochs."
        )
    return warnings


def returned_verdict(trainer: Any) -> dict[str, Any]:
    """The verdict on the model `train()` returned: the judge's reading of that epoch (`hf_scrub.judge`), the same
    judgement that stopped the run and chose the epoch, so the two can never disagree."""
    judgement = trainer.returned_judgement
    if judgement is None:
        raise RuntimeError("The unlearning report needs a trained trainer: call trainer.train() first.")
    stopped_because = trainer.stopped_because
    last = int(trainer.scrub_history[-1]["scrub_epoch"])
    if trainer.returned_epoch != last:
        stopped_because += f"; returned epoch {trainer.returned_epoch}, the best by the judge"
        if trainer.rewind_epoch is not None:
            stopped_because += " (SCRUB+R)"
    return judge_verdict(judgement, stopped_because, trainer.returned_epoch)


def _task_of(model: Any) -> str:
    return IMAGE_CLASSIFICATION if getattr(model, "main_input_name", None) == "pixel_values" else TEXT_CLASSIFICATION


def _unlearning_seconds(trainer: Any) -> float | None:
    runtimes = [entry["train_runtime"] for entry in trainer.state.log_history if "train_runtime" in entry]
    return runtimes[-1] if runtimes else None


def write_outputs(
    trainer: Any,
    processor: Any,
    results: dict[str, Any],
    output_dir: str | Path,
    save_merged: bool = False,
    keep: Iterable[str] = (),
    repo_id: str | None = None,
) -> None:
    """Write model, processor, evaluation card, plot and results completely or not at all.

    Everything is assembled in a staging folder inside `output_dir`, then replaces the folder's previous content as
    a whole (`replace_folder_contents`: this run's checkpoints in `keep` stay), `unlearning_results.json` last: its
    presence means the folder is complete. On failure the staging folder is removed and the previous content is
    back in place. Nothing here touches the Hub.
    """
    check_finite_results(results)
    text = json.dumps(results, indent=2, allow_nan=False) + "\n"
    folder = Path(output_dir)
    staging = folder / STAGING_DIR
    if trainer.is_world_process_zero():
        shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed while finishing
    trainer.accelerator.wait_for_everyone()
    try:
        trainer.save_model(str(staging))  # collective under FSDP/DeepSpeed: every process calls it
        if trainer.is_world_process_zero():
            if processor is not None:
                processor.save_pretrained(str(staging))
            model = trainer.accelerator.unwrap_model(trainer.model)
            if save_merged and hasattr(model, "merge_and_unload"):  # a peft model: adapters folded into the base
                copy.deepcopy(model).merge_and_unload().save_pretrained(str(staging / "merged"))
                if processor is not None:
                    processor.save_pretrained(str(staging / "merged"))
            write_card(results, staging, repo_id=repo_id, model_name=folder.resolve().name)
            (staging / RESULTS_FILE).write_text(text)
            replace_folder_contents(folder, staging, set(keep))
    finally:
        if trainer.is_world_process_zero():
            shutil.rmtree(staging, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()


def save_unlearning_report(
    trainer: Any,
    output_dir: str | Path,
    splits: UnlearningSplits,
    eval_splits: Mapping[str, Any],
    original: Mapping[str, float],
    *,
    method: str | None = None,
    model_name_or_path: str | None = None,
    task: str | None = None,
    reports: Mapping[str, Mapping[str, float]] | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    warnings: Iterable[str] = (),
    save_merged: bool = False,
    keep: Iterable[str] = (),
    repo_id: str | None = None,
) -> dict[str, Any]:
    """Evaluate `trainer`'s (unlearned) model and write the evidence folder; return the results written.

    Args:
        trainer: an `UnlearningTrainer` (`ScrubTrainer` or a baseline) after `train()`.
        output_dir: the folder to write (its previous content is replaced as a whole).
        splits: the `UnlearningSplits` of the request (what was forgotten, the forgotten classes).
        eval_splits: the same splits as model inputs ("forget", "retain", "test", "forget_validation").
        original: the original model's report, `evaluate_model(trainer, eval_splits, splits.forget_classes)` taken
            before `train()`.
        method, model_name_or_path, task: how the results name the run (default: inferred from the trainer).
        reports: more columns, e.g. `{"retrain": evaluate_model(...)}` for a model retrained without the forget set.
        hyperparameters: settings to record besides the config's SCRUB and optimizer fields (e.g. the preset).
        extra: more top-level results entries (e.g. `relearn_time`, `unlearning_seconds`).
        warnings: caveats to add to those found here (e.g. `splits.warnings` is always included).
        save_merged, keep, repo_id: see `write_outputs`.
    """
    check_finite_model(trainer)
    args = trainer.args
    model = trainer.accelerator.unwrap_model(trainer.model)
    all_reports = {
        "original": dict(original),
        "unlearned": evaluate_model(trainer, eval_splits, splits.forget_classes, args.seed),
        **{name: dict(report) for name, report in (reports or {}).items()},
    }
    add_comparisons(all_reports)  # a causal LM's PrivLeak, forget quality and perplexity ratio (no-op otherwise)
    source = model_name_or_path or getattr(getattr(model, "config", None), "_name_or_path", "") or "unknown"
    forget = splits.describe()
    verdict = returned_verdict(trainer)
    verdict_warnings = [] if verdict["forget_target_met"] is not False else [f"Not forgotten: {verdict['summary']}"]
    results: dict[str, Any] = {
        "method": method or getattr(trainer, "method_name", type(trainer).__name__),
        "task": task or _task_of(model),
        "model": model_reference(source),
        "forget": forget,
        "verdict": verdict,
        **all_reports,
        "unlearning_seconds": _unlearning_seconds(trainer),
        "rewind_epoch": trainer.rewind_epoch,
        "returned_epoch": trainer.returned_epoch,
        "history": [
            {
                "epoch": entry["scrub_epoch"],
                **{k: v for k, v in entry.items() if k.endswith("_error")},
                "forget_status": trainer.judgements[int(entry["scrub_epoch"])].status.value,
                "retain_kept": trainer.judgements[int(entry["scrub_epoch"])].retain_kept,
            }
            for entry in trainer.scrub_history
        ],
        "hyperparameters": {key: getattr(args, key) for key in REPORTED_HYPERPARAMETERS if hasattr(args, key)}
        | dict(hyperparameters or {}),
        "warnings": list(
            dict.fromkeys([*verdict_warnings, *warnings, *splits.warnings, *outcome_warnings(trainer, all_reports)])
        ),
        "hf_scrub_version": __version__,
        **(extra or {}),
    }
    write_outputs(trainer, trainer.processing_class, results, output_dir, save_merged, keep, repo_id)
    return results
