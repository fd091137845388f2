"""ScrubTrainer on the real transformers Trainer: schedule, teacher, losses, accumulation, logging, resume."""

import math

import pytest
import torch
from conftest import (
    assert_same_weights,
    pixel_dataset,
    scrub_config,
    tiny_bert,
    tiny_resnet,
    token_dataset,
    train_plain,
)
from transformers import TrainerCallback

from hf_scrub import ScrubTrainer
from hf_scrub.schedule import PHASE_KEY, Phase


class RecordingScrubTrainer(ScrubTrainer):
    """Records (optimizer step, phase, micro-batch size) for every micro-step the Trainer runs."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if PHASE_KEY in inputs:
            self.calls.append((self.state.global_step, Phase(inputs[PHASE_KEY]), len(inputs["labels"])))
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def run_recording(tmp_path, **kwargs):
    trainer = RecordingScrubTrainer(
        model=tiny_resnet(),
        args=scrub_config(tmp_path, **kwargs),
        forget_dataset=pixel_dataset(10, 1),
        retain_dataset=pixel_dataset(30, 2),
    )
    trainer.calls = []
    trainer.train()
    return trainer


def test_schedule_as_run_by_the_trainer(tmp_path):
    trainer = run_recording(tmp_path)
    F, R = Phase.FORGET, Phase.RETAIN
    # 10 forget / batch 4 -> 3 max-steps; 30 retain / batch 8 -> 4 min-steps; epochs 1-2 with max-steps, 3 min-only.
    epoch = [(F, 4), (F, 4), (F, 2), (R, 8), (R, 8), (R, 8), (R, 6)]
    expected = epoch + epoch + epoch[3:]
    assert [(phase, size) for _, phase, size in trainer.calls] == expected
    assert [step for step, _, _ in trainer.calls] == list(range(len(expected)))  # one micro-batch per step
    assert trainer.state.global_step == 18
    assert trainer.state.epoch == 3.0


def test_schedule_with_gradient_accumulation(tmp_path):
    trainer = run_recording(tmp_path, gradient_accumulation_steps=2)
    F, R = Phase.FORGET, Phase.RETAIN
    # forget steps of 2x4: (4, 4) then (2 real + 2 padding); retain steps of 2x8: (8, 8) then (7, 7).
    epoch = [(0, F, 4), (0, F, 4), (1, F, 2), (1, F, 2), (2, R, 8), (2, R, 8), (3, R, 7), (3, R, 7)]
    expected = []
    for e in range(3):
        block = epoch if e < 2 else epoch[4:]
        offset = len(expected) // 2
        base = min(s for s, _, _ in block)
        expected += [(s - base + offset, p, n) for s, p, n in block]
    assert trainer.calls == expected
    assert trainer.state.global_step == 10


def test_teacher_is_frozen_in_eval_mode_and_student_changes(tmp_path):
    model = tiny_resnet()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = ScrubTrainer(
        model=model,
        args=scrub_config(tmp_path),
        forget_dataset=pixel_dataset(10, 1),
        retain_dataset=pixel_dataset(30, 2),
    )
    teacher = trainer.teacher.module
    assert teacher is not model
    modes = []
    for module in teacher.modules():
        module.register_forward_pre_hook(lambda m, _: modes.append(m.training))
    trainer.train()
    assert modes and not any(modes)  # every teacher module ran, always in eval mode
    assert all(not p.requires_grad for p in teacher.parameters())
    for key, value in teacher.state_dict().items():  # weights and BatchNorm running statistics untouched
        assert torch.equal(value, original[key]), key
    changed = [
        k for k, v in trainer.model.state_dict().items() if k.endswith("weight") and not torch.equal(v, original[k])
    ]
    assert changed


class WeightsAfterStep(TrainerCallback):
    """Keeps a copy of the student's weights after optimizer step `step`."""

    def __init__(self, step):
        self.step, self.weights = step, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step == self.step:
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_first_max_step_distance_is_zero_and_losses_are_logged(tmp_path):
    # Without dropout or BatchNorm the student equals the teacher before the first update: d = 0 is its minimum, so
    # the max-step's gradient is exactly zero (up to rounding noise, which may or may not be 0 on a given machine).
    # Plain SGD moves by lr x gradient, so that noise cannot turn into a step (Adam would scale it up to ~lr).
    model = tiny_bert(dropout=0.0)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    after_first, after_forget_pass = WeightsAfterStep(1), WeightsAfterStep(2)
    trainer = ScrubTrainer(
        model=model,
        args=scrub_config(tmp_path, forget_epochs=1, num_train_epochs=2, optim="sgd"),
        forget_dataset=token_dataset(8, 1),
        retain_dataset=token_dataset(16, 2),
        callbacks=[after_first, after_forget_pass],
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    # Both max-steps of the forget pass (8 examples / batch 4) run at student == teacher: nothing moves. (Tolerance:
    # float32 resolves T^2 * KL near p = 1/2 to ~1e-6, should the two logits differ by rounding on some machine.)
    for entry in logs[:2]:
        assert entry["loss"] == pytest.approx(0.0, abs=1e-5) and entry["forget_kl"] == pytest.approx(0.0, abs=1e-5)
        assert "retain_ce" not in entry
    for weights in (after_first.weights, after_forget_pass.weights):
        for name, value in weights.items():
            assert torch.allclose(value, initial[name], rtol=0, atol=1e-6), name
    retain_logs = [entry for entry in logs if "retain_ce" in entry]
    assert len(retain_logs) == 4  # 16 retain / batch 8 = 2 min-steps per epoch, 2 epochs
    for entry in retain_logs:  # gamma * CE + alpha * d, gamma = 1, alpha = 0.5
        assert entry["loss"] == pytest.approx(entry["retain_ce"] + 0.5 * entry["retain_kl"], rel=1e-5)
    assert [entry["epoch"] for entry in logs] == [0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
    assert any(not torch.equal(v, initial[k]) for k, v in trainer.model.state_dict().items())  # min-steps moved it


def test_in_train_mode_the_first_max_step_moves_away_from_the_teacher(tmp_path):
    # The paper's first forget pass moves only through train/eval-mode differences: here the student's BatchNorm
    # normalises with batch statistics, the teacher's with its running ones, so d > 0 from the first max-step on,
    # with a real gradient that moves the weights. (The tiny BERT's logits are ~0.01: its dropout gives d ~ 1e-7.)
    model = tiny_resnet()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    after_first = WeightsAfterStep(1)
    trainer = ScrubTrainer(
        model=model,
        args=scrub_config(tmp_path, forget_epochs=1, num_train_epochs=1),
        forget_dataset=pixel_dataset(10, 1),
        retain_dataset=pixel_dataset(30, 2),
        callbacks=[after_first],
    )
    trainer.train()
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    assert first["forget_kl"] > 0.01 and first["loss"] == pytest.approx(-first["forget_kl"], rel=1e-6)
    parameters = [name for name, _ in trainer.model.named_parameters()]  # not BatchNorm's running statistics
    moved = max((after_first.weights[k] - initial[k]).abs().max().item() for k in parameters)
    assert moved > 1e-4  # Adam, lr 1e-3: a real gradient moves weights by about the learning rate


def test_without_max_steps_and_alpha_zero_equals_plain_trainer_finetuning(tmp_path):
    # Same seed, same retain order (the schedule draws the Trainer's sampler permutation), same optimizer and LR
    # schedule. Dropout is off: the Trainer's dataloader draws one worker seed from the global RNG per epoch, which
    # the single-pass schedule does only once, so dropout masks would differ from the second epoch on.
    retain = token_dataset(20, 2)
    scrub = ScrubTrainer(
        model=tiny_bert(dropout=0.0),
        args=scrub_config(
            tmp_path, forget_epochs=0, alpha=0.0, gamma=1.0, num_train_epochs=2, per_device_train_batch_size=6
        ),
        forget_dataset=token_dataset(4, 1),
        retain_dataset=retain,
    )
    scrub.train()
    plain = train_plain(retain, tmp_path)
    assert scrub.state.global_step == plain.state.global_step == 8
    assert_same_weights(scrub.model, plain.model)


def test_gradient_accumulation_matches_one_large_batch(tmp_path):
    # The teacher is another model, so the first max-steps have a real gradient: at student == teacher it would be
    # rounding noise, which Adam scales up to full steps that differ with the batch layout (and the machine).
    def final_weights(**kwargs):
        trainer = ScrubTrainer(
            model=tiny_bert(dropout=0.0),
            teacher_model=tiny_bert(dropout=0.0, seed=1),
            args=scrub_config(tmp_path, **kwargs),
            forget_dataset=token_dataset(10, 1),
            retain_dataset=token_dataset(30, 2),
        )
        trainer.train()
        return trainer.state.global_step, trainer.model.state_dict()

    steps_big, big = final_weights(per_device_forget_batch_size=4, per_device_train_batch_size=8)
    steps_acc, acc = final_weights(
        per_device_forget_batch_size=2, per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    assert steps_big == steps_acc == 18
    for name in big:
        assert torch.allclose(big[name], acc[name], atol=1e-5), name


def test_lr_step_decay_after_listed_epochs(tmp_path):
    trainer = ScrubTrainer(
        model=tiny_bert(),
        args=scrub_config(
            tmp_path, lr_scheduler_type="constant", lr_decay_epochs=[1, 2], lr_decay_factor=0.5, learning_rate=0.01
        ),
        forget_dataset=token_dataset(8, 1),
        retain_dataset=token_dataset(16, 2),
    )
    trainer.train()
    lrs = [entry["learning_rate"] for entry in trainer.state.log_history if "loss" in entry]
    # epoch 1: 2 max + 2 min steps at 0.01; epoch 2 at 0.005; epoch 3 (2 min-steps) at 0.0025.
    assert lrs == pytest.approx([0.01] * 4 + [0.005] * 4 + [0.0025] * 2)


def test_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    def trainer(out):
        return ScrubTrainer(
            model=tiny_bert(dropout=0.1),
            args=scrub_config(
                tmp_path, output_dir=str(out), save_strategy="steps", save_steps=5, gradient_accumulation_steps=2
            ),
            forget_dataset=token_dataset(10, 1),
            retain_dataset=token_dataset(30, 2),
        )

    full = trainer(tmp_path / "full")
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-5"  # mid-run: epoch 2, inside the forget pass
    assert checkpoint.is_dir()
    resumed = trainer(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.state.global_step == full.state.global_step == 10
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_epoch_save_strategy_saves_at_every_scrub_epoch(tmp_path):
    trainer = ScrubTrainer(
        model=tiny_bert(),
        args=scrub_config(tmp_path, save_strategy="epoch"),
        forget_dataset=token_dataset(8, 1),
        retain_dataset=token_dataset(16, 2),
    )
    trainer.train()
    saved = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "out").glob("checkpoint-*"))
    assert saved == [4, 8, 10]  # epochs of 4, 4 and 2 optimizer steps


def test_non_finite_loss_stops_with_epoch_step_and_phase(tmp_path):
    model = tiny_bert(dropout=0.0)
    calls = {"n": 0}

    def poison(module, args, output):
        if module.training:
            calls["n"] += 1
            if calls["n"] == 6:
                output.logits = output.logits * math.nan
        return output

    trainer = ScrubTrainer(
        model=model,
        args=scrub_config(tmp_path, save_strategy="steps", save_steps=2),
        forget_dataset=token_dataset(8, 1),
        retain_dataset=token_dataset(16, 2),
    )
    model.register_forward_hook(poison)
    with pytest.raises(FloatingPointError, match=r"epoch 2, optimizer step 6 \(max-step on the forget set\)"):
        trainer.train()
    checkpoints = sorted(p.name for p in (tmp_path / "out").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert (tmp_path / "out" / "checkpoint-4" / "model.safetensors").stat().st_size > 0
