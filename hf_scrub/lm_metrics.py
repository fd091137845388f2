"""Generation-based evidence for causal LMs: does the model still *produce* the forgotten completions?

Next-token accuracy (`hf_scrub.evaluation.TokenPredictions`) is measured with the reference in the context
(teacher forcing). A deletion request is about what the model says on its own, so for prompt/completion data the
report also holds the share of examples whose greedy continuation of the prompt reproduces the reference
completion token for token (end-of-sequence included), computed from the tokenized rows alone: the prompt is the
unlabelled prefix, the reference the labelled rest (docs/design.md §19).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .losses import IGNORE_INDEX

MAX_GENERATION_EXAMPLES = 200  # per split: enough for a percentage, bounded cost on large splits


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


@torch.no_grad()
def greedy_match_rate(
    model: Any, dataset: Any, pad_token_id: int, batch_size: int = 16, max_examples: int = MAX_GENERATION_EXAMPLES
) -> float | None:
    """Share of (the first `max_examples`) rows whose greedy continuation reproduces the reference completion.

    None when the rows have no prompt/completion structure. Runs in eval mode, float32 logits not needed (argmax),
    prompts left-padded so that every row continues from its own last token.
    """
    pairs = [prompt_and_reference(dataset[i]) for i in range(min(len(dataset), max_examples))]
    if not pairs or any(pair is None for pair in pairs):
        return None
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    matched = 0
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
            for row, (_, reference) in enumerate(batch):
                matched += generated[row, : len(reference)].tolist() == reference
    finally:
        model.train(was_training)
    return matched / len(pairs)
