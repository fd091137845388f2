"""Bad input is refused with a clear error before any training (issue 2, deliverable 10)."""

import datasets
import pytest
from conftest import pixel_dataset, scrub_config, tiny_resnet

from hf_scrub import ScrubTrainer
from hf_scrub.pipeline import ScriptArguments, build_splits


def make_trainer(tmp_path, **kwargs):
    arguments = dict(
        model=tiny_resnet(),
        args=scrub_config(tmp_path),
        forget_dataset=pixel_dataset(6, 1),
        retain_dataset=pixel_dataset(12, 2),
    )
    return ScrubTrainer(**{**arguments, **kwargs})


def test_empty_forget_and_retain_sets(tmp_path):
    with pytest.raises(ValueError, match="forget set is empty"):
        make_trainer(tmp_path, forget_dataset=pixel_dataset(6, 1).select([]))
    with pytest.raises(ValueError, match="retain set is empty"):
        make_trainer(tmp_path, retain_dataset=pixel_dataset(6, 1).select([]))


def test_forget_examples_inside_the_retain_set(tmp_path):
    retain = pixel_dataset(12, 2)
    forget = datasets.concatenate_datasets([pixel_dataset(6, 1), retain.select([4])])
    with pytest.raises(ValueError, match="1 retain example\\(s\\) are identical to forget examples"):
        make_trainer(tmp_path, forget_dataset=forget, retain_dataset=retain)
    # The check can be switched off when duplicates are intended.
    make_trainer(
        tmp_path,
        forget_dataset=forget,
        retain_dataset=retain,
        args=scrub_config(tmp_path, check_forget_retain_overlap=False),
    )


def test_labels_outside_the_model_head(tmp_path):
    with pytest.raises(ValueError, match="retain set has labels in \\[0, 4\\] but the model has num_labels=3"):
        make_trainer(tmp_path, retain_dataset=pixel_dataset(12, 2, num_labels=5))


def test_teacher_with_a_different_head(tmp_path):
    with pytest.raises(ValueError, match="teacher has 4 outputs but the student has 3"):
        make_trainer(tmp_path, teacher_model=tiny_resnet(num_labels=4))


def test_train_dataset_and_plain_training_arguments_are_refused(tmp_path):
    from transformers import TrainingArguments

    with pytest.raises(TypeError, match="retain_dataset"):
        make_trainer(tmp_path, train_dataset=pixel_dataset(4, 3))
    with pytest.raises(TypeError, match="needs a ScrubConfig"):
        make_trainer(tmp_path, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True))


def test_missing_image_or_text_column(tmp_path):
    data = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict({"text": ["a", "b", "c"], "label": [0, 1, 0]})
            for split in ("train", "test")
        }
    )
    data.save_to_disk(str(tmp_path / "data"))
    with pytest.raises(ValueError, match="Column 'picture' \\(set by image_column\\) is not in"):
        build_splits(
            ScriptArguments(
                dataset_name=str(tmp_path / "data"),
                task="image-classification",
                image_column="picture",
                forget_classes=["0"],
            ),
            seed=0,
        )
    with pytest.raises(ValueError, match="neither the image column 'image' nor the text column 'review'"):
        build_splits(
            ScriptArguments(dataset_name=str(tmp_path / "data"), text_column="review", forget_classes=["0"]), seed=0
        )
