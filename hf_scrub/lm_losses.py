"""SCRUB's objectives per next-token position, for causal language models (docs/design.md §19).

The classifier functions of `hf_scrub.losses` compare one class distribution per example. A causal LM predicts a
distribution over the vocabulary at every position, and SCRUB compares teacher and student there:

- position ``i``'s logits predict token ``i + 1`` (labels are shifted inside, as in `transformers`' causal LMs);
- only positions whose next label is not ``-100`` count: prompt tokens, padding and non-assistant chat turns
  contribute exactly nothing, to the cross-entropy *and* to the distance;
- ``d_i = T^2 * KL(softmax(t_i / T) || softmax(s_i / T))`` in float32, teacher distribution first.

Memory: the float32 log-softmaxes of student and teacher over a 50k-150k vocabulary, for every position of the
batch, are the largest tensors of a step. `token_terms` therefore works on at most `chunk_size` positions at a time,
and each chunk is recomputed in the backward pass (`torch.utils.checkpoint`) instead of keeping its float32
intermediates alive, so the extra memory is bounded by one chunk whatever the batch and sequence length.

Every function returns one value per position, ``(B, L - 1)``, zero where nothing is predicted; the trainer weights
positions so that a step's loss is the mean over its loss-carrying tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .losses import IGNORE_INDEX

DEFAULT_CHUNK_SIZE = 512  # positions per chunk: 512 x 49,152 float32 = 100 MB per log-softmax (SmolLM2)


def next_token_mask(labels: torch.Tensor) -> torch.Tensor:
    """``(B, L - 1)``: True where position ``i`` predicts a loss-carrying token (``labels[:, i + 1] != -100``)."""
    return labels[:, 1:] != IGNORE_INDEX


def _chunk_terms(
    student: torch.Tensor, teacher: torch.Tensor | None, targets: torch.Tensor, temperature: float, with_ce: bool
) -> torch.Tensor:
    """``(n, 2)``: the distance and the cross-entropy of ``n`` positions, in float32 (0 for an absent term)."""
    zeros = torch.zeros(len(targets), device=student.device)
    distance = zeros
    if teacher is not None:
        student_log_probs = F.log_softmax(student.float() / temperature, dim=-1)
        teacher_log_probs = F.log_softmax(teacher.float() / temperature, dim=-1)
        kl = F.kl_div(student_log_probs, teacher_log_probs, reduction="none", log_target=True).sum(-1)
        distance = kl * temperature**2
    ce = F.cross_entropy(student.float(), targets, reduction="none") if with_ce else zeros
    return torch.stack([distance, ce], dim=-1)


def token_terms(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor,
    temperature: float = 1.0,
    *,
    with_ce: bool = True,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position distance ``d`` and cross-entropy, each ``(B, L - 1)`` and zero where nothing is predicted.

    Args:
        student_logits, teacher_logits: ``(B, L, V)`` logits of the same inputs (teacher None: no distance).
        labels: ``(B, L)`` token ids with -100 where no loss is taken, unshifted (aligned with the inputs).
        temperature: the distillation temperature ``T`` (the cross-entropy is always at temperature 1).
        with_ce: compute the cross-entropy too (a max-step needs only the distance).
        chunk_size: positions per chunk (None: all at once, the reference the chunked result is tested against).
    """
    if teacher_logits is not None and student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"Student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ: "
            "the teacher must be the same model (same vocabulary) run on the same batch."
        )
    batch, length, vocab = student_logits.shape
    mask = next_token_mask(labels)
    # Flat row ``b * L + i`` of the (contiguous) logits predicts ``labels[b, i + 1]``: indexing the rows of a view
    # avoids copying the shifted logits, and only loss-carrying positions are ever upcast to float32.
    batch_index, position = mask.nonzero(as_tuple=True)
    rows = batch_index * length + position
    targets = labels[batch_index, position + 1]
    student_flat = student_logits.reshape(batch * length, vocab)
    teacher_flat = None if teacher_logits is None else teacher_logits.reshape(batch * length, vocab)
    step = len(rows) if chunk_size is None else max(1, chunk_size)
    parts = []
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        arguments = (
            student_flat[chunk],
            None if teacher_flat is None else teacher_flat[chunk],
            targets[start : start + step],
            temperature,
            with_ce,
        )
        if chunk_size is not None and torch.is_grad_enabled() and student_logits.requires_grad:
            parts.append(checkpoint(_chunk_terms, *arguments, use_reentrant=False))
        else:
            parts.append(_chunk_terms(*arguments))
    values = torch.cat(parts) if parts else student_logits.new_zeros((0, 2), dtype=torch.float32)
    dense = values.new_zeros(batch, length - 1, 2).index_put((batch_index, position), values)
    return dense[..., 0], dense[..., 1]


def token_forget_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Max-step loss per position: ``-d``. The forget text's tokens are used only to say where to compare."""
    distance, _ = token_terms(
        student_logits, teacher_logits, labels, temperature, with_ce=False, chunk_size=chunk_size
    )
    return -distance


def token_retain_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    gamma: float,
    alpha: float,
    chunk_size: int | None = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Min-step loss per position, ``gamma * CE + alpha * d``, with its CE and d parts (for logging)."""
    distance, ce = token_terms(student_logits, teacher_logits, labels, temperature, chunk_size=chunk_size)
    return gamma * ce + alpha * distance, ce, distance


@torch.no_grad()
def token_predictions(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, L, 2)``: at position ``j`` the model's argmax for token ``j`` and its float32 log-probability of
    ``labels[:, j]`` (position 0, never predicted, holds -100).

    Meant as the Trainer's `preprocess_logits_for_metrics`: it turns ``(B, L, V)`` logits into two numbers per
    position before anything is gathered across processes, aligned with the unshifted labels so the Trainer's
    padding of both with -100 keeps them aligned.
    """
    _, ce = token_terms(logits, None, labels)
    predicted = logits[:, :-1].argmax(-1).float()
    shifted = torch.stack([predicted, -ce], dim=-1)
    first = shifted.new_full((logits.shape[0], 1, 2), float(IGNORE_INDEX))
    return torch.cat([first, shifted], dim=1)
