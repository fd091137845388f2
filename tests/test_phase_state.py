"""One optimizer state per phase (hf_scrub/phase_state.py) and the drift probe's normalisation mode (trainer)."""

import torch
from torch import nn

from hf_scrub.phase_state import STATE_DICT_KEY, PhaseStates
from hf_scrub.trainer import running_statistics_frozen


def adam_step(optimizer, param, gradient):
    param.grad = torch.full_like(param, gradient)
    optimizer.step()


def test_each_phase_keeps_its_own_moments_and_step_count():
    """Two retain steps around a forget pass: the retain moments are exactly those of two retain-only steps, as if
    the forget steps had had their own optimizer."""
    param = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.AdamW([param], lr=0.1, weight_decay=0.0)
    phases = PhaseStates(optimizer)
    phases.switch("retain")
    adam_step(optimizer, param, 1.0)
    phases.switch("forget")
    assert optimizer.state[param] == {}  # a new phase starts empty
    adam_step(optimizer, param, -5.0)
    adam_step(optimizer, param, -5.0)
    phases.switch("retain")
    adam_step(optimizer, param, 1.0)
    retain = optimizer.state[param]
    # The same two gradients (1, 1) through a fresh AdamW: exp_avg = 0.1 * 0.9 + 0.1 = 0.19, exp_avg_sq likewise.
    assert float(retain["step"]) == 2.0
    assert torch.allclose(retain["exp_avg"], torch.full((3,), 0.19))
    assert torch.allclose(retain["exp_avg_sq"], torch.full((3,), 0.001 * 0.999 + 0.001))
    assert float(phases.set_aside["forget"][param]["step"]) == 2.0
    assert torch.allclose(phases.set_aside["forget"][param]["exp_avg"], torch.full((3,), -0.95))


def test_the_set_aside_state_travels_in_the_state_dict_and_comes_back():
    """Checkpoints and the trainer's undo snapshots go through `state_dict()` / `load_state_dict()`: both phases'
    states must survive the round trip, into a fresh optimizer as on resume."""
    param = nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    phases = PhaseStates(optimizer)
    phases.switch("forget")
    adam_step(optimizer, param, -3.0)
    phases.switch("retain")
    adam_step(optimizer, param, 2.0)
    saved = optimizer.state_dict()
    assert saved[STATE_DICT_KEY]["active"] == "retain" and set(saved[STATE_DICT_KEY]["set_aside"]) == {"forget"}
    saved = torch.load(_round_trip(saved), weights_only=False)  # as a checkpoint's optimizer.pt

    fresh_param = nn.Parameter(param.detach().clone())
    fresh = torch.optim.AdamW([fresh_param], lr=0.1)
    fresh_phases = PhaseStates(fresh)
    fresh.load_state_dict(saved)
    assert fresh_phases.active == "retain"
    assert torch.equal(fresh.state[fresh_param]["exp_avg"], optimizer.state[param]["exp_avg"])
    forget_before = phases.set_aside["forget"][param]
    forget_after = fresh_phases.set_aside["forget"][fresh_param]
    assert torch.equal(forget_after["exp_avg"], forget_before["exp_avg"])
    assert torch.equal(forget_after["exp_avg_sq"], forget_before["exp_avg_sq"])
    fresh_phases.switch("forget")
    assert torch.equal(fresh.state[fresh_param]["exp_avg"], forget_before["exp_avg"])


def _round_trip(state_dict):
    import io

    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return buffer


def test_running_statistics_frozen_normalises_with_the_batch_and_leaves_every_buffer_as_it_was():
    """A goal-driven forget step's forward (train mode): BatchNorm normalises with the batch's statistics, as in
    training, but its running averages and `num_batches_tracked` stay exactly as they were."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.train()
    model(torch.randn(32, 4) * 5 + 3)  # running statistics far from the batch's
    buffers = {name: value.clone() for name, value in model.named_buffers()}
    batch = torch.randn(16, 4)
    with torch.no_grad(), running_statistics_frozen(model):
        logits = model(batch)
    assert all(torch.equal(buffers[name], value) for name, value in model.named_buffers())
    assert model.training and model[1].momentum == 0.1  # mode and momentum as they were
    hidden = model[0](batch)
    by_hand = (hidden - hidden.mean(0)) / torch.sqrt(hidden.var(0, unbiased=False) + model[1].eps)
    assert torch.allclose(logits, model[2](by_hand * model[1].weight + model[1].bias), atol=1e-5)
    model(batch)  # outside the context the averages move again
    assert not torch.equal(buffers["1.running_mean"], model[1].running_mean)
