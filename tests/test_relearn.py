"""Relearn time (issue 3, deliverable 2): fine-tuning epochs until the forget loss is back at a target."""

import torch
from conftest import scrub_config, tiny_bert, token_dataset

from hf_scrub.relearn import relearn_time


def run(tmp_path, target_loss, max_epochs=4):
    model = tiny_bert(dropout=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = relearn_time(
        model,
        token_dataset(16, 1),
        target_loss=target_loss,
        max_epochs=max_epochs,
        args=scrub_config(tmp_path, learning_rate=0.01, per_device_train_batch_size=8),
    )
    for key, value in model.state_dict().items():  # the measured model itself is never trained
        assert torch.equal(value, before[key]), key
    return result


def test_counts_epochs_until_the_forget_loss_reaches_the_target(tmp_path):
    probe = run(tmp_path, target_loss=-1.0)  # unreachable: every epoch is run and measured
    losses = probe["forget_losses"]
    target = min(losses[1:])
    assert probe["epochs"] is None and len(losses) == 5 and target < losses[0]
    expected = next(epoch for epoch, loss in enumerate(losses) if loss <= target)
    result = run(tmp_path, target_loss=target)
    assert result["epochs"] == expected >= 1
    assert result["forget_losses"] == losses[: expected + 1]  # training stopped as soon as it relearned


def test_zero_when_the_forget_loss_is_already_at_the_target(tmp_path):
    result = run(tmp_path, target_loss=100.0)
    assert result["epochs"] == 0 and len(result["forget_losses"]) == 1
