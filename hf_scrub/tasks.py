"""Per-task plumbing: which Auto classes load the model and processor, and how raw rows become model inputs.

Supported tasks: image classification (`AutoModelForImageClassification` + its image processor) and text
classification (`AutoModelForSequenceClassification` + its tokenizer). The preprocessing is deterministic (no
random augmentation): SCRUB compares the student with the teacher on the same inputs, and the evaluation must see
the data the way training did.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from huggingface_hub.utils import validate_repo_id
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    default_data_collator,
)

from .data import label_values

IMAGE_CLASSIFICATION = "image-classification"
TEXT_CLASSIFICATION = "text-classification"
TASKS = (IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION)


def infer_task(dataset: Dataset, image_column: str, text_column: str) -> str:
    """Image classification when the image column exists, text classification when the text column does."""
    if image_column in dataset.column_names:
        return IMAGE_CLASSIFICATION
    if text_column in dataset.column_names:
        return TEXT_CLASSIFICATION
    raise ValueError(
        f"Cannot tell the task: neither the image column {image_column!r} nor the text column {text_column!r} is in "
        f"the dataset (columns: {dataset.column_names}). Pass --image_column or --text_column, or --task."
    )


def check_model_reference(model_name_or_path: str, option: str = "--model_name_or_path") -> None:
    """Refuse, before anything is loaded, a model reference that is neither a model folder nor a Hub model id."""
    path = Path(model_name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{option} {model_name_or_path!r} is not a model folder (it has no config.json). Pass the folder "
                "written by `save_pretrained`, or a Hub model id."
            )
        return
    looks_local = model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") > 1
    try:
        validate_repo_id(model_name_or_path)
    except Exception:
        looks_local = True
    if looks_local:
        raise ValueError(
            f"{option} {model_name_or_path!r}: no such folder (and it is not a Hub model id of the form "
            "namespace/name). Check the path."
        )


def load_model_and_processor(model_name_or_path: str, task: str, **model_kwargs: Any) -> tuple[PreTrainedModel, Any]:
    """Load the classifier and its processor (image processor or tokenizer) from a Hub id or a local folder."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    model_class, processor_class = (
        (AutoModelForImageClassification, AutoImageProcessor)
        if task == IMAGE_CLASSIFICATION
        else (AutoModelForSequenceClassification, AutoTokenizer)
    )
    try:
        model = model_class.from_pretrained(model_name_or_path, **model_kwargs)
        processor = processor_class.from_pretrained(model_name_or_path)
    except OSError as error:  # missing files, or a Hub id that cannot be reached (offline, private, misspelt)
        raise ValueError(f"Could not load the model {model_name_or_path!r} for {task}: {error}") from None
    if model.config.problem_type not in (None, "single_label_classification"):
        raise ValueError(
            f"The model's problem_type is {model.config.problem_type!r}; SCRUB here supports single-label "
            "classification (one class id per example)."
        )
    return model, processor


def check_model_matches_labels(model: PreTrainedModel, datasets: Sequence[Dataset], label_column: str) -> None:
    """The classifier head must be able to output every class of the labelled data, in the same order.

    Classes are counted over all the given splits together (forget, retain, test), never one split alone: a forget
    split of class 3 says nothing about how many classes there are. With a `ClassLabel` column the count must equal
    the head's `num_labels`; with plain integer labels (CSV / JSON files) every label must lie in the head's range.
    """
    num_labels = model.config.num_labels
    feature = next((d.features.get(label_column) for d in datasets if label_column in d.column_names), None)
    if isinstance(feature, ClassLabel):
        if num_labels != feature.num_classes:
            raise ValueError(
                f"The model has num_labels={num_labels} but the dataset's {label_column!r} column has "
                f"{feature.num_classes} classes. Unlearning needs the model that was trained on this dataset's label "
                "set."
            )
        return
    labels = np.concatenate([label_values(d, label_column) for d in datasets if len(d)])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_labels:
        raise ValueError(
            f"The dataset's {label_column!r} labels range over [{low}, {high}], but the model's head outputs classes "
            f"0..{num_labels - 1} (num_labels={num_labels}). Use the model that was trained on this dataset's label "
            "set, or fix the label column."
        )


def image_transform(
    processor: Any, image_column: str = "image", label_column: str = "label"
) -> Callable[[dict[str, list]], dict[str, Any]]:
    """A `Dataset.with_transform` function: images -> `pixel_values` with the model's processor, labels -> `labels`.

    Images go to the processor as they are: it owns the channel handling (`do_convert_rgb`), resizing and
    normalisation the model was trained with.
    """

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        pixel_values = processor(images=list(batch[image_column]), return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values, "labels": torch.as_tensor(batch[label_column], dtype=torch.long)}

    return transform


def prepare_dataset(
    dataset: Dataset,
    task: str,
    processor: Any,
    *,
    image_column: str = "image",
    text_column: str = "text",
    label_column: str = "label",
    max_length: int | None = None,
) -> Dataset:
    """Turn raw rows into model inputs with a `labels` column: a lazy transform for images, tokenization for text."""
    if task == IMAGE_CLASSIFICATION:
        return dataset.with_transform(image_transform(processor, image_column, label_column))

    def tokenize(batch: dict[str, list]) -> dict[str, Any]:
        encoded = processor(batch[text_column], truncation=True, max_length=max_length)
        encoded["labels"] = batch[label_column]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")


def data_collator_for(task: str, processor: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Padding collator for text (dynamic padding per batch), plain stacking for images."""
    return DataCollatorWithPadding(processor) if task == TEXT_CLASSIFICATION else default_data_collator
