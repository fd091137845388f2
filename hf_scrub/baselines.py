"""Baselines in the same framework (docs/design.md §2): same data plumbing, schedule machinery, weighting, history and
evaluation as `ScrubTrainer`, so comparisons measure the methods, not the code around them.

- `FinetuneTrainer`: cross-entropy on the retain set only ("catastrophic forgetting" of the forget set).
- `NegGradTrainer`: gradient ascent on the forget set's cross-entropy.
- `NegGradPlusTrainer`: each step pairs a retain and a forget batch: ``beta * CE_retain - (1 - beta) * CE_forget``.
- `BadTeacherTrainer`: mixed batches distilled from the original model (retain examples) and from a randomly
  initialised copy (forget examples).
Retrain, the gold standard (train from scratch on the retain set), is a plain `transformers.Trainer` run; see
`hf_scrub.pipeline`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import BadTeacherConfig, NegGradPlusConfig, UnlearningConfig
from .losses import bad_teacher_loss, cross_entropy_per_item, neggrad_plus_loss
from .schedule import OptimizerStep, Phase, build_mixed_schedule, build_paired_schedule, build_schedule
from .teacher import FrozenTeacher, build_teacher
from .unlearning_trainer import Tags, UnlearningTrainer


class FinetuneTrainer(UnlearningTrainer):
    """Fine-tune on the retain set with cross-entropy; the forget set is only evaluated."""

    method_name = "finetune"

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return build_schedule(
            num_forget, num_retain, forget_batch_size=1, retain_batch_size=self._train_batch_size,
            num_epochs=int(self.args.num_train_epochs), forget_epochs=0,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes, retain_fraction=self.args.retain_fraction,
            seed=self.schedule_seed,
        )  # fmt: skip

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        ce = cross_entropy_per_item(outputs.logits, tags.labels)
        self.record_metric("retain_ce", ce, tags.real)
        return ce, outputs


class NegGradTrainer(UnlearningTrainer):
    """Gradient ascent: every epoch one pass over the forget set, minimising ``-CE``."""

    method_name = "neggrad"

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        epochs = int(self.args.num_train_epochs)
        return build_schedule(
            num_forget, num_retain, forget_batch_size=self.args.per_device_forget_batch_size, retain_batch_size=1,
            num_epochs=epochs, forget_epochs=epochs, retain_passes=False,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes, seed=self.schedule_seed,
        )  # fmt: skip

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        ce = cross_entropy_per_item(outputs.logits, tags.labels)
        self.record_metric("forget_ce", ce, tags.real)
        return -ce, outputs


class NegGradPlusTrainer(UnlearningTrainer):
    """NegGrad+: one pass over the retain set per epoch, each retain batch paired with a forget batch."""

    method_name = "neggrad_plus"

    config_class = NegGradPlusConfig

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return build_paired_schedule(
            num_forget, num_retain, forget_batch_size=self.args.per_device_forget_batch_size,
            retain_batch_size=self._train_batch_size, num_epochs=int(self.args.num_train_epochs),
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes, seed=self.schedule_seed,
        )  # fmt: skip

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        is_forget = tags.sources == Phase.FORGET
        per_item = neggrad_plus_loss(outputs.logits, tags.labels, is_forget, self.args.beta)
        ce = cross_entropy_per_item(outputs.logits, tags.labels).detach()
        self.record_metric("forget_ce", ce, tags.real & is_forget)
        self.record_metric("retain_ce", ce, tags.real & ~is_forget)
        return per_item, outputs


class BadTeacherTrainer(UnlearningTrainer):
    """Bad-Teacher: distil retain examples from the original model and forget examples from a random one."""

    method_name = "bad_teacher"

    config_class = BadTeacherConfig

    def setup_original(self, model: nn.Module, args: BadTeacherConfig, num_labels: int | None) -> None:
        self.teacher = build_teacher(model, None)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        with torch.random.fork_rng(devices=[]):  # the same architecture, freshly initialised
            # Offset from the run's seed: a model built with that very seed would reproduce the original's init.
            torch.manual_seed(args.seed + 7919)
            incompetent = type(base)(base.config)
        self.incompetent_teacher = FrozenTeacher(incompetent.to(next(base.parameters()).dtype))

    def place_teachers(self) -> None:
        self.teacher.prepare(self.accelerator)
        self.incompetent_teacher.prepare(self.accelerator)

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return build_mixed_schedule(
            num_forget, num_retain, batch_size=self._train_batch_size, num_epochs=int(self.args.num_train_epochs),
            retain_fraction=self.args.retain_fraction,
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes, seed=self.schedule_seed,
        )  # fmt: skip

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        competent = self.teacher.logits(model, inputs)
        incompetent = self.incompetent_teacher.logits(model, inputs)
        outputs = model(**inputs)
        is_forget = tags.sources == Phase.FORGET
        per_item = bad_teacher_loss(outputs.logits, competent, incompetent, is_forget, self.args.kd_temperature)
        self.record_metric("forget_kl", per_item, tags.real & is_forget)
        self.record_metric("retain_kl", per_item, tags.real & ~is_forget)
        return per_item, outputs


def fresh_model_like(model: nn.Module, seed: int, init_from: str | None = None) -> nn.Module:
    """The Retrain baseline's starting point: the original's architecture and init recipe, none of its training.

    `init_from` (a pretrained checkpoint the original was fine-tuned from) gives that checkpoint with a new head;
    without it the model is initialised from its config, as a model trained from scratch was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if init_from is None:
            return type(model)(model.config)
        config = model.config
        return type(model).from_pretrained(
            init_from, num_labels=config.num_labels, id2label=config.id2label, label2id=config.label2id,
            ignore_mismatched_sizes=True,
        )  # fmt: skip


# `--method` name -> (trainer class, config class); "retrain" is fine-tuning a fresh model on the retain set.
METHODS: dict[str, tuple[type[UnlearningTrainer], type[UnlearningConfig]]] = {
    "retrain": (FinetuneTrainer, UnlearningConfig),
    "finetune": (FinetuneTrainer, UnlearningConfig),
    "neggrad": (NegGradTrainer, UnlearningConfig),
    "neggrad_plus": (NegGradPlusTrainer, NegGradPlusConfig),
    "bad_teacher": (BadTeacherTrainer, BadTeacherConfig),
}
