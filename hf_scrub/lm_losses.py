"""SCRUB's objectives per next-token position, for causal language models (docs/design.md §19).

The classifier functions of `hf_scrub.losses` compare one class distribution per example. A causal LM predicts a
distribution over the vocabulary at every position, and SCRUB compares teacher and student there:

- position ``i``'s logits predict token ``i + 1`` (labels are shifted inside, as in `transformers`' causal LMs);
- only positions whose next label is not ``-100`` count: prompt tokens, padding and non-assistant chat turns
  contribute exactly nothing, to the cross-entropy *and* to the distance;
- ``d_i = T^2 * KL(softmax(t_i / T) || softmax(s_i / T))`` in float32, teacher distribution first.

Memory: the float32 log-softmaxes of student and teacher over a 50k-150k vocabulary, for every position of the
batch, are the largest tensors of a step. `token_terms` therefore works on at most `chunk_size` positions at a time,
forward and backward (`_ChunkedTerms` writes each chunk's gradient into the logits' gradient directly), so the extra
memory is bounded by one chunk whatever the batch and sequence length (measured in BENCHMARKS.md).

Every function returns one value per position, ``(B, L - 1)``, zero where nothing is predicted; the trainer weights
positions so that a step's loss is the mean over its loss-carrying tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import IGNORE_INDEX

DEFAULT_CHUNK_SIZE = 256  # positions per chunk: 256 x 49,152 float32 = 50 MB per softmax (SmolLM2)


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


class _ChunkedTerms(torch.autograd.Function):
    """The same values as `_chunk_terms` over all rows, computed `chunk_size` rows at a time, with a backward that
    writes each chunk's gradient straight into the one gradient tensor of the logits.

    Letting autograd differentiate a loop of chunks would not bound memory: the backward of every chunk's row
    selection allocates a gradient of the full logits' size. Here the gradients are written by hand, from
    ``d(T^2 KL(p || softmax(s / T))) / ds = T * (softmax(s / T) - p)`` and ``d CE / ds = softmax(s) - onehot(y)``,
    so the extra memory is one chunk's float32 softmaxes (tested against autograd on the unchunked terms).
    """

    @staticmethod
    def forward(ctx, student_flat, teacher_flat, rows, targets, temperature, with_ce, chunk_size):
        values = []
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            teacher = None if teacher_flat is None else teacher_flat[chunk]
            values.append(
                _chunk_terms(student_flat[chunk], teacher, targets[start : start + chunk_size], temperature, with_ce)
            )
        ctx.save_for_backward(student_flat, teacher_flat, rows, targets)
        ctx.settings = (temperature, with_ce, chunk_size)
        return torch.cat(values) if values else student_flat.new_zeros((0, 2), dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad_values):
        student_flat, teacher_flat, rows, targets = ctx.saved_tensors
        temperature, with_ce, chunk_size = ctx.settings
        grad_student = torch.zeros_like(student_flat)
        for start in range(0, len(rows), chunk_size):
            chunk, stop = rows[start : start + chunk_size], start + chunk_size
            student = student_flat[chunk].float()
            grad = torch.zeros_like(student)
            if teacher_flat is not None:
                difference = F.softmax(student / temperature, -1) - F.softmax(
                    teacher_flat[chunk].float() / temperature, -1
                )
                grad += grad_values[start:stop, 0:1] * temperature * difference
            if with_ce:
                probabilities = F.softmax(student, -1)
                probabilities[torch.arange(len(chunk), device=student.device), targets[start:stop]] -= 1.0
                grad += grad_values[start:stop, 1:2] * probabilities
            grad_student[chunk] = grad.to(grad_student.dtype)
        return grad_student, None, None, None, None, None, None


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
        chunk_size: positions per chunk (None: all at once through autograd, the reference the chunked result is
            tested against).
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
    teacher_flat = None if teacher_logits is None else teacher_logits.detach().reshape(batch * length, vocab)
    if chunk_size is None:
        teacher_rows = None if teacher_flat is None else teacher_flat[rows]
        values = _chunk_terms(student_flat[rows], teacher_rows, targets, temperature, with_ce)
    else:
        values = _ChunkedTerms.apply(
            student_flat, teacher_flat, rows, targets, temperature, with_ce, max(1, chunk_size)
        )
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


# ---- per-sequence terms (NPO, docs/design.md §2) ----------------------------------------------------------------


def sequence_log_likelihood(
    logits: torch.Tensor, labels: torch.Tensor, chunk_size: int | None = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """``(B,)``: each sequence's log-likelihood of its loss-carrying tokens, ``sum_i log p(y_{i+1} | y_{<=i})``.

    Float32, and chunked like `token_terms` (whose per-position cross-entropy is ``-log p``): the log-softmax over
    the vocabulary of every position at once would be the step's largest tensor.
    """
    _, ce = token_terms(logits, None, labels, with_ce=True, chunk_size=chunk_size)
    return -ce.sum(-1)


def npo_loss(
    student_sequence_log_likelihood: torch.Tensor,
    reference_sequence_log_likelihood: torch.Tensor,
    beta: float = 0.1,
) -> torch.Tensor:
    """NPO per sequence (Zhang et al., 2024, "Negative Preference Optimization"):
    ``-(2 / beta) * logsigmoid(-beta * (log p_student - log p_reference))``, in float32.

    DPO with the forget sequence as the rejected answer and no chosen one. Its gradient is gradient ascent's on the
    sequence log-likelihood scaled by ``2 * sigmoid(beta * log_ratio)``: it fades as the student's likelihood falls
    below the reference's, which is what keeps NPO from collapsing the model as plain gradient ascent does (for
    ``beta -> 0`` the scale is 1, gradient ascent itself).
    """
    log_ratio = student_sequence_log_likelihood.float() - reference_sequence_log_likelihood.float()
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio)


def spread_over_tokens(per_sequence: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B, L - 1)``: each sequence's value divided evenly over its loss-carrying positions (0 elsewhere).

    Lets a per-sequence term (NPO's) share one per-position tensor with per-token terms: each row sums back to its
    value, so a weight of ``1 / (sequences in the step)`` on every position makes it the mean over sequences.
    """
    mask = next_token_mask(labels)
    tokens = mask.sum(-1, keepdim=True).clamp(min=1)
    return per_sequence[:, None] * mask / tokens


def simnpo_loss(mean_nll: torch.Tensor, beta: float = 4.5, delta: float = 0.0) -> torch.Tensor:
    """SimNPO per sequence (Fan et al., 2024, "Simplicity Prevails"), as OpenUnlearning computes it:
    ``-(2 / beta) * logsigmoid(beta * (mean_nll - delta))``, in float32.

    NPO without the reference model: the sequence's log-likelihood is replaced by its length-normalised NLL (the
    mean over its loss-carrying tokens), so long and short answers are pushed alike, and the push fades as the NLL
    passes `delta` (the paper's margin gamma is ``beta * delta``).
    """
    return -(2.0 / beta) * F.logsigmoid(beta * (mean_nll.float() - delta))


def representation_distance(hidden_states: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``(B,)``: RMU's distance per sequence, the mean over its loss-carrying tokens of the mean squared difference
    (over the hidden dimensions) between a layer's hidden states and their targets, in float32.

    The hidden state of token ``j`` counts when ``labels[:, j]`` is not -100 (the answer's tokens themselves, as
    OpenUnlearning's RMU masks them; position 0, which carries no loss anywhere here, never counts). `targets`
    broadcasts against ``hidden_states`` (``(B, L, H)``): RMU's scaled random vector on the forget set, the frozen
    original model's hidden states on the retain set.
    """
    squared = (hidden_states.float() - targets.float()).square().mean(-1)[:, 1:]
    mask = next_token_mask(labels)
    return (squared * mask).sum(-1) / mask.sum(-1).clamp(min=1)
