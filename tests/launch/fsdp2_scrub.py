"""SCRUB under FSDP2 on 2 CPU processes (gloo): what each rank holds and computes, written to ``DIR/rank{r}.json``.

    torchrun --nproc_per_node 2 tests/launch/fsdp2_scrub.py --out DIR

run with the FSDP_* environment that `accelerate launch --config_file configs/accelerate/fsdp2.yaml` sets (the test
builds it from the file). accelerate runs FSDP only on accelerators, so `ScrubTrainer` cannot take its FSDP path on
CPU; this drives the parts of that path that are ours directly, with accelerate's own FSDP plugin read from that
environment:
- the teacher, sharded by `hf_scrub.teacher.shard_frozen_fsdp2` (what `FrozenTeacher.prepare` calls under FSDP2), for
  the precision the file sets (bf16) and for none;
- SCRUB steps (hf_scrub.losses) with an FSDP2 student beside that teacher, each rank on its half of every batch,
  against the same steps on the whole batch without sharding;
- SCRUB+R's keep-and-restore of the student (`hf_scrub.rewind.whole_state` / `load_whole_state`, as
  `UnlearningTrainer` calls them under FSDP2): kept whole by process 0, written, trained on, restored on every rank.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the conftest model
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from accelerate.utils import FullyShardedDataParallelPlugin  # noqa: E402
from conftest import tiny_bert  # noqa: E402  (also sets the offline HF environment)
from safetensors.torch import load_file, save_file  # noqa: E402
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import FSDPModule  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

from hf_scrub.losses import forget_loss, retain_loss  # noqa: E402
from hf_scrub.rewind import load_whole_state, whole_state  # noqa: E402
from hf_scrub.teacher import FrozenTeacher, shard_frozen_fsdp2  # noqa: E402


def teacher_inputs() -> dict[str, torch.Tensor]:
    """A padded batch, the same on every rank (FSDP2 shards the weights, not this data)."""
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, 64, (6, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[3:, 6:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def shard_and_query(precision: str, mesh, inputs: dict[str, torch.Tensor], expected: torch.Tensor) -> dict:
    plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables, as the Accelerator does
    if precision != "no":
        plugin.set_mixed_precision(precision)  # what the Accelerator does with the file's mixed_precision
    teacher = FrozenTeacher(tiny_bert(dropout=0.1))  # dropout: a teacher run in training mode would show
    teacher.module = shard_frozen_fsdp2(teacher.module, plugin, mesh)
    logits = teacher.logits(None, inputs)
    parameters = list(teacher.module.parameters())
    return {
        "max_abs_logit_diff": (logits.float() - expected).abs().max().item(),
        "logits_dtype": str(logits.dtype),
        "fsdp_units": sorted(name for name, unit in teacher.module.named_modules() if isinstance(unit, FSDPModule)),
        # After the forward every weight is back to its shard (reshard_after_forward): no full copy stays behind.
        "sharded_after_forward": all(isinstance(param, DTensor) for param in parameters),
        "local_numel": sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in parameters),
        "full_numel": sum(param.numel() for param in parameters),
        "requires_grad": any(param.requires_grad for param in parameters),
        "training": any(module.training for module in teacher.module.modules()),
        "compute_dtype": str(plugin.mixed_precision_policy.param_dtype) if plugin.mixed_precision_policy else None,
    }


def scrub_steps(mesh, sharded: bool) -> dict[str, torch.Tensor]:
    """Retain (min) and forget (max) steps, plain SGD; sharded: FSDP2 student and teacher, this rank's half batch."""
    generator = torch.Generator().manual_seed(1)
    rows = slice(dist.get_rank(), None, dist.get_world_size()) if sharded else slice(None)
    student, teacher = tiny_bert(dropout=0.0), FrozenTeacher(tiny_bert(dropout=0.0))
    if sharded:  # the student in the same units accelerate's fsdp2_prepare_model uses: each block, then the root
        plugin = FullyShardedDataParallelPlugin()
        teacher.module = shard_frozen_fsdp2(teacher.module, plugin, mesh)
        student = shard_frozen_fsdp2(student, plugin, mesh)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    for phase in ("retain", "forget", "retain", "forget"):  # a first max-step would have zero gradient (s = t)
        input_ids = torch.randint(1, 64, (8, 9), generator=generator)[rows]
        labels = torch.randint(0, 2, (8,), generator=generator)[rows]
        student_logits = student(input_ids=input_ids).logits
        teacher_logits = teacher.logits(None, {"input_ids": input_ids})
        if phase == "forget":
            per_item = forget_loss(student_logits, teacher_logits, temperature=4.0)
        else:
            per_item = retain_loss(student_logits, teacher_logits, labels, temperature=4.0, gamma=0.99, alpha=0.5)[0]
        per_item.mean().backward()  # FSDP2 averages the ranks' gradients: the mean over the whole batch
        optimizer.step()
        optimizer.zero_grad()
    return full_weights(student)


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach() for k, v in model.state_dict().items()}


def rewind_round_trip(mesh, out: Path) -> dict:
    """Keep the student whole (rank 0 writes it, as SCRUB+R's candidates), move it, restore it on every rank."""
    student = shard_frozen_fsdp2(tiny_bert(dropout=0.0), FullyShardedDataParallelPlugin(), mesh)
    names = {name for name, _ in student.named_parameters()}
    kept = whole_state(student, names, "fsdp")
    candidate = out / "candidate.safetensors"
    if dist.get_rank() == 0:
        save_file(kept, str(candidate))
    dist.barrier()
    with torch.no_grad():  # stands in for the epochs after the candidate
        for param in student.parameters():
            param.add_(1.0)
    load_whole_state(student, load_file(str(candidate)), "fsdp")
    original, restored = tiny_bert(dropout=0.0).state_dict(), full_weights(student)
    return {
        "kept_entries": len(kept),
        "parameters": len(names),
        "kept_equals_original": all(torch.equal(kept[k], original[k]) for k in kept),
        "max_abs_restored_diff": max((restored[k] - original[k]).abs().max().item() for k in names),
        "sharded_after_restore": all(isinstance(param, DTensor) for param in student.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    inputs = teacher_inputs()
    with torch.no_grad():
        expected = tiny_bert(dropout=0.1).eval()(**inputs).logits  # the original model, whole, in one process
    result = {"rank": dist.get_rank(), "world_size": dist.get_world_size()}
    for precision in ("no", "bf16"):
        result[precision] = shard_and_query(precision, mesh, inputs, expected)
    sharded, whole, original = (
        scrub_steps(mesh, sharded=True),
        scrub_steps(mesh, sharded=False),
        tiny_bert().state_dict(),
    )
    result["steps"] = {
        "max_abs_weight_diff": max((sharded[k] - whole[k]).abs().max().item() for k in whole),
        "max_abs_update": max((whole[k] - original[k]).abs().max().item() for k in whole),
    }
    result["rewind"] = rewind_round_trip(mesh, out)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
