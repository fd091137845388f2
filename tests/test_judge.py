"""The judge (hf_scrub/judge.py) on constructed evidence with known answers."""

import math

import numpy as np
import pytest
from scipy.stats import ks_2samp

from hf_scrub.judge import (
    CLASS_TOLERANCE,
    Evidence,
    Judge,
    Kind,
    Status,
    best_epoch,
    matched_quantiles,
    membership_auc,
    request_kind,
    verdict,
)


def test_request_kind_comes_from_the_data():
    assert request_kind([3, 3], [0, 1, 2], 50, True) is Kind.CLASS
    assert request_kind([3, 1], [0, 1, 3], 50, True) is Kind.DISTRIBUTION
    # Held-out rows the original model trained on cannot say what unseen data looks like.
    assert request_kind([3, 1], [0, 1, 3], 50, False) is Kind.NONE
    assert request_kind([3, 1], [0, 1, 3], 0, True) is Kind.NONE
    # A class request needs no reference to be judged (a model that never saw a class does not predict it).
    assert request_kind([3, 3], [0, 1, 2], 0, True) is Kind.CLASS
    assert request_kind(None, None, 20, True) is Kind.DISTRIBUTION  # a causal LM has no classes


def test_membership_auc_counts_pairs_where_the_reference_loss_is_higher():
    assert membership_auc(np.array([0.1, 0.2]), np.array([1.0, 2.0])) == 1.0  # forget rows all more member-like
    assert membership_auc(np.array([1.0, 2.0]), np.array([3.0, 0.5])) == 0.5  # 2 of 4 pairs
    assert membership_auc(np.array([1.0]), np.array([1.0, 0.0])) == 0.25  # a tie counts half: (0.5 + 0) / 2
    assert membership_auc(np.array([5.0, 6.0]), np.array([1.0, 2.0])) == 0.0


def test_matched_quantiles_carry_each_row_to_the_reference_at_its_own_rank():
    # Ranks 2, 0, 1 -> levels 5/6, 1/6, 1/2 of [0, 1, 2, 3] (linear interpolation at level * 3): 2.5, 0.5, 1.5.
    targets = matched_quantiles(np.array([0.3, 0.1, 0.2]), np.array([0.0, 1.0, 2.0, 3.0]))
    np.testing.assert_allclose(targets, [2.5, 0.5, 1.5])
    # Equal scores keep their order: distinct targets, the earlier row lower.
    np.testing.assert_allclose(matched_quantiles(np.array([1.0, 1.0]), np.array([0.0, 4.0])), [1.0, 3.0])


def evidence(forget_scores, retain_accuracy=1.0, **kwargs):
    return Evidence(forget_scores=np.asarray(forget_scores, dtype=float), retain_accuracy=retain_accuracy,
                    num_retain=256, **kwargs)  # fmt: skip


def test_class_target_is_that_no_row_is_predicted_as_a_forgotten_class():
    judge = Judge(Kind.CLASS, original_retain_accuracy=0.99)
    recognised = np.array([True] + [False] * 99)  # 1 % of the forget rows
    met = judge(evidence(np.zeros(100), 0.98, forget_recognised=recognised, reference_recognised=np.zeros(50, bool)))
    assert met.status is Status.MET and met.statistic == 0.01 and met.goal_reached
    # Unseen rows of the class still recognised: not forgotten, whatever the forget rows say.
    held_out = np.array([True] * 2 + [False] * 48)  # 4 %
    short = judge(evidence(np.zeros(100), 0.99, forget_recognised=np.zeros(100, bool), reference_recognised=held_out))
    assert short.status is Status.SHORT and short.statistic == pytest.approx(0.04) and CLASS_TOLERANCE < 0.04
    assert short.forget_met is False


def test_retain_is_kept_within_two_points_of_the_original():
    judge = Judge(Kind.CLASS, original_retain_accuracy=0.99)
    none = np.zeros(10, bool)
    assert judge(evidence(np.zeros(10), 0.97, forget_recognised=none)).retain_kept  # exactly 2 points
    lost = judge(evidence(np.zeros(10), 0.9699, forget_recognised=none))
    assert not lost.retain_kept and lost.status is Status.MET and not lost.goal_reached


def test_distribution_target_is_a_two_sided_two_sample_test_against_the_originals_unseen_rows():
    rng = np.random.default_rng(0)
    reference = rng.exponential(1.0, 200)
    judge = Judge(Kind.DISTRIBUTION, original_retain_accuracy=1.0, reference_scores=reference)
    scores = rng.exponential(1.0, 100)
    alike = judge(evidence(scores))
    assert alike.status is Status.MET and alike.forget_met is True
    assert alike.p_value == pytest.approx(ks_2samp(scores, reference).pvalue) and alike.p_value >= 0.05
    assert alike.statistic == pytest.approx(membership_auc(scores, reference))
    memorised = judge(evidence(rng.exponential(0.05, 100)))  # far lower losses: still member-like
    assert memorised.status is Status.SHORT and memorised.statistic > 0.9 and memorised.p_value < 0.05
    overshot = judge(evidence(rng.exponential(1.0, 100) + 5.0))  # far higher losses than unseen rows
    assert overshot.status is Status.OVERSHOT and overshot.statistic < 0.1


def test_the_distribution_test_sees_a_shape_the_auc_misses():
    """Unseen rows either sure and right or wrong; forget rows all at middling losses: the AUC is 0.5, the
    distributions are not alike (a threshold attack tells them apart)."""
    reference = np.r_[np.full(50, 0.01), np.full(50, 2.0)]
    judge = Judge(Kind.DISTRIBUTION, original_retain_accuracy=1.0, reference_scores=reference)
    middling = judge(evidence(np.full(100, 0.5)))
    assert middling.statistic == 0.5  # every reference row is either above or below every forget row, half each
    expected = ks_2samp(np.full(100, 0.5), reference)
    assert middling.distance == pytest.approx(expected.statistic) == 0.5
    assert middling.p_value == pytest.approx(expected.pvalue) and middling.p_value < 1e-6
    assert middling.status is Status.OVERSHOT  # not alike; with AUC 0.5 not "more member-like" either


def test_no_unseen_reference_means_no_judgement():
    judgement = Judge(Kind.NONE, original_retain_accuracy=1.0)(evidence([0.0, 0.0]))
    assert judgement.status is Status.UNJUDGED and judgement.forget_met is None and not judgement.goal_reached
    block = verdict(judgement, "fixed schedule: all 3 epochs run", 3)
    assert block["forget_target_met"] is None and block["retain_kept"] is True
    assert block["summary"].startswith("forget target not judged; retain kept")
    assert "pass a test split to judge" in block["summary"]


def test_a_distribution_judge_needs_the_originals_unseen_rows():
    with pytest.raises(ValueError, match="unseen reference rows"):
        Judge.for_original(Kind.DISTRIBUTION, evidence([0.0]))


def test_best_epoch_prefers_the_goal_then_retain_then_the_closest_forget_side_then_the_earliest():
    judge = Judge(Kind.CLASS, original_retain_accuracy=1.0)

    def reading(share, retain):
        recognised = np.arange(100) < round(100 * share)
        return judge(evidence(np.zeros(100), retain, forget_recognised=recognised))

    original, short, broken, reached, later = (reading(1.0, 1.0), reading(0.3, 0.99), reading(0.0, 0.9),
                                               reading(0.01, 0.985), reading(0.0, 0.99))  # fmt: skip
    assert best_epoch([original, short, broken]) == 1  # retain kept beats a broken model that forgot everything
    assert best_epoch([original, short, reached]) == 2
    assert best_epoch([original, reached, later]) == 2  # both reach the goal: the forget side closer to its target
    assert best_epoch([original, later, reading(0.0, 0.99)]) == 1  # equal: the earliest
    with pytest.raises(ValueError):
        best_epoch([])


def test_verdict_and_stop_reason_are_one_judgement():
    judge = Judge(Kind.CLASS, original_retain_accuracy=0.99)
    judgement = judge(evidence(np.zeros(10), 0.95, forget_recognised=np.zeros(10, bool)))
    block = verdict(judgement, "goal-driven schedule: budget: all 4 epochs run", 4)
    assert block["forget_target_met"] is True and block["retain_kept"] is False and block["epoch"] == 4
    assert block["summary"].startswith("forget target met; retain NOT kept (retain accuracy 0.9500 vs the original's")
    assert block["summary"].endswith("; goal-driven schedule: budget: all 4 epochs run.")


def test_a_logged_judgement_is_rebuilt_exactly():
    rng = np.random.default_rng(1)
    judge = Judge(Kind.DISTRIBUTION, 0.97, "accuracy", rng.exponential(1.0, 30))
    restored = Judge.restore(judge.to_log())
    assert restored.kind is judge.kind and restored.original_retain_accuracy == 0.97
    np.testing.assert_array_equal(restored.reference_scores, judge.reference_scores)
    judgement = judge(evidence(rng.exponential(0.5, 20), 0.96))
    assert restored.from_log(judgement.to_log()) == judgement
    assert all(isinstance(value, float) and math.isfinite(value) for value in judgement.to_log().values())


def test_a_causal_lms_answers_reproduced_more_often_than_unseen_ones_are_not_forgotten():
    """Scores alike (KS p = 1) but 3 of 8 answers still reproduced against 1 of 20 unseen under the original: short.
    At 1 of 8 (0.125 > 0.05 + 0.02) still short; none reproduced: met. Logged and rebuilt with the shares."""
    rng = np.random.default_rng(2)
    reference = rng.exponential(1.0, 20)
    original = evidence(np.zeros(8), reference_scores=reference, reference_recognised=np.arange(20) < 1)
    judge = Judge.for_original(Kind.DISTRIBUTION, original)
    assert judge.reference_reproduced == pytest.approx(0.05)
    alike = np.quantile(reference, (np.arange(8) + 0.5) / 8)
    readings = {k: judge(evidence(alike, forget_recognised=np.arange(8) < k)) for k in (3, 1, 0)}
    assert all(reading.p_value > 0.9 for reading in readings.values())
    assert [readings[k].status for k in (3, 1, 0)] == [Status.SHORT, Status.SHORT, Status.MET]
    assert readings[3].reproduced == 0.375 and readings[3].reference_reproduced == pytest.approx(0.05)
    assert "answers reproduced by greedy decoding: 0.3750 of the forget rows, 0.0500" in readings[3].describe_forget()
    restored = Judge.restore(judge.to_log())
    assert restored.reference_reproduced == judge.reference_reproduced
    assert restored.from_log(readings[3].to_log()) == readings[3]
    classifier = Judge(Kind.DISTRIBUTION, 1.0, reference_scores=reference)  # no reproduction evidence: scores only
    assert classifier(evidence(alike)).status is Status.MET and classifier(evidence(alike)).reproduced is None
