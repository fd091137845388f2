"""The SCRUB epoch schedule, counted step by step."""

from collections import Counter

import numpy as np
import pytest
import torch
from accelerate.data_loader import BatchSamplerShard
from transformers import Trainer, TrainingArguments

from hf_scrub.schedule import (
    Phase,
    ScheduleBatchSampler,
    build_mixed_schedule,
    build_schedule,
    epoch_progress,
    shuffled_rows,
    weight_by_tokens,
)

F, R = Phase.FORGET, Phase.RETAIN


def phases(schedule):
    return [(step.epoch, step.phase) for step in schedule]


def test_order_and_counts_without_accumulation():
    # forget: ceil(10/4) = 3 max-steps, retain: ceil(30/8) = 4 min-steps; epochs 1-2 start with max-steps.
    schedule = build_schedule(10, 30, forget_batch_size=4, retain_batch_size=8, num_epochs=3, forget_epochs=2, seed=0)
    assert phases(schedule) == ([(1, F)] * 3 + [(1, R)] * 4 + [(2, F)] * 3 + [(2, R)] * 4 + [(3, R)] * 4)
    sizes = [len(step.micro_batches[0][0]) for step in schedule[:7]]
    assert sizes == [4, 4, 2, 8, 8, 8, 6]


def test_warmup_steps_move_the_first_retain_steps_before_the_first_forget_pass():
    plain = build_schedule(10, 30, forget_batch_size=4, retain_batch_size=8, num_epochs=3, forget_epochs=2, seed=0)
    warm = build_schedule(
        10, 30, forget_batch_size=4, retain_batch_size=8, num_epochs=3, forget_epochs=2, retain_warmup_steps=1, seed=0
    )
    assert phases(warm) == ([(1, R)] + [(1, F)] * 3 + [(1, R)] * 3 + [(2, F)] * 3 + [(2, R)] * 4 + [(3, R)] * 4)
    # the same steps, the first retain step moved: the epoch's work and every later epoch are unchanged
    assert warm[0] == plain[3] and warm[1:4] == plain[:3] and warm[4:] == plain[4:]


def test_token_weights_make_each_step_the_mean_over_its_tokens():
    schedule = build_schedule(3, 5, forget_batch_size=2, retain_batch_size=4, num_epochs=1, forget_epochs=1, seed=0,
                              gradient_accumulation_steps=2, num_processes=2)  # fmt: skip
    counts = {F: np.array([3, 1, 7]), R: np.array([2, 4, 6, 8, 10])}
    weighted = weight_by_tokens(schedule, counts, num_processes=2)
    for before, after in zip(schedule, weighted, strict=True):
        real = [ex for micro in after.micro_batches for batch in micro for ex in batch if ex.weight > 0]
        assert sorted(ex.row for ex in real) == sorted(
            ex.row for micro in before.micro_batches for batch in micro for ex in batch if ex.weight > 0
        )
        tokens = sum(counts[ex.phase][ex.row] for ex in real)
        # summing weight x per-token loss over the step's tokens and averaging over 2 processes = the token mean
        assert sum(ex.weight * counts[ex.phase][ex.row] for ex in real) / 2 == pytest.approx(1.0)
        assert all(ex.weight == pytest.approx(2 / tokens) for ex in real)
    mixed = build_mixed_schedule(3, 5, batch_size=4, num_epochs=1)
    with pytest.raises(ValueError, match="mixed forget/retain steps"):
        weight_by_tokens(mixed, counts)


def test_every_example_once_per_pass_and_reshuffled_each_epoch():
    schedule = build_schedule(10, 30, forget_batch_size=4, retain_batch_size=8, num_epochs=3, forget_epochs=2)
    for epoch in (1, 2, 3):
        for phase, size in ((F, 10), (R, 30)):
            rows = [
                ex.row
                for step in schedule
                if step.epoch == epoch and step.phase == phase
                for micro in step.micro_batches
                for batch in micro
                for ex in batch
                if ex.weight > 0
            ]
            if phase == F and epoch == 3:
                assert rows == []
            else:
                assert sorted(rows) == list(range(size))
    first = [ex.row for ex in schedule[3].micro_batches[0][0]]
    second = [ex.row for ex in schedule[10].micro_batches[0][0]]
    assert first != second


class RowRecorder(torch.nn.Module):
    """A "model" that records the rows a plain `transformers.Trainer` feeds it, in order."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.rows = []

    def forward(self, row, labels=None):
        self.rows += row.tolist()
        return {"loss": self.weight.sum()}


def test_pass_order_matches_trainer_seedable_sampler(tmp_path):
    # The order a plain Trainer (seed 42, shuffled by accelerate's seeded sampler) visits 30 rows in, epoch by epoch.
    model = RowRecorder()
    args = TrainingArguments(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True, seed=42,
        num_train_epochs=3, per_device_train_batch_size=7, remove_unused_columns=False,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=[{"row": row} for row in range(30)]).train()
    assert len(model.rows) == 3 * 30
    trainer_order = [model.rows[30 * e : 30 * (e + 1)] for e in range(3)]
    assert [shuffled_rows(30, seed=42, epoch=epoch).tolist() for epoch in (1, 2, 3)] == trainer_order
    assert trainer_order[0] != trainer_order[1] != trainer_order[2]  # reshuffled each epoch


def test_gradient_accumulation_groups_micro_batches_into_phase_pure_steps():
    # GA=2: a forget step holds 2 x 4 = 8 examples -> 2 steps; a retain step 2 x 8 = 16 -> 2 steps.
    schedule = build_schedule(
        10,
        30,
        forget_batch_size=4,
        retain_batch_size=8,
        num_epochs=3,
        forget_epochs=2,
        gradient_accumulation_steps=2,
    )
    assert phases(schedule) == [(1, F)] * 2 + [(1, R)] * 2 + [(2, F)] * 2 + [(2, R)] * 2 + [(3, R)] * 2
    for step in schedule:
        assert len(step.micro_batches) == 2
        assert {ex.phase for micro in step.micro_batches for batch in micro for ex in batch} == {step.phase}
    full, last = schedule[0], schedule[1]
    assert [len(m[0]) for m in full.micro_batches] == [4, 4]
    assert all(ex.weight == pytest.approx(1 / 8) for m in full.micro_batches for ex in m[0])
    # The last forget step has 2 examples: one real micro-batch of 2 (weight 1/2) and one padding (weight 0).
    assert [len(m[0]) for m in last.micro_batches] == [2, 2]
    assert [ex.weight for ex in last.micro_batches[0][0]] == [0.5, 0.5]
    assert [ex.weight for ex in last.micro_batches[1][0]] == [0.0, 0.0]
    # Each step's weights sum to 1: the sum over micro-batches is the step's mean loss.
    for step in schedule:
        assert sum(ex.weight for m in step.micro_batches for b in m for ex in b) == pytest.approx(1.0)


def test_processes_split_each_step_and_weights_average_to_the_step_mean():
    one = build_schedule(
        7,
        20,
        forget_batch_size=4,
        retain_batch_size=6,
        num_epochs=2,
        forget_epochs=1,
        gradient_accumulation_steps=1,
        num_processes=1,
    )
    two = build_schedule(
        7,
        20,
        forget_batch_size=2,
        retain_batch_size=3,
        num_epochs=2,
        forget_epochs=1,
        gradient_accumulation_steps=1,
        num_processes=2,
    )
    assert phases(one) == phases(two)
    for a, b in zip(one, two, strict=True):
        rows_a = Counter(ex.row for m in a.micro_batches for batch in m for ex in batch if ex.weight > 0)
        rows_b = Counter(ex.row for m in b.micro_batches for batch in m for ex in batch if ex.weight > 0)
        assert rows_a == rows_b  # same examples in the same optimizer step
        # DDP averages the per-process gradients: per-process weight sums average to 1.
        per_process = [sum(ex.weight for ex in micro[p]) for micro in b.micro_batches for p in range(2)]
        assert sum(per_process) / 2 == pytest.approx(1.0)


def test_sampler_deals_batches_in_process_major_order_per_micro_step():
    schedule = build_schedule(
        8,
        8,
        forget_batch_size=1,
        retain_batch_size=2,
        num_epochs=1,
        forget_epochs=1,
        gradient_accumulation_steps=2,
        num_processes=2,
    )
    sampler = ScheduleBatchSampler(schedule)
    assert len(list(sampler)) == len(sampler) == sum(2 * 2 for _ in schedule)
    # What each process receives from accelerate's own sharding (as `accelerator.prepare` wraps a batch sampler):
    # process p gets, step by step, exactly its micro-batches 0 and 1 of that step, in order.
    for process in range(2):
        shard = list(BatchSamplerShard(sampler, num_processes=2, process_index=process))
        expected = [list(step.micro_batches[j][process]) for step in schedule for j in range(2)]
        assert shard == expected
    # Both processes are always in the same step's same phase (a max-step never meets a min-step).
    shards = [list(BatchSamplerShard(sampler, num_processes=2, process_index=p)) for p in range(2)]
    assert [{ex.phase for ex in batch} for batch in shards[0]] == [{ex.phase for ex in batch} for batch in shards[1]]


def test_retain_fraction_limits_each_pass():
    schedule = build_schedule(
        4, 100, forget_batch_size=4, retain_batch_size=10, num_epochs=2, forget_epochs=1, retain_fraction=0.25
    )
    assert phases(schedule) == [(1, F)] + [(1, R)] * 3 + [(2, R)] * 3
    assert sum(step.num_examples for step in schedule if step.phase == R) == 2 * 25


def test_epoch_progress():
    schedule = build_schedule(4, 8, forget_batch_size=2, retain_batch_size=4, num_epochs=2, forget_epochs=1)
    assert epoch_progress(schedule) == [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]


def test_empty_sets_are_refused():
    with pytest.raises(ValueError, match="forget set is empty"):
        build_schedule(0, 8, forget_batch_size=2, retain_batch_size=4, num_epochs=1, forget_epochs=1)
    with pytest.raises(ValueError, match="retain set is empty"):
        build_schedule(3, 0, forget_batch_size=2, retain_batch_size=4, num_epochs=1, forget_epochs=1)
