"""Evaluate a model on the splits of an unlearning request (docs/design.md §3) and return a flat report.

Predictions go through `Trainer.predict`, so they are batched, in eval mode without gradients, under the run's
mixed precision, and gathered across processes (each example counted once); the metrics are then computed from the
gathered arrays by the plain functions of `hf_scrub.metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from transformers import Trainer

from .metrics.functional import membership_inference_attack, per_example_cross_entropy, unlearning_accuracy

logger = logging.getLogger(__name__)

SPLITS = ("forget", "retain", "test", "forget_validation")


@dataclass
class SplitPredictions:
    """Logits and labels of one split, gathered over all processes."""

    logits: np.ndarray
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @property
    def losses(self) -> np.ndarray:
        return per_example_cross_entropy(self.logits, self.labels)


def predict_splits(trainer: Trainer, datasets: Mapping[str, Any]) -> dict[str, SplitPredictions]:
    """Run `trainer.predict` on every non-empty split."""
    results = {}
    for name, dataset in datasets.items():
        if dataset is None or len(dataset) == 0:
            continue
        output = trainer.predict(dataset, metric_key_prefix=name)
        logits = output.predictions[0] if isinstance(output.predictions, tuple) else output.predictions
        results[name] = SplitPredictions(np.asarray(logits), np.asarray(output.label_ids))
    return results


def unlearning_report(
    predictions: Mapping[str, SplitPredictions], forget_classes: Sequence[int] = (), seed: int = 0
) -> dict[str, float]:
    """Accuracies per split (plus forgotten / remaining-class test accuracy) and the membership attack."""
    names = [name for name in SPLITS if name in predictions]
    if "test" not in predictions or not np.isin(predictions["test"].labels, list(forget_classes)).any():
        forget_classes = ()  # no test example of the forgotten classes: their test accuracy is undefined
    report = unlearning_accuracy(
        predictions=np.concatenate([predictions[n].predictions for n in names]),
        references=np.concatenate([predictions[n].labels for n in names]),
        splits=np.concatenate([[n] * len(predictions[n].labels) for n in names]),
        forget_classes=list(forget_classes) or None,
    )
    if "forget" in predictions:
        report["forget_loss"] = float(np.mean(predictions["forget"].losses))
    if "forget" in predictions and "forget_validation" in predictions:
        try:
            report.update(
                membership_inference_attack(
                    predictions["forget"].losses, predictions["forget_validation"].losses, seed=seed
                )
            )
        except ValueError as error:  # too few examples for the attack's cross-validation
            logger.warning("Membership inference attack skipped: %s", error)
    return report


def evaluate_model(
    trainer: Trainer, datasets: Mapping[str, Any], forget_classes: Sequence[int] = (), seed: int = 0
) -> dict[str, float]:
    """`predict_splits` then `unlearning_report` for the trainer's current model.

    To evaluate another model (e.g. a retrained one) with the same batching, precision and processes, pass
    `prediction_trainer(model, trainer.args, trainer.data_collator)`.
    """
    return unlearning_report(predict_splits(trainer, datasets), forget_classes, seed)


def prediction_trainer(model: Any, args: Any, data_collator: Any = None, processing_class: Any = None) -> Trainer:
    """A plain `Trainer` used only to run `predict` for `model` under the given arguments."""
    return Trainer(model=model, args=args, data_collator=data_collator, processing_class=processing_class)
