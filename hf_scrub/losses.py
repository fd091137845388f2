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
