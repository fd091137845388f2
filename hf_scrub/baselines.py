"""Baselines in the same framework (docs/design.md §2): same data plumbing, schedule machinery, weighting, history and
evaluation as `ScrubTrainer`, so comparisons measure the methods, not the code around them.

- `FinetuneTrainer`: cross-entropy on the retain set only ("catastrophic forgetting" of the forget set).
- `NegGradTrainer`: gradient ascent (GA) on the forget set's cross-entropy.
- `GradDiffTrainer`: each forget batch paired with a retain batch: ``-CE_forget + CE_retain``.
- `NPOTrainer`: each forget batch paired with a retain batch: NPO's per-sequence loss against the frozen original
  (Zhang et al., 2024) ``+ retain_weight * CE_retain``.
- `SimNPOTrainer`: the same pairing, SimNPO's reference-free loss on each forget sequence's mean NLL (Fan et al.,
  2024) ``+ retain_weight * CE_retain``.
- `RMUTrainer` (causal LMs only): the same pairing, one block's hidden states pulled to a random vector on forget
  sequences and to the original's on retain sequences (Li et al., 2024).
- `NegGradPlusTrainer`: each step pairs a retain and a forget batch: ``beta * CE_retain - (1 - beta) * CE_forget``.
- `BadTeacherTrainer`: mixed batches distilled from the original model (retain examples) and from a randomly
  initialised copy (forget examples).
Retrain, the gold standard (train on the retain set from where the original started: from scratch, or from the
pretrained checkpoint it was fine-tuned from, `fresh_model_like`), is `FinetuneTrainer` on that fresh model; see
`hf_scrub.pipeline`.

The first six run on causal LMs too, per next-token position (`hf_scrub.lm_losses`): a cross-entropy term is the
mean over its set's loss-carrying tokens in the step, NPO's and SimNPO's forget terms and RMU's terms the mean over
their set's sequences (`token_group_means`, `hf_scrub.schedule.weight_by_tokens`), with the same masks: only
loss-carrying tokens count. NegGrad+ and Bad-Teacher are classifier-only: for causal LMs GradDiff, NPO, SimNPO and
RMU are the field's counterparts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from .config import BadTeacherConfig, NegGradPlusConfig, NPOConfig, RMUConfig, SimNPOConfig, UnlearningConfig
from .lm_losses import (
    next_token_mask,
    npo_loss,
    representation_distance,
    sequence_log_likelihood,
    simnpo_loss,
    spread_over_tokens,
    token_terms,
)
from .losses import bad_teacher_loss, cross_entropy_per_item, neggrad_plus_loss
from .schedule import (
    GroupMean,
    OptimizerStep,
    Phase,
    build_mixed_schedule,
    build_paired_schedule,
    build_schedule,
)
from .tasks import is_causal_lm
from .teacher import FrozenTeacher, build_teacher
from .unlearning_trainer import Tags, UnlearningTrainer


class _CrossEntropyBaseline(UnlearningTrainer):
    """A baseline made of cross-entropy terms, per example for a classifier, per next-token position for a causal LM.

    The per-item tensor `unlearning_loss` returns is then ``(B,)`` or ``(B, L - 1)``; the helpers here give each
    method one code path for both.
    """

    supports_causal_lm = True

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Float32 cross-entropy per example, or per position for a causal LM (0 where nothing is predicted)."""
        if self.token_level:
            return token_terms(logits, None, labels, chunk_size=self.args.token_chunk_size)[1]
        return cross_entropy_per_item(logits, labels)

    def per_item(self, rows: torch.Tensor) -> torch.Tensor:
        """A per-example mask shaped to broadcast against the per-item losses."""
        return rows[:, None] if self.token_level else rows

    def counted(self, tags: Tags, rows: torch.Tensor) -> torch.Tensor:
        """What a cross-entropy metric averages over: the real examples among `rows`, or their loss-carrying tokens."""
        real = tags.real & rows
        return next_token_mask(tags.labels) & real[:, None] if self.token_level else real

    def forget_paired_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        """GradDiff's and NPO's steps: every epoch one pass over the forget set, each forget batch paired with a
        retain batch (the retain set cycled), as the LLM-unlearning literature runs them (TOFU)."""
        return build_paired_schedule(
            num_forget, num_retain, forget_batch_size=self.args.per_device_forget_batch_size,
            retain_batch_size=self._train_batch_size, num_epochs=int(self.args.num_train_epochs),
            gradient_accumulation_steps=self.args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes, passes_over=Phase.FORGET, seed=self.schedule_seed,
        )  # fmt: skip


class FinetuneTrainer(_CrossEntropyBaseline):
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
        ce = self.cross_entropy(outputs.logits, tags.labels)
        self.record_metric("retain_ce", ce, self.counted(tags, tags.real))
        return ce, outputs


class NegGradTrainer(_CrossEntropyBaseline):
    """Gradient ascent: every epoch one pass over the forget set, minimising ``-CE`` (per token for a causal LM)."""

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
        ce = self.cross_entropy(outputs.logits, tags.labels)
        self.record_metric("forget_ce", ce, self.counted(tags, tags.real))
        return -ce, outputs


class GradDiffTrainer(_CrossEntropyBaseline):
    """Gradient difference: ``-CE_forget + CE_retain``, each the mean over its set in the step (its tokens, for a
    causal LM), every forget batch paired with a retain batch (`forget_paired_schedule`)."""

    method_name = "graddiff"
    token_group_means = {Phase.FORGET: GroupMean.TOKENS, Phase.RETAIN: GroupMean.TOKENS}

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return self.forget_paired_schedule(num_forget, num_retain)

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        outputs = model(**inputs)
        is_forget = tags.sources == Phase.FORGET
        ce = self.cross_entropy(outputs.logits, tags.labels)
        self.record_metric("forget_ce", ce, self.counted(tags, is_forget))
        self.record_metric("retain_ce", ce, self.counted(tags, ~is_forget))
        return torch.where(self.per_item(is_forget), -ce, ce), outputs


class NPOTrainer(_CrossEntropyBaseline):
    """Negative Preference Optimization (Zhang et al., 2024) with a retain term, on paired steps like GradDiff.

    Per forget sequence, `npo_loss` of its log-likelihood under the student against the frozen original's (the
    reference: a frozen copy, or for fresh LoRA adapters the same model with adapters disabled, as SCRUB's teacher),
    averaged over the step's forget sequences; plus ``retain_weight`` times the retain cross-entropy, averaged over
    the step's retain tokens. For a classifier a "sequence" is one example and its log-likelihood ``log p(y | x)``.
    For a causal LM each forget sequence's value is spread over its loss-carrying positions
    (`spread_over_tokens`), so that the per-position tensor carries both terms and the schedule's per-sequence
    weights (`GroupMean.SEQUENCES`) make it the mean over sequences.
    """

    method_name = "npo"
    config_class = NPOConfig
    token_group_means = {Phase.FORGET: GroupMean.SEQUENCES, Phase.RETAIN: GroupMean.TOKENS}

    def setup_original(self, model: nn.Module, args: NPOConfig, num_labels: int | None) -> None:
        self.teacher = build_teacher(model, None)  # the reference model, built as SCRUB's teacher is

    def place_teachers(self) -> None:
        self.teacher.prepare(self.accelerator)

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return self.forget_paired_schedule(num_forget, num_retain)

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        args: NPOConfig = self.args
        reference_logits = self.teacher.logits(model, inputs)
        outputs = model(**inputs)
        is_forget = tags.sources == Phase.FORGET
        ce = self.cross_entropy(outputs.logits, tags.labels)
        if self.token_level:
            student_likelihood = -ce.sum(-1)  # the same float32 sum `sequence_log_likelihood` takes
            reference_likelihood = sequence_log_likelihood(reference_logits, tags.labels, args.token_chunk_size)
        else:
            student_likelihood = -ce
            reference_likelihood = -cross_entropy_per_item(reference_logits, tags.labels)
        npo = npo_loss(student_likelihood, reference_likelihood, args.npo_beta)
        self.record_metric("forget_npo", npo, tags.real & is_forget)
        self.record_metric("forget_ce", ce, self.counted(tags, is_forget))
        self.record_metric("retain_ce", ce, self.counted(tags, ~is_forget))
        forget_term = spread_over_tokens(npo, tags.labels) if self.token_level else npo
        return torch.where(self.per_item(is_forget), forget_term, args.retain_weight * ce), outputs


class SimNPOTrainer(_CrossEntropyBaseline):
    """SimNPO (Fan et al., 2024) with a retain term, on paired steps like GradDiff and NPO, without a reference model.

    Per forget sequence, `simnpo_loss` of its mean NLL over its loss-carrying tokens, averaged over the step's forget
    sequences and weighted by ``forget_weight``; plus ``retain_weight`` times the retain cross-entropy, averaged over
    the step's retain tokens (OpenUnlearning's SimNPO). For a classifier a sequence is one example.
    """

    method_name = "simnpo"
    config_class = SimNPOConfig
    token_group_means = {Phase.FORGET: GroupMean.SEQUENCES, Phase.RETAIN: GroupMean.TOKENS}

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return self.forget_paired_schedule(num_forget, num_retain)

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        args: SimNPOConfig = self.args
        outputs = model(**inputs)
        is_forget = tags.sources == Phase.FORGET
        ce = self.cross_entropy(outputs.logits, tags.labels)
        mean_nll = ce.sum(-1) / next_token_mask(tags.labels).sum(-1).clamp(min=1) if self.token_level else ce
        simnpo = simnpo_loss(mean_nll, args.simnpo_beta, args.simnpo_delta)
        self.record_metric("forget_simnpo", simnpo, tags.real & is_forget)
        self.record_metric("forget_ce", ce, self.counted(tags, is_forget))
        self.record_metric("retain_ce", ce, self.counted(tags, ~is_forget))
        forget_term = args.forget_weight * (spread_over_tokens(simnpo, tags.labels) if self.token_level else simnpo)
        return torch.where(self.per_item(is_forget), forget_term, args.retain_weight * ce), outputs


def transformer_block(model: nn.Module, index: int) -> nn.Module:
    """Block `index` of a transformer: the model's (first) `nn.ModuleList` with ``config.num_hidden_layers`` entries
    (``model.layers`` for Llama, Qwen or Mistral, ``transformer.h`` for GPT-2), found the same way through peft,
    DDP or DeepSpeed wrappers."""
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    blocks = next(
        (module for _, module in model.named_modules() if isinstance(module, nn.ModuleList) and len(module) == count),
        None,
    )
    if blocks is None:
        raise ValueError(
            "--method rmu steers the hidden states of one transformer block, and this model's blocks were not found "
            "(no nn.ModuleList of config.num_hidden_layers modules)."
        )
    if not 0 <= index < len(blocks):
        raise ValueError(
            f"--rmu_layer {index}: the model has {len(blocks)} transformer blocks (0..{len(blocks) - 1}). Pick one of "
            "them (RMU's authors steer an early-middle block, e.g. 7 of 32)."
        )
    return blocks[index]


@contextlib.contextmanager
def captured_output(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects `module`'s output (its hidden states: the first element of a tuple) in every forward inside the
    block, with PyTorch's public forward hooks."""
    outputs: list[torch.Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield outputs
    finally:
        handle.remove()


class RMUTrainer(_CrossEntropyBaseline):
    """RMU (Li et al., 2024, representation misdirection for unlearning), causal LMs only, on paired steps.

    The hidden states that block `rmu_layer` outputs for a forget sequence are pulled towards ``c u`` (u a random
    unit vector drawn once from the run's seed, uniform in [0, 1) per dimension and normalised, as OpenUnlearning
    draws it; c = `rmu_steering_coeff`), those of a retain sequence towards the frozen original model's: each
    sequence's `representation_distance` over its loss-carrying tokens, each set averaged over its sequences in the
    step (OpenUnlearning's RMU), weighted by ``forget_weight`` and ``retain_weight``. The original is built as
    SCRUB's teacher (adapters disabled for fresh LoRA, otherwise a frozen copy); every trainable parameter trains
    (OpenUnlearning's default), those above the block get no gradient from this loss.
    """

    method_name = "rmu"
    config_class = RMUConfig
    token_group_means = {Phase.FORGET: GroupMean.SEQUENCES, Phase.RETAIN: GroupMean.SEQUENCES}

    def setup_original(self, model: nn.Module, args: RMUConfig, num_labels: int | None) -> None:
        if not is_causal_lm(model):
            raise ValueError(
                "--method rmu steers a causal language model's hidden states; for classifiers use scrub or another "
                "baseline."
            )
        self.block = transformer_block(model, args.rmu_layer)
        self.teacher = build_teacher(model, None)
        generator = torch.Generator().manual_seed(args.seed)
        direction = torch.rand(model.config.hidden_size, generator=generator)
        self.control_vector = direction / direction.norm() * args.rmu_steering_coeff

    def place_teachers(self) -> None:
        self.teacher.prepare(self.accelerator)
        # A frozen copy has its own blocks; the adapter-switching teachers run the student's own.
        frozen = isinstance(self.teacher, FrozenTeacher)
        self.teacher_block = transformer_block(self.teacher.module, self.args.rmu_layer) if frozen else self.block

    def build_schedule(self, num_forget: int, num_retain: int) -> list[OptimizerStep]:
        return self.forget_paired_schedule(num_forget, num_retain)

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        args: RMUConfig = self.args
        is_forget = tags.sources == Phase.FORGET
        with captured_output(self.block) as student_states:
            outputs = model(**inputs)
        hidden = student_states[0]
        targets = self.control_vector.to(hidden.device).expand_as(hidden)
        if (tags.real & ~is_forget).any():  # the original's hidden states, the retain rows' targets
            with captured_output(self.teacher_block) as reference_states:
                self.teacher.logits(model, inputs)
            targets = torch.where(is_forget[:, None, None], targets, reference_states[0].detach().to(hidden.dtype))
        distance = representation_distance(hidden, targets, tags.labels)
        self.record_metric("forget_rmu", distance, tags.real & is_forget)
        self.record_metric("retain_rmu", distance, tags.real & ~is_forget)
        weighted = torch.where(is_forget, args.forget_weight * distance, args.retain_weight * distance)
        return spread_over_tokens(weighted, tags.labels), outputs


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


def check_retrain_start(causal_lm: bool, init_from: str | None) -> None:
    """Refuse a causal-LM retrain without the pretrained checkpoint it starts from.

    A from-config random init of a language model would have to relearn the language from the retain set alone,
    which is not the retrain the original's fine-tuning is compared with.
    """
    if causal_lm and init_from is None:
        raise ValueError(
            "--method retrain on a causal LM needs --retrain_init_from: the pretrained checkpoint the original was "
            "fine-tuned from (the retrain fine-tunes it on the retain set). A randomly initialised language model "
            "is not a retrain of a fine-tuned one."
        )


def fresh_model_like(model: nn.Module, seed: int, init_from: str | None = None) -> nn.Module:
    """The Retrain baseline's starting point: the original's architecture and init recipe, none of its training.

    `init_from` (a pretrained checkpoint the original was fine-tuned from) gives that checkpoint, a classifier with
    a new head, a causal LM as it is; without it a classifier is initialised from its config, as a model trained
    from scratch was (refused for a causal LM, `check_retrain_start`).
    """
    causal_lm = is_causal_lm(model)
    check_retrain_start(causal_lm=causal_lm, init_from=init_from)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if init_from is None:
            return type(model)(model.config)
        if causal_lm:
            return type(model).from_pretrained(init_from)
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
    "graddiff": (GradDiffTrainer, UnlearningConfig),
    "npo": (NPOTrainer, NPOConfig),
    "simnpo": (SimNPOTrainer, SimNPOConfig),
    "rmu": (RMUTrainer, RMUConfig),
    "neggrad_plus": (NegGradPlusTrainer, NegGradPlusConfig),
    "bad_teacher": (BadTeacherTrainer, BadTeacherConfig),
}
