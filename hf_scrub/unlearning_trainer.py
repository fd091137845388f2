"""`UnlearningTrainer`: the Trainer plumbing every unlearning method here shares.

A method (SCRUB in `hf_scrub.trainer`, the baselines in `hf_scrub.baselines`) says two things:
- its schedule (`build_schedule`): which forget / retain examples form each optimizer step (`hf_scrub.schedule`);
- its per-example loss (`unlearning_loss`).

This class feeds the schedule to the Trainer's own loop as one pass of phase-tagged micro-batches, weights each
example so that a step's loss is exactly its mean whatever the accumulation or number of processes, logs per-method
metrics, keeps the per-epoch forget / retain / forget-validation errors in the trainer state, implements SCRUB+R's
rewind, and stops on a non-finite loss. The Trainer's loop itself is not overridden.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import ProgressCallback, Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from .config import UnlearningConfig
from .data import UnlearningSplits, check_disjoint, check_label_range, dataset_labels
from .evaluation import TokenPredictions, predict_splits
from .evidence import save_unlearning_report
from .judge import Evidence, Judge, Judgement, Kind, best_epoch, request_kind
from .lm_data import loss_token_counts
from .lm_metrics import token_statistics
from .losses import membership_scores
from .progress import PhaseProgressCallback
from .rewind import load_whole_state, whole_state
from .schedule import (
    PHASE_KEY,
    ROW_KEY,
    SOURCE_KEY,
    TEACHER_KEY,
    WEIGHT_KEY,
    GroupMean,
    OptimizerStep,
    Phase,
    ScheduleBatchSampler,
    ScheduleCollator,
    ScheduledDataset,
    epoch_progress,
    weight_by_tokens,
)
from .tasks import is_causal_lm
from .teacher import TEACHER_ADAPTER, FrozenAdapterTeacher, wrap_with_adapters

logger = logging.getLogger(__name__)


def _subset(dataset: Any, rows: list[int]) -> Any:
    return dataset.select(rows) if isinstance(dataset, datasets.Dataset) else torch.utils.data.Subset(dataset, rows)


@dataclass
class Tags:
    """What the schedule attached to a micro-batch, besides the model inputs."""

    labels: torch.Tensor
    sources: torch.Tensor  # each example's set (Phase.FORGET / Phase.RETAIN)
    real: torch.Tensor  # False for padding examples (weight 0), which no metric should count
    phase: Phase  # the micro-batch's set, Phase.MIXED when it holds both
    rows: torch.Tensor  # each example's row in its set
    teacher_logits: torch.Tensor | None  # cached teacher outputs, when the method caches them


class _EpochCallback(TrainerCallback):
    """Epoch bookkeeping on top of the Trainer's single pass over the schedule.

    The Trainer sees the whole run as one epoch (see `UnlearningTrainer.get_train_dataloader`), so its own
    `on_epoch_end` fires once, at the very end. This callback keeps `state.epoch` in unlearning epochs, fires
    epoch-strategy logging/evaluation/saving at the earlier epoch ends, records the per-epoch errors (epoch 0 = the
    original model) and, for SCRUB+R, rewinds at the end of training.
    """

    def __init__(self, trainer: UnlearningTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.trainer.scrub_history:  # a resumed run already has its earlier epochs in the log history
            if self.trainer.record_epoch(0):  # the method's goal holds already: no step applies, stop at once
                control.should_training_stop = True
        else:
            self.trainer.restore_judgements()
            self.trainer.resume_epochs(self.trainer.scrub_history)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # Before the step's first forward: weights, buffers (BatchNorm statistics) and optimizer state as they were.
        self.trainer.before_optimizer_step(self.trainer.schedule[state.global_step])

    def on_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        # After the optimizer step and before the LR scheduler computes the next step's rate.
        self.trainer.after_optimizer_step(self.trainer.schedule[state.global_step])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        schedule = self.trainer.schedule
        step = state.global_step  # optimizer steps done
        state.epoch = self.trainer.epoch_progress[step - 1]
        if step < len(schedule) and schedule[step].epoch == schedule[step - 1].epoch:
            if control.should_save:
                self.trainer.before_checkpoint()
            return control
        should_log = control.should_log  # record_epoch logs, and logging resets the flag for this step's own log
        stop = self.trainer.record_epoch(schedule[step - 1].epoch)
        control.should_log = should_log
        if stop and step < len(schedule):  # the method reached its goal: this epoch end is the run's last
            control.should_training_stop = True
            control.should_log |= args.logging_strategy != IntervalStrategy.NO
            control.should_save |= args.save_strategy != SaveStrategy.NO
        elif step < len(schedule):  # the final epoch end is the Trainer's own on_epoch_end
            control.should_log |= args.logging_strategy == IntervalStrategy.EPOCH
            control.should_evaluate |= args.eval_strategy == IntervalStrategy.EPOCH
            control.should_save |= args.save_strategy == SaveStrategy.EPOCH
        if control.should_save:
            self.trainer.before_checkpoint()
        return control

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.trainer.return_best_epoch()


class UnlearningTrainer(Trainer):
    """Base class: forget/retain data, schedule, per-example weighting, history, rewind. See the module docstring.

    Args:
        model: the original model (trained on all data); it is updated in place.
        args: an `UnlearningConfig` (or the method's subclass of it).
        forget_dataset: the examples to forget.
        retain_dataset: the examples to keep; also the Trainer's `train_dataset`.
        forget_validation_dataset: held-out examples from the forget set's distribution (e.g. test examples of the
            forgotten classes): the reference of the judge (`hf_scrub.judge`), recorded every epoch; SCRUB+R
            (`args.rewind`) needs it.
        forget_validation_is_unseen: False when the forget-validation examples were part of the original model's
            training data (e.g. held out of the training split afterwards): they cannot say what unseen data looks
            like, and the judge then does not judge a selective request by them.
        peft_config: a `peft.PeftConfig` (e.g. `LoraConfig`): wrap `model` with fresh adapters and train only them.
        eval_dataset, data_collator, processing_class, **kwargs: as for `transformers.Trainer`.
    """

    config_class: type[UnlearningConfig] = UnlearningConfig
    method_name = "unlearning"  # how `unlearning_results.json` names the method
    phase_names = {Phase.FORGET: "a forget step", Phase.RETAIN: "a retain step", Phase.MIXED: "a mixed step"}
    # compute_loss weights every item by (num_processes / items in its optimizer step), so the sum over the
    # micro-batches of a step is already the step's mean: the Trainer must not divide by the accumulation steps.
    loss_is_scaled_for_ga = True
    supports_causal_lm = False  # whether `unlearning_loss` handles per-position (B, L, V) logits
    # Causal LMs: None weighs each step as one mean over its tokens (one-set steps only); a mapping makes each set
    # of a step its own mean, over its tokens or its sequences (`hf_scrub.schedule.weight_by_tokens`).
    token_group_means: dict[Phase, GroupMean] | None = None

    def __init__(
        self,
        model: nn.Module,
        args: UnlearningConfig,
        forget_dataset: Any,
        retain_dataset: Any,
        forget_validation_dataset: Any = None,
        forget_validation_is_unseen: bool = True,
        eval_dataset: Any = None,
        data_collator: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"{type(self).__name__} needs a {self.config_class.__name__} for `args`, got {type(args).__name__}."
            )
        if "train_dataset" in kwargs:
            raise TypeError(
                f"{type(self).__name__} takes `retain_dataset` (and `forget_dataset`), not `train_dataset`."
            )
        if forget_dataset is None or len(forget_dataset) == 0:
            raise ValueError("The forget set is empty: there is nothing to unlearn. Check how it was selected.")
        if retain_dataset is None or len(retain_dataset) == 0:
            raise ValueError("The retain set is empty: unlearning needs the data the model should keep.")
        # A causal LM's loss is per next-token position (hf_scrub.lm_losses), weighted per token of a step.
        self.token_level = is_causal_lm(model)
        if self.token_level and not self.supports_causal_lm:
            raise ValueError(
                f"{type(self).__name__} ({self.method_name}) does not support causal language models; ScrubTrainer, "
                "NPOTrainer, GradDiffTrainer, NegGradTrainer and FinetuneTrainer do."
            )
        num_labels = None if self.token_level else getattr(getattr(model, "config", None), "num_labels", None)
        if num_labels is not None:
            check_label_range(forget_dataset, num_labels, "forget")
            check_label_range(retain_dataset, num_labels, "retain")
        if args.check_forget_retain_overlap:
            check_disjoint(forget_dataset, retain_dataset)
        if args.rewind and (forget_validation_dataset is None or len(forget_validation_dataset) == 0):
            raise ValueError(
                "rewind=True (SCRUB+R) needs a non-empty forget_validation_dataset: held-out examples from the forget "
                "set's distribution, e.g. `make_unlearning_splits(...).forget_validation`."
            )
        if peft_config is not None:
            model = wrap_with_adapters(model, peft_config, activation_checkpointing=args.activation_checkpointing)
        # Before the Trainer touches the model (device placement, wrapping, training): e.g. copy the teacher.
        self.setup_original(model, args, num_labels)
        self.forget_dataset = forget_dataset
        self.forget_validation_dataset = forget_validation_dataset
        self.forget_validation_is_unseen = forget_validation_is_unseen
        self.rewind_epoch: int | None = None  # SCRUB+R's choice
        self.returned_epoch: int | None = None  # the epoch whose model `train()` leaves in place
        self.judge: Judge | None = None  # fixed at epoch 0 (hf_scrub.judge)
        self.judgements: dict[int, Judgement] = {}
        self._best: tuple[int, tuple] | None = None  # (epoch, rank) of the best epoch kept on disk
        if self.token_level and kwargs.get("preprocess_logits_for_metrics") is None:
            # Evaluation gathers four numbers per position instead of (B, L, V) logits.
            kwargs["preprocess_logits_for_metrics"] = token_statistics
        super().__init__(
            model=model,
            args=args,
            train_dataset=retain_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            processing_class=processing_class,
            **kwargs,
        )
        if args.rewind and self.is_fsdp_enabled and not self.accelerator.is_fsdp2:
            raise ValueError(
                "rewind=True (SCRUB+R) is not available under FSDP version 1: its per-epoch copies are taken with "
                "FSDP2's state-dict API. Use fsdp_version: 2 (configs/accelerate/fsdp2.yaml), or rewind=False."
            )
        # compute_loss never forwards `num_items_in_batch` to the model; stop the Trainer from counting items.
        self.model_accepts_loss_kwargs = False
        self.place_teachers()
        self.schedule: list[OptimizerStep] = []
        self.epoch_progress: list[float] = []
        self._metric_sums: dict[str, torch.Tensor] = {}
        if self.pop_callback(ProgressCallback) is not None:  # one bar per forget / retain pass (hf_scrub.progress)
            self.add_callback(PhaseProgressCallback(self))
        self.add_callback(_EpochCallback(self))

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """`Trainer.train`, giving the user's `args.max_steps` back however the run ends (a raised error included):
        `get_train_dataloader` sets it to the schedule's length for the Trainer's loop."""
        max_steps = self.args.max_steps
        try:
            return super().train(*args, **kwargs)
        finally:
            self.args.max_steps = max_steps

    # ---- what a method provides -----------------------------------------------------------------------------

    def setup_original(self, model: nn.Module, args: UnlearningConfig, num_labels: int | None) -> None:
        """Called with the original model before the Trainer exists (e.g. to copy a teacher). Default: nothing."""

    def place_teachers(self) -> None:
        """Called once the accelerator exists (e.g. to place a teacher on the device). Default: nothing."""

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        """The method's optimizer steps (see `hf_scrub.schedule`)."""
        raise NotImplementedError

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        """Per-example losses (the base class applies the schedule's weights) and the student's outputs."""
        raise NotImplementedError

    def teacher_logits_cache(self, forget_dataset: Any, retain_dataset: Any) -> dict[Phase, torch.Tensor] | None:
        """Per-set teacher logits computed before training, or None to compute them in every step."""
        return None

    def after_epoch(self, epoch: int, judgement: Judgement, evidence: Evidence) -> bool:
        """Called with each epoch's judgement and the evidence it was made from (epoch 0 = the original); True stops
        the run there. Default: run every epoch of the schedule."""
        return False

    @property
    def keeps_best_epoch(self) -> bool:
        """Whether `train()` returns the best epoch by the judge rather than the last (SCRUB+R; the goal-driven
        schedule)."""
        return self.args.rewind

    def resume_epochs(self, history: list[dict[str, float]]) -> None:
        """Called when a resumed run starts, with the epochs recorded before the checkpoint. Default: nothing."""

    def before_checkpoint(self) -> None:
        """Called right before the Trainer writes a checkpoint (its log history goes into it). Default: nothing."""

    def before_optimizer_step(self, step: OptimizerStep) -> None:
        """Called before each optimizer step's first forward."""

    def after_optimizer_step(self, step: OptimizerStep) -> None:
        """Called after each optimizer step, before the LR scheduler computes the next step's rate."""

    def lr_scale(self, step: OptimizerStep) -> float:
        """Multiplier of the learning rate in `step` (the goal-driven schedule adapts it). Default: 1."""
        return 1.0

    @property
    def adapts_learning_rate(self) -> bool:
        """Whether `lr_scale` can differ from 1 (then the LR schedule consults it at every step)."""
        return False

    @property
    def stopped_because(self) -> str:
        """Why the run ended, for the verdict."""
        return f"fixed schedule: all {int(self.args.num_train_epochs)} epochs run"

    @property
    def epochs_run(self) -> int:
        """Unlearning epochs completed (the last recorded epoch)."""
        history = self.scrub_history
        return int(history[-1]["scrub_epoch"]) if history else 0

    # ---- schedule -------------------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """The whole run as one dataloader of phase-tagged micro-batches, sharded by accelerate."""
        args = self.args
        forget_dataset = self._drop_unused_columns(self.forget_dataset, "forget")
        retain_dataset = self._drop_unused_columns(self.train_dataset, "retain")
        self.schedule = self.build_schedule(len(forget_dataset), len(retain_dataset))
        if self.token_level:
            counts = {Phase.FORGET: loss_token_counts(forget_dataset), Phase.RETAIN: loss_token_counts(retain_dataset)}
            self.schedule = weight_by_tokens(
                self.schedule, counts, self.accelerator.num_processes, self.token_group_means
            )
        self.epoch_progress = epoch_progress(self.schedule)
        # The Trainer runs the whole schedule as one pass of `len(schedule)` optimizer steps. It learns that through
        # the public `max_steps` (read right after this dataloader is built); `train` puts the user's value back.
        args.max_steps = len(self.schedule)
        counts = {phase: sum(step.phase is phase for step in self.schedule) for phase in Phase}
        logger.info(
            "%s schedule: %d epochs, %d optimizer steps (%d forget, %d retain, %d mixed)",
            type(self).__name__,
            int(args.num_train_epochs),
            len(self.schedule),
            *counts.values(),
        )
        dataloader = DataLoader(
            ScheduledDataset(
                forget_dataset, retain_dataset, self.teacher_logits_cache(forget_dataset, retain_dataset)
            ),
            batch_sampler=ScheduleBatchSampler(self.schedule),
            collate_fn=ScheduleCollator(self.data_collator),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if args.dataloader_num_workers > 0 else None,
        )
        return self.accelerator.prepare(dataloader)

    @property
    def schedule_seed(self) -> int:
        return self.args.data_seed if self.args.data_seed is not None else self.args.seed

    def _drop_unused_columns(self, dataset: Any, description: str) -> Any:
        if self.args.remove_unused_columns and isinstance(dataset, datasets.Dataset):
            return self._remove_unused_columns(dataset, description=description)
        return dataset

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The configured LR schedule, times the paper's step decay after each epoch in `lr_decay_epochs` and the
        method's `lr_scale` of each step."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        decay_epochs = self.args.lr_decay_epochs or []
        if (decay_epochs or self.adapts_learning_rate) and not getattr(scheduler, "_scrub_decay", False):
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                what = "lr_decay_epochs" if decay_epochs else "schedule='auto'"
                kind = self.args.lr_scheduler_type
                raise ValueError(f"{what} needs a LambdaLR-based lr_scheduler_type, not {kind}.")
            schedule = self.schedule
            factor = self.args.lr_decay_factor

            def multiplier(step: int) -> float:
                scheduled = schedule[min(step, len(schedule) - 1)]
                return factor ** sum(scheduled.epoch > d for d in decay_epochs) * self.lr_scale(scheduled)

            scheduler.lr_lambdas = [lambda step, f=f: f(step) * multiplier(step) for f in scheduler.lr_lambdas]
            scheduler._scrub_decay = True
        return scheduler

    def refresh_learning_rate(self) -> None:
        """Recompute the next step's learning rate now: `lr_scale` changed after the scheduler computed it."""
        scheduler = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)  # accelerate wraps it
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            for group, base, factor in zip(
                self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
            ):
                group["lr"] = base * factor(scheduler.last_epoch)

    # ---- per-epoch history and SCRUB+R ---------------------------------------------------------------------

    @property
    def scrub_history(self) -> list[dict[str, float]]:
        """Per-epoch errors (epoch 0 = original model), kept in `state.log_history` so checkpoints carry them."""
        by_epoch = {entry["scrub_epoch"]: entry for entry in self.state.log_history if "scrub_epoch" in entry}
        return [by_epoch[epoch] for epoch in sorted(by_epoch)]

    def _history_datasets(self) -> dict[str, Any]:
        splits = {
            "forget": self.forget_dataset,
            "retain": _subset(self.train_dataset, self.judge_retain_rows),
            "forget_validation": self.forget_validation_dataset,
        }
        return {name: split for name, split in splits.items() if split is not None and len(split) > 0}

    @cached_property
    def judge_retain_rows(self) -> list[int]:
        """The fixed seeded sample of retain rows (`history_retain_examples`; -1 or more than there are: all) whose
        error the history records and whose accuracy the judge reads (the goal-driven schedule's probe)."""
        size, num_rows = self.args.history_retain_examples, len(self.train_dataset)
        if not 0 <= size < num_rows:
            return list(range(num_rows))
        return np.sort(np.random.default_rng(self.args.seed).choice(num_rows, size, replace=False)).tolist()

    def record_epoch(self, epoch: int) -> bool:
        """Judge the current model as epoch `epoch` and log its errors and judgement; returns the method's
        `after_epoch` decision (True: stop here). Epoch 0, the original, fixes the judge. The best epoch so far is
        kept on disk when the method returns it (`keeps_best_epoch`), after the decision."""
        datasets_ = self._history_datasets()
        predictions = predict_splits(self, datasets_)
        entry: dict[str, float] = {"scrub_epoch": epoch}
        for name, split in predictions.items():
            entry[f"{name}_error"] = split.error
        evidence = self.evidence(predictions)
        if self.judge is None:
            self.judge = Judge.for_original(self.request_kind, evidence)
            self.state.log_history.append({"judge_reference": self.judge.to_log()})
        judgement = self.judge(evidence)
        self.judgements[epoch] = judgement
        self.log(entry | judgement.to_log())
        stop = self.after_epoch(epoch, judgement, evidence)
        if self.keeps_best_epoch:
            self._keep_if_best(epoch, judgement)
        self.refresh_learning_rate()
        return stop

    @cached_property
    def request_kind(self) -> Kind:
        """What the judge judges this request by (`hf_scrub.judge.request_kind`)."""
        validation = self.forget_validation_dataset
        if self.token_level:
            labels = None, None
        else:
            labels = dataset_labels(self.forget_dataset), dataset_labels(self.train_dataset)
        num_reference = 0 if validation is None else len(validation)
        return request_kind(*labels, num_reference, self.forget_validation_is_unseen)

    @cached_property
    def forget_classes(self) -> list[int] | None:
        """The forgotten classes of a class request (None otherwise): the labels of the forget rows."""
        if self.token_level or self.request_kind is not Kind.CLASS:
            return None
        return sorted(set(map(int, dataset_labels(self.forget_dataset))))

    def evidence(self, predictions: dict[str, Any]) -> Evidence:
        """What the judge reads of the current model, from the epoch's predictions (`hf_scrub.judge.Evidence`).

        Membership scores: `hf_scrub.losses.membership_scores` of the logits (a class request: the forgotten classes'
        probability), a causal LM's per-row Min-K% NLL (`TokenPredictions.membership_losses`). Recognised rows: a
        class request's rows predicted as a forgotten class, a causal LM's rows whose answer greedy decoding
        reproduces (`TokenPredictions.reproduced`). The retain side: accuracy on the judge's retain rows
        (`judge_retain_rows`), next-token accuracy for a causal LM.
        """
        classes = self.forget_classes
        scores, recognised = {}, {}
        for name, split in predictions.items():
            if isinstance(split, TokenPredictions):
                scores[name], recognised[name] = split.membership_losses, split.reproduced
                continue
            logits, labels = torch.from_numpy(split.logits), torch.from_numpy(split.labels)
            scores[name] = membership_scores(logits, labels, classes).numpy()
            if classes is not None:
                recognised[name] = np.isin(split.predictions, classes)
        retain = predictions["retain"]
        return Evidence(
            forget_scores=scores["forget"],
            retain_accuracy=1.0 - retain.error,
            num_retain=len(retain.flat()[1]),
            retain_measure="next-token accuracy" if isinstance(retain, TokenPredictions) else "accuracy",
            reference_scores=scores.get("forget_validation"),
            retain_scores=scores["retain"],
            forget_recognised=recognised.get("forget"),
            reference_recognised=recognised.get("forget_validation"),
        )

    def restore_judgements(self) -> None:
        """A resumed run: the judge and the judgements of the epochs before its checkpoint, from the log history, and
        the best of them (whose model the earlier run kept on disk, in the same output folder)."""
        reference = next(entry["judge_reference"] for entry in self.state.log_history if "judge_reference" in entry)
        self.judge = Judge.restore(reference)
        self.judgements = {int(entry["scrub_epoch"]): self.judge.from_log(entry) for entry in self.scrub_history}
        if self.keeps_best_epoch:
            epochs = sorted(self.judgements)
            best = epochs[best_epoch([self.judgements[epoch] for epoch in epochs])]
            self._best = (best, self.judgements[best].rank)

    def _keep_if_best(self, epoch: int, judgement: Judgement) -> None:
        """Save this epoch's model when the judge ranks it above every earlier one (replacing the earlier file)."""
        if self._best is not None and judgement.rank >= self._best[1]:
            return
        previous = self._best
        self._save_rewind_candidate(epoch)
        self._best = (epoch, judgement.rank)
        if previous is not None and self.is_world_process_zero():
            (self._rewind_dir / f"epoch-{previous[0]}.safetensors").unlink(missing_ok=True)

    def return_best_epoch(self) -> None:
        """At the end of training: restore the best epoch by the judge when the method returns it (it differs from
        the last epoch only then), and record which epoch the model is."""
        last = int(self.scrub_history[-1]["scrub_epoch"]) if self.scrub_history else 0
        self.returned_epoch = last
        if not self.keeps_best_epoch or self._best is None:
            return
        chosen = self._best[0]
        if chosen != last:
            state = load_file(str(self._rewind_dir / f"epoch-{chosen}.safetensors"))
            model = self.accelerator.unwrap_model(self.model)
            unexpected = set(state) - set(model.state_dict())
            if unexpected:
                raise RuntimeError(f"Best-epoch candidate does not match the model: keys {sorted(unexpected)[:5]}")
            load_whole_state(model, state, self._sharding)
        self.returned_epoch = chosen
        if self.args.rewind:
            self.rewind_epoch = chosen
        if chosen == 0:
            logger.warning("The best epoch by the judge is epoch 0: the returned model is the original, unchanged.")
        self.log({"returned_epoch": chosen})
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            shutil.rmtree(self._rewind_dir, ignore_errors=True)

    @property
    def returned_judgement(self) -> Judgement | None:
        """The judge's reading of the model `train()` returned (the verdict; None before training)."""
        if self.returned_epoch is None:
            return None
        return self.judgements.get(self.returned_epoch)

    @property
    def _rewind_dir(self) -> Path:
        return Path(self.args.output_dir) / "rewind"

    @property
    def _sharding(self) -> str:
        """How the student's weights are split across processes, for `whole_state` / `load_whole_state`."""
        if self.is_deepspeed_enabled and self.accelerator.state.deepspeed_plugin.zero_stage == 3:
            return "zero3"
        return "fsdp" if self.is_fsdp_enabled else "none"

    def _candidate_state(self) -> dict[str, torch.Tensor]:
        """What changes during unlearning: trainable parameters and buffers (BatchNorm statistics), on CPU."""
        model = self.accelerator.unwrap_model(self.model)
        changing = {name for name, p in model.named_parameters() if p.requires_grad}
        changing |= {name for name, _ in model.named_buffers()}
        # Non-persistent buffers (e.g. position ids) are not in the state dict, so not in the candidate either.
        return whole_state(model, changing, self._sharding)

    def _save_rewind_candidate(self, epoch: int) -> None:
        state = self._candidate_state()
        if self.is_world_process_zero():
            self._rewind_dir.mkdir(parents=True, exist_ok=True)
            save_file(state, str(self._rewind_dir / f"epoch-{epoch}.safetensors"))
        self.accelerator.wait_for_everyone()

    # ---- evidence -------------------------------------------------------------------------------------------

    def save_model(self, output_dir: str | None = None, *args: Any, **kwargs: Any) -> None:
        """`Trainer.save_model`, without a frozen copy of the original's adapter (`FrozenAdapterTeacher`, the teacher
        or reference of a method on a peft model with trained adapters): peft saves every adapter of the model, and
        that copy is not part of the result."""
        super().save_model(output_dir, *args, **kwargs)
        if isinstance(getattr(self, "teacher", None), FrozenAdapterTeacher) and self.is_world_process_zero():
            shutil.rmtree(Path(output_dir or self.args.output_dir) / TEACHER_ADAPTER, ignore_errors=True)

    def save_unlearning_report(
        self,
        output_dir: str | Path,
        splits: UnlearningSplits,
        eval_splits: dict[str, Any],
        original: dict[str, float],
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Evaluate the unlearned model and write model, processor, `unlearning_results.json`, card and plot to
        `output_dir`, completely or not at all: the same evidence as `scripts/scrub.py`. `original` is
        `evaluate_model(trainer, eval_splits, splits.forget_classes)` taken before `train()`. Keyword arguments:
        see `hf_scrub.evidence.save_unlearning_report`. Returns the results written."""
        return save_unlearning_report(self, output_dir, splits, eval_splits, original, **kwargs)

    # ---- loss -----------------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """The method's per-example losses, weighted by the schedule. Untagged batches (evaluation, prediction)
        get the model's own loss."""
        if PHASE_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        weights = inputs.pop(WEIGHT_KEY)
        tags = Tags(
            labels=inputs.pop("labels"),
            sources=inputs.pop(SOURCE_KEY),
            real=weights > 0,
            phase=Phase(inputs.pop(PHASE_KEY)),
            rows=inputs.pop(ROW_KEY),
            teacher_logits=inputs.pop(TEACHER_KEY, None),
        )
        per_item, outputs = self.unlearning_loss(model, inputs, tags)
        # One weight per example, broadcast over its positions for a token-level loss.
        loss = (per_item * weights.reshape(-1, *[1] * (per_item.dim() - 1))).sum()
        self._raise_if_not_finite(loss, tags.phase)
        return (loss, outputs) if return_outputs else loss

    def record_metric(self, name: str, values: torch.Tensor, mask: torch.Tensor) -> None:
        """Accumulate `values` over the examples where `mask` holds; logged as their mean at the next training log.

        Every process must record the same names in the same steps (they do: all are in the same phase).
        """
        with torch.no_grad():
            sums = self._metric_sums.setdefault(name, torch.zeros(2, device=values.device))
            mask = mask.to(values.dtype)
            sums[0] += (values.detach().float() * mask).sum()
            sums[1] += mask.sum()

    def _raise_if_not_finite(self, loss: torch.Tensor, phase: Phase) -> None:
        """Stop at once, naming where, instead of letting the Trainer's NaN filter train on silently."""
        finite = torch.isfinite(loss.detach()).float()
        if self.accelerator.num_processes > 1:  # every rank must stop, or the others hang in the next all-reduce
            finite = self.accelerator.reduce(finite, reduction="min")
        if not finite.item():
            step = self.state.global_step
            epoch = self.schedule[min(step, len(self.schedule) - 1)].epoch if self.schedule else 0
            raise FloatingPointError(
                f"The unlearning loss is not finite ({loss.item()}) at epoch {epoch}, optimizer step {step + 1} "
                f"({self.phase_names[phase]}). Training stopped; earlier checkpoints are intact. Lower learning_rate, "
                "enable gradient clipping (max_grad_norm), or lower the forget pressure."
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the method's metrics (means since the last training log) to training logs."""
        if "loss" in logs and self._metric_sums:
            names = sorted(self._metric_sums)
            sums = torch.stack([self._metric_sums[name] for name in names])
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            for name, (total, count) in zip(names, sums.tolist(), strict=True):
                if count > 0:
                    logs[name] = total / count
            self._metric_sums = {}
        super().log(logs, start_time)
