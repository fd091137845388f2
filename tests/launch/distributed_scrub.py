"""Train the tiny BERT with `ScrubTrainer` and write what every rank ended with; launched by test_distributed.py.

    torchrun --nproc_per_node 2 tests/launch/distributed_scrub.py --out DIR [--gradient-accumulation-steps 1 2]
    python tests/launch/distributed_scrub.py --out DIR          # the same run in one process
    ... --causal-lm                                              # the tiny Llama, token-level SCRUB
    ... --auto                                                   # the goal-driven schedule (schedule="auto")

Under the environment `accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml` sets, the same
command runs DeepSpeed ZeRO-3 (on CPU: DeepSpeed's CPU accelerator, gloo).

Batch sizes are given *globally* (--forget-batch, --retain-batch); each process gets
``global / (world_size * gradient_accumulation_steps)``, so every launch takes the same optimizer steps.
For each accumulation value ``g`` it writes ``DIR/ga{g}/rank{r}.json`` (what was run, the phase of every micro-step,
the training logs, `scrub_history`, an `evaluate_model` report) and ``DIR/ga{g}/rank{r}.safetensors`` (final weights).
"""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the conftest models and datasets
import datasets  # noqa: E402
import torch  # noqa: E402
from conftest import lm_dataset, memorise, tiny_bert, tiny_causal_lm, token_dataset  # noqa: E402  (also offline HF env)
from safetensors.torch import save_file  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from hf_scrub import ScrubConfig, ScrubTrainer  # noqa: E402
from hf_scrub.evaluation import evaluate_model, predict_splits  # noqa: E402
from hf_scrub.rewind import whole_state  # noqa: E402
from hf_scrub.schedule import PHASE_KEY, TEACHER_KEY, WEIGHT_KEY, Phase  # noqa: E402

# Sizes chosen so that no split divides into full batches: 2 processes x eval batch 4 = 8.
FORGET, RETAIN, FORGET_VALIDATION, TEST = 10, 30, 13, 21
EVAL_BATCH = 4


class RecordingScrubTrainer(ScrubTrainer):
    """Records (optimizer step, phase, examples, weight sum, cached teacher logits?) for every micro-step it runs."""

    micro_steps: list

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if PHASE_KEY in inputs:
            entry = [self.state.global_step, Phase(inputs[PHASE_KEY]).name, len(inputs["labels"])]
            self.micro_steps.append(entry + [round(float(inputs[WEIGHT_KEY].sum()), 6), TEACHER_KEY in inputs])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


def run(
    out: Path,
    forget_batch: int,
    retain_batch: int,
    accumulation: int,
    world_size: int,
    rank: int,
    cache: bool,
    causal_lm: bool = False,
    auto: bool = False,
) -> None:
    slots = world_size * accumulation
    if forget_batch % slots or retain_batch % slots:
        raise SystemExit(f"global batch sizes must divide by world_size x accumulation = {slots}")
    args = ScrubConfig(
        output_dir=str(out / "trainer"),
        use_cpu=True,  # without it, torchrun on CPU gives independent single-process runs (docs/design.md §6)
        average_tokens_across_devices=True,  # multiplied custom losses by world size (docs/design.md §7)
        per_device_forget_batch_size=forget_batch // slots,
        per_device_train_batch_size=retain_batch // slots,
        per_device_eval_batch_size=EVAL_BATCH,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=3,
        forget_epochs=2,
        # Plain SGD without clipping: the update is proportional to the gradient, so a loss or gradient off by the
        # number of processes changes the weights (Adam would normalise such a factor away).
        optim="sgd",
        learning_rate=0.5,
        max_grad_norm=0.0,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        cache_teacher_outputs=cache,
        # The goal-driven schedule: every step tested on 16 retain rows and undone or kept by all ranks alike. The
        # dropout-free classifier starts at student == teacher, where the max-step's gradient is rounding noise
        # (docs/design.md §14): one warm-up min-step (a causal LM's default) gives it a real gradient, so that the
        # run's decisions do not rest on the last bits that one and two processes compute differently.
        **({"schedule": "auto", "retain_steps_per_forget_step": 1.0, "history_retain_examples": 16} if auto else {}),
        **({"retain_warmup_steps": 1} if auto and not causal_lm else {}),
    )
    # The causal LM: rows with different numbers of loss tokens, so that only per-token weighting across processes
    # matches one process; its teacher is another model, so that the first max-steps have a real gradient.
    make_data = lm_dataset if causal_lm else token_dataset
    forget, retain = make_data(FORGET, 1), make_data(RETAIN, 2)
    forget_validation, test = make_data(FORGET_VALIDATION, 3), make_data(TEST, 4)
    model = tiny_causal_lm() if causal_lm else tiny_bert(dropout=0.0)
    if auto:  # an original that memorised its training rows, so that the goal-driven run has something to do
        # The classifier only 15 Adam steps: after 60 its training loss is ~1e-7 and so is every gradient, and the
        # run's growing step sizes (up to 64x) amplify rounding into its weights.
        memorise(model, datasets.concatenate_datasets([forget, retain]), steps=60 if causal_lm else 15)
    trainer = RecordingScrubTrainer(
        model=model,
        teacher_model=tiny_causal_lm(seed=1) if causal_lm and not auto else None,
        args=args,
        forget_dataset=forget,
        retain_dataset=retain,
        forget_validation_dataset=forget_validation,
    )
    trainer.micro_steps = []
    trainer.train()

    splits = {"forget": forget, "retain": retain, "test": test, "forget_validation": forget_validation}
    sizes = {name: len(split.labels) for name, split in predict_splits(trainer, splits).items()}
    report = evaluate_model(trainer, splits)
    result = {
        "rank": rank,
        "world_size": world_size,
        "num_processes": trainer.accelerator.num_processes,
        "distributed_type": str(trainer.accelerator.distributed_type),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "ddp_wrapped": isinstance(trainer.model_wrapped, DistributedDataParallel),
        "bf16": args.bf16,
        "teacher": teacher_placement(trainer),
        "average_tokens_across_devices": args.average_tokens_across_devices,
        "per_device_forget_batch_size": args.per_device_forget_batch_size,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "gradient_accumulation_steps": accumulation,
        "global_step": trainer.state.global_step,
        "micro_steps": trainer.micro_steps,
        "train_logs": [entry for entry in trainer.state.log_history if "loss" in entry],
        "scrub_history": trainer.scrub_history,
        "goal_logs": [entry for entry in trainer.state.log_history if "goal_epoch" in entry],
        "stopped_because": trainer.stopped_because,
        "returned_epoch": trainer.returned_epoch,
        "eval_sizes": sizes,
        "eval_report": report,
    }
    (out / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    save_file(full_weights(trainer), str(out / f"rank{rank}.safetensors"))


def teacher_placement(trainer: ScrubTrainer) -> dict:
    """How the teacher is held: its wrapper, and (under ZeRO-3) this process's share of its parameters."""
    wrapper = trainer.teacher.module
    module = getattr(wrapper, "module", wrapper)  # inside DeepSpeed's engine
    placement = {"wrapper": type(wrapper).__name__, "training": any(m.training for m in module.modules())}
    parameters = list(module.parameters())
    if all(hasattr(param, "ds_id") for param in parameters):
        placement["local_numel"] = sum(param.ds_tensor.numel() for param in parameters)
        placement["full_numel"] = sum(param.ds_numel for param in parameters)
    placement["requires_grad"] = any(param.requires_grad for param in parameters)
    placement["dtype"] = str(parameters[0].dtype)
    return placement


def full_weights(trainer: ScrubTrainer) -> dict[str, torch.Tensor]:
    """The student's whole state dict on every process (under ZeRO-3, gathered from the partitions)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    return whole_state(model, set(model.state_dict()), "zero3" if trainer.is_deepspeed_enabled else "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--forget-batch", type=int, default=4, help="global forget batch per optimizer step")
    parser.add_argument("--retain-batch", type=int, default=8, help="global retain batch per optimizer step")
    parser.add_argument("--gradient-accumulation-steps", type=int, nargs="+", default=[1])
    parser.add_argument("--cache-teacher-outputs", action="store_true")
    parser.add_argument("--causal-lm", action="store_true", help="the tiny Llama on token data")
    parser.add_argument("--auto", action="store_true", help="the goal-driven schedule")
    cli = parser.parse_args()
    torch.set_num_threads(1)  # the launches share 2 cores; also keeps CPU kernels' reduction order fixed
    world_size, rank = int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("RANK", 0))
    for accumulation in cli.gradient_accumulation_steps:
        out = cli.out / f"ga{accumulation}"
        out.mkdir(parents=True, exist_ok=True)
        run(
            out,
            cli.forget_batch,
            cli.retain_batch,
            accumulation,
            world_size,
            rank,
            cli.cache_teacher_outputs,
            cli.causal_lm,
            cli.auto,
        )


if __name__ == "__main__":
    main()
