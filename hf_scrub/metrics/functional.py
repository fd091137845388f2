"""Unlearning metrics as plain numpy / scikit-learn functions.

This module is the single source of truth for the numbers ``hf_scrub`` reports (docs/design.md §3). The ``evaluate``
modules next to it (``hf_scrub/metrics/<name>/<name>.py``) are thin wrappers that call these functions, so a
value computed through ``evaluate.load(...)`` and one computed here are the same by construction. Keeping the
logic here, not inside the ``evaluate.Metric`` classes, also keeps it importable, typed and testable without
``evaluate``'s caching machinery (``evaluate`` is in maintenance mode).

All functions validate their inputs and raise :class:`ValueError` with a message that names the problem and
how to fix it, because a silently wrong unlearning metric is worse than a crash: it is what users cite to
claim that data was removed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = [
    "MIN_EXAMPLES_PER_GROUP",
    "SPLIT_NAMES",
    "interclass_confusion",
    "membership_inference_attack",
    "per_example_cross_entropy",
    "unlearning_accuracy",
]

#: Split names understood by :func:`unlearning_accuracy`, in reporting order.
SPLIT_NAMES: tuple[str, ...] = ("forget", "retain", "test", "forget_validation")

#: Smallest number of examples per group (forget / test) the attack's cross-validation can run on. With
#: scikit-learn's default ``StratifiedShuffleSplit`` test size (10 %), ``2 * n`` balanced examples give
#: ``ceil(0.2 * n)`` test examples, and a stratified split needs at least one per class, i.e. two; that first
#: holds at ``n = 6``. Fewer would make scikit-learn fail with a message about ``test_size``, which does not
#: tell the user that the fix is "more forget / test examples".
MIN_EXAMPLES_PER_GROUP = 6

_LOSS_CLIP = 100.0


def _as_1d(values: Any, name: str) -> np.ndarray:
    """Turn a list / numpy array / torch tensor into a 1-D numpy array, with a clear error otherwise."""
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        hint = (
            " If these are logits or probabilities, pass `logits.argmax(-1)` instead."
            if name == "predictions" and array.ndim == 2
            else ""
        )
        raise ValueError(f"`{name}` must be one-dimensional (one value per example), got shape {array.shape}.{hint}")
    return array


def _as_labels(values: Any, name: str) -> np.ndarray:
    """1-D integer class ids. Floats that are whole numbers are accepted (e.g. after a round trip via JSON)."""
    array = _as_1d(values, name)
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.number) or not np.all(np.equal(np.mod(array, 1), 0)):
            raise ValueError(
                f"`{name}` must hold integer class ids, got dtype {array.dtype}. "
                "Pass class indices (e.g. `logits.argmax(-1)` for predictions), not scores or label names."
            )
        array = array.astype(np.int64)
    return array


def _accuracy(predictions: np.ndarray, references: np.ndarray) -> float:
    return float(np.mean(predictions == references))


def unlearning_accuracy(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    splits: Sequence[str] | np.ndarray,
    forget_classes: Iterable[int] | None = None,
) -> dict[str, float]:
    """Accuracy of one model on each evaluation split, in one call.

    Unlearning is judged by comparing the same model on several splits (docs/design.md §3): the forget set (what should
    be forgotten), the retain set (what must be kept), the test set (generalisation) and, for SCRUB+R, a
    forget-validation set. Tagging every example with its split lets one prediction pass over a concatenated
    dataset produce all numbers, and lets the ``evaluate`` wrapper accumulate batches from mixed splits.

    Args:
        predictions: Predicted class id per example.
        references: True class id per example (the label the model was trained with, for the forget set).
        splits: Split name per example, one of ``"forget"``, ``"retain"``, ``"test"``, ``"forget_validation"``.
        forget_classes: For class unlearning, the forgotten class ids. Test accuracy is then also reported
            separately on test examples of those classes and of the remaining classes, because overall test
            accuracy mixes "forgot the class" (wanted) with "damaged the other classes" (unwanted).

    Returns:
        ``{"<split>_accuracy": fraction in [0, 1]}`` for every split present (in the order of
        :data:`SPLIT_NAMES`), plus ``test_forget_classes_accuracy`` and ``test_retain_classes_accuracy`` when
        ``forget_classes`` is given and a ``"test"`` split is present. Error is ``1 - accuracy``.

    Raises:
        ValueError: on empty input, unequal lengths, unknown split names, non-integer labels, an empty
            ``forget_classes``, or a test split that has no examples inside (or outside) ``forget_classes``.
    """
    predictions = _as_labels(predictions, "predictions")
    references = _as_labels(references, "references")
    split_array = _as_1d(splits, "splits").astype(str)
    lengths = {"predictions": len(predictions), "references": len(references), "splits": len(split_array)}
    if len(set(lengths.values())) != 1:
        raise ValueError(
            f"`predictions`, `references` and `splits` must have one entry per example, got lengths {lengths}. "
            "Pass the split name of every example in `splits`."
        )
    if len(predictions) == 0:
        raise ValueError("No examples were given: pass at least one prediction, reference and split name.")
    unknown = sorted(set(split_array.tolist()) - set(SPLIT_NAMES))
    if unknown:
        raise ValueError(
            f"Unknown split name(s) {unknown}; every entry of `splits` must be one of {list(SPLIT_NAMES)}."
        )

    results: dict[str, float] = {}
    for split in SPLIT_NAMES:
        mask = split_array == split
        if mask.any():
            results[f"{split}_accuracy"] = _accuracy(predictions[mask], references[mask])

    if forget_classes is not None:
        classes = np.asarray(sorted({int(c) for c in forget_classes}), dtype=np.int64)
        if classes.size == 0:
            raise ValueError("`forget_classes` is empty: pass the forgotten class ids, or None for no class split.")
        test = split_array == "test"
        if test.any():
            in_forget = np.isin(references, classes)
            for key, mask, where in (
                ("test_forget_classes_accuracy", test & in_forget, "inside"),
                ("test_retain_classes_accuracy", test & ~in_forget, "outside"),
            ):
                if not mask.any():
                    raise ValueError(
                        f"No test example has a reference {where} forget_classes={classes.tolist()}, so "
                        f"`{key}` is undefined. Check the class ids, include test examples of both the forgotten "
                        "and the remaining classes, or pass forget_classes=None."
                    )
                results[key] = _accuracy(predictions[mask], references[mask])
    return results


def _as_losses(values: Any, name: str) -> np.ndarray:
    array = _as_1d(values, name).astype(np.float64)
    if np.isnan(array).any():
        raise ValueError(
            f"`{name}` contains {int(np.isnan(array).sum())} NaN loss(es). NaN means the model's forward pass "
            "broke (e.g. overflow under fp16); compute losses in float32 (see `per_example_cross_entropy`)."
        )
    return array


def membership_inference_attack(
    forget_losses: Sequence[float] | np.ndarray,
    test_losses: Sequence[float] | np.ndarray,
    seed: int = 0,
    n_splits: int = 5,
) -> dict[str, float]:
    """The SCRUB paper's loss-based membership inference attack (Kurmanji et al. 2023, docs/design.md §3).

    An attacker who sees only per-example losses tries to tell forget-set examples (which the original model
    was trained on) from unseen test examples of the same classes. If unlearning worked like retraining, the
    forget losses look like unseen-data losses and the attack is at chance (50). A model that "over-forgets"
    (forget loss far above test loss) is again easy to tell apart, which is why forget accuracy 0 is not the
    goal in selective unlearning.

    Procedure: label forget examples 1 and test examples 0; subsample the larger group to the smaller group's
    size (``numpy.random.default_rng(seed)``, without replacement) so that chance is exactly 50 %; use the
    loss clipped to [-100, 100] as the only feature (infinite losses become 100); score
    ``sklearn.linear_model.LogisticRegression`` with ``StratifiedShuffleSplit(n_splits, random_state=seed)``
    cross-validation (scikit-learn's default test size, 10 %).

    Args:
        forget_losses: Per-example cross-entropy of the model on the forget set.
        test_losses: Per-example cross-entropy on held-out test examples of the forget set's classes.
        seed: Seeds both the subsampling and the cross-validation splits; results are deterministic per seed.
        n_splits: Number of cross-validation splits.

    Returns:
        ``{"mia": mean CV accuracy x 100, "mia_auc": mean CV ROC AUC x 100}`` (both in [0, 100], 50 = chance),
        computed over the same splits. AUC is threshold-free, so it is less noisy than accuracy on small sets.

    Raises:
        ValueError: on NaN losses, non-1-D input, ``n_splits < 2``, or fewer than
            :data:`MIN_EXAMPLES_PER_GROUP` examples in either group.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedShuffleSplit, cross_validate

    forget = _as_losses(forget_losses, "forget_losses")
    test = _as_losses(test_losses, "test_losses")
    if int(n_splits) < 2:
        raise ValueError(f"`n_splits` must be at least 2 for cross-validation, got {n_splits}.")
    if min(len(forget), len(test)) < MIN_EXAMPLES_PER_GROUP:
        raise ValueError(
            f"The attack needs at least {MIN_EXAMPLES_PER_GROUP} forget losses and {MIN_EXAMPLES_PER_GROUP} test "
            f"losses for its cross-validation (got {len(forget)} forget, {len(test)} test). Pass more examples; "
            "a few hundred per group give a stable estimate."
        )

    rng = np.random.default_rng(seed)
    size = min(len(forget), len(test))
    if len(forget) > size:
        forget = rng.choice(forget, size=size, replace=False)
    elif len(test) > size:
        test = rng.choice(test, size=size, replace=False)

    features = np.clip(np.concatenate([forget, test]), -_LOSS_CLIP, _LOSS_CLIP).reshape(-1, 1)
    members = np.concatenate([np.ones(size, dtype=np.int64), np.zeros(size, dtype=np.int64)])
    cv = StratifiedShuffleSplit(n_splits=int(n_splits), random_state=seed)
    # One cross_validate call with two scorers == cross_val_score(scoring="accuracy") and
    # cross_val_score(scoring="roc_auc") with this cv (same splits, since random_state is fixed), fitted once.
    scores = cross_validate(LogisticRegression(), features, members, cv=cv, scoring=("accuracy", "roc_auc"))
    return {
        "mia": float(np.mean(scores["test_accuracy"]) * 100.0),
        "mia_auc": float(np.mean(scores["test_roc_auc"]) * 100.0),
    }


def interclass_confusion(
    predictions: Sequence[int] | np.ndarray,
    references: Sequence[int] | np.ndarray,
    class_a: int,
    class_b: int,
) -> dict[str, float]:
    """Interclass-confusion metrics for the label-noise scenario (Goel et al. 2022; SCRUB paper §5).

    The original model was trained with the labels of k examples swapped between classes A and B; those
    examples are the forget set. A model that still carries their influence confuses A and B on clean data.
    Pass test-set predictions and true references: ``ic_error`` is then the error on A ∪ B test examples and
    ``fgt`` the number of A <-> B confusions, both of which should drop to the retrained model's level.

    Args:
        predictions: Predicted class id per example.
        references: True class id per example.
        class_a: One of the two confused classes.
        class_b: The other one.

    Returns:
        ``ic_error``: fraction in [0, 1] of examples with reference A or B that are misclassified (into any
        class); ``ic_a_to_b`` / ``ic_b_to_a``: number of A examples predicted B and B predicted A;
        ``fgt = ic_a_to_b + ic_b_to_a``. Counts are integer-valued floats, so all values share one type.

    Raises:
        ValueError: on empty or unequal-length input, ``class_a == class_b``, or no example of A or B.
    """
    predictions = _as_labels(predictions, "predictions")
    references = _as_labels(references, "references")
    if len(predictions) != len(references):
        raise ValueError(
            f"`predictions` ({len(predictions)}) and `references` ({len(references)}) must have the same length: "
            "one prediction per reference."
        )
    if len(predictions) == 0:
        raise ValueError("No examples were given: pass the predictions and references of the test set.")
    class_a, class_b = int(class_a), int(class_b)
    if class_a == class_b:
        raise ValueError(f"`class_a` and `class_b` must be two different classes, got {class_a} twice.")
    in_pair = (references == class_a) | (references == class_b)
    if not in_pair.any():
        raise ValueError(
            f"No example has reference {class_a} or {class_b}, so the interclass confusion is undefined. "
            "Check the class ids and pass predictions on a set that contains both classes (the test set)."
        )
    a_to_b = int(np.sum((references == class_a) & (predictions == class_b)))
    b_to_a = int(np.sum((references == class_b) & (predictions == class_a)))
    return {
        "ic_error": float(np.mean(predictions[in_pair] != references[in_pair])),
        "fgt": float(a_to_b + b_to_a),
        "ic_a_to_b": float(a_to_b),
        "ic_b_to_a": float(b_to_a),
    }


def per_example_cross_entropy(
    logits: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    labels: torch.Tensor | np.ndarray | Sequence[int],
) -> np.ndarray:
    """Per-example cross-entropy, the input of :func:`membership_inference_attack`.

    Computed with ``torch.nn.functional.cross_entropy(reduction="none")`` in float32 so that the losses match
    what training optimised, and so that fp16 / bf16 logits do not overflow or lose the small differences the
    attack looks for.

    Args:
        logits: ``(num_examples, num_classes)`` scores (torch tensor on any device, numpy array or nested list).
        labels: ``(num_examples,)`` class ids.

    Returns:
        float32 numpy array of shape ``(num_examples,)``.
    """
    import torch
    import torch.nn.functional as F

    logits_t = (logits.detach() if isinstance(logits, torch.Tensor) else torch.as_tensor(np.asarray(logits))).float()
    labels_t = (labels.detach() if isinstance(labels, torch.Tensor) else torch.as_tensor(np.asarray(labels))).long()
    if logits_t.ndim != 2:
        raise ValueError(
            f"`logits` must have shape (num_examples, num_classes), got {tuple(logits_t.shape)}. For sequence "
            "models, reduce to one loss per example before calling the attack."
        )
    if labels_t.ndim != 1 or labels_t.shape[0] != logits_t.shape[0]:
        raise ValueError(
            f"`labels` must have shape ({logits_t.shape[0]},) to match `logits` {tuple(logits_t.shape)}, "
            f"got {tuple(labels_t.shape)}."
        )
    losses = F.cross_entropy(logits_t, labels_t.to(logits_t.device), reduction="none")
    return losses.cpu().numpy().astype(np.float32, copy=False)
