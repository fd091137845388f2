"""LoRA with the adapter-disabled teacher, and cached teacher outputs (issue 5, deliverables 4-5)."""

import datasets
import numpy as np
import pytest
import torch
from conftest import pixel_dataset, scrub_config, tiny_bert, tiny_resnet, token_dataset
from peft import LoraConfig, TaskType, get_peft_model

from hf_scrub import ScrubTrainer
from hf_scrub.teacher import AdapterDisabledTeacher, FrozenAdapterTeacher

LORA = dict(task_type=TaskType.SEQ_CLS, r=4, lora_alpha=8, target_modules=["query", "value"], lora_dropout=0.0)


def logits_of(model, dataset):
    rows = dataset[:]
    model.eval()
    with torch.no_grad():
        return model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits


@pytest.mark.parametrize("activation_checkpointing", [False, True])
def test_lora_trains_only_adapters_and_the_teacher_is_the_base_model(tmp_path, activation_checkpointing):
    forget, retain = token_dataset(8, 1), token_dataset(16, 2)
    original = tiny_bert(dropout=0.0)
    original_logits = logits_of(original, forget)
    base_state = {k: v.clone() for k, v in original.state_dict().items()}
    trainer = ScrubTrainer(
        model=original,
        peft_config=LoraConfig(**LORA),
        forget_dataset=forget,
        retain_dataset=retain,
        args=scrub_config(tmp_path, learning_rate=0.05, activation_checkpointing=activation_checkpointing),
    )
    assert isinstance(trainer.teacher, AdapterDisabledTeacher)  # no second copy of the weights
    trainer.train()
    peft_model = trainer.model
    changed = {
        name
        for name, value in peft_model.state_dict().items()
        if name.replace("base_model.model.", "") in base_state
        and not torch.equal(value, base_state[name.replace("base_model.model.", "")])
    }
    assert not changed  # frozen base weights (including the original classifier) are untouched
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # adapters trained, also with checkpointing
    inputs = {k: v for k, v in forget[:].items() if k != "labels"}
    teacher_logits = trainer.teacher.logits(peft_model, inputs)
    assert torch.allclose(teacher_logits, original_logits, atol=1e-6)  # teacher = the original model
    assert not torch.allclose(logits_of(peft_model, forget), original_logits, atol=1e-3)  # the student moved
    saved = tmp_path / "adapter"
    trainer.save_model(str(saved))
    assert (saved / "adapter_config.json").is_file() and (saved / "adapter_model.safetensors").is_file()


def test_trained_adapters_teacher_is_a_frozen_copy_of_the_adapter(tmp_path):
    """Already-trained adapters are part of the original model: the teacher is a frozen copy of them (with the
    classifier head peft keeps per adapter), on the same base weights; it still gives the original's logits after
    the student has trained."""
    model = get_peft_model(tiny_bert(dropout=0.0), LoraConfig(**LORA))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    forget = token_dataset(4, 1)
    inputs = {key: forget[:][key] for key in ("input_ids", "attention_mask")}
    model.eval()
    with torch.no_grad():
        original = model(**inputs).logits
    trainer = ScrubTrainer(
        model=model, args=scrub_config(tmp_path, learning_rate=1e-2), forget_dataset=forget,
        retain_dataset=token_dataset(8, 2),
    )  # fmt: skip
    assert isinstance(trainer.teacher, FrozenAdapterTeacher)
    trainer.train()
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(**inputs).logits, original, atol=1e-4)
    torch.testing.assert_close(trainer.teacher.logits(model, inputs), original)


def test_peft_config_on_a_peft_model_is_refused(tmp_path):
    model = get_peft_model(tiny_bert(), LoraConfig(**LORA))
    with pytest.raises(ValueError, match="already has peft adapters"):
        ScrubTrainer(
            model=model,
            peft_config=LoraConfig(**LORA),
            args=scrub_config(tmp_path),
            forget_dataset=token_dataset(4, 1),
            retain_dataset=token_dataset(8, 2),
        )


def count_forwards(module):
    calls = {"n": 0}
    module.register_forward_pre_hook(lambda m, a: calls.__setitem__("n", calls["n"] + 1))
    return calls


def test_cached_teacher_outputs_give_the_uncached_result_with_one_teacher_pass(tmp_path):
    def run(cache):
        trainer = ScrubTrainer(
            model=tiny_resnet(),
            forget_dataset=pixel_dataset(10, 1),
            retain_dataset=pixel_dataset(30, 2),
            args=scrub_config(tmp_path, cache_teacher_outputs=cache, per_device_eval_batch_size=16),
        )
        calls = count_forwards(trainer.teacher.module)
        trainer.train()
        return trainer, calls["n"]

    uncached, uncached_calls = run(False)
    cached, cached_calls = run(True)
    assert uncached_calls == 18  # one teacher forward per micro-step (3 + 4 + 3 + 4 + 4)
    assert cached_calls == 1 + 2  # forget (10 <= 16) and retain (30 / 16) once, before training
    for (name, a), b in zip(uncached.model.state_dict().items(), cached.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-5), name


def test_cache_refuses_random_transforms(tmp_path):
    rng = np.random.default_rng(0)

    def noisy(batch):
        pixels = np.asarray(batch["pixel_values"], dtype=np.float32)
        return {
            "pixel_values": torch.tensor(pixels + rng.normal(size=pixels.shape), dtype=torch.float32),
            "labels": torch.tensor(batch["labels"]),
        }

    retain = datasets.Dataset.from_dict(
        {"pixel_values": rng.normal(size=(12, 1, 8, 8)).astype("float32"), "labels": rng.integers(0, 3, 12)}
    ).with_transform(noisy)
    trainer = ScrubTrainer(
        model=tiny_resnet(),
        forget_dataset=pixel_dataset(6, 1),
        retain_dataset=retain,
        args=scrub_config(tmp_path, cache_teacher_outputs=True, remove_unused_columns=False),
    )
    with pytest.raises(ValueError, match="cache_teacher_outputs needs deterministic inputs, but retain example 0"):
        trainer.train()
