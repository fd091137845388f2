"""SCRUB+R (rewind) for privacy-style selective unlearning (docs/design.md §2).

Driving the forget error as high as possible makes the forget set stand out: a model that never saw an example
errs on it about as often as on unseen examples of the same distribution, not always. SCRUB+R keeps the model after
every epoch (epoch 0 = the original model), measures the *final* model's error on held-out forget-distribution data
(the forget-validation split) as a stand-in for "never seen", and returns the epoch whose forget error is closest to
it, the earliest on ties.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


def choose_rewind_epoch(forget_errors: Sequence[float], reference_error: float) -> int:
    """Index (= epoch) of the forget error closest to `reference_error`; ties go to the earliest epoch."""
    if not forget_errors:
        raise ValueError("No epochs recorded: SCRUB+R needs the forget error of at least epoch 0.")
    # Rounded so that errors equally far away in exact arithmetic (k/n fractions) tie despite float rounding.
    distances = [round(abs(error - reference_error), 9) for error in forget_errors]
    return distances.index(min(distances))


# ---- keeping and restoring a model's weights, however it is sharded ------------------------------------------------
# `sharding`: "none" (one process, DDP: every process holds the whole model), "zero3" (DeepSpeed ZeRO-3 partitions),
# or "fsdp" (FSDP2 DTensors). Under "zero3" and "fsdp" both functions are collectives: every process calls them.


def whole_state(model: nn.Module, names: set[str], sharding: str) -> dict[str, torch.Tensor]:
    """The state-dict entries of `model` named in `names`, whole and on CPU.

    Under FSDP only process 0 receives them (the others get an empty dict), which is all a checkpoint writer needs.
    """
    if sharding == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return {name: tensor.contiguous() for name, tensor in state.items() if name in names}
    with _gathered(model, sharding):
        return {
            name: tensor.detach().to("cpu", copy=True).contiguous()
            for name, tensor in model.state_dict().items()
            if name in names
        }


def load_whole_state(model: nn.Module, state: dict[str, torch.Tensor], sharding: str) -> None:
    """Load entries saved by `whole_state` (a subset of the state dict) into `model`; every process passes them."""
    if sharding == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))
        return
    with _gathered(model, sharding, modifier_rank=0):
        model.load_state_dict(state, strict=False)


def _gathered(model: nn.Module, sharding: str, modifier_rank: int | None = None) -> Any:
    """Under ZeRO-3, the partitioned parameters gathered whole for the duration (with `modifier_rank`, that
    process's changes are kept and re-partitioned on exit); elsewhere they are whole already."""
    if sharding == "zero3":
        import deepspeed

        return deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=modifier_rank)
    return contextlib.nullcontext()
