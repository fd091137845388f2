"""SCRUB+R (rewind) for privacy-style selective unlearning (DESIGN §2).

Driving the forget error as high as possible makes the forget set stand out: a model that never saw an example
errs on it about as often as on unseen examples of the same distribution, not always. SCRUB+R keeps the model after
every epoch (epoch 0 = the original model), measures the *final* model's error on held-out forget-distribution data
(the forget-validation split) as a stand-in for "never seen", and returns the epoch whose forget error is closest to
it, the earliest on ties.
"""

from __future__ import annotations

from collections.abc import Sequence


def choose_rewind_epoch(forget_errors: Sequence[float], reference_error: float) -> int:
    """Index (= epoch) of the forget error closest to `reference_error`; ties go to the earliest epoch."""
    if not forget_errors:
        raise ValueError("No epochs recorded: SCRUB+R needs the forget error of at least epoch 0.")
    # Rounded so that errors equally far away in exact arithmetic (k/n fractions) tie despite float rounding.
    distances = [round(abs(error - reference_error), 9) for error in forget_errors]
    return distances.index(min(distances))
