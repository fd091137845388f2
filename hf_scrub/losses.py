"""The SCRUB objectives as pure tensor functions (docs/design.md §2).

Everything here is per item (one value per example, or per position for sequence outputs) so that the trainer
can weight items exactly as a plain large-batch step would, whatever the micro-batching, gradient accumulation or
number of processes. Reductions belong to the caller.

- distillation distance ``d(x) = T^2 * KL(softmax(t(x)/T) || softmax(s(x)/T))``, teacher distribution first;
- max-step on a forget batch: ``-d(x_f)``;
- min-step on a retain batch: ``gamma * CE(s(x_r), y_r) + alpha * d(x_r)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def kd_distance(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature-scaled KL divergence from the teacher's to the student's class distribution, per item.

    ``T^2 * sum_c p_t(c) * (log p_t(c) - log p_s(c))`` over the last dimension, so logits of shape ``(B, C)`` give
    ``(B,)`` and sequence logits ``(B, L, C)`` give ``(B, L)``. The ``T^2`` factor keeps gradient magnitudes
    comparable across temperatures (Hinton et al., 2015). Computed in float32: under bf16/fp16 the log-softmax of
    large logits loses the small differences the distance is made of.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "the teacher must be the same architecture with the same output head as the student."
        )
    student_log_probs = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(dim=-1)
    return kl * temperature**2


def cross_entropy_per_item(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per item in float32; items labelled ``-100`` get 0 (the usual HF ignore index)."""
    return F.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="none", ignore_index=IGNORE_INDEX
    ).reshape(labels.shape)


def forget_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Max-step loss per item: ``-d(x_f)``. Minimising it pushes the student away from the teacher on the forget set.

    The forget labels are deliberately unused: SCRUB only asks the student to disagree with what the original model
    predicted, not to get a particular class wrong.
    """
    return -kd_distance(student_logits, teacher_logits, temperature)


def gated(per_item: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """A per-item (or per-position, ``(B, L - 1)``) loss times each row's (or position's) gate: 1 keeps the loss, -1
    turns it round, 0 gives exactly 0 with exactly zero gradient. The goal-driven schedule's gate on the max-step
    (docs/design.md §18) is 1 or 0: a row below its target pushes (SCRUB's max-step), a row past it contributes
    nothing (a -1 gate, pulling such a row back, was tried and made the membership AUC worse)."""
    if gate.dim() != per_item.dim():  # one gate per row, broadcast over its positions
        gate = gate.reshape(-1, *[1] * (per_item.dim() - 1))
    return torch.where(gate != 0, per_item * gate.to(per_item.dtype), torch.zeros_like(per_item))


def without_classes(logits: torch.Tensor, classes: list[int]) -> torch.Tensor:
    """Float32 logits whose softmax is the original's with ``classes`` removed and the rest renormalised: those
    classes get the most negative finite logit, so their probability is exactly 0 and ``0 * log 0`` terms stay 0."""
    masked = logits.float().clone()
    masked[..., list(classes)] = torch.finfo(torch.float32).min
    return masked


def membership_scores(
    logits: torch.Tensor, labels: torch.Tensor, forget_classes: list[int] | None = None
) -> torch.Tensor:
    """Per example, how *un*-member-like the model finds it, in nats, float32 (higher = less member-like).

    Without ``forget_classes``: the cross-entropy of its own label (the loss an attacker looks at). With them (a
    class request): ``-log`` of the probability the model gives the forgotten classes together, whatever the row's
    label: a model that never saw those classes gives them as little on the forget rows as on any other row.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    if forget_classes is None:
        return -log_probs.gather(-1, labels.long().reshape(-1, 1))[:, 0]
    return -torch.logsumexp(log_probs[:, list(forget_classes)], dim=-1)


def retain_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    gamma: float,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-step loss per item: ``gamma * CE + alpha * d``; also returns the CE and d parts for logging.

    The CE term keeps the task performance on retained data, the distillation term keeps the student close to the
    original model there, which is what stops the max-steps from damaging everything else.
    """
    distance = kd_distance(student_logits, teacher_logits, temperature)
    ce = cross_entropy_per_item(student_logits, labels)
    return gamma * ce + alpha * distance, ce, distance


# ---- baselines (docs/design.md §2), same per-item convention --------------------------------------------------------


def neggrad_plus_loss(
    logits: torch.Tensor, labels: torch.Tensor, is_forget: torch.Tensor, beta: float
) -> torch.Tensor:
    """NegGrad+ per item: ``beta * CE`` on retain examples, ``-(1 - beta) * CE`` on forget examples.

    With each set's items weighted by 1 / (its count in the step), the sum is ``beta * mean CE_retain - (1 - beta) *
    mean CE_forget``: fine-tuning on the retain batch while ascending the forget batch's loss.
    """
    ce = cross_entropy_per_item(logits, labels)
    return torch.where(is_forget, -(1.0 - beta) * ce, beta * ce)


def bad_teacher_loss(
    student_logits: torch.Tensor,
    competent_logits: torch.Tensor,
    incompetent_logits: torch.Tensor,
    is_forget: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Bad-Teacher per item: distance to the randomly initialised teacher on forget examples, to the original model
    on retain examples (Chundawat et al., 2023), with the same ``T^2 * KL(teacher || student)`` as SCRUB."""
    teacher_logits = torch.where(is_forget.unsqueeze(-1), incompetent_logits, competent_logits)
    return kd_distance(student_logits, teacher_logits, temperature)
