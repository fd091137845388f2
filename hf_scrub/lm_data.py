"""Causal-LM data for unlearning: TRL-style datasets turned into `input_ids` / `attention_mask` / `labels`.

Unlearning a causal LM means pushing the loss *up* on the forget set's answers and keeping it low on the retain
set's, so which tokens carry loss matters more than in plain fine-tuning: ascending on a prompt or on chat-template
scaffolding damages the model without forgetting anything. This module follows TRL's dataset conventions so the same
data works with `trl.SFTTrainer` and here:

* **prompt-completion** (`prompt` + `completion` columns, plain strings or lists of chat messages): loss only on
  the completion (and its end-of-sequence token);
* **messages** (a `messages` column of `{"role", "content"}` dicts): loss only on the assistant turns;
* **text** (a text column): loss on every token.

Labels are aligned with `input_ids` and unshifted, as transformers' causal LMs expect (the model shifts them);
`-100` marks positions without loss. Padding is left to `causal_lm_collator`, so a tokenizer without a pad token is
fine here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import default_collate

LM_FORMATS = ("prompt-completion", "messages", "text")
IGNORE_INDEX = -100  # the label torch's cross-entropy (and transformers' causal-LM loss) skips

_MODEL_COLUMNS = ("input_ids", "attention_mask", "labels")
_TRUNCATED = "__hf_scrub_truncated"
_LOSS_TOKENS = "__hf_scrub_loss_tokens"
_SHOWN_ROWS = 5  # how many offending row indices an error message lists


# ---- format detection ---------------------------------------------------------------------------------------------


def detect_lm_format(dataset: Dataset, text_column: str = "text") -> str:
    """Which of `LM_FORMATS` a dataset is in, from its columns (the same precedence TRL uses).

    Detection is by column name only, so that a wrong dataset fails here, before any tokenizing or model loading,
    with a message saying which columns each format needs.
    """
    columns = dataset.column_names
    if "prompt" in columns and "completion" in columns:
        return "prompt-completion"
    if "messages" in columns:
        return "messages"
    if text_column in columns:
        return "text"
    raise ValueError(
        f"Cannot tell the causal-LM data format: the dataset's columns are {columns}. Expected `prompt` and "
        f"`completion` columns (prompt-completion), a `messages` column (conversations), or the text column "
        f"{text_column!r} (plain text; pick another column with --text_column / text_column=...)."
    )


def _check_format(dataset: Dataset, lm_format: str, text_column: str) -> None:
    if lm_format not in LM_FORMATS:
        raise ValueError(f"lm_format={lm_format!r} is not one of {LM_FORMATS}.")
    needed = {"prompt-completion": ["prompt", "completion"], "messages": ["messages"], "text": [text_column]}
    missing = [column for column in needed[lm_format] if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"lm_format={lm_format!r} needs the column(s) {needed[lm_format]}, but {missing} are missing; the "
            f"dataset's columns are {dataset.column_names}."
        )


# ---- tokenizing ---------------------------------------------------------------------------------------------------


def _ids(encoding: Any) -> list[int]:
    """The `input_ids` of one tokenizer call, as a plain list (tokenizers return BatchEncodings or lists)."""
    ids = encoding["input_ids"] if isinstance(encoding, Mapping) else encoding
    return list(ids.tolist() if hasattr(ids, "tolist") else ids)


def _eos_id(tokenizer: Any) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError(
            "The tokenizer has no eos token; causal-LM unlearning appends one after each completion and text so the "
            "model learns (or unlearns) where an answer stops. Set tokenizer.eos_token before tokenizing."
        )
    return int(tokenizer.eos_token_id)


def _with_eos(ids: list[int], eos_id: int) -> list[int]:
    """Append eos unless the text already ended with it (TRL does the same, so an explicit eos is not doubled)."""
    return ids if ids and ids[-1] == eos_id else [*ids, eos_id]


def _clean_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Drop None-valued keys: Arrow fills keys missing from some messages with None (e.g. `tool_calls`), and chat
    templates test `is defined`, not `is none`."""
    return [{key: value for key, value in message.items() if value is not None} for message in messages]


class _ChatRenderer:
    """Renders conversations with the tokenizer's chat template and tokenizes them as `apply_chat_template` does
    (no extra special tokens: the template writes its own)."""

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                "The data is conversational (lists of role/content messages) but the tokenizer has no chat template. "
                "Use a tokenizer with one (an instruct model's), set tokenizer.chat_template, or give plain-text "
                "prompt/completion or text columns instead."
            )
        self.tokenizer = tokenizer
        self.special_ids = set(getattr(tokenizer, "all_special_ids", None) or [])
        self.special_ids.update(
            token_id for token_id, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special
        )

    def tokens(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return _ids(self.tokenizer(text, add_special_tokens=False))

    def labelled_length(self, span: list[int]) -> int:
        """How many leading tokens of an assistant span carry loss: all of them except whitespace the template writes
        after the turn's last special (end-of-turn) token, such as the `\\n` after ChatML's `<|im_end|>`.

        That whitespace is scaffolding between turns, not something the model generates (generation stops at the
        end-of-turn token), so pushing its loss up or down teaches nothing; TRL's `{% generation %}` templates leave
        it out of the assistant mask too. Spans without a special token are labelled whole.
        """
        last_special = max((i for i, token_id in enumerate(span) if token_id in self.special_ids), default=None)
        if last_special is None:
            return len(span)
        end = len(span)
        while end > last_special + 1 and not self.tokenizer.decode(span[end - 1 : end]).strip():
            end -= 1
        return end


def _prefix_error(what: str) -> ValueError:
    return ValueError(
        f"The chat template renders {what} so that it is not a token prefix of the whole conversation's rendering, so "
        "the assistant tokens cannot be located. This happens with templates that render earlier turns differently "
        "depending on what follows (e.g. ones that drop earlier reasoning), or conversations that start with an "
        "assistant message. Use a template that renders turns independently, or give plain prompt/completion text."
    )


def _tokenize_conversation(renderer: _ChatRenderer, messages: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a `messages` row: labels on each assistant turn's content and end-of-turn token.

    Each turn's span is found by rendering prefixes (template(messages[:i], add_generation_prompt=True) vs
    template(messages[:i+1])) rather than with `{% generation %}` masks, which most templates lack.
    """
    full = renderer.tokens(messages, add_generation_prompt=False)
    labels = [IGNORE_INDEX] * len(full)
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        if i == 0:
            raise ValueError(
                "A conversation starts with an assistant message, so there is no prompt to condition it on and the "
                "chat template cannot render what precedes it. Start each conversation with a system or user message."
            )
        start_ids = renderer.tokens(messages[:i], add_generation_prompt=True)
        end_ids = renderer.tokens(messages[: i + 1], add_generation_prompt=False)
        start, end = len(start_ids), len(end_ids)
        if full[:start] != start_ids:
            raise _prefix_error(f"messages[:{i}] with the generation prompt")
        if full[:end] != end_ids or end < start:
            raise _prefix_error(f"messages[:{i + 1}]")
        stop = start + renderer.labelled_length(full[start:end])
        labels[start:stop] = full[start:stop]
    return full, labels


def _tokenize_prompt_completion(
    tokenizer: Any, renderer: Callable[[], _ChatRenderer], prompt: Any, completion: Any, eos_id: int
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a prompt-completion row: -100 on the prompt, the ids on the completion (and eos)."""
    if isinstance(prompt, str) and isinstance(completion, str):
        prompt_ids = _ids(tokenizer(prompt))  # the tokenizer's own special tokens (BOS if it adds one)
        completion_ids = _with_eos(_ids(tokenizer(completion, add_special_tokens=False)), eos_id)
        return prompt_ids + completion_ids, [IGNORE_INDEX] * len(prompt_ids) + completion_ids
    if isinstance(prompt, str) or isinstance(completion, str):
        raise ValueError(
            "A row's prompt and completion must both be strings or both be lists of chat messages; got "
            f"{type(prompt).__name__} and {type(completion).__name__}."
        )
    chat = renderer()
    prompt_messages, completion_messages = _clean_messages(prompt), _clean_messages(completion)
    prompt_ids = chat.tokens(prompt_messages, add_generation_prompt=True)
    full = chat.tokens(prompt_messages + completion_messages, add_generation_prompt=False)
    if full[: len(prompt_ids)] != prompt_ids:
        raise _prefix_error("the prompt with the generation prompt")
    stop = len(prompt_ids) + chat.labelled_length(full[len(prompt_ids) :])
    return full, [IGNORE_INDEX] * len(prompt_ids) + full[len(prompt_ids) : stop] + [IGNORE_INDEX] * (len(full) - stop)


def tokenize_for_causal_lm(
    dataset: Dataset,
    tokenizer: Any,
    *,
    max_length: int | None,
    text_column: str = "text",
    lm_format: str | None = None,
) -> tuple[Dataset, int]:
    """Tokenize a TRL-style dataset into `input_ids`, `attention_mask` and `labels`, and count truncated rows.

    Returns the tokenized dataset (only those three columns, lists of ints, unpadded) and how many rows lost tokens
    to `max_length` (the first `max_length` tokens are kept; None keeps everything). The count is returned rather than
    logged so the caller can report it where the user looks (the run summary, the evaluation card).

    Rows left with no token whose loss is computed (after the model's next-token shift) raise a ValueError here, before
    any training: such a row would contribute nothing to forgetting while still counting in batch statistics, and it
    usually means `max_length` cuts off the answers.
    """
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}.")
    lm_format = lm_format or detect_lm_format(dataset, text_column)
    _check_format(dataset, lm_format, text_column)
    eos_id = _eos_id(tokenizer)
    chat: list[_ChatRenderer] = []  # built on first use, so plain-text data works with template-less tokenizers

    def renderer() -> _ChatRenderer:
        if not chat:
            chat.append(_ChatRenderer(tokenizer))
        return chat[0]

    def row(example: dict[str, Any]) -> tuple[list[int], list[int]]:
        if lm_format == "prompt-completion":
            return _tokenize_prompt_completion(tokenizer, renderer, example["prompt"], example["completion"], eos_id)
        if lm_format == "messages":
            return _tokenize_conversation(renderer(), _clean_messages(example["messages"]))
        text = example[text_column]
        if not isinstance(text, str):
            raise ValueError(f"Column {text_column!r} must hold strings; got {type(text).__name__}.")
        ids = _with_eos(_ids(tokenizer(text)), eos_id)
        return ids, list(ids)

    def batch(examples: dict[str, list[Any]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {name: [] for name in (*_MODEL_COLUMNS, _TRUNCATED, _LOSS_TOKENS)}
        for values in zip(*examples.values(), strict=True):
            ids, labels = row(dict(zip(examples, values, strict=True)))
            truncated = max_length is not None and len(ids) > max_length
            if truncated:
                ids, labels = ids[:max_length], labels[:max_length]
            out["input_ids"].append(ids)
            out["attention_mask"].append([1] * len(ids))
            out["labels"].append(labels)
            out[_TRUNCATED].append(truncated)
            out[_LOSS_TOKENS].append(sum(label != IGNORE_INDEX for label in labels[1:]))
        return out

    tokenized = dataset.map(batch, batched=True, remove_columns=dataset.column_names, desc=f"Tokenizing ({lm_format})")
    truncated = np.asarray(tokenized[_TRUNCATED], dtype=bool)
    empty = np.flatnonzero(np.asarray(tokenized[_LOSS_TOKENS], dtype=np.int64) == 0)
    if len(empty):
        shown = ", ".join(str(i) for i in empty[:_SHOWN_ROWS]) + (", ..." if len(empty) > _SHOWN_ROWS else "")
        cut = int(truncated[empty].sum())
        cause = (
            f"{cut} of them lost their completion/assistant tokens to max_length={max_length}: raise --max_length "
            "(max_length=...), or shorten the prompts"
            if cut
            else "none were truncated, so they have no completion, assistant turn or second token to predict: "
            "fix or drop those rows"
        )
        if cut and cut < len(empty):
            cause += "; the others have no completion, assistant turn or second token to predict: fix or drop them"
        raise ValueError(
            f"{len(empty)} of {len(tokenized)} rows carry no loss-bearing token (row indices {shown}), so unlearning "
            f"could neither forget nor retain anything from them; {cause}."
        )
    return tokenized.remove_columns([_TRUNCATED, _LOSS_TOKENS]), int(truncated.sum())


# ---- batching -----------------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[int]:
    return list(value.tolist() if hasattr(value, "tolist") else value)


@dataclass
class CausalLMCollator:
    """Right-pads causal-LM rows: `input_ids` with `pad_token_id`, `attention_mask` with 0, `labels` with -100.

    It keeps only the pad id, not the tokenizer, so it pickles cheaply into DataLoader workers. Other keys (e.g. an
    integer index column) are stacked with torch's `default_collate`. Written instead of using
    `DataCollatorForSeq2Seq`, which pads on `tokenizer.padding_side` (left for many decoder tokenizers) and needs the
    tokenizer to have a pad token.
    """

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("Cannot collate an empty batch.")
        if "input_ids" not in features[0] or "labels" not in features[0]:
            raise ValueError(
                f"Causal-LM rows need `input_ids` and `labels`; got keys {sorted(features[0])}. Tokenize the data "
                "with hf_scrub.lm_data.tokenize_for_causal_lm first."
            )
        ids = [_as_list(feature["input_ids"]) for feature in features]
        labels = [_as_list(feature["labels"]) for feature in features]
        masks = [
            _as_list(feature["attention_mask"]) if "attention_mask" in feature else [1] * len(row)
            for feature, row in zip(features, ids, strict=True)
        ]
        for i, (row, label, mask) in enumerate(zip(ids, labels, masks, strict=True)):
            if not len(row) == len(label) == len(mask):
                raise ValueError(
                    f"Row {i} of the batch has {len(row)} input_ids, {len(label)} labels and {len(mask)} attention "
                    "mask entries; causal-LM labels must be aligned with input_ids (unshifted)."
                )
        length = max(len(row) for row in ids)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of

        def pad(rows: list[list[int]], value: int) -> torch.Tensor:
            return torch.tensor([row + [value] * (length - len(row)) for row in rows], dtype=torch.long)

        batch = {
            "input_ids": pad(ids, self.pad_token_id),
            "attention_mask": pad(masks, 0),
            "labels": pad(labels, IGNORE_INDEX),
        }
        others = [key for key in features[0] if key not in _MODEL_COLUMNS]
        for key in others:
            batch[key] = default_collate([feature[key] for feature in features])
        return batch


def causal_lm_collator(tokenizer: Any, pad_to_multiple_of: int | None = None) -> CausalLMCollator:
    """The collator for `tokenize_for_causal_lm`'s output, padding with the tokenizer's pad token, or its eos token
    when it has none (as most decoder-only tokenizers; the padded positions are masked and unlabelled, so which id
    fills them does not matter). The tokenizer itself is not modified."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("The tokenizer has neither a pad nor an eos token to pad causal-LM batches with.")
    return CausalLMCollator(pad_token_id=int(pad_id), pad_to_multiple_of=pad_to_multiple_of)


# ---- loss accounting ----------------------------------------------------------------------------------------------


def loss_token_counts(dataset: Dataset) -> np.ndarray:
    """Per row, how many positions carry loss after the next-token shift: the count of `labels[1:] != -100`.

    The first label is never predicted (nothing precedes it), so it is not counted. These counts are what weight each
    token of an optimizer step when the loss is a mean over the step's tokens, e.g. to split a step's loss fairly
    across gradient-accumulation micro-batches or to report how much of the forget set a step saw.
    """
    column = dataset.with_format("arrow")["labels"]  # respects select/shuffle index mappings
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if not hasattr(column, "offsets"):  # e.g. fixed-size lists: no offsets to vectorise with
        return np.asarray(
            [sum(label != IGNORE_INDEX for label in labels[1:]) for labels in column.to_pylist()], dtype=np.int64
        )
    offsets = np.asarray(column.offsets, dtype=np.int64)
    offsets = offsets - offsets[0]  # a sliced list array's offsets need not start at 0; flatten() is sliced too
    carries = np.asarray(column.flatten(), dtype=np.int64) != IGNORE_INDEX
    starts, ends = offsets[:-1], offsets[1:]
    cumulative = np.concatenate([[0], np.cumsum(carries, dtype=np.int64)])
    counts = cumulative[ends] - cumulative[starts]
    nonempty = ends > starts
    counts[nonempty] -= carries[starts[nonempty]]  # the first label of each row is never predicted
    return counts
