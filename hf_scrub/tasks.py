"""Per-task plumbing: which Auto classes load the model and processor, and how raw rows become model inputs.

Supported tasks: image classification (`AutoModelForImageClassification` + its image processor) and text
classification (`AutoModelForSequenceClassification` + its tokenizer). The preprocessing is deterministic (no
random augmentation): SCRUB compares the student with the teacher on the same inputs, and the evaluation must see
the data the way training did.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from datasets import ClassLabel, Dataset
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    default_data_collator,
)

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


def load_model_and_processor(model_name_or_path: str, task: str, **model_kwargs: Any) -> tuple[PreTrainedModel, Any]:
    """Load the classifier and its processor (image processor or tokenizer) from a Hub id or a local folder."""
    if task == IMAGE_CLASSIFICATION:
        model = AutoModelForImageClassification.from_pretrained(model_name_or_path, **model_kwargs)
        processor = AutoImageProcessor.from_pretrained(model_name_or_path)
    elif task == TEXT_CLASSIFICATION:
        model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, **model_kwargs)
        processor = AutoTokenizer.from_pretrained(model_name_or_path)
    else:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    if model.config.problem_type not in (None, "single_label_classification"):
        raise ValueError(
            f"The model's problem_type is {model.config.problem_type!r}; SCRUB here supports single-label "
            "classification (one class id per example)."
        )
    return model, processor


def check_model_matches_labels(model: PreTrainedModel, dataset: Dataset, label_column: str) -> None:
    """The classifier head must have one output per dataset class, in the same order."""
    feature = dataset.features.get(label_column)
    if isinstance(feature, ClassLabel):
        num_classes = feature.num_classes
    else:
        num_classes = int(max(dataset.unique(label_column))) + 1
    if model.config.num_labels != num_classes:
        raise ValueError(
            f"The model has num_labels={model.config.num_labels} but the dataset's {label_column!r} column has "
            f"{num_classes} classes. Unlearning needs the model that was trained on this dataset's label set."
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
