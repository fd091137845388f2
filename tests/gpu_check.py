"""One-shot GPU check of `ScrubTrainer` (not collected by pytest): precision, teacher memory, step time, FSDP2.

    python tests/gpu_check.py [--out result.json]     # on a CUDA machine, < 4 minutes; stdout: one JSON line
    python tests/gpu_check.py --cpu-smoke             # tiny sizes, fp32, CPU: checks the script itself

Needs torch, transformers, accelerate, peft, datasets and `hf_scrub` importable (`pip install --no-deps -e .` or
PYTHONPATH=<repo root>); no network. Every section runs in its own try/except: a failure is recorded as text under
"errors" and the next section runs. Sections (``--only`` picks some):

- precision: SCRUB on a BERT-like model (hidden 256, 4 layers, seq 128, synthetic tokens) in fp32, bf16 and fp16:
  final logged losses, finite, weight difference against the fp32 run, dtypes seen inside the networks, of the
  teacher's and the student's logits, and of the losses (the KL must be float32).
- memory: peak GPU memory (max_memory_allocated) of full fine-tuning with the deep-copied FrozenTeacher against LoRA
  with the adapter-disabled teacher, on the same model and on a MiniLM-size BERT (384 hidden, 6 layers, vocab 30522).
- accumulation: gradient accumulation 2 with half batches against 1 with full batches (must match, fp32 SGD).
- step_time: median time of one SCRUB min-step (uncached, with cache_teacher_outputs, and without the per-step
  finiteness check) against one plain `transformers.Trainer` step, same model (MiniLM size), batch and optimizer.
- launch: `accelerate launch --config_file configs/accelerate/fsdp2.yaml --num_processes 1` (and the DeepSpeed
  ZeRO-3 file when deepspeed is installed) of a short SCRUB run: does the teacher work under FSDP2 / ZeRO-3?
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import datasets  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from torch import nn  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback  # noqa: E402

import hf_scrub.trainer as trainer_module  # noqa: E402
from hf_scrub import ScrubConfig, ScrubTrainer  # noqa: E402

BUDGET_S = 225  # the whole script, launch included, must stay under 4 minutes
START = time.perf_counter()
LOGGED = ("loss", "forget_kl", "retain_kl", "retain_ce")
CHILD_TAG = "GPU_CHECK_CHILD "


def elapsed() -> float:
    return time.perf_counter() - START


def rounded(value, digits: int = 5):
    if isinstance(value, float):
        return value if not math.isfinite(value) or value == 0 else float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v, digits) for v in value]
    return value


class Sizes:
    """Model and data sizes; tiny in --cpu-smoke mode."""

    def __init__(self, smoke: bool) -> None:
        self.smoke = smoke
        self.seq = 16 if smoke else 128
        self.forget, self.retain = (8, 32) if smoke else (64, 512)
        self.forget_batch, self.retain_batch = (4, 8) if smoke else (16, 32)
        self.warmup_steps, self.timed_steps = (1, 3) if smoke else (5, 15)
        self.memory_steps = 2 if smoke else 6
        self.models = {
            "bert256": dict(vocab_size=8192, hidden_size=256, num_hidden_layers=4, num_attention_heads=4),
            "minilm": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12),
        }
        if smoke:
            self.models = {
                "bert256": dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2),
                "minilm": dict(vocab_size=256, hidden_size=48, num_hidden_layers=2, num_attention_heads=3),
            }

    def model(self, name: str, seed: int = 0) -> BertForSequenceClassification:
        torch.manual_seed(seed)
        spec = self.models[name]
        config = BertConfig(
            **spec,
            intermediate_size=4 * spec["hidden_size"],
            max_position_embeddings=max(512, self.seq),
            num_labels=4,
            hidden_dropout_prob=0.0,  # precision is the only difference between runs
            attention_probs_dropout_prob=0.0,
        )
        return BertForSequenceClassification(config)

    def tokens(self, n: int, seed: int, name: str = "bert256") -> datasets.Dataset:
        rng = np.random.default_rng(seed)
        vocab = self.models[name]["vocab_size"]
        ids = rng.integers(5, vocab, size=(n, self.seq))
        return datasets.Dataset.from_dict(
            {
                "input_ids": ids,
                "attention_mask": np.ones_like(ids),
                "labels": (ids[:, 0] % 4).astype(np.int64),  # learnable: the label is a function of the input
            }
        ).with_format("torch")


def scrub_args(sizes: Sizes, out: str, **overrides) -> ScrubConfig:
    values = dict(
        output_dir=out,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        use_cpu=sizes.smoke,
        seed=0,
        per_device_forget_batch_size=sizes.forget_batch,
        per_device_train_batch_size=sizes.retain_batch,
        per_device_eval_batch_size=64,
        num_train_epochs=2,
        forget_epochs=1,
        history_retain_examples=1,
        dataloader_pin_memory=not sizes.smoke,
    )
    values.update(overrides)
    return ScrubConfig(**values)


def release(*objects) -> None:
    for obj in objects:
        accelerator = getattr(obj, "accelerator", None)
        if accelerator is not None:
            accelerator.free_memory()
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# ---- sections -------------------------------------------------------------------------------------------------------


def section_env(sizes: Sizes) -> dict:
    import accelerate
    import peft

    info = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info.update(
            device=torch.cuda.get_device_name(0),
            capability=".".join(map(str, torch.cuda.get_device_capability(0))),
            bf16_supported=torch.cuda.is_bf16_supported(),
            total_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    return info


@contextlib.contextmanager
def dtype_probe(trainer: ScrubTrainer, seen: dict):
    """Record dtypes inside the student and the teacher, of the teacher's logits and of the SCRUB losses."""
    handles = []

    def first_linear(module: nn.Module) -> nn.Module:
        return next(m for m in module.modules() if isinstance(m, nn.Linear))

    def hook(key):
        def record(module, args, output):
            if key == "teacher_inner" or module.training:
                seen[key].add(str(output.dtype).replace("torch.", ""))

        return record

    handles.append(first_linear(trainer.model).register_forward_hook(hook("student_inner")))
    if hasattr(trainer.teacher, "module"):
        handles.append(first_linear(trainer.teacher.module).register_forward_hook(hook("teacher_inner")))
    original_teacher = trainer.teacher.logits

    def teacher_logits(student, inputs):
        logits = original_teacher(student, inputs)
        seen["teacher_logits"].add(str(logits.dtype).replace("torch.", ""))
        return logits

    trainer.teacher.logits = teacher_logits
    originals = {name: getattr(trainer_module, name) for name in ("forget_loss", "retain_loss")}

    def spy(name):
        def loss(student_logits, teacher_logits, *args):
            result = originals[name](student_logits, teacher_logits, *args)
            seen["student_logits"].add(str(student_logits.dtype).replace("torch.", ""))
            for part in result if isinstance(result, tuple) else (result,):
                seen["losses"].add(str(part.dtype).replace("torch.", ""))
            return result

        return loss

    for name in originals:
        setattr(trainer_module, name, spy(name))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(trainer_module, name, function)
        for handle in handles:
            handle.remove()
        del trainer.teacher.logits


def section_precision(sizes: Sizes) -> dict:
    forget, retain = sizes.tokens(sizes.forget, 1), sizes.tokens(sizes.retain, 2)
    precisions = ["fp32"] if sizes.smoke else ["fp32", "bf16", "fp16"]
    result, reference, initial = {}, None, None
    for precision in precisions:
        try:
            model = sizes.model("bert256")
            if initial is None:
                initial = {k: v.detach().float().clone() for k, v in model.state_dict().items()}
            with tempfile.TemporaryDirectory() as out:
                args = scrub_args(
                    sizes,
                    out,
                    bf16=precision == "bf16",
                    fp16=precision == "fp16",
                    optim="sgd",
                    learning_rate=0.05,
                    lr_scheduler_type="constant",
                )
                trainer = ScrubTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
                seen = {k: set() for k in ("student_inner", "teacher_inner", "student_logits", "teacher_logits")}
                seen["losses"] = set()
                sync()
                start = time.perf_counter()
                with dtype_probe(trainer, seen):
                    trainer.train()
                sync()
                seconds = time.perf_counter() - start
            logs = [entry for entry in trainer.state.log_history if "loss" in entry]
            final = {}
            for key in LOGGED:
                values = [entry[key] for entry in logs if key in entry]
                if values:
                    final[key] = values[-1]
            weights = {
                k: v.detach().float().cpu()
                for k, v in trainer.accelerator.unwrap_model(trainer.model).state_dict().items()
            }
            entry = {
                "seconds": seconds,
                "steps": trainer.state.global_step,
                "final": final,
                "first_forget_kl": next((e["forget_kl"] for e in logs if "forget_kl" in e), None),
                "finite": all(math.isfinite(e[k]) for e in logs for k in LOGGED if k in e)
                and all(torch.isfinite(v).all().item() for v in weights.values()),
                "mixed_precision": trainer.accelerator.mixed_precision,
                "dtypes": {k: sorted(v) for k, v in seen.items()},
                "kl_float32": seen["losses"] == {"float32"},
            }
            if precision == "fp32":
                reference = weights
            elif reference is not None:
                floating = [k for k in weights if weights[k].is_floating_point()]
                diff = sum(((weights[k] - reference[k]) ** 2).sum() for k in floating).sqrt().item()
                moved = sum(((reference[k] - initial[k]) ** 2).sum() for k in floating).sqrt().item()
                entry["max_abs_weight_diff_vs_fp32"] = max(
                    (weights[k] - reference[k]).abs().max().item() for k in floating
                )
                entry["l2_weight_diff_over_fp32_update"] = diff / moved if moved else None
            result[precision] = entry
            release(trainer)
        except Exception:
            result[precision] = {"error": traceback.format_exc(limit=6)[-1500:]}
    return result


def section_accumulation(sizes: Sizes) -> dict:
    """GA 2 x half batch must equal GA 1 x full batch (SGD, fp32): ScrubTrainer's loss scaling on this transformers.

    ScrubTrainer relies on the Trainer's `loss_is_scaled_for_ga` class attribute (transformers 5.19+); where the
    Trainer does not read it, it divides the already-scaled loss by the accumulation steps once more.
    """
    forget, retain = sizes.tokens(sizes.forget, 1), sizes.tokens(sizes.retain // 2, 2)
    runs = {}
    for accumulation in (1, 2):
        model = sizes.model("bert256")
        with tempfile.TemporaryDirectory() as out:
            args = scrub_args(
                sizes,
                out,
                optim="sgd",
                learning_rate=0.05,
                lr_scheduler_type="constant",
                max_grad_norm=0.0,
                per_device_forget_batch_size=sizes.forget_batch // accumulation,
                per_device_train_batch_size=sizes.retain_batch // accumulation,
                gradient_accumulation_steps=accumulation,
            )
            trainer = ScrubTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=retain)
            trainer.train()
        logs = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        runs[accumulation] = (logs, {k: v.detach().float().cpu() for k, v in state.items()}, trainer.state.global_step)
        release(trainer)
    (logs1, w1, steps1), (logs2, w2, steps2) = runs[1], runs[2]
    ratios = [b / a for a, b in zip(logs1, logs2, strict=False) if abs(a) > 1e-6]
    return {
        "transformers_reads_loss_is_scaled_for_ga": "loss_is_scaled_for_ga" in vars(Trainer),
        "steps": [steps1, steps2],
        "max_abs_weight_diff": max((w1[k] - w2[k]).abs().max().item() for k in w1 if w1[k].is_floating_point()),
        "median_logged_loss_ratio_ga2_over_ga1": statistics.median(ratios) if ratios else None,
    }


def section_memory(sizes: Sizes) -> dict:
    from peft import LoraConfig

    result = {}
    for name in ("bert256", "minilm"):
        forget, retain = (
            sizes.tokens(sizes.forget, 1, name),
            sizes.tokens(sizes.retain_batch * sizes.memory_steps, 2, name),
        )
        runs = {}
        for mode in ("full_frozen_copy", "lora_adapter_disabled"):
            try:
                release()
                if torch.cuda.is_available():
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                model = sizes.model(name)
                peft_config = None
                if mode.startswith("lora"):
                    peft_config = LoraConfig(
                        task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"]
                    )
                with tempfile.TemporaryDirectory() as out:
                    args = scrub_args(sizes, out, bf16=not sizes.smoke, num_train_epochs=1, learning_rate=1e-4)
                    trainer = ScrubTrainer(
                        model=model, args=args, forget_dataset=forget, retain_dataset=retain, peft_config=peft_config
                    )
                    trainer.train()
                    sync()
                student = trainer.accelerator.unwrap_model(trainer.model)
                runs[mode] = {
                    "teacher": type(trainer.teacher).__name__,
                    "trainable_params": sum(p.numel() for p in student.parameters() if p.requires_grad),
                    "total_params": sum(p.numel() for p in student.parameters()),
                    "steps": trainer.state.global_step,
                    "peak_mib": (torch.cuda.max_memory_allocated() - base) / 2**20
                    if torch.cuda.is_available()
                    else None,
                }
                release(trainer)
                del model, student, trainer
            except Exception:
                runs[mode] = {"error": traceback.format_exc(limit=6)[-1500:]}
        full, lora = runs.get("full_frozen_copy", {}), runs.get("lora_adapter_disabled", {})
        if full.get("peak_mib") and lora.get("peak_mib"):
            runs["lora_over_full_peak"] = lora["peak_mib"] / full["peak_mib"]
        result[name] = runs
    release()
    return result


class StepTimer(TrainerCallback):
    """Wall time of every optimizer step (forward, backward, optimizer), device-synchronised at both ends."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.times.append(time.perf_counter() - self._start)


def section_step_time(sizes: Sizes) -> dict:
    name = "minilm"
    steps = sizes.warmup_steps + sizes.timed_steps
    retain = sizes.tokens(sizes.retain_batch * steps, 2, name)
    forget = sizes.tokens(sizes.forget_batch, 1, name)
    precision = {} if sizes.smoke else {"bf16": True}
    common = dict(
        optim="adamw_torch",
        learning_rate=1e-5,
        lr_scheduler_type="constant",
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        num_train_epochs=1,
        per_device_train_batch_size=sizes.retain_batch,
        use_cpu=sizes.smoke,
        dataloader_pin_memory=not sizes.smoke,
        **precision,
    )

    def median_ms(timer: StepTimer) -> float:
        timed = timer.times[sizes.warmup_steps :]
        return 1000 * statistics.median(timed)

    result = {
        "model": name,
        "batch": sizes.retain_batch,
        "seq": sizes.seq,
        "precision": "bf16" if precision else "fp32",
        "timed_steps": sizes.timed_steps,
        "warmup_steps": sizes.warmup_steps,
    }
    with tempfile.TemporaryDirectory() as out:
        try:
            timer = StepTimer()
            plain = Trainer(
                model=sizes.model(name),
                args=transformers.TrainingArguments(output_dir=out, **common),
                train_dataset=retain,
                callbacks=[timer],
            )
            plain.train()
            result["plain_trainer_ms"] = median_ms(timer)
            release(plain)
        except Exception:
            result["plain_trainer_error"] = traceback.format_exc(limit=6)[-1500:]
        variants = {
            "scrub_min_step_ms": {},
            "scrub_min_step_cached_ms": {"cache_teacher_outputs": True},
            "scrub_min_step_no_finite_check_ms": {"no_finite_check": True},
        }
        for key, variant in variants.items():
            try:
                timer = StepTimer()
                args = ScrubConfig(
                    output_dir=out,
                    forget_epochs=0,
                    history_retain_examples=1,
                    cache_teacher_outputs=variant.get("cache_teacher_outputs", False),
                    **common,
                )
                trainer = ScrubTrainer(
                    model=sizes.model(name), args=args, forget_dataset=forget, retain_dataset=retain, callbacks=[timer]
                )
                if variant.get("no_finite_check"):  # what the per-step `.item()` sync in _raise_if_not_finite costs
                    trainer._raise_if_not_finite = lambda loss, phase: None
                trainer.train()
                assert trainer.state.global_step == steps, trainer.state.global_step
                result[key] = median_ms(timer)
                release(trainer)
            except Exception:
                result[key.replace("_ms", "_error")] = traceback.format_exc(limit=6)[-1500:]
    if result.get("plain_trainer_ms"):
        for key in variants:
            if key in result:
                result[key.replace("_ms", "_over_plain")] = result[key] / result["plain_trainer_ms"]
    return result


def section_launch(sizes: Sizes) -> dict:
    """Run `child_run` under `accelerate launch` with the FSDP2 (and, if installed, DeepSpeed ZeRO-3) config."""
    import importlib.util

    configs = {"fsdp2": "fsdp2.yaml", "fsdp2_plain_trainer": "fsdp2.yaml"}
    if importlib.util.find_spec("deepspeed") is not None:
        configs["deepspeed_zero3"] = "deepspeed_zero3.yaml"
    result = {} if "deepspeed_zero3" in configs else {"deepspeed_zero3": "skipped: deepspeed not installed"}
    for name, file in configs.items():
        remaining = BUDGET_S - elapsed() - 10
        if remaining < 45:
            result[name] = f"skipped: {remaining:.0f} s left of the time budget"
            continue
        command = [
            sys.executable, "-m", "accelerate.commands.launch",
            "--config_file", str(ROOT / "configs" / "accelerate" / file),
            "--num_processes", "1", "--main_process_port", "0",
            str(Path(__file__).resolve()), "--child",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        if name.endswith("plain_trainer"):
            env["GPU_CHECK_PLAIN_TRAINER"] = "1"
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=remaining, env=env, cwd=ROOT)
            output = done.stdout + done.stderr
            lines = [line for line in done.stdout.splitlines() if line.startswith(CHILD_TAG)]
            entry = json.loads(lines[-1][len(CHILD_TAG) :]) if lines else {}
            entry["returncode"] = done.returncode
            if done.returncode != 0 or not lines:
                entry["output_tail"] = output[-2000:]
            result[name] = entry
        except subprocess.TimeoutExpired as error:
            result[name] = {"error": f"timed out after {remaining:.0f} s", "output_tail": str(error.stdout)[-1500:]}
    return result


def child_run() -> None:
    """A short SCRUB run inside `accelerate launch` (whatever the config): reports how it was set up and ran."""
    sizes = Sizes(smoke=False)
    sizes.models["bert256"] = dict(vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=2)
    report: dict = {}
    try:
        with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(sys.stderr):
            args = scrub_args(sizes, out, num_train_epochs=1, learning_rate=1e-4)
            if os.environ.get("GPU_CHECK_PLAIN_TRAINER"):  # control run: the same launch without SCRUB
                trainer = Trainer(
                    model=sizes.model("bert256"), args=args, train_dataset=sizes.tokens(64, 2, "bert256")
                )
                trainer.teacher = None
            else:
                trainer = ScrubTrainer(
                    model=sizes.model("bert256"),
                    args=args,
                    forget_dataset=sizes.tokens(32, 1, "bert256"),
                    retain_dataset=sizes.tokens(64, 2, "bert256"),
                )
            teacher = getattr(trainer.teacher, "module", None)
            report["distributed_type"] = str(trainer.accelerator.distributed_type)
            fsdp_plugin = getattr(trainer.accelerator.state, "fsdp_plugin", None)
            report["fsdp_version"] = getattr(fsdp_plugin, "fsdp_version", None)
            report["device"] = str(trainer.args.device)
            report["mixed_precision"] = trainer.accelerator.mixed_precision
            report["teacher"] = type(trainer.teacher).__name__
            if teacher is not None:
                report["teacher_device_before_train"] = str(next(teacher.parameters()).device)
            trainer.train()
            logs = [entry for entry in trainer.state.log_history if "loss" in entry]
            report["steps"] = trainer.state.global_step
            report["final_loss"] = logs[-1]["loss"] if logs else None
            report["student_wrapped_as"] = type(trainer.model_wrapped).__name__
            if teacher is not None:
                report["teacher_device_after_train"] = str(next(trainer.teacher.module.parameters()).device)
            report["ok"] = True
    except Exception:
        report["ok"] = False
        report["error"] = traceback.format_exc(limit=8)[-2000:]
    print(CHILD_TAG + json.dumps(rounded(report)), flush=True)


SECTIONS = {
    "env": section_env,
    "precision": section_precision,
    "accumulation": section_accumulation,
    "memory": section_memory,
    "step_time": section_step_time,
    "launch": section_launch,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes, fp32, CPU; skips CUDA-only parts")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run only these sections")
    parser.add_argument("--out", type=Path, help="also write the JSON summary to this file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.child:
        child_run()
        return
    transformers.logging.set_verbosity_error()
    sizes = Sizes(smoke=cli.cpu_smoke)
    if cli.cpu_smoke:
        torch.set_num_threads(1)  # tiny ops: thread hand-offs cost more than they save on a shared CPU
    summary: dict = {"mode": "cpu-smoke" if cli.cpu_smoke else "gpu", "errors": {}}
    if not cli.cpu_smoke and not torch.cuda.is_available():
        summary["errors"]["cuda"] = "no CUDA device visible; run with --cpu-smoke to check the script on CPU"
    for name in cli.only or SECTIONS:
        if cli.cpu_smoke and name == "launch":
            summary[name] = "skipped: needs CUDA (FSDP2 / DeepSpeed)"
            continue
        if elapsed() > BUDGET_S - 20:
            summary[name] = f"skipped: time budget ({elapsed():.0f} s used)"
            continue
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: keep stdout for the JSON
                summary[name] = SECTIONS[name](sizes)
        except Exception:
            summary["errors"][name] = traceback.format_exc(limit=8)[-2000:]
        summary.setdefault("section_seconds", {})[name] = time.perf_counter() - start
    summary["seconds_total"] = elapsed()
    text = json.dumps(rounded(summary), separators=(",", ":"))
    if cli.out:
        cli.out.write_text(text + "\n")
    print(text, flush=True)


if __name__ == "__main__":
    main()
