"""`ScrubTrainer`: SCRUB on the Hugging Face `Trainer`.

Where things are:
- the losses: `hf_scrub.losses` (pure functions), applied per phase in `ScrubTrainer.compute_loss`;
- the epoch schedule: `hf_scrub.schedule.build_schedule`, fed to the Trainer's own loop by `get_train_dataloader`;
- the teacher: `hf_scrub.teacher.build_teacher`, placed by accelerate in `__init__`.

The Trainer's loop is not overridden. The whole SCRUB run is one pass over a schedule of phase-pure optimizer steps
(see `hf_scrub.schedule`), so gradient accumulation, clipping, mixed precision, the LR schedule, logging, checkpoints
and resuming all go through the Trainer as for any fine-tuning, for max-steps exactly as for min-steps.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from .config import ScrubConfig
from .data import check_disjoint, check_label_range
from .evaluation import predict_splits
from .losses import forget_loss, retain_loss
from .rewind import choose_rewind_epoch
from .schedule import (
    PHASE_KEY,
    TEACHER_KEY,
    WEIGHT_KEY,
    OptimizerStep,
    Phase,
    ScheduleBatchSampler,
    ScheduleCollator,
    ScheduledDataset,
    build_schedule,
    epoch_progress,
)
from .teacher import build_teacher, wrap_with_adapters

logger = logging.getLogger(__name__)

# Accumulators for the per-phase logs, summed over items between two logging steps.
_FORGET_KL, _FORGET_N, _RETAIN_KL, _RETAIN_CE, _RETAIN_N = range(5)


def _check_deterministic(dataset: Any, name: str) -> None:
    """Refuse to cache teacher outputs when reading the same example twice gives different inputs."""
    for row in sorted({0, len(dataset) // 2, len(dataset) - 1}):
        first, second = dataset[row], dataset[row]
        for key, value in first.items():
            if not np.array_equal(np.asarray(value), np.asarray(second[key])):
                raise ValueError(
                    f"cache_teacher_outputs needs deterministic inputs, but {name} example {row} gives a different "
                    f"{key!r} each time it is read (a random augmentation?). Make the transform deterministic or set "
                    "cache_teacher_outputs=False."
                )


class _ScrubEpochCallback(TrainerCallback):
    """SCRUB epoch bookkeeping on top of the Trainer's single pass over the schedule.

    The Trainer sees the whole run as one epoch (see `ScrubTrainer.set_initial_training_values`), so its own
    `on_epoch_end` fires once, at the very end. This callback keeps `state.epoch` in SCRUB epochs, fires
    epoch-strategy logging/evaluation/saving at the earlier SCRUB epoch ends, records the per-epoch errors
    (epoch 0 = the original model) and, for SCRUB+R, rewinds at the end of training.
    """

    def __init__(self, trainer: ScrubTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not self.trainer.scrub_history:  # a resumed run already has its earlier epochs in the log history
            self.trainer.record_epoch(0)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        schedule = self.trainer.schedule
        step = state.global_step  # optimizer steps done
        state.epoch = self.trainer.epoch_progress[step - 1]
        if step < len(schedule) and schedule[step].epoch == schedule[step - 1].epoch:
            return control
        should_log = control.should_log  # record_epoch logs, and logging resets the flag for this step's own log
        self.trainer.record_epoch(schedule[step - 1].epoch)
        control.should_log = should_log
        if step < len(schedule):  # the final epoch end is the Trainer's own on_epoch_end
            control.should_log |= args.logging_strategy == IntervalStrategy.EPOCH
            control.should_evaluate |= args.eval_strategy == IntervalStrategy.EPOCH
            control.should_save |= args.save_strategy == SaveStrategy.EPOCH
        return control

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.rewind:
            self.trainer.rewind()


class ScrubTrainer(Trainer):
    """Unlearn `forget_dataset` from `model` with SCRUB while keeping `retain_dataset`.

    Args:
        model: the original model (trained on all data); it becomes the student and is updated in place.
        args: a `ScrubConfig`.
        forget_dataset: the examples to forget (max-steps push the student away from the teacher on them).
        retain_dataset: the examples to keep (min-steps: cross-entropy + distillation to the teacher).
            It is also the Trainer's `train_dataset`.
        teacher_model: the frozen original model. `None` means a frozen copy of `model` as it is now, or, for a peft
            model with untrained adapters, the same model with its adapters disabled (no second copy).
        forget_validation_dataset: held-out examples from the forget set's distribution (e.g. test examples of the
            forgotten classes): its error is recorded every epoch, and SCRUB+R (`args.rewind`) needs it.
        peft_config: a `peft.PeftConfig` (e.g. `LoraConfig`): wrap `model` with fresh adapters and train only them;
            the teacher is then the same model with adapters disabled.
        eval_dataset, data_collator, processing_class, **kwargs: as for `transformers.Trainer`.
    """

    # compute_loss weights every item by (num_processes / items in its optimizer step), so the sum over the
    # micro-batches of a step is already the step's mean: the Trainer must not divide by the accumulation steps.
    loss_is_scaled_for_ga = True

    def __init__(
        self,
        model: nn.Module,
        args: ScrubConfig,
        forget_dataset: Any,
        retain_dataset: Any,
        teacher_model: nn.Module | None = None,
        forget_validation_dataset: Any = None,
        eval_dataset: Any = None,
        data_collator: Any = None,
        processing_class: Any = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(args, ScrubConfig):
            raise TypeError(f"ScrubTrainer needs a ScrubConfig for `args`, got {type(args).__name__}.")
        if "train_dataset" in kwargs:
            raise TypeError("ScrubTrainer takes `retain_dataset` (and `forget_dataset`) instead of `train_dataset`.")
        if forget_dataset is None or len(forget_dataset) == 0:
            raise ValueError("The forget set is empty: there is nothing to unlearn. Check how it was selected.")
        if retain_dataset is None or len(retain_dataset) == 0:
            raise ValueError("The retain set is empty: SCRUB's min-steps need the data the model should keep.")
        num_labels = getattr(getattr(model, "config", None), "num_labels", None)
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
        # Copy the original *before* the Trainer touches the model (device placement, wrapping, training).
        self.teacher = build_teacher(model, teacher_model)
        if self.teacher.num_outputs is not None and num_labels is not None and self.teacher.num_outputs != num_labels:
            raise ValueError(
                f"The teacher has {self.teacher.num_outputs} outputs but the student has {num_labels}: SCRUB compares "
                "their class distributions, so the teacher must be the original model with the same head."
            )
        self.forget_dataset = forget_dataset
        self.forget_validation_dataset = forget_validation_dataset
        self.rewind_epoch: int | None = None
        super().__init__(
            model=model,
            args=args,
            train_dataset=retain_dataset,
            eval_dataset=eval_dataset,
            data_collator=data_collator,
            processing_class=processing_class,
            **kwargs,
        )
        # Our compute_loss never forwards `num_items_in_batch` to the model; stop the Trainer from counting items.
        self.model_accepts_loss_kwargs = False
        self.teacher.prepare(self.accelerator)
        self.schedule: list[OptimizerStep] = []
        self.epoch_progress: list[float] = []
        self._phase_sums = torch.zeros(5, device=self.args.device)
        self.add_callback(_ScrubEpochCallback(self))

    # ---- schedule -------------------------------------------------------------------------------------------

    def get_train_dataloader(self) -> DataLoader:
        """The whole SCRUB schedule as one dataloader of phase-tagged micro-batches, sharded by accelerate."""
        args: ScrubConfig = self.args
        forget_dataset = self._drop_unused_columns(self.forget_dataset, "forget")
        retain_dataset = self._drop_unused_columns(self.train_dataset, "retain")
        self.schedule = build_schedule(
            len(forget_dataset),
            len(retain_dataset),
            forget_batch_size=args.per_device_forget_batch_size,
            retain_batch_size=self._train_batch_size,
            num_epochs=int(args.num_train_epochs),
            forget_epochs=args.forget_epochs,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes,
            retain_fraction=args.retain_fraction,
            seed=args.data_seed if args.data_seed is not None else args.seed,
        )
        self.epoch_progress = epoch_progress(self.schedule)
        teacher_logits = None
        if args.cache_teacher_outputs:
            teacher_logits = {Phase.RETAIN: self._teacher_logits_for(retain_dataset, "retain")}
            if args.forget_epochs > 0:
                teacher_logits[Phase.FORGET] = self._teacher_logits_for(forget_dataset, "forget")
        dataloader = DataLoader(
            ScheduledDataset(forget_dataset, retain_dataset, teacher_logits),
            batch_sampler=ScheduleBatchSampler(self.schedule),
            collate_fn=ScheduleCollator(self.data_collator),
            num_workers=args.dataloader_num_workers,
            pin_memory=args.dataloader_pin_memory,
            persistent_workers=args.dataloader_persistent_workers and args.dataloader_num_workers > 0,
            prefetch_factor=args.dataloader_prefetch_factor if args.dataloader_num_workers > 0 else None,
        )
        return self.accelerator.prepare(dataloader)

    def _teacher_logits_for(self, dataset: Any, name: str) -> torch.Tensor:
        """The teacher's logits for every example of `dataset`, in order (computed sharded, gathered, on CPU)."""
        _check_deterministic(dataset, name)
        loader = self.accelerator.prepare(
            DataLoader(
                dataset,
                batch_size=self.args.per_device_eval_batch_size,
                collate_fn=self.data_collator,
                num_workers=self.args.dataloader_num_workers,
                pin_memory=self.args.dataloader_pin_memory,
            )
        )
        chunks = []
        for batch in loader:
            inputs = {k: v for k, v in self._prepare_inputs(batch).items() if k != "labels"}
            logits = self.teacher.logits(self.model, inputs)
            chunks.append(self.accelerator.gather_for_metrics(logits.float().contiguous()).cpu())
        return torch.cat(chunks)

    def _drop_unused_columns(self, dataset: Any, description: str) -> Any:
        if self.args.remove_unused_columns and isinstance(dataset, datasets.Dataset):
            return self._remove_unused_columns(dataset, description=description)
        return dataset

    def set_initial_training_values(self, args: TrainingArguments, dataloader: DataLoader) -> tuple:
        """The Trainer runs the schedule as a single epoch of `len(schedule)` optimizer steps."""
        values = list(super().set_initial_training_values(args, dataloader))
        num_steps = len(self.schedule)
        values[0] = 1  # loop epochs
        values[1] = num_steps  # update steps per epoch
        values[3] = sum(step.num_examples for step in self.schedule)  # samples seen
        values[6] = num_steps  # max_steps
        logger.info(
            "SCRUB schedule: %d epochs (%d with max-steps), %d optimizer steps: %d max-steps, %d min-steps",
            int(args.num_train_epochs),
            self.args.forget_epochs,
            num_steps,
            sum(step.phase is Phase.FORGET for step in self.schedule),
            sum(step.phase is Phase.RETAIN for step in self.schedule),
        )
        return tuple(values)

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The configured LR schedule, times the paper's step decay after each epoch in `lr_decay_epochs`."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        decay_epochs = self.args.lr_decay_epochs
        if decay_epochs and not getattr(scheduler, "_scrub_decay", False):
            if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                raise ValueError(
                    f"lr_decay_epochs needs a LambdaLR-based lr_scheduler_type, not {self.args.lr_scheduler_type}."
                )
            epochs = [step.epoch for step in self.schedule]
            factor = self.args.lr_decay_factor

            def decay(step: int) -> float:
                epoch = epochs[min(step, len(epochs) - 1)]
                return factor ** sum(epoch > d for d in decay_epochs)

            scheduler.lr_lambdas = [lambda step, f=f: f(step) * decay(step) for f in scheduler.lr_lambdas]
            scheduler._scrub_decay = True
        return scheduler

    # ---- per-epoch history and SCRUB+R ---------------------------------------------------------------------

    @property
    def scrub_history(self) -> list[dict[str, float]]:
        """Per-epoch errors (epoch 0 = original model), kept in `state.log_history` so checkpoints carry them."""
        by_epoch = {entry["scrub_epoch"]: entry for entry in self.state.log_history if "scrub_epoch" in entry}
        return [by_epoch[epoch] for epoch in sorted(by_epoch)]

    def _history_datasets(self) -> dict[str, Any]:
        retain = self.train_dataset
        size = self.args.history_retain_examples
        if 0 <= size < len(retain):
            rows = np.sort(np.random.default_rng(self.args.seed).choice(len(retain), size, replace=False))
            retain = (
                retain.select(rows)
                if isinstance(retain, datasets.Dataset)
                else torch.utils.data.Subset(retain, rows.tolist())
            )
        return {"forget": self.forget_dataset, "retain": retain, "forget_validation": self.forget_validation_dataset}

    def record_epoch(self, epoch: int) -> None:
        """Log the forget / retain / forget-validation error of the current model as SCRUB epoch `epoch`."""
        if self.args.history_retain_examples == 0:
            splits = {k: v for k, v in self._history_datasets().items() if k != "retain"}
        else:
            splits = self._history_datasets()
        predictions = predict_splits(self, splits)
        entry: dict[str, float] = {"scrub_epoch": epoch}
        for name, split in predictions.items():
            entry[f"{name}_error"] = float(np.mean(split.predictions != split.labels))
        self.log(entry)
        if self.args.rewind:
            self._save_rewind_candidate(epoch)

    @property
    def _rewind_dir(self) -> Path:
        return Path(self.args.output_dir) / "rewind"

    def _candidate_state(self) -> dict[str, torch.Tensor]:
        """What changes during unlearning: trainable parameters and buffers (BatchNorm statistics), on CPU."""
        model = self.accelerator.unwrap_model(self.model)
        changing = {name for name, p in model.named_parameters() if p.requires_grad}
        changing |= {name for name, _ in model.named_buffers()}
        return {
            name: tensor.detach().to("cpu", copy=True).contiguous()
            for name, tensor in model.state_dict().items()
            if name in changing  # non-persistent buffers (e.g. position ids) are not in the state dict
        }

    def _save_rewind_candidate(self, epoch: int) -> None:
        state = self._candidate_state()
        if self.is_world_process_zero():
            self._rewind_dir.mkdir(parents=True, exist_ok=True)
            save_file(state, str(self._rewind_dir / f"epoch-{epoch}.safetensors"))
        self.accelerator.wait_for_everyone()

    def rewind(self) -> int:
        """SCRUB+R: restore the epoch whose forget error is closest to the final forget-validation error."""
        history = self.scrub_history
        reference = history[-1]["forget_validation_error"]
        chosen = choose_rewind_epoch([entry["forget_error"] for entry in history], reference)
        self.rewind_epoch = history[chosen]["scrub_epoch"]
        if chosen != len(history) - 1:
            state = load_file(str(self._rewind_dir / f"epoch-{self.rewind_epoch}.safetensors"))
            missing = set(state) - set(self.accelerator.unwrap_model(self.model).state_dict())
            if missing:
                raise RuntimeError(f"Rewind candidate does not match the model: unexpected keys {sorted(missing)[:5]}")
            self.accelerator.unwrap_model(self.model).load_state_dict(state, strict=False)
        self.log({"rewind_epoch": self.rewind_epoch, "rewind_reference_error": reference})
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            shutil.rmtree(self._rewind_dir, ignore_errors=True)
        return self.rewind_epoch

    # ---- loss -----------------------------------------------------------------------------------------------

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        """One SCRUB micro-step: max-step (``-d``) on forget batches, min-step (``gamma*CE + alpha*d``) on retain.

        Batches without a phase tag (evaluation, prediction) get the model's own loss.
        """
        if PHASE_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        phase = Phase(inputs.pop(PHASE_KEY))
        weights = inputs.pop(WEIGHT_KEY)
        labels = inputs.pop("labels")
        args: ScrubConfig = self.args

        cached = inputs.pop(TEACHER_KEY, None)
        teacher_logits = cached if cached is not None else self.teacher.logits(model, inputs)
        outputs = model(**inputs)
        student_logits = outputs.logits
        real = (weights > 0).float()
        if phase is Phase.FORGET:
            per_item = forget_loss(student_logits, teacher_logits, args.kd_temperature)
            with torch.no_grad():
                self._phase_sums[_FORGET_KL] += -(per_item * real).sum()
                self._phase_sums[_FORGET_N] += real.sum()
        else:
            per_item, ce, distance = retain_loss(
                student_logits, teacher_logits, labels, args.kd_temperature, args.gamma, args.alpha
            )
            with torch.no_grad():
                self._phase_sums[_RETAIN_KL] += (distance * real).sum()
                self._phase_sums[_RETAIN_CE] += (ce * real).sum()
                self._phase_sums[_RETAIN_N] += real.sum()
        loss = (per_item * weights).sum()
        self._raise_if_not_finite(loss, phase)
        return (loss, outputs) if return_outputs else loss

    def _raise_if_not_finite(self, loss: torch.Tensor, phase: Phase) -> None:
        """Stop at once, naming where, instead of letting the Trainer's NaN filter train on silently."""
        finite = torch.isfinite(loss.detach()).float()
        if self.accelerator.num_processes > 1:  # every rank must stop, or the others hang in the next all-reduce
            finite = self.accelerator.reduce(finite, reduction="min")
        if not finite.item():
            step = self.state.global_step
            epoch = self.schedule[min(step, len(self.schedule) - 1)].epoch if self.schedule else 0
            kind = "max-step on the forget set" if phase is Phase.FORGET else "min-step on the retain set"
            raise FloatingPointError(
                f"SCRUB loss is not finite ({loss.item()}) at epoch {epoch}, optimizer step {step + 1} ({kind}). "
                "Training stopped; earlier checkpoints are intact. Lower learning_rate, enable gradient clipping "
                "(max_grad_norm), or lower the forget pressure (forget_epochs, per_device_forget_batch_size)."
            )

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean forget/retain distances and retain CE since the last training log."""
        if "loss" in logs:
            sums = self._phase_sums
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            sums = sums.tolist()
            if sums[_FORGET_N] > 0:
                logs["forget_kl"] = sums[_FORGET_KL] / sums[_FORGET_N]
            if sums[_RETAIN_N] > 0:
                logs["retain_kl"] = sums[_RETAIN_KL] / sums[_RETAIN_N]
                logs["retain_ce"] = sums[_RETAIN_CE] / sums[_RETAIN_N]
            self._phase_sums.zero_()
        super().log(logs, start_time)
