"""Shared fixtures: an offline, throw-away Hugging Face environment and tiny real models and datasets."""

import json
import os
import socket
import sys
import tempfile
import warnings
from pathlib import Path

# Before any HF import: no network, and a private cache so tests never touch (or depend on) the user's.
_HF_HOME = tempfile.mkdtemp(prefix="hf_scrub_tests_hf_home_")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = _HF_HOME
os.environ.setdefault("HF_SCRUB_CACHE", tempfile.mkdtemp(prefix="hf_scrub_tests_cache_"))
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["WANDB_DISABLED"] = "true"

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, ResNetConfig, ResNetForImageClassification  # noqa: E402


def tiny_resnet(num_labels: int = 3, seed: int = 0) -> ResNetForImageClassification:
    """A ~3k-parameter ResNet (with BatchNorm) on 1x8x8 inputs."""
    torch.manual_seed(seed)
    config = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=num_labels)
    return ResNetForImageClassification(config)


def tiny_bert(num_labels: int = 2, vocab_size: int = 64, seed: int = 0, dropout: float = 0.1):
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertForSequenceClassification(config)


def pixel_dataset(n: int, seed: int, num_labels: int = 3) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {"pixel_values": rng.normal(size=(n, 1, 8, 8)).astype("float32"), "labels": rng.integers(0, num_labels, n)}
    ).with_format("torch")


@pytest.fixture
def pixel_splits():
    """(forget, retain) tensors datasets for the tiny ResNet."""
    return pixel_dataset(10, seed=1), pixel_dataset(30, seed=2)


def token_dataset(n: int, seed: int, num_labels: int = 2, length: int = 8, vocab_size: int = 64) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    return datasets.Dataset.from_dict(
        {
            "input_ids": rng.integers(5, vocab_size, size=(n, length)),
            "attention_mask": np.ones((n, length), dtype=np.int64),
            "labels": rng.integers(0, num_labels, n),
        }
    ).with_format("torch")


def tiny_causal_lm(vocab_size: int = 32, seed: int = 0):
    """`hf_scrub.lm_models.tiny_llama` with a 32-token vocabulary and an untied head (~3k parameters): the token-level
    trainer tests need no tokenizer (their rows are made of ids)."""
    from hf_scrub.lm_models import tiny_llama

    return tiny_llama(
        seed=seed, vocab_size=vocab_size, tie_word_embeddings=False, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip


def lm_dataset(n: int, seed: int, length: int = 10, vocab_size: int = 32) -> datasets.Dataset:
    """Prompt/completion-like rows, padded to one length: a random prompt (labels -100), a completion of random
    length (labelled), then right padding (pad id 0, attention 0, labels -100). Rows carry different numbers of
    loss tokens, which is what token weighting must get right."""
    rng = np.random.default_rng(seed)
    input_ids = rng.integers(3, vocab_size, size=(n, length))
    attention_mask = np.ones((n, length), dtype=np.int64)
    labels = input_ids.copy()
    for row in range(n):
        prompt = int(rng.integers(1, 4))
        used = int(rng.integers(prompt + 2, length + 1))
        labels[row, :prompt] = -100
        labels[row, used:] = -100
        input_ids[row, used:] = 0
        attention_mask[row, used:] = 0
    return datasets.Dataset.from_dict(
        {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    ).with_format("torch")


def memorise(model: torch.nn.Module, rows: datasets.Dataset, steps: int = 60) -> torch.nn.Module:
    """Full-batch Adam on `rows`, in place: an original that has memorised its training rows (the same on every rank
    of a launch: same seed, data and one thread)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = {key: value for key, value in rows[:].items() if key in ("input_ids", "attention_mask", "labels",
                                                                      "pixel_values")}  # fmt: skip
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**batch).loss.backward()
        optimizer.step()
    return model


def tiny_run_args(tmp_path) -> dict:
    """Arguments every unlearning config in the unit tests shares: CPU, no saving or reporting, small batches."""
    return dict(
        output_dir=str(tmp_path / "out"),
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        per_device_forget_batch_size=4,
        per_device_train_batch_size=8,
        learning_rate=1e-3,
        disable_tqdm=True,
        seed=0,
    )


def scrub_config(tmp_path, **kwargs):
    from hf_scrub import ScrubConfig

    defaults = {**tiny_run_args(tmp_path), "num_train_epochs": 3, "forget_epochs": 2}
    return ScrubConfig(**{**defaults, **kwargs})


def train_plain(train_dataset, tmp_path, **overrides):
    """The reference: plain `transformers.Trainer` fine-tuning of the dropout-free tiny BERT on `train_dataset`."""
    from transformers import Trainer, TrainingArguments

    args = dict(
        output_dir=str(tmp_path / "plain"),
        report_to="none",
        use_cpu=True,
        seed=0,
        num_train_epochs=2,
        per_device_train_batch_size=6,
        learning_rate=1e-3,
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=tiny_bert(dropout=0.0), args=TrainingArguments(**{**args, **overrides}), train_dataset=train_dataset
    )
    trainer.train()
    return trainer


def assert_same_weights(model_a, model_b, atol=1e-6):
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=atol), name


# ---- launches: what `accelerate launch --config_file configs/accelerate/F` sets up, reproduced without GPUs ---------

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


# What a rank prints when Gloo's threads abort it at interpreter exit, after its outputs are written: a torch teardown
# race on CPU launches (docs/design.md §7), seen in about 1 of 3 runs of the ZeRO-3 script test. A rank that crashes
# mid-run prints it too, so it alone does not justify a rerun: see `rerun_after_teardown_abort`.
GLOO_TEARDOWN_ABORT = "terminate called without an active exception"


def rerun_after_teardown_abort(name: str, returncode: int, log: str, outputs: list[Path]) -> bool:
    """Whether a launch test may rerun a failed launch, once: only when its log shows Gloo's teardown abort *and*
    every output it was to write exists complete (a JSON file parses; any other file is not empty), i.e. the run did
    its work and only the exit failed. Each rerun is reported as a warning in the test summary. A launch that failed
    before its outputs were complete, or in any other way, fails the test at once."""
    if returncode == 0 or GLOO_TEARDOWN_ABORT not in log:
        return False
    for path in outputs:
        try:
            if path.stat().st_size == 0 or (path.suffix == ".json" and json.loads(path.read_text()) is None):
                return False
        except (OSError, ValueError):  # missing, unreadable or cut-off JSON: the run did not finish its work
            return False
    warnings.warn(
        f"{name}: exit status {returncode} with Gloo's teardown abort after writing all {len(outputs)} outputs; "
        "rerunning it once from scratch",
        stacklevel=2,
    )
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_environment(name: str) -> tuple:
    """(parsed config, launch arguments, environment) as `accelerate launch --config_file` prepares them."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = str(CONFIGS / name)
    config = load_config_from_file(path)
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", path, "x.py"]))
    if args.use_deepspeed:  # as `launch_command` does before preparing the DeepSpeed environment
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
    elif args.multi_gpu or args.use_fsdp:
        env = prepare_multi_gpu_env(args)
    else:
        env = {}
    return config, args, env


# Fixtures of the end-to-end CLI tests (test_faults.py, test_script_options.py), shared by the whole session.
from cli_fixtures import assets, loads  # noqa: E402, F401


@pytest.fixture
def offline_evaluate(tmp_path, monkeypatch):
    """Import `evaluate` with the Hub off, caches under tmp_path, and any socket connection recorded as a failure.

    evaluate 0.4.6 reads HF_HOME / HF_MODULES_CACHE / HF_METRICS_CACHE / HF_EVALUATE_OFFLINE once, at import, and
    another test may have imported it already, so the environment is set *and* the read values are patched.
    Loading a module by an absolute folder path never goes to the Hub; the socket guard proves it.
    """
    modules_cache, metrics_cache = tmp_path / "modules", tmp_path / "metrics"
    for key, value in {
        "HF_HUB_OFFLINE": "1",
        "HF_EVALUATE_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_MODULES_CACHE": str(modules_cache),
        "HF_METRICS_CACHE": str(metrics_cache),
    }.items():
        monkeypatch.setenv(key, value)

    import evaluate
    import huggingface_hub.constants

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", modules_cache)
    monkeypatch.setattr(evaluate.config, "HF_METRICS_CACHE", metrics_cache)
    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(sys, "path", list(sys.path))  # evaluate appends its modules cache to sys.path

    # Imported metric scripts live in the `evaluate_modules` package of whichever cache was used first; hide
    # those so this test imports from its own cache (restored by monkeypatch afterwards).
    def dynamic_modules():
        return [name for name in sys.modules if name == "evaluate_modules" or name.startswith("evaluate_modules.")]

    for name in dynamic_modules():
        monkeypatch.delitem(sys.modules, name)

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted by an offline metric test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    yield evaluate

    for name in dynamic_modules():  # drop this test's imports before monkeypatch restores the earlier ones
        del sys.modules[name]
    assert not attempts, f"network access attempted: {attempts}"
