"""Per-task plumbing: which Auto classes load the model and processor, and how raw rows become model inputs.

Supported tasks: image classification (`AutoModelForImageClassification` + its image processor), text
classification (`AutoModelForSequenceClassification` + its tokenizer) and causal language modelling
(`AutoModelForCausalLM` + its tokenizer; data in TRL's prompt/completion, messages or text formats, see
`hf_scrub.lm_data`). The preprocessing is deterministic (no random augmentation): SCRUB compares the student with
the teacher on the same inputs, and the evaluation must see the data the way training did.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from huggingface_hub.utils import validate_repo_id
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PreTrainedModel,
    default_data_collator,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from .data import label_values
from .lm_data import causal_lm_collator, tokenize_for_causal_lm

logger = logging.getLogger(__name__)

IMAGE_CLASSIFICATION = "image-classification"
TEXT_CLASSIFICATION = "text-classification"
CAUSAL_LM = "causal-lm"
TASKS = (IMAGE_CLASSIFICATION, TEXT_CLASSIFICATION, CAUSAL_LM)


def is_causal_lm(model: Any) -> bool:
    """True for a decoder-only language model (an `AutoModelForCausalLM` class), peft-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__ in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()


def model_architectures(model_name_or_path: str | None) -> list[str]:
    """The model's `config.architectures` (the classes it was saved from), read without loading the weights."""
    if model_name_or_path is None:
        return []
    try:
        return list(AutoConfig.from_pretrained(model_name_or_path).architectures or [])
    except (OSError, ValueError):  # unreachable or not a model: the model loading step names the problem
        return []


def is_causal_lm_request(task: str | None, model_name_or_path: str | None) -> bool:
    """Whether a run is on a causal LM, known before any data is read: `--task causal-lm`, or a model saved as a
    `...ForCausalLM` (the CLI then defaults to the `llm` preset and LoRA)."""
    if task is not None:
        return task == CAUSAL_LM
    return any(name.endswith("ForCausalLM") for name in model_architectures(model_name_or_path))


def infer_task(dataset: Dataset, image_column: str, text_column: str, model_name_or_path: str | None = None) -> str:
    """The task from the data and the model: causal LM for prompt/completion or messages data, or a model saved
    as a `...ForCausalLM`; else image classification when the image column exists, text classification when the
    text column does."""
    columns = dataset.column_names
    lm_data = {"prompt", "completion"} <= set(columns) or "messages" in columns
    if lm_data or any(name.endswith("ForCausalLM") for name in model_architectures(model_name_or_path)):
        return CAUSAL_LM
    if image_column in columns:
        return IMAGE_CLASSIFICATION
    if text_column in columns:
        return TEXT_CLASSIFICATION
    raise ValueError(
        f"Cannot tell the task: neither the image column {image_column!r} nor the text column {text_column!r} is in "
        f"the dataset (columns: {columns}). Pass --image_column or --text_column, or --task."
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


_AUTO_CLASSES = {
    IMAGE_CLASSIFICATION: (AutoModelForImageClassification, AutoImageProcessor),
    TEXT_CLASSIFICATION: (AutoModelForSequenceClassification, AutoTokenizer),
    CAUSAL_LM: (AutoModelForCausalLM, AutoTokenizer),
}


def _auto_classes(task: str) -> tuple[Any, Any]:
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    return _AUTO_CLASSES[task]


def load_processor(model_name_or_path: str, task: str) -> Any:
    """The model's processor (image processor or tokenizer): loaded before the model, so that the data can be
    prepared, and refused, before the expensive load."""
    try:
        return _auto_classes(task)[1].from_pretrained(model_name_or_path)
    except OSError as error:  # missing files, or a Hub id that cannot be reached (offline, private, misspelt)
        raise ValueError(f"Could not load the processor of {model_name_or_path!r} for {task}: {error}") from None


def load_model(model_name_or_path: str, task: str, **model_kwargs: Any) -> PreTrainedModel:
    """Load the model for `task` from a Hub id or a local folder, refusing what SCRUB here does not support."""
    try:
        model = _auto_classes(task)[0].from_pretrained(model_name_or_path, **model_kwargs)
    except OSError as error:
        raise ValueError(f"Could not load the model {model_name_or_path!r} for {task}: {error}") from None
    if task == CAUSAL_LM:
        if not is_causal_lm(model):
            raise ValueError(f"{model_name_or_path!r} did not load as a causal LM ({type(model).__name__}).")
    elif model.config.problem_type not in (None, "single_label_classification"):
        raise ValueError(
            f"The model's problem_type is {model.config.problem_type!r}; SCRUB here supports single-label "
            "classification (one class id per example)."
        )
    return model


def load_model_and_processor(model_name_or_path: str, task: str, **model_kwargs: Any) -> tuple[PreTrainedModel, Any]:
    """`load_model` and `load_processor` together."""
    return load_model(model_name_or_path, task, **model_kwargs), load_processor(model_name_or_path, task)


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
    """Turn raw rows into model inputs with a `labels` column: a lazy transform for images, tokenization for text
    (for a causal LM, token labels with -100 where no loss is taken; truncated rows are counted in the log)."""
    if task == IMAGE_CLASSIFICATION:
        return dataset.with_transform(image_transform(processor, image_column, label_column))
    if task == CAUSAL_LM:
        tokenized, truncated = tokenize_for_causal_lm(
            dataset, processor, max_length=max_length, text_column=text_column
        )
        if truncated:
            logger.warning(
                "%d of %d rows were truncated to max_length=%s tokens.", truncated, len(dataset), max_length
            )
        return tokenized

    def tokenize(batch: dict[str, list]) -> dict[str, Any]:
        encoded = processor(batch[text_column], truncation=True, max_length=max_length)
        encoded["labels"] = batch[label_column]
        return encoded

    return dataset.map(tokenize, batched=True, remove_columns=dataset.column_names, desc="Tokenizing")


def data_collator_for(task: str, processor: Any) -> Callable[[list[dict[str, Any]]], dict[str, Any]]:
    """Padding collator for text (dynamic padding per batch; token labels padded with -100), plain stacking for
    images."""
    if task == CAUSAL_LM:
        return causal_lm_collator(processor)
    return DataCollatorWithPadding(processor) if task == TEXT_CLASSIFICATION else default_data_collator
