"""Shared by the end-to-end CLI tests: a tiny real text classifier and data files on disk, and helpers.

`assets` is a folder holding `model/` (a 3-class, one-layer BERT with the MiniLM tokenizer, trained for a few seconds
on `reviews.csv` so that its predictions mean something), and `reviews.csv` (60 reviews, integer labels, no test
split). `scrub(...)` builds `scripts/scrub.py` arguments for it; `hf_scrub.cli.main(argv)` runs them in-process.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import datasets
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

from hf_scrub import cli, pipeline
from hf_scrub.offline import minilm_model_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "scrub.py"
FAST = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no",
        "--num_train_epochs", "1", "--forget_epochs", "1", "--per_device_train_batch_size", "16",
        "--per_device_forget_batch_size", "8", "--max_length", "16", "--learning_rate", "1e-3",
        "--history_retain_examples", "16"]  # fmt: skip
WORDS = ["good", "bad", "fine"]


def folder_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
            digest.update(str(path.stat().st_mtime_ns).encode())
    return digest.hexdigest()


def review_rows(n: int) -> dict[str, list]:
    """`n` short reviews with integer labels 0..2 (the label's word is in the text, so it is learnable)."""
    return {
        "text": [f"review {i}: " + " ".join([WORDS[i % 3]] * 6) for i in range(n)],
        "label": [i % 3 for i in range(n)],
    }


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    """A tiny 3-class BERT with the MiniLM tokenizer, trained on 60 CSV reviews (integer labels, no test split)."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_scrub.tasks import prepare_dataset

    root = tmp_path_factory.mktemp("cli_assets")
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32, num_labels=3,
    )  # fmt: skip
    model = BertForSequenceClassification(config)
    pd.DataFrame(review_rows(60)).to_csv(root / "reviews.csv", index=False)
    train = prepare_dataset(
        datasets.Dataset.from_dict(review_rows(60)), "text-classification", tokenizer, max_length=16
    )
    args = TrainingArguments(
        output_dir=str(root / "trainer"), use_cpu=True, report_to="none", seed=0, num_train_epochs=15,
        per_device_train_batch_size=16, learning_rate=2e-2, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)).train()
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


@pytest.fixture
def loads(monkeypatch):
    """Records every model load of the pipeline (and still loads): empty means 'refused before the model loaded'."""
    calls = []
    original = pipeline.load_model

    def recording(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(pipeline, "load_model", recording)
    return calls


def scrub(assets, tmp_path, *flags, data=None, out="out", schedule="fixed") -> list[str]:
    """Arguments for a run on `assets`. SCRUB runs without a preset get `--schedule fixed` (the paper's schedule,
    which these tests count steps of) unless `schedule=None` (then the CLI's default, the goal-driven preset)."""
    flags = [str(flag) for flag in flags]
    scrub_run = "--method" not in flags or flags[flags.index("--method") + 1] == "scrub"
    if schedule and scrub_run and "--preset" not in flags and "--schedule" not in flags:
        flags = ["--schedule", schedule, *flags]
    return ["--model_name_or_path", str(assets / "model"), "--dataset_name", str(data or assets / "reviews.csv"),
            "--output_dir", str(tmp_path / out), *FAST, *flags]  # fmt: skip


def refused(capsys, argv, *messages) -> str:
    """Run `argv`; it must exit 2 with one 'error:' line holding every message."""
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    for message in messages:
        assert message in err[-1], err[-1]
    return err[-1]


def results_of(folder: Path) -> dict:
    return json.loads((folder / "unlearning_results.json").read_text())


def assert_complete(folder: Path) -> dict:
    results = results_of(folder)
    for name in ("model.safetensors", "config.json", "README.md", "unlearning_history.png", "tokenizer.json"):
        assert (folder / name).is_file(), name
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".staging")]
    return results
