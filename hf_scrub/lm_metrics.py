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
  ROUGE-L of the answer, generated as the field does: up to 200 new tokens, stopped at the end-of-sequence token
  (docs/design.md §21). Prompts are the unlabelled prefix of each tokenized row, the reference the labelled rest
  (docs/design.md §19).
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
MAX_NEW_TOKENS = 200  # TOFU's and OpenUnlearning's generation budget for an answer (docs/design.md §21)
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
    """One row's greedy continuation of its prompt and the reference completion.

    ``generated`` holds the continuation up to and including its first end-of-sequence token (or all of it when
    none came), at least as long as the reference allows to compare.
    """

    generated: list[int]
    reference: list[int]

    @property
    def matches(self) -> bool:
        """Whether the continuation starts with the reference, token for token (its end-of-sequence token
        included): what the model says, not just what it would say next under teacher forcing."""
        return self.generated[: len(self.reference)] == self.reference


def _stop_ids(model: Any) -> set[int]:
    """The ids that end a generation: the generation config's end-of-sequence token(s), else the model config's."""
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        value = getattr(source, "eos_token_id", None)
        if value is not None:
            return {int(value)} if isinstance(value, int) else {int(token) for token in value}
    return set()


def _cut_after_stop(ids: list[int], stop: set[int]) -> list[int]:
    return next((ids[: index + 1] for index, token in enumerate(ids) if token in stop), ids)


@torch.no_grad()
def greedy_completions(
    model: Any,
    dataset: Any,
    pad_token_id: int,
    batch_size: int = 16,
    max_examples: int = MAX_GENERATION_EXAMPLES,
    max_new_tokens: int | None = MAX_NEW_TOKENS,
) -> list[Completion] | None:
    """Greedy continuations of (the first `max_examples`) rows' prompts, or None when the rows have no
    prompt/completion structure.

    In eval mode, prompts left-padded so that every row continues from its own last token. Each batch generates up
    to `max_new_tokens` tokens, or its longest reference if that is longer (so the answer match can always be
    decided), and each row's continuation is cut after its first end-of-sequence token. `max_new_tokens=None`
    generates exactly as many tokens as each reference has (hf_scrub's ROUGE-L before docs/design.md §21).
    """
    pairs = [prompt_and_reference(dataset[i]) for i in range(min(len(dataset), max_examples))]
    if not pairs or any(pair is None for pair in pairs):
        return None
    device = next(model.parameters()).device
    stop = _stop_ids(model)
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
            longest = max(len(reference) for _, reference in batch)
            generated = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=longest if max_new_tokens is None else max(max_new_tokens, longest),
                do_sample=False,
                pad_token_id=pad_token_id,
            )[:, width:].cpu()
            for row, (_, reference) in enumerate(batch):
                ids = generated[row].tolist()
                ids = ids[: len(reference)] if max_new_tokens is None else _cut_after_stop(ids, stop)
                completions.append(Completion(ids, reference))
    finally:
        model.train(was_training)
    return completions
