"""What a causal LM's evaluation reads off the model: per-token statistics and greedy completions.

- :func:`token_statistics` is the Trainer's `preprocess_logits_for_metrics` for causal LMs: it turns ``(B, L, V)``
  logits into four float32 numbers per position before anything is gathered across processes -- the argmax, the
  log-probability of the label, and the mean and standard deviation of the log-probabilities under the model's own
  next-token distribution (Min-K%++'s standardisation). Answer probabilities, membership scores, perplexity and
  next-token accuracy are all computed from them (`hf_scrub.lm_evaluation`), so each split is run through the model
  once.
- :func:`greedy_completions` is what the model *says*: next-token accuracy is measured with the reference in the
  context (teacher forcing), while a deletion request is about what the model produces on its own. From its
  output come the answer match rate (the reference reproduced token for token, end-of-sequence included) and the
  ROUGE-L recall of the answer. Prompts are the unlabelled prefix of each tokenized row, the reference the labelled
  rest (docs/design.md §19).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .lm_losses import DEFAULT_CHUNK_SIZE
from .losses import IGNORE_INDEX

MAX_GENERATION_EXAMPLES = 200  # per split: enough for a percentage, bounded cost on large splits
NUM_TOKEN_STATISTICS = 4  # per position: argmax, log-probability of the label, mu and sigma (see token_statistics)


@torch.no_grad()
def token_statistics(logits: torch.Tensor, labels: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> torch.Tensor:
    """``(B, L, 4)``: at position ``j`` (for the token ``labels[:, j]``, predicted from position ``j - 1``) the
    model's argmax, the float32 log-probability of the label, and the mean ``mu`` and standard deviation ``sigma`` of
    ``log p(z)`` for ``z`` drawn from the model's next-token distribution there. Positions whose label is -100, and
    position 0 (never predicted), hold -100.

    Aligned with the unshifted labels, so the Trainer's padding of both with -100 across batches keeps them aligned.
    Only loss-carrying positions are computed, ``chunk_size`` at a time: a float32 log-softmax over the vocabulary
    of every position at once is what would otherwise set the memory peak.
    """
    batch, length, vocab = logits.shape
    statistics = logits.new_full((batch, length, 4), float(IGNORE_INDEX), dtype=torch.float32)
    targets = labels[:, 1:]
    rows, positions = torch.nonzero(targets != IGNORE_INDEX, as_tuple=True)
    for start in range(0, len(rows), chunk_size):
        row, position = rows[start : start + chunk_size], positions[start : start + chunk_size]
        log_probs = F.log_softmax(logits[row, position].float(), dim=-1)
        probs = log_probs.exp()
        weighted = torch.where(probs > 0, probs * log_probs, 0.0)  # 0 * log 0 = 0 for masked vocabulary entries
        mu = weighted.sum(-1)
        second = torch.where(probs > 0, weighted * log_probs, 0.0).sum(-1)
        sigma = (second - mu.square()).clamp_min(0).sqrt()
        target_log_prob = log_probs.gather(-1, targets[row, position][:, None])[:, 0]
        statistics[row, position + 1] = torch.stack([log_probs.argmax(-1).float(), target_log_prob, mu, sigma], -1)
    return statistics


def prompt_and_reference(row: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """(prompt ids, reference completion ids) of a tokenized row, or None when the row has no prompt (text data)
    or its labels are not one unlabelled prefix followed by one labelled span."""
    labels = np.asarray(row["labels"])
    labelled = np.flatnonzero(labels != IGNORE_INDEX)
    if len(labelled) == 0 or labelled[0] == 0 or labelled[-1] - labelled[0] + 1 != len(labelled):
        return None
    ids = list(np.asarray(row["input_ids"]).tolist())
    start, end = int(labelled[0]), int(labelled[-1]) + 1
    return ids[:start], ids[start:end]


@dataclass
class Completion:
    """One row's greedy continuation of its prompt (as many tokens as its reference) and the reference."""

    generated: list[int]
    reference: list[int]

    @property
    def matches(self) -> bool:
        """Whether the reference is reproduced token for token (its end-of-sequence token included)."""
        return self.generated == self.reference


@torch.no_grad()
def greedy_completions(
    model: Any, dataset: Any, pad_token_id: int, batch_size: int = 16, max_examples: int = MAX_GENERATION_EXAMPLES
) -> list[Completion] | None:
    """Greedy continuations of (the first `max_examples`) rows' prompts, or None when the rows have no
    prompt/completion structure.

    In eval mode, prompts left-padded so that every row continues from its own last token; generation stops at the
    batch's longest reference, and each row's continuation is cut to its own reference's length.
    """
    pairs = [prompt_and_reference(dataset[i]) for i in range(min(len(dataset), max_examples))]
    if not pairs or any(pair is None for pair in pairs):
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions = []
    try:
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            width = max(len(prompt) for prompt, _ in batch)
            input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (prompt, _) in enumerate(batch):
                input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
                attention_mask[row, width - len(prompt) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=max(len(reference) for _, reference in batch),
                do_sample=False,
                pad_token_id=pad_token_id,
            )[:, width:].cpu()
            completions += [
                Completion(generated[row, : len(reference)].tolist(), reference)
                for row, (_, reference) in enumerate(batch)
            ]
    finally:
        model.train(was_training)
    return completions
