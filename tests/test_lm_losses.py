"""Token-level SCRUB terms on hand-computed cases (docs/design.md §19)."""

import math

import pytest
import torch

from hf_scrub.lm_losses import token_forget_loss, token_retain_loss, token_terms


def _kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))


def _softmax(values, temperature=1.0):
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


# One sequence of 3 tokens, vocabulary of 3: positions 0 and 1 predict tokens 1 and 2.
STUDENT = torch.tensor([[[1.0, 0.0, -1.0], [0.5, 2.0, 0.0], [9.0, 9.0, 9.0]]])
TEACHER = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 1.0, 3.0], [-9.0, 0.0, 9.0]]])
LABELS = torch.tensor([[5, 2, 0]])  # labels[0] is never predicted; 2 and 0 are the targets of positions 0 and 1


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_distance_and_ce_match_hand_computation(temperature):
    distance, ce = token_terms(STUDENT, TEACHER, LABELS, temperature)
    for position, target in ((0, 2), (1, 0)):
        student, teacher = STUDENT[0, position].tolist(), TEACHER[0, position].tolist()
        expected_d = temperature**2 * _kl(_softmax(teacher, temperature), _softmax(student, temperature))
        expected_ce = -math.log(_softmax(student)[target])
        assert distance[0, position].item() == pytest.approx(expected_d, rel=1e-6)
        assert ce[0, position].item() == pytest.approx(expected_ce, rel=1e-6)
    assert distance.shape == ce.shape == (1, 2)


def test_masked_positions_contribute_exactly_nothing():
    """A prompt position (-100) gets 0, and changing its logits changes neither the values nor the gradient."""
    labels = torch.tensor([[5, -100, 0]])  # position 0 predicts a prompt token: no loss there
    student = STUDENT.clone().requires_grad_(True)
    loss, ce, distance = token_retain_loss(student, TEACHER, labels, 2.0, gamma=1.0, alpha=0.5)
    assert loss[0, 0].item() == ce[0, 0].item() == distance[0, 0].item() == 0.0
    loss.sum().backward()
    assert torch.all(student.grad[0, 0] == 0) and torch.all(student.grad[0, 2] == 0)
    assert torch.any(student.grad[0, 1] != 0)
    changed = STUDENT.clone()
    changed[0, 0] = torch.tensor([50.0, -50.0, 3.0])
    again, _, _ = token_retain_loss(changed, TEACHER, labels, 2.0, gamma=1.0, alpha=0.5)
    assert torch.equal(again, loss.detach())


def test_padding_rows_and_all_masked_batch():
    labels = torch.full((1, 3), -100)
    distance, ce = token_terms(STUDENT, TEACHER, labels)
    assert torch.equal(distance, torch.zeros(1, 2)) and torch.equal(ce, torch.zeros(1, 2))


def test_forget_loss_is_minus_distance_and_retain_loss_combines():
    distance, ce = token_terms(STUDENT, TEACHER, LABELS, 4.0)
    assert torch.equal(token_forget_loss(STUDENT, TEACHER, LABELS, 4.0), -distance)
    loss, ce_part, d_part = token_retain_loss(STUDENT, TEACHER, LABELS, 4.0, gamma=0.7, alpha=0.3)
    torch.testing.assert_close(loss, 0.7 * ce + 0.3 * distance)
    torch.testing.assert_close(ce_part, ce)
    torch.testing.assert_close(d_part, distance)


@pytest.mark.parametrize("phase", ["retain", "forget"])
def test_chunked_equals_unchunked_values_and_gradients(phase):
    torch.manual_seed(0)
    student = torch.randn(3, 7, 11, dtype=torch.float64).float()
    teacher = torch.randn(3, 7, 11)
    labels = torch.randint(0, 11, (3, 7))
    labels[0, :3] = -100
    labels[2, 5:] = -100
    results = []
    for chunk_size in (None, 1, 4, 1000):
        leaf = student.clone().requires_grad_(True)
        if phase == "retain":
            loss, _, _ = token_retain_loss(leaf, teacher, labels, 2.0, gamma=1.0, alpha=0.5, chunk_size=chunk_size)
        else:
            loss = token_forget_loss(leaf, teacher, labels, 2.0, chunk_size=chunk_size)
        (loss * torch.arange(1.0, 7.0)).sum().backward()
        results.append((loss.detach(), leaf.grad))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], atol=1e-6, rtol=0)
        torch.testing.assert_close(grad, results[0][1], atol=1e-6, rtol=0)


def test_bfloat16_logits_are_compared_in_float32():
    distance, _ = token_terms(STUDENT.bfloat16(), TEACHER.bfloat16(), LABELS, 2.0)
    reference, _ = token_terms(STUDENT.bfloat16().float(), TEACHER.bfloat16().float(), LABELS, 2.0)
    assert distance.dtype == torch.float32
    torch.testing.assert_close(distance, reference)
