"""`ScrubTrainer`: SCRUB on the Hugging Face `Trainer`.

Where things are:
- the losses: `hf_scrub.losses` (pure functions), applied per phase in `ScrubTrainer.unlearning_loss`;
- the epoch schedule: `hf_scrub.schedule.build_schedule` (forget pass of max-steps, then retain pass of min-steps,
  while epoch <= forget_epochs; min-only afterwards); with `schedule="auto"` the goal-driven rules of
  `hf_scrub.goal` (the per-row gate, step sizes by backtracking, when to stop) judged by `hf_scrub.judge`;
- the teacher: `hf_scrub.teacher.build_teacher`, copied in `setup_original`, placed by accelerate in
  `place_teachers`;
- the Trainer plumbing shared with the baselines (schedule feeding, weighting, history, judge, best epoch):
  `hf_scrub.unlearning_trainer.UnlearningTrainer`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import ScrubConfig
from .evaluation import TokenPredictions
from .goal import AutoSchedule
from .judge import RETAIN_TOLERANCE, Evidence, Judgement, Kind, matched_quantiles
from .lm_losses import next_token_mask, token_forget_loss, token_retain_loss
from .lm_metrics import token_statistics
from .losses import (
    cross_entropy_per_item,
    forget_loss,
    gated,
    kd_distance,
    membership_scores,
    retain_loss,
    without_classes,
)
from .phase_state import PhaseStates
from .rewind import load_whole_state
from .schedule import OptimizerStep, Phase, build_schedule
from .teacher import build_teacher
from .unlearning_trainer import Tags, UnlearningTrainer

logger = logging.getLogger(__name__)


def _on_cpu(state: Any) -> Any:
    """A copy of an optimizer state dict with every tensor on CPU (`load_state_dict` moves them back)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {key: _on_cpu(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(_on_cpu(value) for value in state)
    return state


def _batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextmanager
def running_statistics_frozen(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise as their mode says, but their running averages (and `num_batches_tracked`) are left
    exactly as they were: a goal-driven forget batch holds forget rows only, and its statistics would pull the
    averages towards a distribution a model that never saw those rows does not know."""
    norms = _batch_norms(model)
    saved = [(module.momentum, module.num_batches_tracked.clone()) for module in norms]
    try:
        for module in norms:
            module.momentum = 0.0  # running = (1 - 0) * running + 0 * batch
        yield
    finally:
        for module, (momentum, tracked) in zip(norms, saved, strict=True):
            module.momentum = momentum
            module.num_batches_tracked.copy_(tracked)


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
    """What SCRUB on a causal LM does not offer, refused with the alternative (docs/design.md §19)."""
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
            forgotten classes): the judge's reference (`hf_scrub.judge`); SCRUB+R (`args.rewind`) needs it, and with
            `args.schedule="auto"` the forget rows' per-row targets come from it.
        forget_validation_is_unseen, peft_config, eval_dataset, data_collator, processing_class, **kwargs: see
            `UnlearningTrainer` and `transformers.Trainer`.
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
        **kwargs: Any,
    ) -> None:
        self._given_teacher = teacher_model
        self._memoise_teacher = False
        self._teacher_memo: dict[Phase, tuple[torch.Tensor, torch.Tensor]] = {}
        self.goal: AutoSchedule | None = None
        super().__init__(model, args, forget_dataset, retain_dataset, **kwargs)
        if self.token_level:
            check_causal_lm_settings(args)
        if args.schedule == "auto":
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                raise ValueError(
                    "schedule='auto' is not available under DeepSpeed or FSDP yet (its per-step undo copies whole "
                    "weights, which sharded runs do not hold). Use schedule='fixed' (e.g. --preset transformer)."
                )
            self.goal = AutoSchedule(
                self.request_kind, int(args.num_train_epochs), args.forget_epochs, self.retain_warmup_steps > 0
            )
            self._gate_targets: torch.Tensor | None = None  # per forget row, set at every epoch end (None: ungated)
            self._class_reference: np.ndarray | None = None  # a class request's reference scores (epoch 0)
            self._open_rows = torch.zeros((), device=self.accelerator.device)
            self._step_snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]] | None = None
            self._probe: list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]] | None = None
            self._probe_last: tuple[float, float] | None = None  # (accuracy, objective) after the last kept step
            self._phase_states: PhaseStates | None = None
            logger.info(
                "Goal-driven schedule: %s request, at most %d epochs", self.goal.kind.value, self.goal.budget_epochs
            )

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
            interleave=self.goal is not None,
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

    @property
    def keeps_best_epoch(self) -> bool:
        """SCRUB+R and the goal-driven schedule return the best epoch by the judge; with no unseen reference the
        judge cannot rank forgetting, so the last epoch is returned."""
        return (self.args.rewind or self.goal is not None) and self.request_kind is not Kind.NONE

    def lr_scale(self, step: OptimizerStep) -> float:
        return 1.0 if self.goal is None else self.goal.lr_scale(step.phase is Phase.FORGET)

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The Trainer's optimizer; under the goal-driven schedule with one state per phase (hf_scrub.phase_state),
        set up before a resumed run loads its checkpoint's optimizer state."""
        optimizer = super().create_optimizer(model)
        if self.goal is not None and self._phase_states is None:
            self._phase_states = PhaseStates(getattr(optimizer, "optimizer", optimizer))
        return optimizer

    def _applies(self, step: OptimizerStep) -> bool:
        return self.goal.forget_steps_apply if step.phase is Phase.FORGET else self.goal.retain_steps_apply

    def before_optimizer_step(self, step: OptimizerStep) -> None:
        """Before an applied step's first forward: keep the weights, buffers and optimizer state for its undo. A
        forget pass's first step first reads the probe: the pass only starts inside the retain tolerance."""
        if self.goal is None:
            return
        self._phase_states.switch(step.phase.value)
        if step.phase is Phase.FORGET and self._applies(step) and not self.goal.epoch.forget_started:
            accuracy, _ = self._probe_last = self._probe_measure()
            self.goal.start_forget_pass(self._within_retain(accuracy), self._damaged(accuracy))
            self.refresh_learning_rate()  # a pass that does not start: this step's rate is 0
        if not self._applies(step):
            self._step_snapshot = None
            return
        if step.phase is Phase.RETAIN and self._probe_last is None:
            self._probe_last = self._probe_measure()  # an epoch's first retain step is tested against this
        self._open_rows.zero_()
        self._step_snapshot = self._snapshot()

    def after_optimizer_step(self, step: OptimizerStep) -> None:
        """Test the step just made (`hf_scrub.goal`): undo it when the goal rules say so."""
        if self.goal is None or self._step_snapshot is None:
            return
        before = self._probe_last
        if step.phase is Phase.FORGET:
            open_rows = self._open_rows
            if self.accelerator.num_processes > 1:
                open_rows = self.accelerator.reduce(open_rows, reduction="sum")
            open_rows = int(open_rows.item())
            if open_rows:
                self._probe_last = self._probe_measure()
            accuracy = self._probe_last[0]
            undo = self.goal.after_forget_step(open_rows, self._within_retain(accuracy), self._damaged(accuracy))
            logger.debug("forget step %d: %d rows open", self.state.global_step, open_rows)
        else:
            accuracy, objective = self._probe_last = self._probe_measure()
            undo = self.goal.after_retain_step(
                improved=objective < before[1],
                damaged=self._damaged(accuracy),
                within_retain=self._within_retain(accuracy),
            )
        if undo:
            self._restore(self._step_snapshot)
            self._probe_last = before
        logger.debug(
            "step %d (%s, epoch %d): probe %s -> %s, %s; forget scale %.3g, retain scale %.3g",
            self.state.global_step,
            step.phase.name.lower(),
            step.epoch,
            before,
            self._probe_last,
            "undone" if undo else "kept",
            self.goal.forget_scale,
            self.goal.retain_scale,
        )
        self._step_snapshot = None

    def _damaged(self, probe_accuracy: float) -> bool:
        """The judge's retain rows read below the original: a retain step has something to repair."""
        return probe_accuracy < self.judge.original_retain_accuracy - 1e-12

    def _within_retain(self, probe_accuracy: float) -> bool:
        """The judge's retain test (`hf_scrub.judge.RETAIN_TOLERANCE`) on the probe, which is the judge's retain
        sample: a step kept by this test leaves the verdict's retain side where the test says."""
        return probe_accuracy >= self.judge.original_retain_accuracy - RETAIN_TOLERANCE - 1e-12

    def _min_step_teacher(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """The teacher a min-step distils from. Goal-driven class requests: the original's distribution with the
        forgotten classes removed and renormalised, what a model that never saw them predicts (docs/design.md §18);
        distilling the whole original on retain rows teaches the classes' logits back. Otherwise the original."""
        if self.goal is None or self.forget_classes is None:
            return teacher_logits
        return without_classes(teacher_logits, self.forget_classes)

    def _scored(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The items a loss is taken on, as (logits rows, targets): a classifier's examples, a causal LM's
        loss-carrying next-token positions."""
        if not self.token_level:
            return logits, labels
        mask = next_token_mask(labels)
        return logits[:, :-1][mask], labels[:, 1:][mask]

    @torch.no_grad()
    def _probe_measure(self) -> tuple[float, float]:
        """(accuracy, SCRUB's min-step objective ``gamma * CE + alpha * d``) of the student, per item, on the judge's
        retain rows (`judge_retain_rows`: the probe), in eval mode as the judge reads them. The same probe and
        teacher outputs on every process."""
        args: ScrubConfig = self.args
        if self._probe is None:
            self._probe = self._build_probe()
        totals = torch.zeros(3, device=self.accelerator.device)
        was_training = self.model.training
        self.model.eval()
        try:
            for inputs, labels, teacher_rows, targets in self._probe:
                rows, _ = self._scored(self.model(**inputs).logits, labels)
                ce = cross_entropy_per_item(rows, targets)
                objective = args.gamma * ce + args.alpha * kd_distance(rows, teacher_rows, args.kd_temperature)
                correct = (rows.argmax(-1) == targets).sum().float()
                totals += torch.stack([correct, objective.sum(), ce.new_tensor(len(targets))])
        finally:
            self.model.train(was_training)
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, reduction="mean")
        correct, objective, items = totals.tolist()
        return correct / items, objective / items

    def _build_probe(self) -> list[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]]:
        """The judge's retain rows, batched, with the teacher's outputs on them (computed once: the teacher is frozen;
        for a class request without the forgotten classes, as the min-steps see it)."""
        retain = self._drop_unused_columns(self.train_dataset, "retain")
        rows = [retain[row] for row in self.judge_retain_rows]
        probe, size = [], self.args.per_device_eval_batch_size
        for start in range(0, len(rows), size):
            inputs = dict(self._prepare_inputs(self.data_collator(rows[start : start + size])))
            labels = inputs.pop("labels")
            teacher_rows, targets = self._scored(
                self._min_step_teacher(self.teacher.logits(self.model, inputs)), labels
            )
            probe.append((inputs, labels, teacher_rows, targets))
        return probe

    def _snapshot(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The trainable weights, buffers and optimizer state, copied to CPU."""
        optimizer_state = _on_cpu(self.optimizer.state_dict()) if self.optimizer is not None else {}
        return self._candidate_state(), optimizer_state

    def _restore(self, snapshot: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> None:
        weights, optimizer_state = snapshot
        load_whole_state(self.accelerator.unwrap_model(self.model), weights, self._sharding)
        if optimizer_state:
            self.optimizer.load_state_dict(optimizer_state)

    def after_epoch(self, epoch: int, judgement: Judgement, evidence: Evidence) -> bool:
        if self.goal is None:
            return False
        if self.goal.kind is not Kind.NONE:
            # Each forget row's target for the next epoch: the reference's score at the row's own quantile among the
            # forget rows now (hf_scrub.judge.matched_quantiles). The reference: the original's scores on unseen
            # rows; for a class request the original's on its retain rows, the classes it keeps.
            if self._class_reference is None:
                self._class_reference = evidence.retain_scores
                self.state.log_history.append({"gate_class_reference": self._class_reference.tolist()})
            reference = self.judge.reference_scores if self.goal.kind is Kind.DISTRIBUTION else self._class_reference
            targets = matched_quantiles(evidence.forget_scores, reference)
            self._set_gate_targets(targets)
            self.state.log_history.append({"gate_targets": targets.tolist(), "gate_epoch": epoch})
        stop = self.goal.after_epoch(epoch, judgement)
        self.log({f"goal_{key}": value for key, value in self.goal.history[-1].items()})
        self._probe_last = None  # the next epoch's tests start from the model it begins with
        return stop

    def _set_gate_targets(self, targets: Any) -> None:
        self._gate_targets = torch.as_tensor(np.asarray(targets), dtype=torch.float32, device=self.accelerator.device)

    def before_checkpoint(self) -> None:
        """The goal-driven schedule's state goes into the checkpoint's log history: a run resumed from it, mid-epoch
        too, goes on exactly as the uninterrupted one."""
        if self.goal is not None:
            self.state.log_history.append({"goal_checkpoint": self.goal.snapshot(), "step": self.state.global_step})

    def resume_epochs(self, history: list[dict[str, float]]) -> None:
        """A resumed run: the gate's targets and the schedule's state written with the checkpoint."""
        if self.goal is None:
            return
        targets = [entry["gate_targets"] for entry in self.state.log_history if "gate_targets" in entry]
        if targets:
            self._set_gate_targets(targets[-1])
        reference = [
            entry["gate_class_reference"] for entry in self.state.log_history if "gate_class_reference" in entry
        ]
        if reference:
            self._class_reference = np.asarray(reference[0])
        saved = [entry["goal_checkpoint"] for entry in self.state.log_history if "goal_checkpoint" in entry]
        self.goal.restore(saved[-1])
        self.refresh_learning_rate()

    @property
    def stopped_because(self) -> str:
        if self.goal is None or self.goal.stopped_because is None:
            return super().stopped_because
        return f"goal-driven schedule: {self.goal.stopped_because}"

    # ---- the losses ----------------------------------------------------------------------------------------

    def unlearning_loss(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        """Max-step (``-d``) on forget batches, min-step (``gamma * CE + alpha * d``) on retain batches. Under the
        goal-driven schedule each forget row's max-step is gated (`_gate`)."""
        args: ScrubConfig = self.args
        forget = tags.phase is Phase.FORGET
        if self.goal is not None and not (self.goal.forget_steps_apply if forget else self.goal.retain_steps_apply):
            return self._skipped_step(model, inputs, tags)
        gate = tags.real.float()
        if forget and self.goal is not None:
            gate = self._gate(model, inputs, tags)
            self._open_rows += (gate != 0).reshape(len(gate), -1).any(-1).sum()
            if not gate.any() and self.accelerator.num_processes == 1:
                return self._skipped_step(model, inputs, tags)  # nothing to push: no forward needed
        teacher_logits = tags.teacher_logits
        if teacher_logits is None:
            teacher_logits = self._teacher_logits(model, inputs, tags)
        if forget and self.goal is not None:
            with running_statistics_frozen(model):
                outputs = model(**inputs)
        else:
            outputs = model(**inputs)
        if self.token_level:
            return self._token_loss(outputs, teacher_logits, tags, gate), outputs
        if forget:
            per_item = gated(forget_loss(outputs.logits, teacher_logits, args.kd_temperature), gate)
            self.record_metric(
                "forget_kl", kd_distance(outputs.logits, teacher_logits, args.kd_temperature), gate != 0
            )
        else:
            per_item, ce, distance = retain_loss(
                outputs.logits,
                self._min_step_teacher(teacher_logits),
                tags.labels,
                args.kd_temperature,
                args.gamma,
                args.alpha,
            )
            self.record_metric("retain_kl", distance, tags.real)
            self.record_metric("retain_ce", ce, tags.real)
        return per_item, outputs

    def _token_loss(self, outputs: Any, teacher_logits: torch.Tensor, tags: Tags, gate: torch.Tensor) -> torch.Tensor:
        """The causal-LM form: per next-token position, zero where the label is -100 (hf_scrub.lm_losses)."""
        args: ScrubConfig = self.args
        chunk = args.token_chunk_size
        if tags.phase is Phase.FORGET:
            distance = -token_forget_loss(outputs.logits, teacher_logits, tags.labels, args.kd_temperature, chunk)
            self.record_metric(
                "forget_kl", distance, next_token_mask(tags.labels) & (gate != 0).reshape(len(gate), -1)
            )
            return gated(-distance, gate)
        counted = next_token_mask(tags.labels) & tags.real[:, None]
        per_token, ce, distance = token_retain_loss(
            outputs.logits, teacher_logits, tags.labels, args.kd_temperature, args.gamma, args.alpha, chunk
        )
        self.record_metric("retain_kl", distance, counted)
        self.record_metric("retain_ce", ce, counted)
        return per_token

    @torch.no_grad()
    def _gate(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> torch.Tensor:
        """Each forget row's gate (`hf_scrub.losses.gated`), from its membership score under the student (eval mode,
        before this step) against its target: 1 (push, SCRUB's max-step) while the row is more member-like than the
        matched unseen row, 0 from there on (and for padding rows). A causal LM's row also pushes while greedy
        decoding still reproduces its answer (the judge's reproduction criterion, `hf_scrub.judge`), and its gate is
        per loss position, ``(B, L - 1)``: an open row pushes only the tokens its score reads (Min-K%: its least likely
        40 %, the facts), not the template every model predicts. With no reference (no targets) every row pushes,
        as in the paper's SCRUB."""
        if self._gate_targets is None:
            return tags.real.float()
        model.eval()
        try:
            logits = model(**inputs).logits
        finally:
            model.train()
        targets = self._gate_targets[tags.rows.to(self._gate_targets.device)]
        if self.token_level:  # the judge's score of the row, on the same numbers (docs/design.md §19)
            statistics = token_statistics(logits, tags.labels, self.args.token_chunk_size)
            rows = TokenPredictions(statistics.cpu().numpy(), tags.labels.cpu().numpy())
            below = torch.from_numpy(rows.membership_losses).to(logits.device) < targets
            reproduced = torch.from_numpy(rows.reproduced).to(logits.device)
            tokens = torch.from_numpy(rows.membership_tokens[:, 1:]).to(logits.device)  # loss positions
            return (((below | reproduced) & tags.real)[:, None] & tokens).float()
        below = membership_scores(logits, tags.labels, self.forget_classes) < targets
        return (below & tags.real).float()

    def _skipped_step(self, model: nn.Module, inputs: dict[str, Any], tags: Tags) -> tuple[torch.Tensor, Any]:
        """A step (or micro-batch) that changes nothing: a closed pass, or a forget batch with no open row. It yields
        no gradient.

        Without a gradient scaler nothing is computed and no parameter gets a gradient, so the optimizer leaves
        every parameter and its state untouched. fp16's `GradScaler` needs gradients to check, so there the step
        runs with its loss times 0 (its learning rate is 0, or the goal rules undo it).
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
