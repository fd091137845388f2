"""Unlearning metrics: plain functions plus `evaluate` modules that wrap them.

The functions in :mod:`hf_scrub.metrics.functional` (classifiers, docs/design.md §3) and :mod:`hf_scrub.metrics.llm`
(causal LMs, §10) compute every number. Each metric also ships as an `evaluate` module in
``hf_scrub/metrics/<name>/<name>.py`` with a README metric card, so it can be used wherever `evaluate` modules are
expected; :func:`load_metric` loads one from the installed package, offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .functional import (
    MIN_EXAMPLES_PER_GROUP,
    SPLIT_NAMES,
    interclass_confusion,
    membership_inference_attack,
    per_example_cross_entropy,
    unlearning_accuracy,
)
from .llm import (
    DEFAULT_MIN_K,
    MEMBERSHIP_SCORES,
    answer_probability,
    forget_quality,
    llm_membership_inference,
    loss_score,
    membership_auc,
    membership_scores,
    min_k_plus_plus_score,
    min_k_score,
    model_utility,
    normalised_probability,
    perplexity,
    privleak,
    rouge_l,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_aggregate,
    zlib_score,
)

if TYPE_CHECKING:
    import evaluate

__all__ = [
    "DEFAULT_MIN_K",
    "MEMBERSHIP_SCORES",
    "METRIC_NAMES",
    "MIN_EXAMPLES_PER_GROUP",
    "SPLIT_NAMES",
    "answer_probability",
    "forget_quality",
    "interclass_confusion",
    "llm_membership_inference",
    "load_metric",
    "loss_score",
    "membership_auc",
    "membership_inference_attack",
    "membership_scores",
    "metric_path",
    "min_k_plus_plus_score",
    "min_k_score",
    "model_utility",
    "normalised_probability",
    "per_example_cross_entropy",
    "perplexity",
    "privleak",
    "rouge_l",
    "rouge_l_recall",
    "truth_ratio",
    "truth_ratio_aggregate",
    "unlearning_accuracy",
    "zlib_score",
]

#: Names of the `evaluate` modules shipped in this package (one folder each).
METRIC_NAMES: tuple[str, ...] = (
    "unlearning_accuracy",
    "membership_inference",
    "interclass_confusion",
    "llm_membership_inference",
    "truth_ratio",
)

_METRICS_DIR = Path(__file__).resolve().parent


def metric_path(name: str) -> Path:
    """Folder of the `evaluate` module ``name``, usable as ``evaluate.load(str(metric_path(name)))``.

    Raises:
        ValueError: if ``name`` is not one of :data:`METRIC_NAMES`.
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"Unknown metric {name!r}; available metrics: {', '.join(METRIC_NAMES)}.")
    return _METRICS_DIR / name


def load_metric(name: str, **kwargs: Any) -> evaluate.EvaluationModule:
    """Load one of this package's metrics with ``evaluate.load`` from its local folder.

    An absolute folder path makes `evaluate` import the module script from disk: the Hub is never contacted,
    which is what makes the metrics usable offline. Keyword arguments (``cache_dir``, ``keep_in_memory``,
    ``experiment_id``, ``num_process``, ``process_id``, ...) are passed to ``evaluate.load``.

    Raises:
        ValueError: if ``name`` is not one of :data:`METRIC_NAMES`.
    """
    folder = metric_path(name)
    import evaluate  # deferred: the functional API above does not need evaluate (and its datasets import)

    return evaluate.load(str(folder), **kwargs)
