"""`ScrubTrainer`: SCRUB on the Hugging Face `Trainer`.

Where things are:
- the losses: `hf_scrub.losses` (pure functions), applied per phase in `ScrubTrainer.unlearning_loss`;
- the epoch schedule: `hf_scrub.schedule.build_schedule` (forget pass of max-steps, then retain pass of min-steps,
  while epoch <= forget_epochs; min-only afterwards); with `schedule="auto"` the goal-driven rules of
  `hf_scrub.goal` (step sizes, which forget passes apply, when to stop);
- the teacher: `hf_scrub.teacher.build_teacher`, copied in `setup_original`, placed by accelerate in
  `place_teachers`;
- the Trainer plumbing shared with the baselines (schedule feeding, weighting, history, rewind):
  `hf_scrub.unlearning_trainer.UnlearningTrainer`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import ScrubConfig
from .data import label_column_of, label_values
from .goal import PROBE_EXAMPLES, GoalController, target_for
from .lm_losses import next_token_mask, token_forget_loss, token_retain_loss
from .losses import forget_loss, kd_distance, retain_loss
from .phase_state import PhaseStates
from .rewind import load_whole_state
from .schedule import OptimizerStep, Phase, build_schedule
from .teacher import build_teacher
from .unlearning_trainer import Tags, UnlearningTrainer

logger = logging.getLogger(__name__)


def _labels(dataset: Any) -> np.ndarray:
    """The integer labels of a forget / retain set, read without running its transform where possible."""
    if isinstance(dataset, datasets.Dataset) and label_column_of(dataset) is not None:
        return label_values(dataset, label_column_of(dataset))
    return np.array([int(dataset[i]["labels"]) for i in range(len(dataset))])


def _on_cpu(state: Any) -> Any:
    """A copy of an optimizer state dict with every tensor on CPU (`load_state_dict` moves them back)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_on_cpu(value) for value in state)
    return state


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout), except that BatchNorm layers normalise with the batch's own statistics; their running
    averages, and every other buffer, are left exactly as they were."""
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    saved = [(module.momentum, module.num_batches_tracked.clone()) for module in norms if module.track_running_stats]
    was_training = model.training
    model.eval()
    try:
        for module in norms:
            module.train()
            module.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
        yield
    finally:
        for module, (momentum, tracked) in zip((m for m in norms if m.track_running_stats), saved, strict=True):
            module.momentum = momentum
            module.num_batches_tracked.copy_(tracked)
        model.train(was_training)


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


def check_causal_lm_settings(args: ScrubConfig) -> None:
    """What SCRUB on a causal LM does not offer (yet), refused with the alternative (docs/design.md §19)."""
    if args.schedule == "auto":
        raise ValueError(
            "schedule='auto' is not available for causal language models yet: its targets are per-example "
            "class errors. Use schedule='fixed', e.g. ScrubConfig.from_preset('llm') (--preset llm, the CLI's "
            "default for causal LMs)."
        )
    if args.cache_teacher_outputs:
        raise ValueError(
            "cache_teacher_outputs=True would hold the teacher's logits for every token of every example "
            "(examples x length x vocabulary floats: about 20 GB for 1,000 sequences of 100 tokens over SmolLM2's "
            "49,152 tokens). It is refused for causal LMs; leave it unset: the teacher runs in each step (with "
            "LoRA it is the same model with adapters disabled, no second copy)."
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
            forgotten classes): its error is recorded every epoch, and SCRUB+R (`args.rewind`) needs it; with
            `args.schedule="auto"` it is the reference the forget target comes from.
        forget_validation_is_unseen: False when the forget-validation examples were part of the original model's
            training data (e.g. held out of the training split afterwards): they then cannot tell what unseen data
            looks like, and the goal-driven schedule does not take a selective target from them.
        peft_config: a `peft.PeftConfig` (e.g. `LoraConfig`): wrap `model` with fresh adapters and train only them;
            the teacher is then the same model with adapters disabled.
        eval_dataset, data_collator, processing_class, **kwargs: as for `transformers.Trainer`.
    """

    config_class = ScrubConfig
    method_name = "scrub"
    supports_causal_lm = True
    phase_names = {Phase.FORGET: "max-step on the forget set", Phase.RETAIN: "min-step on the retain set"}

    def __init__(
        self,
        model: nn.Module,
        args: ScrubConfig,
        forget_dataset: Any,
        retain_dataset: Any,
        teacher_model: nn.Module | None = None,
        forget_validation_is_unseen: bool = True,
        **kwargs: Any,
    ) -> None:
        self._given_teacher = teacher_model
        self._memoise_teacher = False
        self._teacher_memo: dict[Phase, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(model, args, forget_dataset, retain_dataset, **kwargs)
        self.goal: GoalController | None = None
        if self.token_level:
            check_causal_lm_settings(args)
        if args.schedule == "auto":
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "schedule='auto' is not available under DeepSpeed or FSDP yet (its per-step decisions are not "
                    "verified there). Use schedule='fixed' (e.g. --preset transformer) for sharded runs."
                )
            validation = self.forget_validation_dataset
            forget_labels, retain_labels = _labels(forget_dataset), _labels(retain_dataset)
            target = target_for(
                forget_labels,
                retain_labels,
                0 if validation is None else len(validation),
                forget_validation_is_unseen,
            )
            num_classes = self.teacher.num_outputs or len(set(forget_labels) | set(retain_labels))
            self.goal = GoalController(target, int(args.num_train_epochs), args.forget_epochs, num_classes)
            # The weights and optimizer state from before the current forget pass, on CPU: a pass that broke the
            # model is undone (hf_scrub.goal).
            self._pass_snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
            self._forget_counts = torch.zeros(2, device=self.accelerator.device)
            self._step_snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
            self._probe_inputs: dict[str, torch.Tensor] | None = None
            self._phase_states: PhaseStates | None = None
            self._probe_reference: torch.Tensor | None = None  # probe logits at the current forget pass's start
            logger.info("Goal-driven schedule: %s target, budget %d epochs", target.kind, int(args.num_train_epochs))

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
        """The paper's schedule; for `schedule="auto"` every epoch of the budget has a forget pass, which the goal
        rules apply or skip. `retain_steps_per_forget_step` bounds each retain pass by the forget pass's length."""
        args: ScrubConfig = self.args
        slots = args.gradient_accumulation_steps * self.accelerator.num_processes
        max_retain = None
        if args.retain_steps_per_forget_step is not None:
            forget_steps = math.ceil(num_forget / (args.per_device_forget_batch_size * slots))
            retain_steps = math.ceil(args.retain_steps_per_forget_step * forget_steps)
            max_retain = retain_steps * self._train_batch_size * slots
        num_epochs = int(args.num_train_epochs)
        return build_schedule(
            num_forget,
            num_retain,
            forget_batch_size=args.per_device_forget_batch_size,
            retain_batch_size=self._train_batch_size,
            num_epochs=num_epochs,
            forget_epochs=num_epochs if self.goal is not None else args.forget_epochs,
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            num_processes=self.accelerator.num_processes,
            retain_fraction=args.retain_fraction,
            max_retain_examples=max_retain,
            retain_warmup_steps=self.retain_warmup_steps,
            seed=self.schedule_seed,
        )

    @property
    def retain_warmup_steps(self) -> int:
        """Min-steps before the first forget pass: unset means 1 for causal LMs (whose fresh LoRA adapters or
        dropout-free student would otherwise start the max-steps at a zero gradient), 0 otherwise."""
        configured = self.args.retain_warmup_steps
        return configured if configured is not None else int(self.token_level)

    # ---- the goal-driven schedule (hf_scrub.goal) ----------------------------------------------------------

    @property
    def adapts_learning_rate(self) -> bool:
        return self.goal is not None

    def lr_scale(self, step: OptimizerStep) -> float:
        return 1.0 if self.goal is None else self.goal.lr_scale(step.phase is Phase.FORGET)

    def before_optimizer_step(self, step: OptimizerStep) -> None:
        """Keep the state from before an applied forget step: a step that moves the retain probe too far is
        reverted (hf_scrub.goal, `DRIFT_LIMIT`), BatchNorm statistics included: this runs before its forward."""
        if self.goal is None:
            return
        self._phase_states.switch(step.phase.value)
        if step.phase is not Phase.FORGET or not self.goal.forget_steps_apply:
            return
        self._step_snapshot = self._snapshot()
        if self._probe_reference is None:  # the pass's first applied step: its side effects are measured from here
            self._probe_reference = self._probe_logits()

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; under the goal-driven schedule with one state per phase (hf_scrub.phase_state),
        set up before a resumed run loads its checkpoint's optimizer state."""
        optimizer = super().create_optimizer(model)
        if self.goal is not None and self._phase_states is None:
            self._phase_states = PhaseStates(getattr(optimizer, "optimizer", optimizer))
        return optimizer

    def after_optimizer_step(self, step: OptimizerStep) -> None:
        if self.goal is None:
            return
        if step.phase is Phase.RETAIN:
            # Repairing what this epoch's forget pass did (none: a warm-up or repair-only epoch runs in full).
            if self._probe_reference is not None and self.goal.retain_steps_apply:
                self.goal.after_retain_step(self._probe_drift())
            return
        counts = self._forget_counts
        if self.accelerator.num_processes > 1:
            counts = self.accelerator.reduce(counts, reduction="sum")
        wrong, seen = counts.tolist()
        drift = self._probe_drift() if self.goal.forget_steps_apply else None
        if self.goal.after_forget_step(wrong, int(seen), drift):
            self._restore(self._step_snapshot)
        self._step_snapshot = None
        self._forget_counts.zero_()

    def _probe_drift(self) -> float:
        """The probe's distance (``d`` at temperature 1, nats, mean over the probe) from the current forget pass's
        start."""
        drift = kd_distance(self._probe_logits(), self._probe_reference, 1.0).mean()
        if self.accelerator.num_processes > 1:  # the same probe everywhere: one decision for every rank
            drift = self.accelerator.reduce(drift, reduction="mean")
        return float(drift)

    @torch.no_grad()
    def _probe_logits(self) -> torch.Tensor:
        """The student's logits on a fixed probe of `PROBE_EXAMPLES` retain examples, without dropout and with
        normalisation layers on the probe's own batch statistics: during a forget pass BatchNorm's running averages
        carry the forget batches' statistics (the retain pass re-estimates them), which would hide what the weights
        did. The forget step's side effect is the distance of these logits from the pass's start."""
        if self._probe_inputs is None:
            retain = self._drop_unused_columns(self.train_dataset, "retain")
            rows = np.random.default_rng(self.args.seed).permutation(len(retain))[:PROBE_EXAMPLES]
            batch = self._prepare_inputs(self.data_collator([retain[int(row)] for row in rows]))
            self._probe_inputs = {key: value for key, value in batch.items() if key != "labels"}
        with batch_statistics(self.model):
            return self.model(**self._probe_inputs).logits.float()

    def after_epoch(self, epoch: int, entry: dict[str, float], log: bool = True) -> bool:
        if self.goal is None:
            return False
        stop = self.goal.after_epoch(
            epoch,
            forget_error=entry["forget_error"],
            reference_error=entry.get("forget_validation_error"),
            retain_error=entry["retain_error"],
            original_retain=self.scrub_history[0]["retain_error"],  # epoch 0: logged before this call
        )
        if log:
            decision = self.goal.state.history[-1]
            self.log({f"goal_{key}": float(value) for key, value in decision.items() if key not in ("status", "aim")})
            if self.goal.state.undo_pass:
                self._undo_forget_pass(epoch)
            self._snapshot_before_pass(stop)
        return stop

    def _snapshot_before_pass(self, stop: bool) -> None:
        """Keep the weights and optimizer state (on CPU) when the next epoch has a forget pass, for its undo."""
        self._pass_snapshot = None
        self._probe_reference = None  # the next forget pass measures its side effects from its own start
        if not stop and self.goal.state.forget_pass_open:
            self._pass_snapshot = self._snapshot()

    def _snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The trainable weights, buffers and optimizer state, copied to CPU."""
        optimizer_state = _on_cpu(self.optimizer.state_dict()) if self.optimizer is not None else {}
        return self._candidate_state(), optimizer_state

    def _restore(self, snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> None:
        weights, optimizer_state = snapshot
        load_whole_state(self.accelerator.unwrap_model(self.model), weights, self._sharding)
        if optimizer_state:
            self.optimizer.load_state_dict(optimizer_state)

    def _undo_forget_pass(self, epoch: int) -> None:
        """Restore the weights and optimizer state from before this epoch's forget pass, and record the epoch again
        with the errors of the model it now is (the previous epoch's), so that the history, SCRUB+R and a resumed
        run see the model that is kept. The goal's log entry keeps the broken pass's retain error."""
        self._restore(self._pass_snapshot)
        kept = {key: value for key, value in self.scrub_history[-2].items() if key.endswith("_error")}
        self.log({"scrub_epoch": epoch, **kept})
        logger.warning("Goal-driven schedule: epoch %d's forget pass broke the model; undone, redone smaller.", epoch)

    def resume_epochs(self, history: list[dict[str, float]]) -> None:
        """Replay the epoch decisions of the epochs before the checkpoint (an undone pass as undone), and restore the
        forget step size and its ceiling they logged."""
        if self.goal is None:
            return
        undone = {int(entry["goal_epoch"]) for entry in self.state.log_history if entry.get("goal_undo_pass")}
        for entry in history:
            epoch = int(entry["scrub_epoch"])
            if epoch in undone:
                self.goal.replay_undo(epoch)
            else:
                self.after_epoch(epoch, entry, log=False)
        logged = [entry for entry in self.state.log_history if "goal_forget_scale" in entry]
        if logged:  # the forget scale and its ceiling move inside forget passes; the replay above rebuilt the rest
            self.goal.state.forget_scale = logged[-1]["goal_forget_scale"]
            self.goal.state.scale_ceiling = logged[-1].get("goal_scale_ceiling", self.goal.state.scale_ceiling)
        # A checkpoint saved mid-epoch resumes inside a pass: an undo then returns to the checkpoint, not the start.
        self._snapshot_before_pass(self.goal.state.stopped_because is not None)
        self.refresh_learning_rate()

    @property
    def stopped_because(self) -> str:
        if self.goal is None or self.goal.state.stopped_because is None:
            return super().stopped_because
        return f"goal-driven schedule: {self.goal.state.stopped_because}"

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        """Max-step (``-d``) on forget batches, min-step (``gamma * CE + alpha * d``) on retain batches."""
        args: ScrubConfig = self.args
        if self.goal is not None and not (
            self.goal.forget_steps_apply if tags.phase is Phase.FORGET else self.goal.retain_steps_apply
        ):
            return self._skipped_step(model, inputs, tags)
        teacher_logits = tags.teacher_logits
        if teacher_logits is None:
            teacher_logits = self._teacher_logits(model, inputs, tags)
        if tags.phase is Phase.FORGET and self.goal is not None:
            self._count_forget_errors(model, inputs, tags)
        outputs = model(**inputs)
        if self.token_level:
            return self._token_loss(outputs, teacher_logits, tags), outputs
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

    def _token_loss(self, outputs: Any, teacher_logits: torch.Tensor, tags: Tags) -> torch.Tensor:
        """The causal-LM form: per next-token position, zero where the label is -100 (hf_scrub.lm_losses)."""
        args: ScrubConfig = self.args
        chunk = args.token_chunk_size
        counted = next_token_mask(tags.labels) & tags.real[:, None]
        if tags.phase is Phase.FORGET:
            per_token = token_forget_loss(outputs.logits, teacher_logits, tags.labels, args.kd_temperature, chunk)
            self.record_metric("forget_kl", -per_token, counted)
            return per_token
        per_token, ce, distance = token_retain_loss(
            outputs.logits, teacher_logits, tags.labels, args.kd_temperature, args.gamma, args.alpha, chunk
        )
        self.record_metric("retain_kl", distance, counted)
        self.record_metric("retain_ce", ce, counted)
        return per_token

    @torch.no_grad()
    def _count_forget_errors(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> None:
        """The range test's signal: how many of the batch the student (eval mode, before this step) gets wrong."""
        model.eval()
        try:
            predictions = model(**inputs).logits.argmax(-1)
        finally:
            model.train()
        wrong = (predictions != tags.labels) & tags.real
        self._forget_counts += torch.stack([wrong.sum(), tags.real.sum()]).to(self._forget_counts)

    def _skipped_step(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        """A step the goal rules turned off (a closed forget pass, a retain pass whose repair is done): its learning
        rate is 0 (`lr_scale`) and it yields no gradient.

        Without a gradient scaler nothing is computed and no parameter gets a gradient, so the optimizer leaves
        every parameter and its state untouched. fp16's `GradScaler` needs gradients to check, so there the step
        runs with its loss times 0 (at learning rate 0 the weights still do not move).
        """
        if self.accelerator.scaler is None:
            return torch.zeros(len(tags.real), device=tags.real.device, requires_grad=True), None
        outputs = model(**inputs)
        return outputs.logits.float().sum(-1) * 0.0, outputs

    # ---- teacher outputs: computed per step, memoised, or cached before training ---------------------------

    def _teacher_logits(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> torch.Tensor:
        """The teacher's logits for the micro-batch; with memoisation on, each example's are computed once."""
        memo = self._teacher_memo.get(tags.phase) if self._memoise_teacher else None
        if memo is not None and bool(memo[1][tags.rows.to(memo[1].device)].all()):
            return memo[0][tags.rows.to(memo[0].device)]
        logits = self.teacher.logits(model, inputs)
        if self._memoise_teacher and logits.dim() == 2 and tags.phase in (Phase.FORGET, Phase.RETAIN):
            if memo is None:
                size = len(self.forget_dataset if tags.phase is Phase.FORGET else self.train_dataset)
                memo = (
                    torch.zeros(size, logits.shape[-1], device=logits.device),
                    torch.zeros(size, dtype=torch.bool, device=logits.device),
                )
                self._teacher_memo[tags.phase] = memo
            rows = tags.rows.to(logits.device)
            memo[0][rows] = logits.float()
            memo[1][rows] = True
        return logits

    def _can_memoise(self, forget_dataset: Any, retain_dataset: Any) -> bool:
        """Memoise the teacher when reading an example twice gives the same inputs and the teacher is whole."""
        if self.is_deepspeed_enabled or self.is_fsdp_enabled:
            return False  # a sharded teacher's forward is collective: every rank must run it in every step
        try:
            check_deterministic(forget_dataset, "forget")
            check_deterministic(retain_dataset, "retain")
        except ValueError:
            logger.info("Teacher outputs are not memoised: the inputs change between reads (augmentation).")
            return False
        return True

    def teacher_logits_cache(self, forget_dataset: Any, retain_dataset: Any) -> dict[Phase, torch.Tensor] | None:
        if self.args.cache_teacher_outputs is None:  # auto: memoise under the goal-driven schedule only, so that
            # the fixed schedule stays exactly the paper's run, number for number
            self._memoise_teacher = self.goal is not None and self._can_memoise(forget_dataset, retain_dataset)
            self._teacher_memo = {}
            return None
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
