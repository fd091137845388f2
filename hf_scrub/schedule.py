"""The SCRUB epoch schedule as a list of phase-pure optimizer steps, fed to the Trainer as one batch sampler.

Per epoch ``e = 1..num_epochs``: if ``e <= forget_epochs``, one full pass over the forget set with max-steps, then
one pass over the retain set with min-steps; later epochs are min-only (docs/design.md §2).

Why a precomputed schedule: the Trainer's loop has a fixed number of micro-batches per epoch and groups them
``gradient_accumulation_steps`` at a time, while SCRUB epochs differ in length and must never mix a forget and a
retain micro-batch in one optimizer step. Laying the whole run out as optimizer steps of exactly
``gradient_accumulation_steps`` micro-batches per process keeps every process in the same phase at every optimizer
step, lets accelerate shard it like any batch sampler, and makes resuming a checkpoint a plain "skip the first N
micro-batches" (the schedule is a pure function of the sizes and the seed).

Each example carries a weight ``num_processes / n`` where ``n`` is the number of examples in its optimizer step
across all processes, so that summing ``weight * loss`` over a micro-batch and letting DDP average the gradients
gives exactly the mean loss of the step, as one large batch would, whatever the split into micro-batches.

The first forget pass starts at student == teacher, where the distance ``d`` is at its minimum (0): the gradient of
a max-step ``-d`` is then exactly zero. That pass moves the student only through train/eval-mode differences (the
student's dropout, BatchNorm's batch statistics against the teacher's running ones). For a dropout-free model, or
fresh LoRA adapters (``B = 0``: the student computes the teacher's logits exactly), it is a no-op, up to rounding
noise in the gradient, which plain SGD leaves negligible but Adam scales up to steps of about the learning rate.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class Phase(IntEnum):
    """Which data an optimizer step (or an example) comes from."""

    FORGET = 0  # SCRUB max-step: move away from the teacher on forget data
    RETAIN = 1  # SCRUB min-step: CE + stay close to the teacher on retain data
    MIXED = 2  # a step holding forget and retain examples together (baselines: NegGrad+, Bad-Teacher)


@dataclass(frozen=True)
class ScheduledExample:
    """One example of the schedule: its row in the forget or retain set and its loss weight (0 = padding)."""

    phase: Phase
    row: int
    weight: float


@dataclass(frozen=True)
class OptimizerStep:
    """One optimizer step: ``micro_batches[j][p]`` is micro-batch ``j`` of process ``p``.

    ``phase`` is FORGET or RETAIN for a step of one set, MIXED for a step with examples of both.
    """

    epoch: int
    phase: Phase
    micro_batches: tuple[tuple[tuple[ScheduledExample, ...], ...], ...]

    @property
    def num_examples(self) -> int:
        """Real (non-padding) examples in this step across all processes."""
        return sum(ex.weight > 0 for micro in self.micro_batches for batch in micro for ex in batch)


def _phase_steps(
    epoch: int,
    phase: Phase,
    rows: np.ndarray,
    batch_size: int,
    gradient_accumulation_steps: int,
    num_processes: int,
) -> list[OptimizerStep]:
    """Cut one pass over ``rows`` into optimizer steps of ``batch_size * accumulation * processes`` examples.

    The last step may be smaller. Its examples are spread evenly over as many micro-batches as keeps each at two
    examples or more (BatchNorm cannot train on one), dealt across processes first; any micro-batch left without
    examples repeats up to two of them with weight 0, so that every process runs the same number of
    forward/backward passes in every step.
    """
    slots = gradient_accumulation_steps * num_processes
    step_size = batch_size * slots
    steps = []
    for start in range(0, len(rows), step_size):
        step_rows = rows[start : start + step_size]
        weight = num_processes / len(step_rows)
        num_parts = slots if len(step_rows) == step_size else min(slots, max(1, len(step_rows) // 2))
        parts = [
            tuple(ScheduledExample(phase, int(row), weight) for row in part)
            for part in np.array_split(step_rows, num_parts)
        ]
        padding = tuple(ScheduledExample(phase, int(row), 0.0) for row in step_rows[:2])
        parts += [padding] * (slots - num_parts)
        micro_batches = tuple(
            tuple(parts[j * num_processes + p] for p in range(num_processes))
            for j in range(gradient_accumulation_steps)
        )
        steps.append(OptimizerStep(epoch, phase, micro_batches))
    return steps


def shuffled_rows(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    """The order of one pass: the permutation the Trainer's own seeded sampler draws for that epoch.

    accelerate's `SeedableRandomSampler` draws ``torch.randperm(n)`` from a generator seeded with
    ``seed + epoch_index``; using the same draw makes a SCRUB run without max-steps and with ``alpha = 0`` visit
    the retain set exactly as plain `Trainer` fine-tuning would, which is how that equivalence is tested.
    """
    generator = torch.Generator().manual_seed(seed + epoch - 1)
    return torch.randperm(num_rows, generator=generator).numpy()


def build_schedule(
    num_forget: int,
    num_retain: int,
    *,
    forget_batch_size: int,
    retain_batch_size: int,
    num_epochs: int,
    forget_epochs: int,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    retain_fraction: float = 1.0,
    max_retain_examples: int | None = None,
    retain_passes: bool = True,
    retain_warmup_steps: int = 0,
    interleave: bool = False,
    seed: int = 0,
) -> list[OptimizerStep]:
    """The whole SCRUB run as optimizer steps, in order; each pass is shuffled by `shuffled_rows`.

    ``retain_warmup_steps`` of the first epoch's retain pass run before its forget pass (the same steps, moved):
    they take the student off the teacher, where a max-step's gradient is exactly zero (module docstring).
    ``interleave=True`` (the goal-driven schedule) alternates an epoch's forget and retain steps, one of each in turn,
    instead of one pass after the other: a retain step can then repair what the forget step before it did.

    Each retain pass visits ``retain_fraction`` of the retain set, at most ``max_retain_examples`` of it (a fresh
    random subset per epoch). With ``retain_passes=False`` only the forget passes are made (gradient ascent
    baselines).

    The result does not depend on ``num_processes`` or ``gradient_accumulation_steps`` beyond how each step is cut
    into micro-batches: the same examples form the same optimizer steps, which is what makes a multi-process or
    accumulated run equal to one process with the same global batch.
    """
    if num_forget < 1 and forget_epochs > 0:
        raise ValueError("The forget set is empty: there is nothing to unlearn.")
    if num_retain < 1 and retain_passes:
        raise ValueError("The retain set is empty: SCRUB's min-steps need retained data.")
    retain_per_epoch = max(1, math.ceil(retain_fraction * num_retain))
    if max_retain_examples is not None:
        retain_per_epoch = max(1, min(retain_per_epoch, max_retain_examples))
    steps: list[OptimizerStep] = []
    for epoch in range(1, num_epochs + 1):
        retain_steps = []
        if retain_passes:
            order = shuffled_rows(num_retain, seed, epoch)[:retain_per_epoch]
            retain_steps = _phase_steps(
                epoch, Phase.RETAIN, order, retain_batch_size, gradient_accumulation_steps, num_processes
            )
        if epoch <= forget_epochs:
            warmup = retain_warmup_steps if epoch == 1 else 0
            steps += retain_steps[:warmup]
            retain_steps = retain_steps[warmup:]
            order = shuffled_rows(num_forget, seed, epoch)
            forget_steps = _phase_steps(
                epoch, Phase.FORGET, order, forget_batch_size, gradient_accumulation_steps, num_processes
            )
            if interleave:
                pairs = itertools.zip_longest(forget_steps, retain_steps)
                steps += [step for pair in pairs for step in pair if step is not None]
                continue
            steps += forget_steps
        steps += retain_steps
    return steps


class GroupMean(Enum):
    """What a set's term in a token-level step is the mean over (`weight_by_tokens`)."""

    TOKENS = "tokens"  # the set's loss-carrying tokens in the step (a per-token loss: cross-entropy, SCRUB's d)
    SEQUENCES = "sequences"  # the set's sequences in the step (a per-sequence loss, e.g. NPO's)


def weight_by_tokens(
    schedule: list[OptimizerStep],
    token_counts: dict[Phase, np.ndarray],
    num_processes: int = 1,
    group_means: dict[Phase, GroupMean] | None = None,
) -> list[OptimizerStep]:
    """The same steps, each example weighted ``num_processes / (what its step's loss is a mean over)``.

    For a causal LM the loss is per token: multiplying every token's loss by its example's weight then sums to the
    mean over the step's tokens, across micro-batches and processes, exactly as one large batch of the step's
    sequences would (docs/design.md §19). ``token_counts[phase][row]`` is a row's number of loss-carrying
    positions. Padding examples keep weight 0.

    Without ``group_means`` a step is one mean over all its tokens, and steps mixing forget and retain examples are
    refused: their per-set means have a grouping the schedule alone does not say. With ``group_means`` every set
    of a step (mixed or not) is its own mean, over its tokens (`GroupMean.TOKENS`: weight ``num_processes / its
    tokens``) or over its sequences (`GroupMean.SEQUENCES`: ``num_processes / its sequences``; the method then
    spreads each sequence's value over its loss-carrying positions, `hf_scrub.lm_losses.spread_over_tokens`, so
    that its positions sum to it). A one-set step weighs the same either way with `GroupMean.TOKENS`.
    """

    def group(example: ScheduledExample) -> Phase | None:
        return None if group_means is None else example.phase

    def size(example: ScheduledExample) -> int:
        if group_means is not None and group_means[example.phase] is GroupMean.SEQUENCES:
            return 1
        return int(token_counts[example.phase][example.row])

    weighted = []
    for step in schedule:
        if step.phase is Phase.MIXED and group_means is None:
            raise ValueError("Token weighting needs steps of one set; mixed forget/retain steps are not supported.")
        denominators: dict[Phase | None, int] = {}
        for ex in (ex for micro in step.micro_batches for batch in micro for ex in batch if ex.weight > 0):
            denominators[group(ex)] = denominators.get(group(ex), 0) + size(ex)
        weights = {key: num_processes / max(denominator, 1) for key, denominator in denominators.items()}
        micro_batches = tuple(
            tuple(
                tuple(ScheduledExample(ex.phase, ex.row, weights[group(ex)] if ex.weight > 0 else 0.0) for ex in batch)
                for batch in micro
            )
            for micro in step.micro_batches
        )
        weighted.append(OptimizerStep(step.epoch, step.phase, micro_batches))
    return weighted


def _mixed_step(
    epoch: int,
    groups: dict[Phase, np.ndarray],
    per_group_mean: bool,
    gradient_accumulation_steps: int,
    num_processes: int,
) -> OptimizerStep:
    """One step holding several sets' examples, each set spread evenly over all micro-batches.

    Weights make ``sum(weight * loss)`` the mean over each set separately (``per_group_mean``, e.g. NegGrad+'s two
    terms) or over the whole step (e.g. Bad-Teacher's batch mean). A micro-batch left empty repeats one example
    with weight 0.
    """
    slots = gradient_accumulation_steps * num_processes
    total = sum(len(rows) for rows in groups.values())
    parts: list[list[ScheduledExample]] = [[] for _ in range(slots)]
    for phase, rows in groups.items():
        weight = num_processes / (len(rows) if per_group_mean else total)
        for slot, chunk in enumerate(np.array_split(rows, slots)):
            parts[slot] += [ScheduledExample(phase, int(row), weight) for row in chunk]
    first_phase, first_rows = next((phase, rows) for phase, rows in groups.items() if len(rows))
    padding = [ScheduledExample(first_phase, int(first_rows[0]), 0.0)]
    micro_batches = tuple(
        tuple(tuple(parts[j * num_processes + p] or padding) for p in range(num_processes))
        for j in range(gradient_accumulation_steps)
    )
    return OptimizerStep(epoch, Phase.MIXED, micro_batches)


def build_paired_schedule(
    num_forget: int,
    num_retain: int,
    *,
    forget_batch_size: int,
    retain_batch_size: int,
    num_epochs: int,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    passes_over: Phase = Phase.RETAIN,
    seed: int = 0,
) -> list[OptimizerStep]:
    """Every step pairs a retain batch with a forget batch; weights average each set separately.

    Each epoch is one pass over the `passes_over` set, the other set cycled (reshuffled at each wrap) alongside it:
    over the retain set for NegGrad+ (Kurmanji et al., 2023), over the forget set for GradDiff and NPO as the LLM
    literature runs them (TOFU, Maini et al., 2024: each forget batch with a retain batch), where the retain set is
    usually many times the forget set."""
    if num_forget < 1 or num_retain < 1:
        raise ValueError("Paired steps need a non-empty forget set and a non-empty retain set.")
    if passes_over not in (Phase.FORGET, Phase.RETAIN):
        raise ValueError(f"passes_over must be Phase.FORGET or Phase.RETAIN, got {passes_over!r}.")
    cycled = Phase.FORGET if passes_over is Phase.RETAIN else Phase.RETAIN
    sizes = {Phase.FORGET: num_forget, Phase.RETAIN: num_retain}
    slots = gradient_accumulation_steps * num_processes
    per_step = {Phase.FORGET: forget_batch_size * slots, Phase.RETAIN: retain_batch_size * slots}
    stream: list[int] = []
    wraps = 0
    steps = []
    for epoch in range(1, num_epochs + 1):
        order = shuffled_rows(sizes[passes_over], seed, epoch)
        for start in range(0, len(order), per_step[passes_over]):
            while len(stream) < per_step[cycled]:
                wraps += 1
                stream += shuffled_rows(sizes[cycled], seed + 7919, wraps).tolist()
            rows = {
                passes_over: order[start : start + per_step[passes_over]],
                cycled: np.array(stream[: per_step[cycled]]),
            }
            stream = stream[per_step[cycled] :]
            # Retain rows first in each micro-batch, whichever set is passed over.
            groups = {phase: rows[phase] for phase in (Phase.RETAIN, Phase.FORGET)}
            steps.append(_mixed_step(epoch, groups, True, gradient_accumulation_steps, num_processes))
    return steps


def build_mixed_schedule(
    num_forget: int,
    num_retain: int,
    *,
    batch_size: int,
    num_epochs: int,
    retain_fraction: float = 1.0,
    gradient_accumulation_steps: int = 1,
    num_processes: int = 1,
    seed: int = 0,
) -> list[OptimizerStep]:
    """Each epoch, one pass over the shuffled union of the forget set and a random share of the retain set
    (Bad-Teacher); every step's weights average over all its examples."""
    retain_per_epoch = max(1, math.ceil(retain_fraction * num_retain))
    step_size = batch_size * gradient_accumulation_steps * num_processes
    steps = []
    for epoch in range(1, num_epochs + 1):
        retain = shuffled_rows(num_retain, seed, epoch)[:retain_per_epoch]
        union = [(Phase.FORGET, row) for row in range(num_forget)] + [(Phase.RETAIN, int(r)) for r in retain]
        order = shuffled_rows(len(union), seed + 104729, epoch)
        union = [union[i] for i in order]
        for start in range(0, len(union), step_size):
            chunk = union[start : start + step_size]
            groups = {
                phase: np.array([row for p, row in chunk if p == phase], dtype=np.int64)
                for phase in (Phase.FORGET, Phase.RETAIN)
            }
            groups = {phase: rows for phase, rows in groups.items() if len(rows)}
            steps.append(_mixed_step(epoch, groups, False, gradient_accumulation_steps, num_processes))
    return steps


def epoch_progress(schedule: list[OptimizerStep]) -> list[float]:
    """SCRUB epoch reached after each optimizer step (e.g. 1.5 = half of epoch 2), for `TrainerState.epoch`."""
    steps_per_epoch: dict[int, int] = {}
    for step in schedule:
        steps_per_epoch[step.epoch] = steps_per_epoch.get(step.epoch, 0) + 1
    progress, done_in_epoch = [], dict.fromkeys(steps_per_epoch, 0)
    for step in schedule:
        done_in_epoch[step.epoch] += 1
        progress.append(step.epoch - 1 + done_in_epoch[step.epoch] / steps_per_epoch[step.epoch])
    return progress


class ScheduleBatchSampler(Sampler[list[ScheduledExample]]):
    """Yields the schedule's micro-batches in the order accelerate's `BatchSamplerShard` deals them out.

    Global order is step by step, then micro-batch ``j``, then process ``p``; `BatchSamplerShard` gives process
    ``p`` every ``num_processes``-th batch, so each process receives its ``gradient_accumulation_steps``
    micro-batches of each optimizer step, in order. ``batch_size = None`` tells accelerate the batches vary in size.
    """

    batch_size = None
    drop_last = False

    def __init__(self, schedule: list[OptimizerStep]) -> None:
        self.schedule = schedule

    def __iter__(self) -> Iterator[list[ScheduledExample]]:
        for step in self.schedule:
            for micro in step.micro_batches:
                for batch in micro:
                    yield list(batch)

    def __len__(self) -> int:
        return sum(len(micro) for step in self.schedule for micro in step.micro_batches)


PHASE_KEY = "scrub_phase"
WEIGHT_KEY = "scrub_weight"
TEACHER_KEY = "scrub_teacher_logits"
SOURCE_KEY = "scrub_source"
ROW_KEY = "scrub_row"


class ScheduledDataset(Dataset):
    """Serves `ScheduledExample` keys from the forget or retain set, tagged with their phase and weight.

    With `teacher_logits` (one tensor per phase, row-aligned with its set), each example also carries the
    teacher's cached logits.
    """

    def __init__(
        self, forget_dataset: Any, retain_dataset: Any, teacher_logits: dict[Phase, torch.Tensor] | None = None
    ) -> None:
        self.sources = {Phase.FORGET: forget_dataset, Phase.RETAIN: retain_dataset}
        self.teacher_logits = teacher_logits

    def __len__(self) -> int:
        return sum(len(source) for source in self.sources.values())

    def __getitem__(self, key: ScheduledExample) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[ScheduledExample]) -> list[dict[str, Any]]:
        # One batched read per set and micro-batch: a `datasets.Dataset` then runs its transform once per batch.
        examples: list[dict[str, Any] | None] = [None] * len(keys)
        for phase in {key.phase for key in keys}:
            positions = [i for i, key in enumerate(keys) if key.phase == phase]
            rows = [keys[i].row for i in positions]
            source = self.sources[phase]
            fetched = source.__getitems__(rows) if hasattr(source, "__getitems__") else [source[r] for r in rows]
            for position, row, example in zip(positions, rows, fetched, strict=True):
                example = {**example, PHASE_KEY: int(phase), WEIGHT_KEY: keys[position].weight, ROW_KEY: row}
                if self.teacher_logits is not None:
                    example[TEACHER_KEY] = self.teacher_logits[phase][row]
                examples[position] = example
        return examples


class ScheduleCollator:
    """Wraps the user's collator: collates the examples, then adds the schedule's tags.

    ``PHASE_KEY``: the micro-batch's set as an int (``Phase.MIXED`` when it holds both); ``SOURCE_KEY``: each
    example's set; ``ROW_KEY``: each example's row in its set; ``WEIGHT_KEY``: each example's loss weight;
    ``TEACHER_KEY``: cached teacher logits, if any.
    """

    def __init__(self, collator: Callable[[list[dict[str, Any]]], dict[str, Any]]) -> None:
        self.collator = collator

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        sources = torch.tensor([feature[PHASE_KEY] for feature in features], dtype=torch.long)
        weights = torch.tensor([feature[WEIGHT_KEY] for feature in features], dtype=torch.float32)
        rows = torch.tensor([feature[ROW_KEY] for feature in features], dtype=torch.long)
        own_keys = (PHASE_KEY, WEIGHT_KEY, TEACHER_KEY, ROW_KEY)
        batch = dict(self.collator([{k: v for k, v in f.items() if k not in own_keys} for f in features]))
        batch[PHASE_KEY] = int(sources[0]) if bool((sources == sources[0]).all()) else int(Phase.MIXED)
        batch[SOURCE_KEY] = sources
        batch[WEIGHT_KEY] = weights
        batch[ROW_KEY] = rows
        if TEACHER_KEY in features[0]:
            batch[TEACHER_KEY] = torch.stack([feature[TEACHER_KEY] for feature in features])
        return batch
