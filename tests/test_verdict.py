"""The verdict's rules on constructed reports (issue 10, deliverable 3): it says plainly when a run did not forget."""

import math

import pytest

from hf_scrub.verdict import CLASS_TOLERANCE, MIN_BAND, error_band, unlearning_verdict

ORIGINAL = {"forget_accuracy": 0.99, "retain_accuracy": 0.99, "test_retain_classes_accuracy": 0.969}


def class_run(forget_accuracy, held_out_accuracy=None, retain=0.99, remaining=0.963):
    unlearned = {
        "forget_accuracy": forget_accuracy,
        "retain_accuracy": retain,
        "test_retain_classes_accuracy": remaining,
    }
    if held_out_accuracy is not None:
        unlearned["test_forget_classes_accuracy"] = held_out_accuracy
    return unlearning_verdict({"type": "class", "num_examples": 500}, ORIGINAL, unlearned, "fixed schedule")


def test_class_unlearning_that_did_not_forget_is_called_so():
    """The case of docs/design.md §9: the forgotten class kept 81 % accuracy and nothing said so."""
    verdict = class_run(0.81, 0.81)
    assert verdict["forget_target_met"] is False and verdict["retain_kept"] is True
    assert verdict["summary"].startswith("forget target NOT met; retain kept")
    assert "forget_accuracy 0.8100" in verdict["reference"]


@pytest.mark.parametrize(
    ("forget", "held_out", "met"),
    [
        (0.0, 0.0, True),
        (CLASS_TOLERANCE, CLASS_TOLERANCE, True),
        (0.0, 0.05, False),
        (0.03, 0.0, False),
        (0.0, None, True),
    ],
)
def test_class_target_is_the_accuracy_of_a_model_that_never_saw_the_classes(forget, held_out, met):
    assert class_run(forget, held_out)["forget_target_met"] is met


def test_retain_is_kept_within_two_points_of_the_original():
    assert class_run(0.0, 0.0, retain=0.971)["retain_kept"] is True  # 0.99 - 0.971 = 0.019
    assert class_run(0.0, 0.0, retain=0.969)["retain_kept"] is False  # 0.021 below
    assert class_run(0.0, 0.0, remaining=0.947)["retain_kept"] is False  # §9: the demo's lr cost 2.2 points
    assert "retain NOT kept" in class_run(0.0, 0.0, remaining=0.947)["summary"]


def test_error_band_is_the_normal_interval_of_a_difference_of_error_rates():
    assert error_band(0.2, 100, 100) == pytest.approx(1.96 * math.sqrt(0.2 * 0.8 * (1 / 100 + 1 / 100)))  # 0.1109
    assert error_band(0.0, 100, 100) == MIN_BAND  # no spread at error 0: the floor
    assert error_band(0.5, 10_000, 10_000) == MIN_BAND  # large sets: the floor


def selective(forget_error, reference_error, held_out_from_train=False, unlearned_reference_error=None):
    """A selective run whose original model has `reference_error` on the unseen forget-validation examples."""
    forget = {"type": "selective", "num_examples": 100, "num_forget_validation_examples": 100,
              "test_held_out_from_train": held_out_from_train}  # fmt: skip
    drifted = reference_error if unlearned_reference_error is None else unlearned_reference_error
    unlearned = {"forget_accuracy": 1 - forget_error, "forget_validation_accuracy": 1 - drifted,
                 "retain_accuracy": 0.99}  # fmt: skip
    original = {"retain_accuracy": 0.99, "forget_validation_accuracy": 1 - reference_error}
    return unlearning_verdict(forget, original, unlearned, "fixed schedule")


@pytest.mark.parametrize(
    ("forget_error", "met"),
    [(0.2, True), (0.3, True), (0.1, True), (0.32, False), (0.0, False), (0.5, False)],  # band 0.1109 around 0.2
)
def test_selective_target_is_two_sided_around_unseen_data(forget_error, met):
    """Not forgetting (error 0) and overshooting (error 0.5) both miss: either makes the forget set stand out."""
    assert selective(forget_error, 0.2)["forget_target_met"] is met


def test_selective_reference_is_the_original_model_error_on_unseen_data():
    """Measured on MNIST: unlearning 100 threes made the unlearned model 19 % wrong on unseen threes (the original:
    3 %). A forget error of 12 % sits inside a band around the drifted 19 %, yet Retrain's is 4 %: it overshoots."""
    verdict = selective(0.12, 0.03, unlearned_reference_error=0.19)
    assert verdict["forget_target_met"] is False
    assert "within the original's error on them 0.0300 +/- 0.0473" in verdict["reference"]
    assert selective(0.05, 0.03, unlearned_reference_error=0.19)["forget_target_met"] is True
    # Without the original's measurement (an older results file) the unlearned model's is used, and named.
    forget = {"type": "selective", "num_examples": 100, "num_forget_validation_examples": 100}
    unlearned = {"forget_accuracy": 0.8, "forget_validation_accuracy": 0.8, "retain_accuracy": 0.99}
    verdict = unlearning_verdict(forget, {"retain_accuracy": 0.99}, unlearned, "fixed schedule")
    assert verdict["forget_target_met"] is True and "the unlearned model's error" in verdict["reference"]


def test_no_unseen_reference_means_no_judgement():
    verdict = selective(0.2, 0.2, held_out_from_train=True)
    assert verdict["forget_target_met"] is None and verdict["summary"].startswith("forget target not judged")
    assert "no unseen examples" in verdict["reference"]


def test_causal_lm_is_judged_on_the_answers_it_still_produces():
    """Measured on the LLM demo: next-token accuracy looked like unseen text (0.98 vs 0.88, band 0.26 at 8 forget
    rows) while 6 of 8 forgotten answers were still produced; the answer match must decide, and say so."""
    forget = {"type": "indices", "num_examples": 8, "num_forget_validation_examples": 20}
    unlearned = {"forget_accuracy": 0.979, "forget_validation_accuracy": 0.882, "retain_accuracy": 1.0,
                 "forget_answer_accuracy": 0.75, "forget_validation_answer_accuracy": 0.05,
                 "retain_answer_accuracy": 1.0}  # fmt: skip
    original = {"retain_accuracy": 1.0, "retain_answer_accuracy": 1.0, "forget_validation_accuracy": 0.89,
                "forget_validation_answer_accuracy": 0.05}  # fmt: skip
    verdict = unlearning_verdict(forget, original, unlearned, "fixed schedule")
    assert verdict["forget_target_met"] is False
    assert "forget answer error 0.2500 within the original's answer error on them 0.9500" in verdict["reference"]
    forgotten = {**unlearned, "forget_answer_accuracy": 0.0}
    assert unlearning_verdict(forget, original, forgotten, "fixed schedule")["forget_target_met"] is True
    lost = {**forgotten, "retain_answer_accuracy": 0.9}
    verdict = unlearning_verdict(forget, original, lost, "fixed schedule")
    assert verdict["retain_kept"] is False and "retain_answer_accuracy 0.9000 vs 1.0000" in verdict["retain"]
