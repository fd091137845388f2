"""The goal-driven schedule (`ScrubConfig(schedule="auto")`): its step-size rule and when it stops; pure, no Trainer
(docs/design.md §18).

The idea in three lines:
1. **The objective stops itself per row.** A forget row pushes the student away from the teacher (SCRUB's max-step)
   only while it is more member-like than its target, the unseen reference's score at the row's own quantile
   (`hf_scrub.judge.matched_quantiles`); from there on it contributes exactly nothing (`losses.gated`). A pass
   cannot push a row past where an unseen row of its rank sits, and the forgetting ends by itself once no row is
   left to push.
2. **Every step is tested on the judge's own data, and sizes come from one rule, backtracking.** An epoch alternates
   forget and retain steps. A forget step is kept while the judge's retain rows stay inside its tolerance; a retain
   step runs only while they read below the original (there is damage to repair) and is kept when it lowers SCRUB's
   min-step objective on them (Armijo's sufficient decrease with c = 0). A step that fails is undone (weights,
   buffers, optimizer state) and its size halves; a kept forget step doubles the next one's, and the retain steps
   repair at the size the model last moved at.
3. **One judge stops the run and picks what it returns** (`hf_scrub.judge`): the run stops at the first epoch end
   where the judge says the forget target is met and retain kept, when no forget row is left to push and nothing
   needs repair (a further epoch would do nothing), or at the budget; the best epoch by the judge is returned.

The trainer reports to `AutoSchedule` and reads back: `start_forget_pass(within_retain)` before an epoch's first
forget step, `after_forget_step(open_rows, within_retain, damaged)` and `after_retain_step(improved, damaged)` after
each applied step (both return whether to undo it), `after_epoch(epoch, judgement)` at each epoch end (epoch 0: the
original), and `lr_scale(phase)` / `forget_steps_apply` / `retain_steps_apply` for the next step.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .judge import Judgement, Kind

GROWTH = 2.0  # a kept forget step doubles the next one's size; an undone step halves its phase's size


@dataclass
class PassState:
    """One epoch's state."""

    forget_started: bool = False  # the epoch's first forget step has come (retain steps before it: the warm-up)
    repair_only: bool = False  # no forget steps: the judge's retain rows are outside their tolerance
    damaged: bool = False  # the judge's retain rows read below the original: the next retain step repairs
    forget_kept: int = 0  # forget steps kept in this epoch
    largest_kept: float = 0.0  # the largest size of a kept forget step in this epoch
    open_rows: int = 0  # forget rows the gate let push, summed over this epoch's steps


@dataclass
class AutoSchedule:
    """The goal-driven schedule's state and rules (see the module docstring).

    `kind`: the request's `hf_scrub.judge.Kind`; `budget_epochs`: at most this many epochs; `forget_epochs`: with no
    reference (kind none) the run makes this many epochs of ungated forget steps, then repairs until retain is kept;
    `symmetric`: the run starts with warm-up min-steps (docs/design.md §14): forget steps wait until one is kept.
    """

    kind: Kind
    budget_epochs: int
    forget_epochs: int
    symmetric: bool = False  # the student is still exactly the teacher: a max-step's gradient is 0 (warm-up first)
    forget_scale: float = 1.0
    retain_scale: float = 1.0
    forget_passes: int = 0  # epochs that kept a forget step
    epoch: PassState = field(default_factory=PassState)
    stopped_because: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    # ---- inside an epoch -----------------------------------------------------------------------------------------

    @property
    def forget_steps_apply(self) -> bool:
        """Whether the next forget step applies: not in a repair epoch, and not while the student is still the
        teacher (its gradient would be exactly zero, and a step that changes nothing would pass every test)."""
        return not (self.epoch.repair_only or self.symmetric) and self.stopped_because is None

    @property
    def retain_steps_apply(self) -> bool:
        """Whether the next retain step applies: a warm-up step while the student is still the teacher
        (docs/design.md §14), any other while there is damage to repair."""
        if self.stopped_because is not None:
            return False
        return self.symmetric or self.epoch.damaged

    def lr_scale(self, forget_step: bool) -> float:
        """The next step's learning-rate multiplier; 0 for a step that does not apply."""
        if forget_step:
            return self.forget_scale if self.forget_steps_apply else 0.0
        return self.retain_scale if self.retain_steps_apply else 0.0

    def start_forget_pass(self, within_retain: bool, damaged: bool) -> None:
        """The epoch's first forget step is next. Forgetting only starts inside the retain tolerance: from outside it
        every forget step would be undone, whatever its size; the epoch repairs instead."""
        self.epoch.forget_started = True
        self.epoch.damaged = damaged
        if not within_retain:
            self.epoch.repair_only = True

    def after_forget_step(self, open_rows: int, within_retain: bool, damaged: bool) -> bool:
        """A forget step was made with `open_rows` rows pushing (over all processes); `within_retain` and `damaged`:
        the judge's retain rows after it are inside the tolerance / below the original. Returns True when the step
        must be undone.

        No open row: the step changed nothing the gate wanted (Adam's momentum would still have moved the weights),
        so it is undone and the size is unchanged. Outside the tolerance: undone; the size halves unless the step was
        no larger than one already kept this epoch (then the damage already done, not the step's size, is what
        failed, and the next retain step repairs it). Inside: kept, and the next forget step is tried twice as large.
        """
        state = self.epoch
        if open_rows == 0:
            return True
        state.open_rows += open_rows
        if not within_retain:
            if self.forget_scale > state.largest_kept:
                self.forget_scale /= GROWTH
            state.damaged = True
            return True
        state.forget_kept += 1
        state.largest_kept = max(state.largest_kept, self.forget_scale)
        state.damaged = damaged
        self.retain_scale = self.forget_scale  # a repair at the size the model moved at
        self.forget_scale *= GROWTH
        return False

    def after_retain_step(self, improved: bool, damaged: bool, within_retain: bool = True) -> bool:
        """A retain step was made; `improved`: it lowered the min-step objective on the judge's retain rows;
        `damaged` / `within_retain`: they read below the original / inside the tolerance after it. Returns True when
        the step must be undone (then the retain size halves). A repair is kept when it improved; a warm-up step is
        there to move the student off the teacher, where the max-step's gradient is exactly zero, not to lower the
        objective: it is kept while inside the tolerance, and then the forget steps may start."""
        if not (within_retain if self.symmetric else improved):
            self.retain_scale /= GROWTH
            return True
        self.symmetric = False
        self.epoch.damaged = damaged
        return False

    # ---- at an epoch end ---------------------------------------------------------------------------------------

    def after_epoch(self, epoch: int, judgement: Judgement) -> bool:
        """Decide the next epoch from this one's judgement (epoch 0: the original); True stops the run here."""
        state = self.epoch
        damaged = judgement.retain_accuracy < judgement.original_retain_accuracy
        if epoch == 0 and judgement.goal_reached:
            self.stopped_because = (
                "goal reached by the original model: its forget rows already look like unseen rows of their "
                "distribution, so no step was made"
            )
        if epoch > 0:
            self.forget_passes += state.forget_kept > 0
            if judgement.goal_reached:
                self.stopped_because = f"goal reached after epoch {epoch} of at most {self.budget_epochs}"
            elif self.kind is Kind.NONE and self.forget_passes >= self.forget_epochs and judgement.retain_kept:
                self.stopped_because = (
                    f"no unseen reference to judge the forget side by: {self.forget_passes} epochs of ungated forget "
                    f"steps made (forget_epochs) and retain kept after epoch {epoch}"
                )
            elif state.forget_started and not state.repair_only and state.open_rows == 0 and not damaged:
                self.stopped_because = (
                    f"no forget row left to push and nothing to repair after epoch {epoch}: a further epoch would "
                    "change nothing"
                )
            elif epoch >= self.budget_epochs:
                self.stopped_because = f"budget: all {self.budget_epochs} epochs run"
        forget_done = self.kind is Kind.NONE and self.forget_passes >= self.forget_epochs
        self.epoch = PassState(repair_only=not judgement.retain_kept or forget_done, damaged=damaged)
        self.history.append({"epoch": epoch, **self.to_log()})
        return self.stopped_because is not None

    def to_log(self) -> dict[str, float]:
        return {
            "forget_scale": self.forget_scale,
            "retain_scale": self.retain_scale,
            "repair_only": float(self.epoch.repair_only),
            "damaged": float(self.epoch.damaged),
            "forget_passes": float(self.forget_passes),
            "symmetric": float(self.symmetric),
        }

    def snapshot(self) -> dict[str, Any]:
        """Everything a resumed run needs to go on exactly from here, mid-epoch included (JSON-able)."""
        return {
            "forget_scale": self.forget_scale,
            "retain_scale": self.retain_scale,
            "forget_passes": self.forget_passes,
            "symmetric": self.symmetric,
            "stopped_because": self.stopped_because,
            "epoch": dataclasses.asdict(self.epoch),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Go on from a `snapshot` (a resumed run: the one its checkpoint was written with)."""
        self.forget_scale = snapshot["forget_scale"]
        self.retain_scale = snapshot["retain_scale"]
        self.forget_passes = int(snapshot["forget_passes"])
        self.symmetric = bool(snapshot["symmetric"])
        self.stopped_because = snapshot["stopped_because"]
        self.epoch = PassState(**snapshot["epoch"])
