"""The goal-driven schedule: its rules (hf_scrub/goal.py) on constructed sequences of step outcomes, the per-row gate
(hf_scrub/losses.py) on hand-made logits, and both through `ScrubTrainer` on tiny real models."""

import json

import numpy as np
import pytest
import torch

from hf_scrub.goal import GROWTH, AutoSchedule
from hf_scrub.judge import Evidence, Judge, Kind
from hf_scrub.losses import forget_loss, gated, kd_distance, membership_scores, without_classes

# ---- the gate and the scores (known answers) ------------------------------------------------------------------------


def test_a_gated_row_gets_scrubs_gradient_its_negative_or_exactly_zero():
    """Gate 1: SCRUB's max-step gradient, bit for bit; -1 (a distribution request's row past its target): exactly its
    negative; 0 (a class request's row past its target, padding): exactly zero."""
    torch.manual_seed(0)
    teacher = torch.randn(3, 4)
    student = (teacher + 0.3 * torch.randn(3, 4)).requires_grad_()
    gated(forget_loss(student, teacher, 2.0), torch.tensor([1.0, 0.0, -1.0])).sum().backward()
    gated_grad = student.grad.clone()
    student.grad = None
    forget_loss(student, teacher, 2.0).sum().backward()
    assert torch.equal(gated_grad[1], torch.zeros(4))  # exactly zero, not small
    assert torch.equal(gated_grad[0], student.grad[0])
    assert torch.equal(gated_grad[2], -student.grad[2])
    # Per position (a causal LM's (B, L - 1) loss): the row's gate covers every one of its tokens.
    per_token = torch.ones(3, 2, requires_grad=True)
    gated(per_token, torch.tensor([0.0, 1.0, -1.0])).sum().backward()
    assert per_token.grad.tolist() == [[0.0, 0.0], [1.0, 1.0], [-1.0, -1.0]]


def test_membership_scores_are_the_own_label_loss_or_the_forgotten_classes_probability():
    logits = torch.tensor([[0.0, float(np.log(3.0)), -1e9]])  # probabilities 1/4, 3/4, 0
    labels = torch.tensor([0])
    assert membership_scores(logits, labels).item() == pytest.approx(np.log(4.0))
    assert membership_scores(logits, labels, [1]).item() == pytest.approx(-np.log(0.75))
    assert membership_scores(logits, labels, [0, 1]).item() == pytest.approx(0.0, abs=1e-6)


def test_without_classes_is_the_original_renormalised_over_the_other_classes():
    logits = torch.tensor([[1.0, 2.0, 0.5]])
    masked = without_classes(logits, [1])
    probabilities = torch.softmax(masked, -1)
    expected = torch.tensor([[np.e, 0.0, np.e**0.5]]) / (np.e + np.e**0.5)
    torch.testing.assert_close(probabilities, expected.float())
    # The distillation distance to it stays finite and equals the KL over the kept classes.
    student = torch.tensor([[0.2, 0.1, 0.3]])
    kept = torch.softmax(student[:, [0, 2]] / 2.0, -1)
    target = expected[:, [0, 2]].float() ** 0.5 / (expected[:, [0, 2]].float() ** 0.5).sum()  # softmax(t / 2)
    full_student = torch.log_softmax(student / 2.0, -1)[:, [0, 2]]
    by_hand = 4.0 * (target * (target.log() - full_student)).sum()
    assert torch.isfinite(kd_distance(student, masked, 2.0)).all() and kept.sum() == pytest.approx(1.0)
    assert kd_distance(student, masked, 2.0).item() == pytest.approx(by_hand.item(), rel=1e-5)


# ---- the step-size rule, on constructed outcomes --------------------------------------------------------------------


def schedule(kind=Kind.DISTRIBUTION, budget=5, forget_epochs=3):
    return AutoSchedule(kind, budget, forget_epochs)


def judgement(kind=Kind.DISTRIBUTION, forget_met=False, retain_kept=True, retain_accuracy=None):
    """A real judgement of constructed evidence: forget rows alike / unlike the reference, retain kept or not."""
    reference = np.linspace(0.0, 2.0, 101)
    scores_of_reference = reference if kind is Kind.DISTRIBUTION else None
    judge = Judge(kind, original_retain_accuracy=1.0, reference_scores=scores_of_reference)
    scores = reference if forget_met else reference / 100
    recognised = np.zeros(101, bool) if forget_met else np.ones(101, bool)
    accuracy = retain_accuracy if retain_accuracy is not None else 1.0 if retain_kept else 0.9
    return judge(Evidence(scores, accuracy, 100, forget_recognised=recognised))


def started(**kwargs):
    goal = schedule(**kwargs)
    goal.after_epoch(0, judgement(goal.kind))
    goal.start_forget_pass(within_retain=True, damaged=False)
    return goal


def test_forget_steps_double_while_kept_and_halve_when_undone_for_their_size():
    goal = started()
    assert goal.lr_scale(forget_step=True) == 1.0
    assert goal.after_forget_step(16, within_retain=True, damaged=False) is False  # kept
    assert goal.after_forget_step(16, within_retain=True, damaged=True) is False
    assert goal.forget_scale == GROWTH**2 and goal.retain_scale == GROWTH  # a repair at the size last moved at
    assert goal.after_forget_step(16, within_retain=False, damaged=True) is True  # size 4 went too far: undone
    assert goal.forget_scale == GROWTH and goal.forget_steps_apply  # larger than any kept step: it was the size
    # Size 2 (kept before) fails now: the damage already done did, not the size; the retain step repairs it first.
    assert goal.after_forget_step(16, within_retain=False, damaged=True) is True
    assert goal.forget_scale == GROWTH and goal.forget_steps_apply and goal.retain_steps_apply


def test_a_first_step_that_is_too_large_is_retried_smaller():
    goal = started()
    for expected in (0.5, 0.25):
        assert goal.after_forget_step(8, within_retain=False, damaged=True) is True
        assert goal.forget_scale == expected and goal.forget_steps_apply
    assert goal.after_forget_step(8, within_retain=True, damaged=False) is False and goal.forget_scale == 0.5


def test_a_step_with_no_open_row_is_undone_and_changes_no_size():
    goal = started()
    assert goal.after_forget_step(0, within_retain=True, damaged=False) is True
    assert goal.forget_scale == 1.0 and goal.epoch.forget_kept == 0 and goal.forget_steps_apply


def test_a_symmetric_start_waits_for_a_kept_warmup_step():
    """Student == teacher (fresh LoRA, no dropout): a max-step's gradient is exactly zero, so a forget step would
    change nothing and pass every test. Forget steps wait until a warm-up min-step has been kept, which it is when it
    stays inside the retain tolerance, whether or not it lowered the objective (docs/design.md §14)."""
    goal = AutoSchedule(Kind.DISTRIBUTION, 5, 3, symmetric=True)
    goal.after_epoch(0, judgement())
    assert goal.retain_steps_apply and not goal.forget_steps_apply and goal.lr_scale(forget_step=True) == 0.0
    assert goal.after_retain_step(improved=True, damaged=True, within_retain=False) is True  # too far: undone
    assert goal.retain_scale == 0.5 and goal.symmetric and goal.retain_steps_apply  # the next one, smaller
    assert goal.after_retain_step(improved=False, damaged=False, within_retain=True) is False
    assert not goal.symmetric and goal.forget_steps_apply and not goal.retain_steps_apply


def test_retain_steps_run_only_while_there_is_damage_and_backtrack():
    goal = schedule()
    goal.after_epoch(0, judgement())
    goal.start_forget_pass(within_retain=True, damaged=False)
    assert not goal.retain_steps_apply  # no damage: nothing to repair
    goal.after_forget_step(16, within_retain=True, damaged=False)
    assert not goal.retain_steps_apply and goal.lr_scale(forget_step=False) == 0.0
    goal.after_forget_step(16, within_retain=True, damaged=True)  # kept at size 2, one retain row lost
    assert goal.retain_steps_apply and goal.lr_scale(forget_step=False) == 2.0
    assert goal.after_retain_step(improved=False, damaged=True) is True  # the objective rose: undone, size halves
    assert goal.lr_scale(forget_step=False) == 1.0 and goal.retain_steps_apply
    assert goal.after_retain_step(improved=True, damaged=False) is False
    assert not goal.retain_steps_apply  # repaired


def test_a_pass_only_starts_inside_the_retain_tolerance_else_the_epoch_repairs():
    goal = schedule()
    goal.after_epoch(0, judgement())
    goal.start_forget_pass(within_retain=False, damaged=True)
    assert not goal.forget_steps_apply and goal.epoch.repair_only and goal.retain_steps_apply


def test_the_run_stops_when_the_judge_says_so():
    goal = started(budget=5)
    goal.after_forget_step(16, True, False)
    assert goal.after_epoch(1, judgement(forget_met=True, retain_kept=True)) is True
    assert goal.stopped_because == "goal reached after epoch 1 of at most 5"
    assert goal.lr_scale(forget_step=True) == goal.lr_scale(forget_step=False) == 0.0


def test_an_epoch_that_leaves_retain_outside_its_tolerance_is_followed_by_a_repair():
    goal = started()
    goal.after_forget_step(16, True, True)
    assert goal.after_epoch(1, judgement(forget_met=True, retain_kept=False)) is False
    assert goal.epoch.repair_only and not goal.forget_steps_apply and goal.retain_steps_apply
    assert goal.after_retain_step(improved=True, damaged=True) is False and goal.retain_steps_apply
    goal.after_retain_step(improved=True, damaged=False)
    assert not goal.retain_steps_apply
    assert goal.to_log()["repair_only"] == 1.0


def test_kept_retain_rows_below_the_original_start_the_next_epoch_with_a_repair_to_make():
    goal = started()
    goal.after_forget_step(16, True, True)
    goal.after_epoch(1, judgement(retain_accuracy=0.99))  # inside the tolerance, one point below the original
    assert not goal.epoch.repair_only and goal.forget_steps_apply and goal.epoch.damaged


def test_no_forget_row_left_to_push_and_nothing_to_repair_ends_the_run():
    goal = started(kind=Kind.CLASS)
    for _ in range(3):
        goal.after_forget_step(0, True, False)
    assert goal.after_epoch(1, judgement(Kind.CLASS, forget_met=False, retain_kept=True)) is True
    assert goal.stopped_because.startswith("no forget row left to push and nothing to repair after epoch 1")


def test_without_a_reference_the_run_makes_the_forget_epochs_of_ungated_steps():
    goal = schedule(kind=Kind.NONE, forget_epochs=2, budget=6)
    none = Judge(Kind.NONE, 1.0)(Evidence(np.zeros(3), 1.0, 10))
    goal.after_epoch(0, none)
    for epoch in (1, 2):
        goal.start_forget_pass(True, False)
        goal.after_forget_step(16, True, False)
        stop = goal.after_epoch(epoch, none)
    assert stop and goal.stopped_because.startswith("no unseen reference to judge the forget side by: 2 epochs")


def test_the_budget_ends_the_run_and_says_where_it_stands():
    goal = started(budget=1)
    goal.after_forget_step(16, True, False)
    assert goal.after_epoch(1, judgement(forget_met=False, retain_kept=True)) is True
    assert goal.stopped_because == "budget: all 1 epochs run"  # the verdict says where the returned epoch stands


def test_a_snapshot_restores_the_schedule_exactly_mid_epoch_too():
    goal = started()
    goal.after_forget_step(16, True, False)
    goal.after_forget_step(16, True, True)
    goal.after_epoch(1, judgement(retain_kept=False))
    goal.after_retain_step(improved=False, damaged=True)  # mid-epoch: a repair undone, its size halved
    resumed = schedule()
    resumed.restore(json.loads(json.dumps(goal.snapshot())))  # through the JSON of a checkpoint's log history
    assert (resumed.forget_scale, resumed.retain_scale, resumed.forget_passes) == (4.0, 1.0, 1)
    assert resumed.epoch == goal.epoch and resumed.epoch.repair_only and resumed.retain_steps_apply
    assert resumed.snapshot() == goal.snapshot()


# ---- through ScrubTrainer ----------------------------------------------------------------------------------------


def class_request(tmp_path, out, **overrides):
    """The tiny ResNet asked to forget class 2: forget and held-out rows all labelled 2, retain rows 0 and 1."""
    import datasets
    from conftest import memorise, scrub_config, tiny_resnet

    from hf_scrub import ScrubTrainer

    def rows(n, seed, labels):
        rng = np.random.default_rng(seed)
        pixels = rng.normal(size=(n, 1, 8, 8)).astype("float32")
        return datasets.Dataset.from_dict({"pixel_values": pixels, "labels": rng.choice(labels, n)}).with_format(
            "torch"
        )

    settings = dict(schedule="auto", retain_steps_per_forget_step=1.0, history_retain_examples=16,
                    num_train_epochs=3, learning_rate=1e-2, output_dir=str(tmp_path / out))  # fmt: skip
    forget, retain = rows(12, 1, [2]), rows(24, 2, [0, 1])
    return ScrubTrainer(
        model=memorise(tiny_resnet(), datasets.concatenate_datasets([forget, retain])),
        args=scrub_config(tmp_path, **(settings | overrides)),
        forget_dataset=forget,
        retain_dataset=retain,
        forget_validation_dataset=rows(8, 3, [2]),
    )


def test_a_kept_step_changes_the_model_and_an_undone_one_leaves_it_bit_identical(tmp_path):
    """Every goal-driven step is either kept or restored exactly: weights, BatchNorm buffers and optimizer state."""
    from transformers import TrainerCallback

    trainer = class_request(tmp_path, "out")
    seen = []

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.before = {k: v.clone() for k, v in trainer.model.state_dict().items()}

        def on_step_end(self, args, state, control, **kwargs):
            after = trainer.model.state_dict()
            same = all(torch.equal(self.before[k], after[k]) for k in after)
            seen.append((trainer.schedule[state.global_step - 1].phase.name, same))

    trainer.add_callback(Watch())
    undone = []
    original_restore = trainer._restore
    trainer._restore = lambda snapshot: (undone.append(trainer.state.global_step), original_restore(snapshot))
    trainer.train()
    assert trainer.judge.kind is Kind.CLASS and trainer.goal.kind is Kind.CLASS
    moved = [phase for phase, same in seen if not same]
    assert "FORGET" in moved  # kept forget steps changed the model
    assert undone and len(moved) < len(seen)  # some steps were undone or closed: those left it bit-identical
    assert trainer.returned_judgement is trainer.judgements[trainer.returned_epoch]


def test_a_run_resumed_mid_epoch_goes_on_exactly_as_the_uninterrupted_one(tmp_path):
    full = class_request(tmp_path, "full", save_strategy="steps", save_steps=5)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-5"  # inside epoch 1 (12 forget rows at 16 per step ... )
    assert checkpoint.is_dir() and full.schedule[4].epoch == full.schedule[5].epoch
    resumed = class_request(tmp_path, "resumed", save_strategy="steps", save_steps=5)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.stopped_because == full.stopped_because
    assert resumed.returned_epoch == full.returned_epoch
    decisions = [
        {k: v for k, v in e.items() if k.startswith("goal_")} for e in full.state.log_history if "goal_epoch" in e
    ]
    resumed_decisions = [{k: v for k, v in e.items() if k.startswith("goal_")}
                         for e in resumed.state.log_history if "goal_epoch" in e]  # fmt: skip
    assert resumed_decisions == decisions
    for name, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-6, msg=name)
