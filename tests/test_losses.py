"""SCRUB losses against values computed by hand (docs/design.md §2)."""

import math

import pytest
import torch

from hf_scrub.losses import cross_entropy_per_item, forget_loss, kd_distance, retain_loss

# Student uniform over 2 classes, teacher logits (ln 3, 0): p_t = (3/4, 1/4).
STUDENT = torch.tensor([[0.0, 0.0]])
TEACHER = torch.tensor([[math.log(3.0), 0.0]])
KL_TEACHER_FIRST = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)  # KL(p_t || p_s) = 0.1308
KL_STUDENT_FIRST = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)  # KL(p_s || p_t) = 0.1438


def test_kd_distance_is_kl_teacher_first():
    value = kd_distance(STUDENT, TEACHER, temperature=1.0)
    assert value.shape == (1,)
    assert value.item() == pytest.approx(KL_TEACHER_FIRST, abs=1e-6)
    assert abs(value.item() - KL_STUDENT_FIRST) > 1e-2  # the other direction would be caught


def test_kd_distance_temperature_squared_factor():
    # At T=2 the teacher's softened distribution is (sqrt3, 1) / (sqrt3 + 1); the student's stays uniform.
    p = math.sqrt(3) / (math.sqrt(3) + 1)
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert kd_distance(STUDENT, TEACHER, temperature=2.0).item() == pytest.approx(4 * kl, abs=1e-6)


def test_kd_distance_is_zero_for_identical_logits_and_per_position_for_sequences():
    logits = torch.randn(2, 5, 7)
    assert torch.allclose(kd_distance(logits, logits.clone(), 4.0), torch.zeros(2, 5), atol=1e-6)
    shifted = logits.clone()
    shifted[1, 3] += torch.arange(7.0)
    distance = kd_distance(shifted, logits, 1.0)
    assert distance.shape == (2, 5)
    assert (distance > 1e-4).nonzero().tolist() == [[1, 3]]


def test_kd_distance_computes_in_float32_under_bf16():
    distance = kd_distance(STUDENT.bfloat16(), TEACHER.bfloat16(), 1.0)
    assert distance.dtype == torch.float32


def test_kd_distance_rejects_different_shapes():
    with pytest.raises(ValueError, match="same architecture"):
        kd_distance(torch.zeros(1, 2), torch.zeros(1, 3), 1.0)


def test_forget_loss_is_negative_distance_and_ignores_labels():
    assert forget_loss(STUDENT, TEACHER, 1.0).item() == pytest.approx(-KL_TEACHER_FIRST, abs=1e-6)


def test_retain_loss_weights_gamma_and_alpha():
    labels = torch.tensor([0])
    total, ce, distance = retain_loss(STUDENT, TEACHER, labels, temperature=1.0, gamma=0.3, alpha=2.0)
    assert ce.item() == pytest.approx(math.log(2), abs=1e-6)
    assert distance.item() == pytest.approx(KL_TEACHER_FIRST, abs=1e-6)
    assert total.item() == pytest.approx(0.3 * math.log(2) + 2.0 * KL_TEACHER_FIRST, abs=1e-6)


def test_cross_entropy_per_item_ignores_minus_100():
    logits = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    ce = cross_entropy_per_item(logits, torch.tensor([-100, 1]))
    assert ce[0].item() == 0.0
    assert ce[1].item() == pytest.approx(math.log(1 + math.exp(2.0)), abs=1e-6)
