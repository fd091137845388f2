"""Shard the frozen SCRUB teacher with FSDP2 on 2 CPU processes (gloo) and write what each rank holds and computes.

    torchrun --nproc_per_node 2 tests/launch/fsdp2_teacher.py --out DIR

run with the FSDP_* environment that `accelerate launch --config_file configs/accelerate/fsdp2.yaml` sets (the test
builds it from the file). accelerate runs FSDP only on accelerators, so `ScrubTrainer` cannot take its FSDP path on
CPU; this drives the teacher's part of that path directly: accelerate's own FSDP plugin, read from that environment,
and `hf_scrub.teacher.shard_frozen_fsdp2`, which `FrozenTeacher.prepare` calls under FSDP2.
For the precision the file sets (bf16) and for none, it writes ``DIR/rank{r}.json``.
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
from torch.distributed.device_mesh import init_device_mesh  # noqa: E402
from torch.distributed.fsdp import FSDPModule  # noqa: E402
from torch.distributed.tensor import DTensor  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    out = parser.parse_args().out
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    inputs = teacher_inputs()
    with torch.no_grad():
        expected = tiny_bert(dropout=0.1).eval()(**inputs).logits  # the original model, whole, in one process
    result = {"rank": dist.get_rank(), "world_size": dist.get_world_size()}
    for precision in ("no", "bf16"):
        result[precision] = shard_and_query(precision, mesh, inputs, expected)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"rank{dist.get_rank()}.json").write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
