"""The SCRUB teacher: the original model, frozen (eval mode, no gradients), queried for logits.

Two forms, chosen by `build_teacher`:
- `FrozenTeacher`: a separate module (the user's `teacher_model`, or a deep copy of the student taken when the
  trainer is built, before any update), prepared by accelerate for evaluation only (device placement and
  mixed-precision autocast, no DDP wrapper, no optimizer).
- `AdapterDisabledTeacher`: for a peft model whose adapters have not been trained yet, the base model with the
  adapters switched off *is* the original model, so no second copy of the weights is needed.
- `FrozenAdapterTeacher`: for a peft model whose adapters are already trained, a frozen copy of the adapter alone
  (a second adapter on the same base) is the original model.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)


def _is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency, but keep the check cheap and optional
        return False
    return isinstance(model, PeftModel)


def adapters_are_fresh(model: nn.Module) -> bool:
    """True when every LoRA up-projection (``lora_B``) is still zero, i.e. the adapters do not change the output yet.

    Only then is "the model with adapters disabled" equal to the model the user handed us; an adapter that was
    already trained is part of the original model, and the teacher must then be a real copy.
    """
    lora_b = [param for name, param in model.named_parameters() if "lora_B" in name]
    return bool(lora_b) and all(not torch.any(param) for param in lora_b)


class FrozenTeacher:
    """A separate frozen module; `logits` runs it in eval mode without building a graph."""

    def __init__(self, module: nn.Module) -> None:
        module.requires_grad_(False)
        self.module = module.eval()

    def prepare(self, accelerator: Any) -> None:
        """Place the teacher the way the student runs; evaluation only (no DDP wrapper, no optimizer)."""
        self.module = place_frozen_model(self.module, accelerator)
        self.module.eval()  # not chained: a DeepSpeed engine's eval() returns None

    @torch.no_grad()
    def logits(self, student: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        self.module.eval()  # cheap, and guards against anyone having called .train() on it
        return self.module(**inputs).logits

    @property
    def num_outputs(self) -> int | None:
        return getattr(self.module.config, "num_labels", None)


class _SameModelTeacher:
    """A teacher that is the student peft model itself, run in eval mode without gradients in the adapter state
    `as_teacher` selects (and then switched back, before the student's own forward)."""

    num_outputs = None  # same module as the student: sizes match by construction

    def prepare(self, accelerator: Any) -> None:
        self._unwrap = accelerator.unwrap_model

    def as_teacher(self, peft_model: nn.Module) -> contextlib.AbstractContextManager:
        raise NotImplementedError

    @torch.no_grad()
    def logits(self, student: nn.Module, inputs: dict[str, Any]) -> torch.Tensor:
        peft_model = self._unwrap(student)
        was_training = peft_model.training
        peft_model.eval()  # teacher semantics: no dropout, BatchNorm running statistics
        try:
            with self.as_teacher(peft_model):
                return peft_model(**inputs).logits
        finally:
            peft_model.train(was_training)


class AdapterDisabledTeacher(_SameModelTeacher):
    """The student peft model with its adapters disabled (the untouched base model)."""

    def as_teacher(self, peft_model: nn.Module) -> contextlib.AbstractContextManager:
        return peft_model.disable_adapter()


TEACHER_ADAPTER = "scrub_teacher"


class FrozenAdapterTeacher(_SameModelTeacher):
    """For a peft model whose adapters are already trained (part of the original model): a frozen copy of the
    active adapter, added to the same model under `TEACHER_ADAPTER`, is the teacher. Only the adapter weights are
    copied (megabytes), never the base model; the teacher forward selects it with peft's public `set_adapter`."""

    def __init__(self, model: nn.Module) -> None:
        from peft import get_peft_model_state_dict, set_peft_model_state_dict

        self.student_adapter = model.active_adapter
        if not isinstance(self.student_adapter, str):
            raise ValueError("SCRUB on a peft model needs one active adapter (the one to unlearn with).")
        model.add_adapter(TEACHER_ADAPTER, copy.deepcopy(model.peft_config[self.student_adapter]))
        weights = get_peft_model_state_dict(model, adapter_name=self.student_adapter)
        set_peft_model_state_dict(model, weights, adapter_name=TEACHER_ADAPTER)
        model.set_adapter(self.student_adapter)  # the student's adapter trains; the teacher's stays frozen

    @contextlib.contextmanager
    def as_teacher(self, peft_model: nn.Module) -> Iterator[None]:
        peft_model.set_adapter(TEACHER_ADAPTER, inference_mode=True)
        try:
            yield
        finally:
            peft_model.set_adapter(self.student_adapter)  # trainable again, before the student's forward


def place_frozen_model(module: nn.Module, accelerator: Any) -> nn.Module:
    """Shard a frozen model like the student under DeepSpeed ZeRO-3 / FSDP; elsewhere, device and autocast.

    Under FSDP and ZeRO-3 the student's parameters are sharded across processes; a teacher held whole on every
    process would defeat the point (and FSDP2 cannot mix its DTensors with plain tensors), so the teacher is sharded
    too, the way TRL prepares its reference models, with no optimizer state.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return _deepspeed_inference_engine(module, accelerator)
    if accelerator.distributed_type == DistributedType.FSDP:
        return _fsdp_shard(module, accelerator)
    return accelerator.prepare_model(module, evaluation_mode=True)


def _deepspeed_inference_engine(module: nn.Module, accelerator: Any) -> nn.Module:
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    config.pop("optimizer", None)
    config.pop("scheduler", None)
    config.setdefault("train_micro_batch_size_per_gpu", 1)  # DeepSpeed requires one, even without training
    if config.get("zero_optimization", {}).get("stage") != 3:  # only ZeRO-3 shards parameters
        config.setdefault("zero_optimization", {})["stage"] = 0
    engine, *_ = deepspeed.initialize(model=module, config=config)
    return engine


def _fsdp_shard(module: nn.Module, accelerator: Any) -> nn.Module:
    plugin = accelerator.state.fsdp_plugin
    if plugin.fsdp_version == 2:
        mesh = getattr(accelerator, "torch_device_mesh", None)  # the student's mesh, as accelerate shards it
        if mesh is not None:
            mesh = mesh[tuple(accelerator.parallelism_config.fsdp_dim_names)]
        return shard_frozen_fsdp2(module.to(accelerator.device), plugin, mesh)
    from torch.distributed.fsdp import FullyShardedDataParallel

    plugin.set_auto_wrap_policy(module)
    return FullyShardedDataParallel(
        module,
        sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
        cpu_offload=plugin.cpu_offload,
        auto_wrap_policy=plugin.auto_wrap_policy,
        mixed_precision=plugin.mixed_precision_policy,
        use_orig_params=plugin.use_orig_params,
        device_id=accelerator.device,
    )


def shard_frozen_fsdp2(module: nn.Module, plugin: Any, mesh: Any = None) -> nn.Module:
    """`fully_shard` a frozen model in place with the FSDP2 settings of `plugin` (accelerate's FSDP plugin).

    Every block the plugin's wrap policy picks (by default the model's `_no_split_modules`, e.g. each `BertLayer`)
    becomes its own FSDP unit before the root, as accelerate does for the student: a teacher forward then gathers
    one block's weights at a time and, with `reshard_after_forward`, frees them again, so a process never holds the
    whole teacher. (Sharding the root alone would gather every weight at once in each forward.)
    """
    from accelerate.utils import get_module_children_bottom_up
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    options = {
        "reshard_after_forward": plugin.reshard_after_forward,
        "mp_policy": plugin.mixed_precision_policy or MixedPrecisionPolicy(),  # fully_shard does not take None
        "offload_policy": plugin.cpu_offload,
        "mesh": mesh,
    }
    wrap_policy = fsdp2_prepare_auto_wrap_policy(plugin, module)
    if wrap_policy is not None:
        for block in get_module_children_bottom_up(module)[:-1]:
            if wrap_policy(block) and not isinstance(block, FSDPModule):
                fully_shard(block, **options)
    fully_shard(module, **options)
    return module


def _has_input_embeddings(model: nn.Module) -> bool:
    try:
        return model.get_input_embeddings() is not None
    except (AttributeError, NotImplementedError):
        return False


def wrap_with_adapters(model: nn.Module, peft_config: Any, activation_checkpointing: bool = False) -> nn.Module:
    """Add fresh peft adapters to `model` (only they will train), the way TRL's trainers take a `peft_config`."""
    from peft import get_peft_model

    if _is_peft_model(model):
        raise ValueError("The model already has peft adapters; pass either a peft model or a peft_config, not both.")
    model = get_peft_model(model, peft_config)
    if activation_checkpointing and _has_input_embeddings(model):
        # With checkpointing the frozen embeddings' output must require grad, or the adapters get no gradient.
        model.enable_input_require_grads()
    return model


def build_teacher(
    model: nn.Module, teacher_model: nn.Module | None
) -> FrozenTeacher | AdapterDisabledTeacher | FrozenAdapterTeacher:
    """Pick the teacher for `model`: the given one; for a peft model the adapter-disabled base model (fresh
    adapters) or a frozen copy of its trained adapter (no second copy of the base either way); else a frozen deep
    copy."""
    if teacher_model is not None:
        return FrozenTeacher(teacher_model)
    if _is_peft_model(model):
        return AdapterDisabledTeacher() if adapters_are_fresh(model) else FrozenAdapterTeacher(model)
    if _is_zero3_partitioned(model):  # a deep copy would hold this process's empty shards, not the weights
        source = getattr(model.config, "_name_or_path", "")
        if not source:
            raise ValueError(
                "The model's parameters are already partitioned by DeepSpeed ZeRO-3 (zero3_init_flag / zero.Init), "
                "so it cannot be copied into a teacher: pass teacher_model (the original model, loaded separately)."
            )
        return FrozenTeacher(type(model).from_pretrained(source))
    return FrozenTeacher(copy.deepcopy(model))


def _is_zero3_partitioned(model: nn.Module) -> bool:
    """True when DeepSpeed has already partitioned the weights (they then carry a ZeRO id, `ds_id`)."""
    return any(hasattr(param, "ds_id") for param in model.parameters())
