"""SCRUB+R (the best epoch by the judge) and the per-epoch history."""

import pytest
import torch
from conftest import pixel_dataset, scrub_config, tiny_resnet
from transformers import TrainerCallback

from hf_scrub import ScrubTrainer
from hf_scrub.judge import best_epoch


class Snapshots(TrainerCallback):
    """Keeps a copy of the student's weights at the end of every SCRUB epoch (and before training)."""

    def __init__(self):
        self.by_epoch = {}

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if logs and "scrub_epoch" in logs:
            self.by_epoch[logs["scrub_epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}


def accuracy_error(model, dataset):
    rows = dataset[:]
    model.eval()
    with torch.no_grad():
        logits = model(pixel_values=rows["pixel_values"]).logits
    return float((logits.argmax(-1) != rows["labels"]).float().mean())


def build(tmp_path, rewind, forget_validation):
    snapshots = Snapshots()
    trainer = ScrubTrainer(
        model=tiny_resnet(),
        args=scrub_config(tmp_path, rewind=rewind, learning_rate=0.05, num_train_epochs=4),
        forget_dataset=pixel_dataset(10, 1),
        retain_dataset=pixel_dataset(30, 2),
        forget_validation_dataset=forget_validation,
        callbacks=[snapshots],
    )
    return trainer, snapshots


def test_history_records_every_epoch_from_the_original_model(tmp_path):
    forget_validation = pixel_dataset(12, 3)
    trainer, snapshots = build(tmp_path, rewind=False, forget_validation=forget_validation)
    original_error = accuracy_error(tiny_resnet(), trainer.forget_dataset)
    trainer.train()
    history = trainer.scrub_history
    assert [entry["scrub_epoch"] for entry in history] == [0, 1, 2, 3, 4]
    assert history[0]["forget_error"] == pytest.approx(original_error)
    assert history[-1]["forget_error"] == pytest.approx(accuracy_error(trainer.model, trainer.forget_dataset))
    assert history[-1]["forget_validation_error"] == pytest.approx(accuracy_error(trainer.model, forget_validation))
    assert history[-1]["retain_error"] == pytest.approx(accuracy_error(trainer.model, trainer.train_dataset))
    assert trainer.rewind_epoch is None
    assert not (tmp_path / "out" / "rewind").exists()


def test_rewind_restores_the_best_epoch_by_the_judge(tmp_path):
    """SCRUB+R returns the epoch the judge ranks best (the same judgement the verdict reports), weights restored
    exactly, and removes its candidates. At this learning rate the later epochs lose retain accuracy: a real rewind."""
    trainer, snapshots = build(tmp_path, rewind=True, forget_validation=pixel_dataset(10, 5))
    trainer.train()
    epochs = sorted(trainer.judgements)
    assert epochs == [0, 1, 2, 3, 4]
    expected = epochs[best_epoch([trainer.judgements[epoch] for epoch in epochs])]
    assert trainer.rewind_epoch == trainer.returned_epoch == expected != 4
    assert trainer.returned_judgement is trainer.judgements[expected]
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, snapshots.by_epoch[expected][name]), name
    assert trainer.state.log_history[-1]["returned_epoch"] == expected
    assert not (tmp_path / "out" / "rewind").exists()  # candidates are removed once the choice is made


def test_rewind_needs_a_forget_validation_set(tmp_path):
    with pytest.raises(ValueError, match="rewind=True \\(SCRUB\\+R\\) needs a non-empty forget_validation_dataset"):
        build(tmp_path, rewind=True, forget_validation=None)


def test_history_retain_subset_is_fixed_and_sized(tmp_path):
    retain = pixel_dataset(30, 2)
    first_pixels = retain[:]["pixel_values"][:, 0, 0, 0].tolist()  # random floats: they identify each row
    assert len(set(first_pixels)) == 30

    def rows_of(subset):
        return [first_pixels.index(value) for value in subset[:]["pixel_values"][:, 0, 0, 0].tolist()]

    def trainer_for(seed, size=7):
        return ScrubTrainer(
            model=tiny_resnet(),
            args=scrub_config(tmp_path / str(seed), history_retain_examples=size, seed=seed),
            forget_dataset=pixel_dataset(10, 1),
            retain_dataset=retain,
        )

    # The subset the per-epoch history measures the retain error on, at every epoch of a real run (0 = original).
    trainer, measured = trainer_for(seed=0), []
    history_datasets = trainer._history_datasets

    def recording():
        measured.append(history_datasets())
        return measured[-1]

    trainer._history_datasets = recording
    trainer.train()
    per_epoch = [rows_of(splits["retain"]) for splits in measured]
    assert len(per_epoch) == 4  # epochs 0..3
    chosen = per_epoch[0]
    assert all(rows == chosen for rows in per_epoch)  # the same rows at every epoch
    assert len(chosen) == len(set(chosen)) == 7  # 7 distinct retain rows ...
    assert chosen != list(range(7)) and chosen == sorted(chosen)  # ... drawn at random, kept in dataset order
    assert [len(splits["forget"]) for splits in measured] == [10] * 4  # the forget error uses the whole set
    # The draw is fixed by the run's seed (a resumed or repeated run measures the same rows), and differs by seed.
    assert rows_of(trainer_for(seed=0)._history_datasets()["retain"]) == chosen
    assert rows_of(trainer_for(seed=1)._history_datasets()["retain"]) != chosen
    # -1 and sizes >= the retain set mean the whole retain set, in order.
    for size in (-1, 30, 100):
        assert rows_of(trainer_for(seed=0, size=size)._history_datasets()["retain"]) == list(range(30))
