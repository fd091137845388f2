"""The few private `transformers.Trainer` members hf_scrub uses, pinned: an upgrade that changes one fails here.

- `_remove_unused_columns(dataset, description)`: drops the columns the model's forward does not take, exactly as the
  Trainer does for its own train dataset (used for the forget set too, so both sets reach the model alike);
- `_prepare_inputs(inputs)`: moves a batch to the device (cached teacher outputs are computed outside the loop);
- `_train_batch_size`: the per-device retain batch size the Trainer uses (it can differ from the argument under
  `auto_find_batch_size`).
Everything else goes through public API (the run's length through `args.max_steps`, see UnlearningTrainer).
"""

import inspect

import datasets
import pytest
import torch
from conftest import scrub_config, tiny_bert, token_dataset
from transformers import Trainer

from hf_scrub import ScrubTrainer


def test_private_trainer_methods_keep_their_signatures():
    assert list(inspect.signature(Trainer._remove_unused_columns).parameters) == ["self", "dataset", "description"]
    assert list(inspect.signature(Trainer._prepare_inputs).parameters) == ["self", "inputs"]


def test_private_trainer_members_behave_as_used(tmp_path):
    trainer = ScrubTrainer(
        model=tiny_bert(),
        args=scrub_config(tmp_path, per_device_train_batch_size=6),
        forget_dataset=token_dataset(4, 1),
        retain_dataset=token_dataset(8, 2),
    )
    assert trainer._train_batch_size == 6
    extra = datasets.Dataset.from_dict({"input_ids": [[5, 6]], "labels": [1], "comment": ["not a model input"]})
    assert trainer._remove_unused_columns(extra, description="forget").column_names == ["input_ids", "labels"]
    batch = trainer._prepare_inputs({"input_ids": torch.ones(2, 3, dtype=torch.long)})
    assert batch["input_ids"].device == trainer.args.device


def test_the_trainer_learns_the_run_length_through_max_steps(tmp_path):
    """The schedule's length reaches the Trainer as `max_steps`; the user's config is given back unchanged."""
    args = scrub_config(tmp_path, num_train_epochs=2, forget_epochs=1)
    trainer = ScrubTrainer(
        model=tiny_bert(), args=args, forget_dataset=token_dataset(8, 1), retain_dataset=token_dataset(16, 2)
    )
    trainer.train()
    # forget pass: 8 / 4 = 2 max-steps; two retain passes: 16 / 8 = 2 min-steps each.
    assert trainer.state.max_steps == trainer.state.global_step == len(trainer.schedule) == 6
    assert args.max_steps == -1


def test_a_run_that_raises_gives_the_users_max_steps_back(tmp_path):
    """`max_steps` carries the schedule's length only while `train()` runs, however it ends."""
    args = scrub_config(tmp_path)
    model = tiny_bert()
    trainer = ScrubTrainer(
        model=model, args=args, forget_dataset=token_dataset(8, 1), retain_dataset=token_dataset(16, 2)
    )
    forwards = []

    def fail_on_the_third_step(module, inputs, output):
        forwards.append(trainer.state.global_step)
        if trainer.state.global_step == 2:
            raise RuntimeError("injected failure")

    model.register_forward_hook(fail_on_the_third_step)
    with pytest.raises(RuntimeError, match="injected failure"):
        trainer.train()
    assert forwards[-1] == 2 and trainer.state.max_steps == len(trainer.schedule) > 2  # it failed mid-run
    assert args.max_steps == -1
