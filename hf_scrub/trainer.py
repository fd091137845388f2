"""`ScrubTrainer`: SCRUB on the Hugging Face `Trainer`.

Where things are:
- the losses: `hf_scrub.losses` (pure functions), applied per phase in `ScrubTrainer.unlearning_loss`;
- the epoch schedule: `hf_scrub.schedule.build_schedule` (forget pass of max-steps, then retain pass of min-steps,
  while epoch <= forget_epochs; min-only afterwards);
- the teacher: `hf_scrub.teacher.build_teacher`, copied in `setup_original`, placed by accelerate in
  `place_teachers`;
- the Trainer plumbing shared with the baselines (schedule feeding, weighting, history, rewind):
  `hf_scrub.unlearning_trainer.UnlearningTrainer`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import ScrubConfig
from .losses import forget_loss, retain_loss
from .schedule import OptimizerStep, Phase, build_schedule
from .teacher import build_teacher
from .unlearning_trainer import Tags, UnlearningTrainer


def check_deterministic(dataset: Any, name: str) -> None:
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


class ScrubTrainer(UnlearningTrainer):
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

    config_class = ScrubConfig
    method_name = "scrub"
    phase_names = {Phase.FORGET: "max-step on the forget set", Phase.RETAIN: "min-step on the retain set"}

    def __init__(
        self,
        model: nn.Module,
        args: ScrubConfig,
        forget_dataset: Any,
        retain_dataset: Any,
        teacher_model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        self._given_teacher = teacher_model
        super().__init__(model, args, forget_dataset, retain_dataset, **kwargs)

    def setup_original(self, model: nn.Module, args: ScrubConfig, num_labels: int | None) -> None:
        self.teacher = build_teacher(model, self._given_teacher)
        del self._given_teacher
        if self.teacher.num_outputs is not None and num_labels is not None and self.teacher.num_outputs != num_labels:
            raise ValueError(
                f"The teacher has {self.teacher.num_outputs} outputs but the student has {num_labels}: SCRUB compares "
                "their class distributions, so the teacher must be the original model with the same head."
            )

    def place_teachers(self) -> None:
        self.teacher.prepare(self.accelerator)

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        args: ScrubConfig = self.args
        return build_schedule(
            num_forget,
            num_retain,
            forget_batch_size=args.per_device_forget_batch_size,
            retain_batch_size=self._train_batch_size,
            num_epochs=int(args.num_train_epochs),
            forget_epochs=args.forget_epochs,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes,
            retain_fraction=args.retain_fraction,
            seed=self.schedule_seed,
        )

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        """Max-step (``-d``) on forget batches, min-step (``gamma * CE + alpha * d``) on retain batches."""
        args: ScrubConfig = self.args
        teacher_logits = tags.teacher_logits
        if teacher_logits is None:
            teacher_logits = self.teacher.logits(model, inputs)
        outputs = model(**inputs)
        if tags.phase is Phase.FORGET:
            per_item = forget_loss(outputs.logits, teacher_logits, args.kd_temperature)
            self.record_metric("forget_kl", -per_item, tags.real)
        else:
            per_item, ce, distance = retain_loss(
                outputs.logits, teacher_logits, tags.labels, args.kd_temperature, args.gamma, args.alpha
            )
            self.record_metric("retain_kl", distance, tags.real)
            self.record_metric("retain_ce", ce, tags.real)
        return per_item, outputs

    # ---- cached teacher outputs ----------------------------------------------------------------------------

    def teacher_logits_cache(self, forget_dataset: Any, retain_dataset: Any) -> dict[Phase, torch.Tensor] | None:
        if not self.args.cache_teacher_outputs:
            return None
        cache = {Phase.RETAIN: self._teacher_logits_for(retain_dataset, "retain")}
        if self.args.forget_epochs > 0:
            cache[Phase.FORGET] = self._teacher_logits_for(forget_dataset, "forget")
        return cache

    def _teacher_logits_for(self, dataset: Any, name: str) -> torch.Tensor:
        """The teacher's logits for every example of `dataset`, in order (computed sharded, gathered, on CPU)."""
        check_deterministic(dataset, name)
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
