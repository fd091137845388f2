"""ScrubConfig fields, validation and presets."""

import dataclasses

import pytest
from transformers import TrainingArguments

from hf_scrub import PRESETS, ScrubConfig


def make(**kwargs):
    return ScrubConfig(output_dir="unused", report_to="none", use_cpu=True, **kwargs)


def test_is_training_arguments_with_documented_scrub_fields():
    assert issubclass(ScrubConfig, TrainingArguments)
    fields = {f.name: f for f in dataclasses.fields(ScrubConfig)}
    for name in ("alpha", "gamma", "kd_temperature", "forget_epochs", "per_device_forget_batch_size", "rewind"):
        assert fields[name].metadata["help"], name
    config = make()
    assert (config.alpha, config.gamma, config.kd_temperature, config.forget_epochs) == (0.5, 1.0, 4.0, 3)
    assert config.num_train_epochs == 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kd_temperature": 0.0}, "kd_temperature"),
        ({"alpha": -0.1}, "alpha"),
        ({"gamma": float("nan")}, "gamma"),
        ({"forget_epochs": 4, "num_train_epochs": 3}, "forget_epochs"),
        ({"forget_epochs": -1}, "forget_epochs"),
        ({"num_train_epochs": 2.5}, "integer"),
        ({"per_device_forget_batch_size": 0}, "per_device_forget_batch_size"),
        ({"retain_fraction": 0.0}, "retain_fraction"),
        ({"max_steps": 10}, "max_steps"),
        ({"lr_decay_epochs": [9]}, "lr_decay_epochs"),
    ],
)
def test_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_presets_and_overrides():
    config = ScrubConfig.from_preset("class", output_dir="unused", use_cpu=True, report_to="none", alpha=0.1)
    assert config.alpha == 0.1  # override wins
    assert config.gamma == 0.99 and config.forget_epochs == 2 and config.num_train_epochs == 3
    assert config.per_device_forget_batch_size == 512 and config.per_device_train_batch_size == 256
    assert config.optim == "sgd" and config.learning_rate == 5e-4
    selective = ScrubConfig.from_preset("selective", output_dir="unused", use_cpu=True, report_to="none")
    assert selective.lr_decay_epochs == [3] and selective.lr_decay_factor == 0.1
    assert set(PRESETS) >= {"selective", "class", "small", "transformer"}
    transformer = ScrubConfig.from_preset("transformer", output_dir="unused", use_cpu=True, report_to="none")
    assert (
        transformer.optim == "adamw_torch" and transformer.max_grad_norm == 1.0 and transformer.retain_fraction == 0.5
    )
    with pytest.raises(ValueError, match="Unknown SCRUB preset"):
        ScrubConfig.from_preset("nope", output_dir="unused")
