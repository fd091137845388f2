"""The goal-driven schedule's rules (hf_scrub/goal.py) on constructed histories, and real runs of them."""

import itertools

import pytest

from hf_scrub.goal import MIN_SCALE, STEP_GROWTH, GoalController, Status, Target, target_for


def test_target_kind_comes_from_the_data():
    assert target_for([3, 3], [0, 1, 2], 50, True).kind == "class"
    assert target_for([3, 1], [0, 1, 3], 50, True).kind == "selective"
    # Held-out examples the original model trained on cannot say what unseen data looks like.
    assert target_for([3, 1], [0, 1, 3], 50, False).kind == "none"
    assert target_for([3, 1], [0, 1, 3], 0, True).kind == "none"


def test_class_status_needs_forget_and_unseen_examples_wrong():
    target = Target("class", 400, 100)
    assert target.status(0.99, 0.985) is Status.MET
    assert target.status(0.99, 0.5) is Status.SHORT  # held-out 3s still recognised: not forgotten
    assert target.status(0.97, None) is Status.SHORT


def test_selective_status_is_two_sided():
    target = Target("selective", 100, 100)  # band at reference 0.2: 1.96 * sqrt(0.2 * 0.8 * 0.02) = 0.1109
    assert target.status(0.08, 0.2) is Status.SHORT
    assert target.status(0.10, 0.2) is Status.MET
    assert target.status(0.31, 0.2) is Status.MET
    assert target.status(0.32, 0.2) is Status.OVERSHOT
    assert Target("none", 100).status(0.5, None) is Status.UNJUDGED


def test_schedule_aims_at_the_reference_while_the_verdict_accepts_the_band():
    target = Target("selective", 100, 100)  # band 0.1109 at reference 0.2; aim: within 0.25 x 0.1109 = 0.0277 below
    assert target.status(0.10, 0.2) is Status.MET
    assert target.status(0.10, 0.2, aim=True) is Status.SHORT
    assert target.status(0.17, 0.2, aim=True) is Status.SHORT  # 0.2 - 0.0277 = 0.1723
    assert target.status(0.18, 0.2, aim=True) is Status.MET
    assert target.status(0.31, 0.2, aim=True) is Status.MET  # above the reference the band itself is the limit
    assert target.status(0.32, 0.2, aim=True) is Status.OVERSHOT
    # Class targets have no band: both readings agree.
    assert Target("class", 400, 100).status(0.99, 0.985, aim=True) is Status.MET


def test_selective_run_inside_the_band_but_short_of_the_aim_keeps_forgetting():
    goal = GoalController(Target("selective", 100, 100), budget_epochs=2, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.2, 0.0, 0.0)
    goal.state.forget_scale = 4.0
    goal.after_forget_step(12, 100)  # error 0.12: inside the verdict's band, short of the aim: the range test grows
    assert goal.state.forget_scale == pytest.approx(4.0 * STEP_GROWTH)
    assert not goal.after_epoch(1, 0.12, 0.2, 0.0, 0.0)
    assert goal.state.forget_pass_open
    assert goal.state.history[-1]["status"] == "met" and goal.state.history[-1]["aim"] == "short"
    # At the budget the words say both: the verdict's reading, and that the schedule's aim was not reached.
    assert goal.after_epoch(2, 0.15, 0.2, 0.0, 0.0)
    assert goal.state.stopped_because == "budget: all 2 epochs run, forget target met (short of the aim), retain kept"


def test_range_test_grows_while_short_and_shrinks_faster_once_met():
    goal = GoalController(Target("class", 64), budget_epochs=5, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.03, 0.0, 0.0)
    for _ in range(3):
        goal.after_forget_step(0, 16)  # nothing forgotten yet: x1.5 each
    assert goal.state.forget_scale == pytest.approx(STEP_GROWTH**3)
    goal.after_forget_step(16, 16)  # smoothed error 0.5: still short
    assert goal.state.forget_scale == pytest.approx(STEP_GROWTH**4)
    goal.after_forget_step(16, 16)  # 0.75
    goal.after_forget_step(16, 16)  # 0.875
    goal.after_forget_step(16, 16)  # 0.9375
    goal.after_forget_step(16, 16)  # 0.96875
    goal.after_forget_step(16, 16)  # 0.984375 >= 0.98: met, shrink by 1.5**2
    assert goal.state.forget_scale == pytest.approx(STEP_GROWTH**8 / STEP_GROWTH**2)
    assert goal.lr_scale(forget_step=True) == goal.state.forget_scale
    # Retain steps match the forget steps' size (the paper's one learning rate for both passes).
    assert goal.lr_scale(forget_step=False) == pytest.approx(STEP_GROWTH**6)


def test_epoch_rules_repair_then_stop():
    goal = GoalController(Target("class", 400, 100), budget_epochs=10, fallback_forget_epochs=3, num_classes=10)
    assert not goal.after_epoch(0, 0.0, 0.04, 0.0, 0.0)
    goal.state.forget_scale = 20.0
    # Forgotten, but retain 4.4 % wrong (original 0 %): no forget pass next epoch, stronger retain steps.
    assert not goal.after_epoch(1, 1.0, 1.0, 0.044, 0.0)
    assert not goal.state.forget_pass_open and goal.lr_scale(forget_step=True) == 0.0
    assert goal.lr_scale(forget_step=False) == pytest.approx(20.0 * STEP_GROWTH)
    # The repair helped but not enough: grow again, capped at STEP_GROWTH ** 2 over the forget scale.
    assert not goal.after_epoch(2, 1.0, 1.0, 0.03, 0.0)
    assert goal.lr_scale(forget_step=False) == pytest.approx(20.0 * STEP_GROWTH**2)
    assert not goal.after_epoch(3, 1.0, 1.0, 0.025, 0.0)
    assert goal.lr_scale(forget_step=False) == pytest.approx(20.0 * STEP_GROWTH**2)
    # A repair-only epoch that made retain worse: the repair step itself is too large, back off.
    assert not goal.after_epoch(4, 1.0, 1.0, 0.028, 0.0)
    assert goal.lr_scale(forget_step=False) == pytest.approx(20.0)
    assert goal.after_epoch(5, 1.0, 1.0, 0.012, 0.0)  # both hold: stop
    assert goal.state.stopped_because == "goal reached after epoch 5 of at most 10"
    assert goal.state.repair_factor == 1.0 and goal.lr_scale(forget_step=False) == 20.0


def test_retain_scale_never_falls_below_the_base_learning_rate():
    goal = GoalController(Target("class", 400, 100), budget_epochs=10, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.04, 0.0, 0.0)
    goal.after_epoch(1, 1.0, 1.0, 0.05, 0.0)  # forget scale 1, factor 1.5
    goal.after_epoch(2, 1.0, 1.0, 0.08, 0.0)  # repair-only and worse: factor 1.5 / 2.25 < 1
    assert goal.state.repair_factor == pytest.approx(1 / STEP_GROWTH)
    assert goal.lr_scale(forget_step=False) == 1.0


def test_repair_after_a_pass_that_shrank_the_forget_scale_still_grows():
    goal = GoalController(Target("class", 400, 100), budget_epochs=10, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.04, 0.0, 0.0)
    goal.state.forget_scale = MIN_SCALE  # the target was met early in the pass: the scale shrank to its floor
    goal.after_epoch(1, 1.0, 1.0, 0.05, 0.0)
    assert goal.lr_scale(forget_step=False) == pytest.approx(STEP_GROWTH)  # 1 x 1.5, not 0.1 x 1.5 floored at 1
    goal.after_epoch(2, 1.0, 1.0, 0.04, 0.0)
    assert goal.lr_scale(forget_step=False) == pytest.approx(STEP_GROWTH**2)


def test_relearned_forget_set_reopens_the_forget_pass_and_budget_ends_the_run():
    goal = GoalController(Target("class", 400, 100), budget_epochs=2, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.04, 0.0, 0.0)
    assert not goal.after_epoch(1, 0.5, 0.4, 0.0, 0.0)
    assert goal.state.forget_pass_open
    assert goal.after_epoch(2, 0.6, 0.5, 0.0, 0.0)
    assert goal.state.stopped_because == "budget: all 2 epochs run, forget target short, retain kept"


def test_selective_overshoot_is_repaired_not_stopped():
    goal = GoalController(Target("selective", 100, 100), budget_epochs=10, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.2, 0.0, 0.0)
    assert not goal.after_epoch(1, 0.4, 0.2, 0.0, 0.0)  # overshot, retain kept: keep going without max-steps
    assert not goal.state.forget_pass_open
    assert goal.after_epoch(2, 0.25, 0.2, 0.0, 0.0)


def test_without_reference_makes_the_fallback_number_of_forget_passes():
    goal = GoalController(Target("none", 100), budget_epochs=10, fallback_forget_epochs=2, num_classes=10)
    goal.after_epoch(0, 0.0, None, 0.0, 0.0)
    assert not goal.after_epoch(1, 0.1, None, 0.0, 0.0) and goal.state.forget_pass_open
    assert goal.after_epoch(2, 0.1, None, 0.0, 0.0)
    assert "no reference" in goal.state.stopped_because


def test_a_pass_that_breaks_the_model_is_undone_and_redone_with_a_smaller_step():
    """The measured text case: every forget batch still right while the scale grows 1.5x a step over 7 steps, then
    the pass collapses the model (a 2-class model at 52 % retain error, chance is 50 %)."""
    goal = GoalController(Target("selective", 112, 200), budget_epochs=10, fallback_forget_epochs=3, num_classes=2)
    goal.after_epoch(0, 0.0, 0.2, 0.003, 0.003)
    for _ in range(7):
        goal.after_forget_step(0, 16)
    assert goal.state.pass_max_scale == pytest.approx(STEP_GROWTH**6)  # the 7th step's, before it grew again
    # Broken: retain 0.52 > 0.003 + 0.5 * (0.5 - 0.003). Forget and its reference both 0.99 would count as "met".
    assert not goal.after_epoch(1, 0.99, 0.99, 0.52, 0.003)
    assert goal.state.undo_pass and goal.state.passes_undone == 1 and goal.state.forget_pass_open
    assert goal.state.history[-1]["status"] == "undone" and goal.state.forget_passes == 0
    assert goal.state.scale_ceiling == pytest.approx(STEP_GROWTH**3)  # sqrt(1 * 1.5**6), below 1.5**6 / 1.5**2
    assert goal.state.forget_scale == 1.0 and goal.state.last_retain_error == 0.003  # the kept model's
    for _ in range(7):
        goal.after_forget_step(0, 16)
    assert goal.state.forget_scale == pytest.approx(STEP_GROWTH**3)  # 1, 1.5, 2.25, 3.375, then held
    # Just under the threshold (0.2515) is not broken: an ordinary repair follows.
    assert not goal.after_epoch(2, 0.2, 0.2, 0.25, 0.003)
    assert not goal.state.undo_pass and not goal.state.forget_pass_open
    assert goal.after_epoch(3, 0.2, 0.2, 0.01, 0.003)
    assert goal.state.stopped_because == "goal reached after epoch 3 of at most 10"


def test_undoing_the_last_epoch_says_which_model_is_returned():
    goal = GoalController(Target("class", 400, 100), budget_epochs=2, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.04, 0.0, 0.0)
    assert not goal.after_epoch(1, 0.5, 0.4, 0.0, 0.0)
    assert goal.after_epoch(2, 1.0, 1.0, 0.6, 0.0)  # retain 0.6 > 0.45: broken, and no epoch left to redo it
    assert goal.state.undo_pass
    assert goal.state.stopped_because == (
        "budget: all 2 epochs run; epoch 2's forget pass broke the model (retain error 0.600, the original's 0.000) "
        "and was undone, so the result is epoch 1's model: forget target short, retain kept"
    )


def test_an_undone_pass_that_never_grew_still_lowers_the_ceiling():
    goal = GoalController(Target("class", 400, 100), budget_epochs=50, fallback_forget_epochs=3, num_classes=10)
    goal.after_epoch(0, 0.0, 0.04, 0.0, 0.0)
    ceilings = []
    for epoch in range(1, 9):
        goal.after_forget_step(16, 16)  # met at once: the scale only shrinks inside the pass
        goal.after_epoch(epoch, 1.0, 1.0, 0.9, 0.0)
        ceilings.append(goal.state.scale_ceiling)
    assert ceilings[0] == pytest.approx(1 / STEP_GROWTH**2)  # the pass used 1.0 at most: 1.0 / 1.5**2
    assert all(later < earlier for earlier, later in itertools.pairwise(ceilings) if earlier > MIN_SCALE)
    assert ceilings[-1] == MIN_SCALE


def test_trainer_skips_closed_forget_passes_exactly_and_reports_why_it_stopped(tmp_path, monkeypatch):
    """Through `ScrubTrainer`: once the goal rules close the forget pass, its steps leave every weight bit-identical
    (learning rate 0, no gradient), retain steps still train, and the run says why it ended."""
    import torch
    from conftest import pixel_dataset, scrub_config, tiny_resnet
    from transformers import TrainerCallback

    import hf_scrub.goal
    from hf_scrub import ScrubTrainer
    from hf_scrub.schedule import Phase

    monkeypatch.setattr(hf_scrub.goal, "RETAIN_TOLERANCE", -1.0)  # retain never counts as kept: repair to the end
    config = scrub_config(tmp_path, schedule="auto", num_train_epochs=3, forget_epochs=1)
    trainer = ScrubTrainer(
        model=tiny_resnet(),
        args=config,
        forget_dataset=pixel_dataset(8, seed=1),
        retain_dataset=pixel_dataset(16, seed=2),
        forget_validation_dataset=pixel_dataset(8, seed=3),
        forget_validation_is_unseen=False,  # no target: one forget pass (forget_epochs), then repair only
    )
    changed: list[tuple[int, Phase, bool, float]] = []

    class Watch(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.before = [p.detach().clone() for p in trainer.model.parameters()]
            self.lr = trainer.optimizer.param_groups[0]["lr"]

        def on_step_end(self, args, state, control, **kwargs):
            step = trainer.schedule[state.global_step - 1]
            moved = any(not torch.equal(a, b) for a, b in zip(self.before, trainer.model.parameters(), strict=True))
            changed.append((step.epoch, step.phase, moved, self.lr))

    trainer.add_callback(Watch())
    trainer.train()
    assert trainer.goal.target.kind == "none"
    forget_steps = [(epoch, moved, lr) for epoch, phase, moved, lr in changed if phase is Phase.FORGET]
    assert [epoch for epoch, _, _ in forget_steps] == [1, 1, 2, 2, 3, 3]
    assert all(moved and lr > 0 for epoch, moved, lr in forget_steps if epoch == 1)
    assert all(not moved and lr == 0.0 for epoch, moved, lr in forget_steps if epoch > 1)
    assert all(moved for _, phase, moved, _ in changed if phase is Phase.RETAIN)
    assert trainer.epochs_run == 3
    assert trainer.stopped_because == (
        "goal-driven schedule: budget: all 3 epochs run, forget target unjudged, retain NOT kept"
    )


def test_trainer_undoes_broken_passes_bit_for_bit(tmp_path):
    """Through `ScrubTrainer`, every pass judged broken: each epoch is undone, so the run returns the original
    weights bit for bit with an empty optimizer state, and every recorded epoch shows the original's errors."""
    import torch
    from conftest import pixel_dataset, scrub_config, tiny_resnet
    from transformers import TrainerCallback

    from hf_scrub import ScrubTrainer

    model = tiny_resnet()
    original = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    config = scrub_config(tmp_path, schedule="auto", num_train_epochs=3, learning_rate=0.05)
    trainer = ScrubTrainer(
        model=model,
        args=config,
        forget_dataset=pixel_dataset(8, seed=1),
        retain_dataset=pixel_dataset(16, seed=2),
        forget_validation_dataset=pixel_dataset(8, seed=3),
    )
    trainer.goal.chance_error = -10.0  # "broken" from any retain error on: every pass is undone
    moved_inside_epochs = []

    class Watch(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            state_dict = trainer.model.state_dict()
            moved_inside_epochs.append(any(not torch.equal(original[n], t) for n, t in state_dict.items()))

    trainer.add_callback(Watch())
    trainer.train()
    assert any(moved_inside_epochs)  # the steps did move the weights before each undo
    assert all(torch.equal(original[name], tensor) for name, tensor in trainer.model.state_dict().items())
    assert trainer.optimizer.state_dict()["state"] == {}
    history = trainer.scrub_history
    assert [entry["scrub_epoch"] for entry in history] == [0, 1, 2, 3]
    assert all(entry["retain_error"] == history[0]["retain_error"] for entry in history)
    assert trainer.goal.state.passes_undone == 3
    assert "epoch 3's forget pass broke the model" in trainer.stopped_because
    assert "the result is epoch 2's model" in trainer.stopped_because
    undone = [entry["goal_undo_pass"] for entry in trainer.state.log_history if "goal_undo_pass" in entry]
    assert undone == [0.0, 1.0, 1.0, 1.0]


def test_resumed_after_an_undone_pass_ends_where_the_uninterrupted_run_does(tmp_path, monkeypatch):
    """Epoch 2's pass is judged broken in the full run and undone; a run resumed from the checkpoint saved at that
    epoch's end (the restored model, its epoch recorded again) replays the decisions, restores the lowered scale
    ceiling from the log, and ends with the same weights."""
    import torch
    from conftest import pixel_dataset, scrub_config, tiny_resnet

    import hf_scrub.goal
    from hf_scrub import ScrubTrainer

    monkeypatch.setattr(hf_scrub.goal, "RETAIN_TOLERANCE", -1.0)  # never stops early: every epoch runs

    def trainer(out):
        return ScrubTrainer(
            model=tiny_resnet(),
            args=scrub_config(
                tmp_path,
                output_dir=str(out),
                schedule="auto",
                num_train_epochs=5,
                forget_epochs=3,
                save_strategy="epoch",
            ),
            forget_dataset=pixel_dataset(8, seed=1),
            retain_dataset=pixel_dataset(16, seed=2),
            forget_validation_dataset=pixel_dataset(8, seed=3),
            forget_validation_is_unseen=False,  # no target: 3 kept forget passes (forget_epochs), then repair only
        )

    full = trainer(tmp_path / "full")
    decide = full.goal.after_epoch

    def break_epoch_two(epoch, *args, **kwargs):
        full.goal.chance_error = -10.0 if epoch == 2 else 1 - 1 / 3
        return decide(epoch, *args, **kwargs)

    full.goal.after_epoch = break_epoch_two
    full.train()
    undone = {
        entry["goal_epoch"]: entry["goal_undo_pass"] for entry in full.state.log_history if "goal_epoch" in entry
    }
    assert undone == {0: 0.0, 1: 0.0, 2: 1.0, 3: 0.0, 4: 0.0, 5: 0.0}
    assert full.goal.state.scale_ceiling < hf_scrub.goal.MAX_SCALE
    open_passes = [entry["forget_pass_open"] for entry in full.goal.state.history]
    assert open_passes == [True, True, True, True, False, False]  # passes 1, (2 undone, redone as) 3, 4; then repair
    checkpoints = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoints[1]))  # saved at the end of epoch 2
    assert resumed.goal.state.scale_ceiling == full.goal.state.scale_ceiling
    assert resumed.scrub_history == full.scrub_history
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
