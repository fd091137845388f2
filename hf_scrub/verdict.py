"""The verdict: did the run reach the forgetting target, and did it keep what it should? (docs/design.md §17)

A run that did not forget must never look like one that did. The targets come only from data the run has, never
from a Retrain model:
- class unlearning: a model that never saw the forgotten classes does not predict them, so their accuracy must be
  at most `CLASS_TOLERANCE` on the forget set and on held-out examples of those classes (when there are any);
- other requests (selective, indices, ids, a column): the forget set must look like unseen data of its
  distribution, so its error must lie within a two-sided confidence band around the original model's error on the
  forget-validation examples (overshooting makes the forget set stand out as much as not forgetting does; the
  unlearned model's own error there moves with the unlearning, so it cannot be the reference). Without unseen
  forget-validation data (no test split) there is no reference, and the verdict says so instead of guessing;
- the retain side is kept when retain accuracy (and, for classes, the remaining classes' test accuracy; for causal
  LMs the retain answer match) is within `RETAIN_TOLERANCE` of the original's;
- causal LMs with prompt/completion data are judged on the greedy answer match (does the model still produce the
  completion?) rather than on next-token accuracy, which the answers' predictable wording dominates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .lm_metrics import MAX_GENERATION_EXAMPLES

CLASS_TOLERANCE = 0.02
RETAIN_TOLERANCE = 0.02
MIN_BAND = 0.03  # the smallest two-sided band around the reference error
Z = 1.96  # 95 % normal band for the difference of two error rates


def error_band(reference_error: float, num_reference: int, num_forget: int) -> float:
    """Half-width of the band within which the forget error counts as 'like unseen data'.

    The 95 % normal interval of the difference between two independent error rates at the reference's level,
    never narrower than `MIN_BAND`.
    """
    p = min(max(reference_error, 0.0), 1.0)
    spread = Z * math.sqrt(p * (1 - p) * (1 / max(num_reference, 1) + 1 / max(num_forget, 1)))
    return max(MIN_BAND, spread)


def _retain_kept(original: Mapping[str, float], unlearned: Mapping[str, float]) -> tuple[bool, str]:
    names = ("retain_accuracy", "test_retain_classes_accuracy", "retain_answer_accuracy")
    keys = [k for k in names if k in original and k in unlearned]
    kept = all(unlearned[k] >= original[k] - RETAIN_TOLERANCE for k in keys)
    detail = ", ".join(f"{k} {unlearned[k]:.4f} vs {original[k]:.4f}" for k in keys)
    return kept, detail


def unlearning_verdict(
    forget: Mapping[str, Any], original: Mapping[str, float], unlearned: Mapping[str, float], stopped_because: str
) -> dict[str, Any]:
    """The `verdict` block of `unlearning_results.json`, with a one-line `summary` for the console and the card.

    `forget` is the results' `forget` block (type, sizes, whether the test split was held out of training).
    `forget_target_met` is True / False, or None when the run has no reference to judge it by.
    """
    retain_kept, retain_detail = _retain_kept(original, unlearned)
    if forget.get("type") == "class":
        measured = {"forget_accuracy": unlearned["forget_accuracy"]}
        if "test_forget_classes_accuracy" in unlearned:
            measured["test_forget_classes_accuracy"] = unlearned["test_forget_classes_accuracy"]
        met: bool | None = all(value <= CLASS_TOLERANCE for value in measured.values())
        reference = (
            f"a model that never saw the forgotten classes: their accuracy <= {CLASS_TOLERANCE} "
            f"({', '.join(f'{k} {v:.4f}' for k, v in measured.items())})"
        )
    elif "forget_validation_accuracy" in unlearned and not forget.get("test_held_out_from_train"):
        # A causal LM's next-token accuracy is mostly the answers' predictable wording; whether the model still
        # *produces* the forgotten completions is the greedy answer match, judged instead when it was measured.
        answers = "forget_answer_accuracy" in unlearned and "forget_validation_answer_accuracy" in unlearned
        prefix, cap = ("answer ", MAX_GENERATION_EXAMPLES) if answers else ("", None)
        key = "answer_accuracy" if answers else "accuracy"
        # The original model's error on the unseen examples, not the unlearned model's: unlearning moves the latter
        # too (forgetting 100 threes made unseen threes 3 % -> 19 % wrong), so it would let a model that forgot
        # the whole distribution pass as "like unseen data" (docs/design.md §17).
        judged_by = original if f"forget_validation_{key}" in original else unlearned
        reference_error = 1 - judged_by[f"forget_validation_{key}"]
        forget_error = 1 - unlearned[f"forget_{key}"]
        counts = [forget.get("num_forget_validation_examples", 0), forget["num_examples"]]
        band = error_band(reference_error, *(min(count, cap or count) for count in counts))
        met = abs(forget_error - reference_error) <= band
        whose = "the original's" if judged_by is original else "the unlearned model's"
        reference = (
            f"unseen examples of the forget set's distribution: forget {prefix}error {forget_error:.4f} within "
            f"{whose} {prefix}error on them {reference_error:.4f} +/- {band:.4f}"
        )
    else:
        met = None
        reference = "none: no unseen examples of the forget set's distribution (pass a test split to judge)"
    forget_text = {True: "forget target met", False: "forget target NOT met", None: "forget target not judged"}[met]
    retain_text = "retain kept" if retain_kept else "retain NOT kept"
    return {
        "forget_target_met": met,
        "retain_kept": retain_kept,
        "reference": reference,
        "retain": retain_detail,
        "stopped_because": stopped_because,
        "summary": f"{forget_text}; {retain_text} ({retain_detail}); reference: {reference}; {stopped_because}.",
    }
