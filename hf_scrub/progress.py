"""What an unlearning run prints: one progress bar per pass, one line per log, and no noise from unused libraries.

- `PhaseProgressCallback` takes the place of transformers' `ProgressCallback` in an `UnlearningTrainer` (when
  `disable_tqdm` is off; with it on, the Trainer's `PrinterCallback` prints the logs and no bar is shown). Instead of
  one bar for the whole run with the evaluations' bars nested in it, it shows, in order:
  "epoch 0 evaluation" (the original model), then per epoch "epoch k forget pass" (SCRUB's max-steps; "mixed pass"
  for the baselines whose steps mix both sets), "epoch k retain pass" and "epoch k evaluation" (the per-epoch errors
  of `UnlearningTrainer.record_epoch`). The pass bars count optimizer steps, from the trainer's `schedule`; an
  evaluation bar counts the prediction batches of all the `predict` calls of that evaluation. A `predict` outside
  training (the final evaluation) gets a bar of its own that disappears when it is done.
- DeepSpeed's accelerator detection warning ("Setting accelerator to CPU. If you have GPU or other accelerator, we
  were unable to detect it.") is dropped in processes that do not run DeepSpeed: accelerate imports deepspeed,
  whenever it is installed, to unwrap any model, and the warning then only says that DeepSpeed is not used.
"""

from __future__ import annotations

import itertools
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .schedule import OptimizerStep, Phase

if TYPE_CHECKING:
    from .unlearning_trainer import UnlearningTrainer

PASS_NAMES = {Phase.FORGET: "forget pass", Phase.RETAIN: "retain pass", Phase.MIXED: "mixed pass"}


@dataclass(frozen=True)
class Pass:
    """A run of consecutive optimizer steps of one epoch and phase: what one progress bar counts."""

    epoch: int
    phase: Phase
    first_step: int
    num_steps: int

    @property
    def description(self) -> str:
        return f"epoch {self.epoch} {PASS_NAMES[self.phase]}"


def passes(schedule: list[OptimizerStep]) -> list[Pass]:
    """The schedule cut into passes (e.g. epoch 1 forget pass, epoch 1 retain pass, epoch 2 forget pass, ...)."""
    found, first = [], 0
    for (epoch, phase), steps in itertools.groupby(schedule, key=lambda step: (step.epoch, step.phase)):
        count = len(list(steps))
        found.append(Pass(epoch, phase, first, count))
        first += count
    return found


class PhaseProgressCallback(TrainerCallback):
    """One bar per pass and per evaluation (see the module docstring), on the main process only.

    `opened` lists `(description, total)` of every bar shown, in order.
    """

    def __init__(self, trainer: UnlearningTrainer) -> None:
        self.trainer = trainer
        self.passes: list[Pass] = []
        self.pass_bar: Any = None
        self.evaluation_bar: Any = None
        self.training = False
        self.new_prediction = True  # the next prediction step starts a new `predict` call
        self.bars: list[Any] = []

    @property
    def opened(self) -> list[tuple[str, int]]:
        return [(bar.desc, bar.total) for bar in self.bars]

    def _open(self, description: str, total: int, initial: int = 0, leave: bool = True) -> Any:
        self.bars.append(tqdm(total=total, initial=initial, desc=description, leave=leave, dynamic_ncols=True))
        return self.bars[-1]

    def _close_evaluation(self) -> None:
        if self.evaluation_bar is not None:
            self.evaluation_bar.close()
            self.evaluation_bar = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.training = True
        self.passes = passes(self.trainer.schedule)

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero or self.pass_bar is not None:
            return
        self._close_evaluation()
        step = state.global_step  # optimizer steps done: the step starting now is schedule[step]
        current = next(p for p in self.passes if p.first_step <= step < p.first_step + p.num_steps)
        self.pass_bar = self._open(current.description, current.num_steps, initial=step - current.first_step)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.pass_bar is None:
            return
        self.pass_bar.update(1)
        if self.pass_bar.n >= self.pass_bar.total:  # closed before the epoch's evaluation starts
            self.pass_bar.close()
            self.pass_bar = None

    def on_prediction_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        eval_dataloader: Any = None,
        **kwargs: Any,
    ) -> None:
        if not state.is_world_process_zero or eval_dataloader is None or self.pass_bar is not None:
            return  # an evaluation in the middle of a pass (eval_strategy="steps") shows no bar
        if self.new_prediction:
            self.new_prediction = False
            batches = len(eval_dataloader)
            if self.evaluation_bar is None:
                step = state.global_step
                epoch = self.trainer.schedule[step - 1].epoch if self.training and step > 0 else 0
                name = f"epoch {epoch} evaluation" if self.training else "evaluation"
                self.evaluation_bar = self._open(name, batches, leave=self.training)
            else:  # the next split of the same evaluation
                self.evaluation_bar.total += batches
                self.evaluation_bar.refresh()
        self.evaluation_bar.update(1)

    def _prediction_done(self, state: TrainerState) -> None:
        self.new_prediction = True
        if not self.training:  # no later event would close it: the next output would be written on its line
            self._close_evaluation()

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._prediction_done(state)

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._prediction_done(state)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if state.is_world_process_zero and logs:
            shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in logs.items() if k != "total_flos"}
            tqdm.write(str(shown))  # one line, above the open bar

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        for bar in (self.pass_bar, self.evaluation_bar):
            if bar is not None:
                bar.close()
        self.pass_bar = self.evaluation_bar = None
        self.training = False


class _WithoutDeepSpeedDetection(logging.Filter):
    """Drops DeepSpeed's accelerator-detection warning unless this process runs DeepSpeed."""

    def filter(self, record: logging.LogRecord) -> bool:
        uses_deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"
        return uses_deepspeed or not (record.funcName == "get_accelerator" and "accelerator" in record.getMessage())


# DeepSpeed's logger keeps the filters of the logger of that name when it creates it at its import.
logging.getLogger("DeepSpeed").addFilter(_WithoutDeepSpeedDetection())
