"""Speed benchmarks for BENCHMARKS.md (issue 5): ratios measured side by side in one process, median of repeats.

(a) step: one SCRUB min-step (student forward + backward + teacher forward) over one plain `Trainer` fine-tuning
    step on the same model and batch, uncached and with `cache_teacher_outputs`; a MiniLM-size text classifier and a
    small HF ResNet. Target: <= 1.40 uncached, <= 1.10 cached.
(b) loop: one SCRUB epoch (forget pass of max-steps + retain pass of min-steps) through `ScrubTrainer` over the same
    epoch in a minimal plain-PyTorch loop written from the spec (docs/design.md §2): the cost of the HF machinery.
    Target: <= 1.10.
(d) scaling: one SCRUB epoch's wall time as the forget set and the retain set grow, for the paper's fixed schedule
    (retain pass over the whole retain set) and the `auto` preset (retain steps bounded by the forget pass).
    Target (issue 10): with the forget set fixed, `auto` grows by at most 1.3x as the retain set grows 4x.
(e) lm_step: causal LMs (issue 11): one SCRUB min-step (LoRA student forward + backward, teacher = the same model
    with adapters disabled) over one plain `Trainer` causal-LM fine-tuning step with the same LoRA, model and batch;
    a Llama of SmolLM2-135M's shape (hidden 576, vocabulary 49,152; its 30 blocks on a GPU, the first 8 on CPU),
    uncached.
(f) lm_memory: the extra peak memory of the token-level min-step loss (forward + backward of CE + distance over the
    vocabulary) with and without chunking of positions, each in a fresh process (CPU: peak resident set size; GPU:
    peak allocated memory), beside a plain float32 cross-entropy on the same logits.

    python benchmarks/speed.py                      # CPU, all parts (a few minutes on 2 cores)
    python benchmarks/speed.py --device cuda        # on a GPU (bf16 for the step part)
    python benchmarks/speed.py --parts step --repeats 5 --out result.json

Every number is a median over `--repeats` runs; within a run each method is timed over the same steps after a
warm-up, with the device synchronised around each step. Models are built from configs (random weights): speed does
not depend on what the weights have learnt. Peak memory (c) is measured on a GPU by tests/gpu_check.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets
import numpy as np
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from hf_scrub import ScrubConfig, ScrubTrainer
from hf_scrub.losses import forget_loss, retain_loss


def minilm(num_labels: int = 2) -> BertForSequenceClassification:
    """all-MiniLM-L6-v2's shape (22.7M parameters)."""
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        num_labels=num_labels,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def resnet(num_labels: int = 10) -> ResNetForImageClassification:
    """A ResNet-18-like network for 32x32 RGB images (the paper's CIFAR scale)."""
    config = ResNetConfig(
        num_channels=3, embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
        layer_type="basic", num_labels=num_labels,
    )  # fmt: skip
    return ResNetForImageClassification(config)


# Fixed-shape features: rows come back as numpy blocks instead of nested Python lists, so data loading stays out of
# the way of the GPU step being timed.
def token_data(n: int, seq: int, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {
            "input_ids": datasets.Sequence(datasets.Value("int64"), length=seq),
            "attention_mask": datasets.Sequence(datasets.Value("int64"), length=seq),
            "labels": datasets.Value("int64"),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "input_ids": rng.integers(1000, 30000, size=(n, seq)),
            "attention_mask": np.ones((n, seq), dtype=np.int64),
            "labels": rng.integers(0, 2, n),
        },
        features=features,
    ).with_format("torch")


def image_data(n: int, seed: int = 0) -> datasets.Dataset:
    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {"pixel_values": datasets.Array3D((3, 32, 32), "float32"), "labels": datasets.Value("int64")}
    )
    return datasets.Dataset.from_dict(
        {"pixel_values": rng.normal(size=(n, 3, 32, 32)).astype("float32"), "labels": rng.integers(0, 10, n)},
        features=features,
    ).with_format("torch")


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step, the device synchronised at both ends."""

    def __init__(self, device: str) -> None:
        self.device, self.times, self._start = device, [], 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        sync(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.times.append(time.perf_counter() - self._start)


def common_args(output_dir: str, device: str, batch: int, bf16: bool) -> dict:
    return dict(
        output_dir=output_dir, per_device_train_batch_size=batch, learning_rate=1e-5, num_train_epochs=1,
        save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True, use_cpu=device == "cpu",
        bf16=bf16, seed=0, dataloader_pin_memory=device == "cuda",
    )  # fmt: skip


def median_step_ms(trainer: Trainer, device: str, warmup: int) -> float:
    """Train, timing every optimizer step; the median after `warmup` steps, in milliseconds."""
    timer = StepTimer(device)
    trainer.add_callback(timer)
    trainer.train()
    return 1000 * statistics.median(timer.times[warmup:])


def step_ratio(make_model, data, device: str, batch: int, steps: int, warmup: int, bf16: bool) -> dict[str, float]:
    """Median step time (ms) of plain fine-tuning, SCRUB min-steps and cached SCRUB min-steps on the same batches."""
    retain = data.select(range(batch * (steps + warmup)))
    forget = data.select(range(len(retain), len(retain) + batch))
    times = {}
    with tempfile.TemporaryDirectory() as out:
        args = common_args(out, device, batch, bf16)
        runs = {
            "plain": lambda: Trainer(model=make_model(), args=TrainingArguments(**args), train_dataset=retain),
            "scrub": lambda: ScrubTrainer(
                model=make_model(), args=ScrubConfig(**args, forget_epochs=0, history_retain_examples=1),
                forget_dataset=forget, retain_dataset=retain,
            ),
            "scrub_cached": lambda: ScrubTrainer(
                model=make_model(),
                args=ScrubConfig(**args, forget_epochs=0, history_retain_examples=1, cache_teacher_outputs=True),
                forget_dataset=forget, retain_dataset=retain,
            ),
        }  # fmt: skip
        for name, build in runs.items():
            torch.manual_seed(0)
            times[name] = median_step_ms(build(), device, warmup)
    return times


def spec_epoch_seconds(model, forget, retain, device: str, forget_batch: int, retain_batch: int) -> float:
    """One SCRUB epoch in plain PyTorch, from docs/design.md §2 (no HF machinery), same optimizer and clipping."""
    teacher = type(model)(model.config).to(device).eval()
    teacher.load_state_dict(model.state_dict())
    teacher.requires_grad_(False)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.0)
    generator = torch.Generator().manual_seed(0)
    sync(device)
    start = time.perf_counter()
    for dataset, batch_size, is_forget in ((forget, forget_batch, True), (retain, retain_batch, False)):
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=generator)
        for batch in loader:
            batch = {key: value.to(device) for key, value in batch.items()}
            labels = batch.pop("labels")
            with torch.no_grad():
                teacher_logits = teacher(**batch).logits
            student_logits = model(**batch).logits
            if is_forget:
                loss = forget_loss(student_logits, teacher_logits, 4.0).mean()
            else:
                loss = retain_loss(student_logits, teacher_logits, labels, 4.0, 1.0, 0.5)[0].mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
    sync(device)
    return time.perf_counter() - start


def trainer_epoch_seconds(
    model, forget, retain, device: str, forget_batch: int, retain_batch: int, schedule: str = "fixed"
) -> float:
    """Seconds of one `ScrubTrainer.train()` epoch. `schedule="fixed"`: the paper's epoch (a retain pass over the
    whole retain set, no history); "auto": the `auto` preset's epoch with a budget of one epoch (retain steps bounded
    by the forget pass, teacher memoised, history on at most `history_retain_examples` retain examples)."""
    with tempfile.TemporaryDirectory() as out:
        common = {**common_args(out, device, retain_batch, bf16=False), "per_device_forget_batch_size": forget_batch}
        if schedule == "auto":
            args = ScrubConfig.from_preset("auto", **common, forget_epochs=1)
        else:
            args = ScrubConfig(
                **common, forget_epochs=1, history_retain_examples=1, lr_scheduler_type="constant", weight_decay=0.0
            )
        trainer = ScrubTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
        sync(device)
        start = time.perf_counter()  # the whole `train()`: data loading, schedule, history and all
        trainer.train()
        sync(device)
        return time.perf_counter() - start


def part_step(device: str, repeats: int, quick: bool) -> dict:
    bf16 = device == "cuda"
    setups = {
        "minilm": (minilm, token_data(800, 128 if device == "cuda" else 64), 32 if device == "cuda" else 16),
        "resnet": (resnet, image_data(1400), 64 if device == "cuda" else 32),
    }
    steps, warmup = (8, 2) if quick else (15, 3)
    results = {}
    for name, (make_model, data, batch) in setups.items():
        runs = [step_ratio(make_model, data, device, batch, steps, warmup, bf16) for _ in range(repeats)]
        ratios = {
            "scrub_over_plain": [r["scrub"] / r["plain"] for r in runs],
            "scrub_cached_over_plain": [r["scrub_cached"] / r["plain"] for r in runs],
        }
        results[name] = {
            "batch": batch, "bf16": bf16, "timed_steps": steps,
            **{f"{key}_ms": statistics.median(r[key] for r in runs) for key in ("plain", "scrub", "scrub_cached")},
            **{key: statistics.median(values) for key, values in ratios.items()},
            "ratio_runs": ratios,
        }  # fmt: skip
    return results


def part_loop(device: str, repeats: int, quick: bool) -> dict:
    n_retain = 256 if quick else 512
    forget, retain = image_data(64, seed=1), image_data(n_retain, seed=2)
    runs = []
    for _ in range(repeats):
        torch.manual_seed(0)
        spec = spec_epoch_seconds(resnet(), forget, retain, device, 16, 32)
        torch.manual_seed(0)
        hf = trainer_epoch_seconds(resnet(), forget, retain, device, 16, 32)
        runs.append({"plain_loop_s": spec, "scrub_trainer_s": hf, "ratio": hf / spec})
    return {
        "model": "resnet (11M, 32x32)", "forget": 64, "retain": n_retain,
        "plain_loop_s": statistics.median(r["plain_loop_s"] for r in runs),
        "scrub_trainer_s": statistics.median(r["scrub_trainer_s"] for r in runs),
        "trainer_over_loop": statistics.median(r["ratio"] for r in runs),
        "ratio_runs": [r["ratio"] for r in runs],
    }  # fmt: skip


def part_scaling(device: str, repeats: int, quick: bool) -> dict:
    def small_resnet():
        return ResNetForImageClassification(
            ResNetConfig(num_channels=3, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], num_labels=10)
        )

    grid = (
        {"forget": [64, 128, 256], "retain": [512, 1024, 2048]}
        if not quick
        else {"forget": [64, 128], "retain": [512, 1024]}
    )
    results = {}
    for axis, sizes in grid.items():
        rows = []
        for size in sizes:
            n_forget, n_retain = (size, 1024) if axis == "forget" else (128, size)
            row = {"forget": n_forget, "retain": n_retain}
            for schedule in ("fixed", "auto"):
                seconds = []
                for _ in range(repeats):
                    torch.manual_seed(0)
                    forget, retain = image_data(n_forget, 1), image_data(n_retain, 2)
                    seconds.append(trainer_epoch_seconds(small_resnet(), forget, retain, device, 32, 64, schedule))
                row[f"{schedule}_epoch_seconds"] = statistics.median(seconds)
            rows.append(row)
        results[f"vs_{axis}"] = rows
        for schedule in ("fixed", "auto"):  # largest over smallest: the growth the issue-10 target bounds
            key = f"{schedule}_epoch_seconds"
            results[f"{schedule}_growth_vs_{axis}"] = rows[-1][key] / rows[0][key]
    return results


def smollm2_shaped_llama(num_layers: int = 30):
    """A Llama with SmolLM2-135M's shape and random weights (speed does not depend on what the weights learnt)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=num_layers,
        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048, tie_word_embeddings=True,
        rms_norm_eps=1e-5, rope_theta=100000.0,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def lm_rows(n: int, length: int, prompt: int, seed: int = 0) -> datasets.Dataset:
    """Prompt/completion-shaped rows: `prompt` unlabelled tokens, then a labelled completion."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(10, 49152, size=(n, length))
    labels = ids.copy()
    labels[:, :prompt] = -100
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "attention_mask": np.ones_like(ids), "labels": labels}
    ).with_format("torch")


def part_lm_step(device: str, repeats: int, quick: bool) -> dict:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = dict(r=16, lora_alpha=32, target_modules="all-linear", task_type=TaskType.CAUSAL_LM)
    batch, length = (8, 64) if device == "cuda" else (4, 48)
    steps, warmup = (4, 1) if quick else (6, 2)
    data = lm_rows(batch * (steps + warmup + 1), length, prompt=length // 3)
    retain = data.select(range(batch * (steps + warmup)))
    forget = data.select(range(len(retain), len(data)))
    num_layers = 30 if device == "cuda" else 8  # CPU: the first 8 blocks (a step of all 30 takes ~20 s on 2 cores)
    bf16 = device == "cuda"
    runs = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            args = common_args(out, device, batch, bf16)
            builds = {
                "plain": lambda args=args: Trainer(
                    model=get_peft_model(smollm2_shaped_llama(num_layers), LoraConfig(**lora)),
                    args=TrainingArguments(**args), train_dataset=retain,
                ),
                "scrub": lambda args=args: ScrubTrainer(
                    model=smollm2_shaped_llama(num_layers), peft_config=LoraConfig(**lora),
                    args=ScrubConfig(**args, forget_epochs=0, history_retain_examples=1, retain_warmup_steps=0),
                    forget_dataset=forget, retain_dataset=retain,
                ),
            }  # fmt: skip
            times = {name: median_step_ms(build(), device, warmup) for name, build in builds.items()}
        runs.append(times)
    ratios = [r["scrub"] / r["plain"] for r in runs]
    return {
        "model": f"Llama of SmolLM2-135M's shape, {num_layers} blocks, vocab 49152; LoRA r=16 all-linear",
        "batch": batch,
        "length": length, "bf16": bf16, "timed_steps": steps,
        **{f"{key}_ms": statistics.median(r[key] for r in runs) for key in ("plain", "scrub")},
        "scrub_over_plain": statistics.median(ratios), "ratio_runs": ratios,
    }  # fmt: skip


MEMORY_PROBE = """
import resource, sys, torch, torch.nn.functional as F
from hf_scrub.lm_losses import token_retain_loss
mode, device, batch, length, vocab = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6])
torch.manual_seed(0)
student = torch.randn(batch, length, vocab, device=device, requires_grad=True)
teacher = torch.randn(batch, length, vocab, device=device)
labels = torch.randint(0, vocab, (batch, length), device=device)
labels[:, : length // 4] = -100
def peak():
    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
base = peak()
if mode == "ce":
    loss = F.cross_entropy(student.float().reshape(-1, vocab), labels.reshape(-1), ignore_index=-100)
else:
    loss = token_retain_loss(student, teacher, labels, 2.0, 1.0, 0.5, None if mode == "none" else int(mode))[0].sum()
loss.backward()
print(peak() - base)
"""


def part_lm_memory(device: str, repeats: int, quick: bool) -> dict:
    """Extra peak memory (MB) of the min-step loss, beyond the (B, L, V) student and teacher logits themselves."""
    import subprocess
    import sys

    batch, length, vocab = (4, 128, 49152) if quick else (8, 256, 49152)
    logits_mb = batch * length * vocab * 4 / 2**20
    results = {"batch": batch, "length": length, "vocab": vocab, "one_logits_tensor_mb": round(logits_mb, 1)}
    for mode in ("ce", "none", "512", "256", "128"):
        values = []
        for _ in range(repeats):
            output = subprocess.run(
                [sys.executable, "-c", MEMORY_PROBE, mode, device, str(batch), str(length), str(vocab)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            values.append(int(output.stdout.strip().splitlines()[-1]) / 2**20)
        name = {"ce": "plain_cross_entropy", "none": "unchunked"}.get(mode, f"chunk_{mode}")
        results[f"{name}_extra_mb"] = round(statistics.median(values), 1)
    return results


PARTS = {
    "step": part_step,
    "loop": part_loop,
    "scaling": part_scaling,
    "lm_step": part_lm_step,
    "lm_memory": part_lm_memory,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--parts", nargs="+", choices=sorted(PARTS), default=list(PARTS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer steps and sizes (a smoke run)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    machine = (
        torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores"
    )
    report = {"device": args.device, "machine": machine, "torch": torch.__version__, "repeats": args.repeats}
    for part in args.parts:
        start = time.perf_counter()
        report[part] = PARTS[part](args.device, args.repeats, args.quick)
        report[part]["part_seconds"] = round(time.perf_counter() - start, 1)
        if args.out:  # after every part, so a run cut short keeps what it measured
            args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
