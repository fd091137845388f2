"""ScrubTrainer on a causal LM: per-token weighting, the zero-gradient start, refusals, token-level history.

The model is a tiny from-config Llama on pre-padded rows whose numbers of loss-carrying tokens differ (see
`conftest.lm_dataset`): a per-example or per-micro-batch mean would weight them differently from one large batch.
"""

import pytest
import torch
from conftest import lm_dataset, scrub_config, tiny_causal_lm
from peft import LoraConfig, TaskType
from transformers import TrainerCallback

from hf_scrub import ScrubTrainer
from hf_scrub.lm_losses import next_token_mask, token_retain_loss
from hf_scrub.schedule import Phase, shuffled_rows


def sgd_config(tmp_path, **kwargs):
    """Plain SGD without clipping: a loss off by any factor shows in the weights (Adam would normalise it)."""
    defaults = dict(optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="constant")
    return scrub_config(tmp_path, **{**defaults, **kwargs})


def test_gradient_accumulation_matches_one_large_batch_per_token(tmp_path):
    def final_weights(**kwargs):
        trainer = ScrubTrainer(
            model=tiny_causal_lm(),
            teacher_model=tiny_causal_lm(seed=1),  # a real max-step gradient from the first step
            args=sgd_config(tmp_path, **kwargs),
            forget_dataset=lm_dataset(10, 1),
            retain_dataset=lm_dataset(30, 2),
        )
        trainer.train()
        return trainer.state.global_step, trainer.model.state_dict()

    steps_big, big = final_weights(per_device_forget_batch_size=4, per_device_train_batch_size=8)
    steps_acc, acc = final_weights(
        per_device_forget_batch_size=2, per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    assert steps_big == steps_acc == 18  # (3 forget + 4 retain) x 2 epochs + 4 retain
    moved = max((big[name] - tiny_causal_lm().state_dict()[name]).abs().max().item() for name in big)
    assert moved > 1e-2
    for name in big:
        torch.testing.assert_close(big[name], acc[name], atol=1e-6, rtol=0, msg=name)


def test_a_step_loss_is_the_mean_over_its_loss_carrying_tokens(tmp_path):
    """The first step (the warm-up min-step) on 8 rows of different lengths: logged loss == sum / token count."""
    retain = lm_dataset(30, 2)
    model = tiny_causal_lm()
    rows = shuffled_rows(30, 0, 1)[:8].tolist()
    batch = retain[rows]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    per_token, _, _ = token_retain_loss(logits, logits, batch["labels"], 4.0, gamma=1.0, alpha=0.5)
    tokens = int(next_token_mask(batch["labels"]).sum())
    per_row_mean = (per_token.sum(1) / next_token_mask(batch["labels"]).sum(1)).mean()
    trainer = ScrubTrainer(
        model=model, args=sgd_config(tmp_path, num_train_epochs=1, forget_epochs=1), forget_dataset=lm_dataset(10, 1),
        retain_dataset=retain,
    )  # fmt: skip
    trainer.train()
    assert trainer.schedule[0].phase is Phase.RETAIN  # the causal-LM warm-up step comes first
    first = next(entry for entry in trainer.state.log_history if "loss" in entry)
    expected = per_token.sum().item() / tokens
    assert first["loss"] == pytest.approx(expected, rel=1e-5)
    assert abs(expected - per_row_mean.item()) > 1e-3  # the weighting is per token, not per row


class LoraSnapshots(TrainerCallback):
    """The LoRA weights after each optimizer step, with that step's phase."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.steps = [(None, self.lora())]

    def lora(self):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        return {name: p.detach().clone() for name, p in model.named_parameters() if "lora_" in name}

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((self.trainer.schedule[state.global_step - 1].phase, self.lora()))


def run_fresh_lora(tmp_path, **kwargs):
    trainer = ScrubTrainer(
        model=tiny_causal_lm(),
        args=scrub_config(tmp_path, num_train_epochs=1, forget_epochs=1, learning_rate=1e-2, **kwargs),
        forget_dataset=lm_dataset(12, 1),
        retain_dataset=lm_dataset(30, 2),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.CAUSAL_LM),
    )
    snapshots = LoraSnapshots(trainer)
    trainer.add_callback(snapshots)
    trainer.train()
    phases = [phase for phase, _ in snapshots.steps]
    first, last = phases.index(Phase.FORGET), len(phases) - 1 - phases[::-1].index(Phase.FORGET)
    before, after = snapshots.steps[first - 1][1], snapshots.steps[last][1]
    forget_logs = [entry for entry in trainer.state.log_history if "forget_kl" in entry]
    return before, after, forget_logs


def test_fresh_lora_starts_the_forget_pass_at_a_zero_gradient_without_the_warmup_step(tmp_path):
    """The zero-gradient start: with B = 0 the student is the teacher, so d = 0 is at its minimum and the max-step's
    gradient is zero up to float32 rounding (which Adam would scale up to steps in a random direction)."""
    _, _, forget_logs = run_fresh_lora(tmp_path, retain_warmup_steps=0)
    assert forget_logs[0]["forget_kl"] == 0.0
    assert forget_logs[0]["grad_norm"] < 1e-6


def test_fresh_lora_forget_pass_moves_the_adapters_after_the_warmup_step(tmp_path):
    before, after, forget_logs = run_fresh_lora(tmp_path)  # default: one min-step first for a causal LM
    assert any(not torch.equal(before[name], after[name]) for name in before if "lora_B" in name)
    assert forget_logs[0]["forget_kl"] > 0
    assert forget_logs[0]["grad_norm"] > 1e-4  # a real gradient, not rounding noise
    assert forget_logs[-1]["forget_kl"] > forget_logs[0]["forget_kl"]  # the max-steps push the distance up


def test_cached_teacher_outputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="refused for causal LMs"):
        ScrubTrainer(
            model=tiny_causal_lm(),
            args=scrub_config(tmp_path, cache_teacher_outputs=True),
            forget_dataset=lm_dataset(4, 1),
            retain_dataset=lm_dataset(8, 2),
        )


def test_goal_driven_gate_reads_each_rows_min_k_nll_and_pushes_rows_whose_answer_is_reproduced(tmp_path):
    """The causal-LM gate: a row pushes while its Min-K% NLL (by hand here: the mean of the highest int(0.4 n) token
    NLLs of its n loss-carrying tokens, the last one left out) is below its target, or while greedy decoding still
    reproduces its answer; prompt and padding positions do not count. An open row pushes exactly those Min-K%
    tokens, a closed one none."""
    from hf_scrub.unlearning_trainer import Tags

    forget = lm_dataset(6, 1)
    trainer = ScrubTrainer(
        model=tiny_causal_lm(),
        args=scrub_config(tmp_path, schedule="auto", retain_steps_per_forget_step=1.0, history_retain_examples=8),
        forget_dataset=forget,
        retain_dataset=lm_dataset(12, 2),
        forget_validation_dataset=lm_dataset(6, 3),
    )
    rows = forget[:]
    input_ids, labels = rows["input_ids"].clone(), rows["labels"].clone()
    # Row 5's completion becomes the model's own greedy continuation of its prompt: an answer it reproduces.
    completion = torch.nonzero(labels[5] != -100)[:, 0].tolist()
    with torch.no_grad():
        for position in completion:
            token = trainer.model(input_ids=input_ids[5:6, :position]).logits[0, -1].argmax()
            input_ids[5, position] = labels[5, position] = token
    inputs = {"input_ids": input_ids, "attention_mask": rows["attention_mask"]}
    with torch.no_grad():
        logits = trainer.model(**inputs).logits
    nll = -torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, labels[:, 1:].clamp(min=0)[..., None])[..., 0]
    mask = next_token_mask(labels)
    min_k, pushed = [], torch.zeros_like(mask)
    for row in range(6):
        positions = torch.nonzero(mask[row])[:-1, 0]  # the final (end-of-sequence) prediction left out
        worst = positions[nll[row, positions].argsort(descending=True)[: max(1, int(0.4 * len(positions)))]]
        min_k.append(nll[row, worst].mean())
        pushed[row, worst] = True
    min_k = torch.stack(min_k)

    def row_gates() -> list[float]:
        return trainer._gate(trainer.model, inputs, tags).any(-1).float().tolist()

    # Targets just above the odd rows' scores and just below the even rows': the odd rows push, the even do not ...
    trainer._gate_targets = min_k + torch.tensor([-1e-4, 1e-4] * 3)
    tags = Tags(labels=labels, sources=torch.zeros(6), real=torch.ones(6, dtype=torch.bool),
                phase=Phase.FORGET, rows=torch.arange(6), teacher_logits=None)  # fmt: skip
    gate = trainer._gate(trainer.model, inputs, tags)
    assert row_gates() == [0.0, 1.0] * 3
    assert torch.equal(gate.bool(), pushed & torch.tensor([False, True] * 3)[:, None])  # on its Min-K% tokens
    # ... and with every target below its row's score, only the reproduced row 5 pushes.
    trainer._gate_targets = min_k - 1.0
    assert row_gates() == [0.0] * 5 + [1.0]
    trainer._gate_targets = min_k + torch.tensor([-1e-4, 1e-4] * 3)
    tags.real[1] = False  # a padding row never pushes
    assert row_gates() == [0.0, 0.0, 0.0, 1.0, 0.0, 1.0]


def test_goal_driven_run_on_a_causal_lm_with_fresh_lora_is_judged_on_its_nll_distribution(tmp_path):
    """schedule="auto" with fresh LoRA: forget steps wait for a kept warm-up step (the zero-gradient start), the
    judge compares the forget rows' mean NLL with the original's on the held-out rows, and the verdict is the
    judgement of the returned epoch."""
    trainer = ScrubTrainer(
        model=tiny_causal_lm(),
        args=scrub_config(
            tmp_path,
            schedule="auto",
            retain_steps_per_forget_step=1.0,
            history_retain_examples=8,
            num_train_epochs=2,
            learning_rate=1e-2,
        ),  # fmt: skip
        forget_dataset=lm_dataset(8, 1),
        retain_dataset=lm_dataset(16, 2),
        forget_validation_dataset=lm_dataset(8, 3),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.CAUSAL_LM),
    )
    assert trainer.goal.symmetric and trainer.schedule == []
    trainer.train()
    assert trainer.judge.kind.value == "distribution" and trainer.judge.retain_measure == "next-token accuracy"
    assert trainer.schedule[0].phase is Phase.RETAIN  # the warm-up step, then forget and retain steps in turn
    assert [step.phase for step in trainer.schedule[1:4]] == [Phase.FORGET, Phase.RETAIN, Phase.FORGET]
    assert trainer.returned_judgement is trainer.judgements[trainer.returned_epoch]
    assert trainer.stopped_because.startswith("goal-driven schedule: ")


def test_history_errors_are_next_token_errors_on_loss_carrying_tokens(tmp_path):
    forget = lm_dataset(10, 1)
    model = tiny_causal_lm()
    rows = forget[:]
    with torch.no_grad():
        logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"]).logits
    mask = next_token_mask(rows["labels"])
    wrong = (logits[:, :-1].argmax(-1) != rows["labels"][:, 1:])[mask]
    expected = wrong.sum().item() / mask.sum().item()
    args = scrub_config(tmp_path, num_train_epochs=1, forget_epochs=1, learning_rate=0.0, per_device_eval_batch_size=3)
    trainer = ScrubTrainer(model=model, args=args, forget_dataset=forget, retain_dataset=lm_dataset(30, 2))
    trainer.train()
    history = trainer.scrub_history
    assert history[0]["forget_error"] == pytest.approx(expected, abs=1e-12)
    assert history[1]["forget_error"] == pytest.approx(expected, abs=1e-12)  # learning rate 0: unchanged


def trained_lora_model(tmp_path):
    """A peft model whose adapters were already trained (B != 0): part of the original model."""
    from peft import get_peft_model

    model = get_peft_model(
        tiny_causal_lm(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.CAUSAL_LM)
    )
    torch.manual_seed(3)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    return model


def test_trained_adapters_teacher_is_a_frozen_adapter_copy_not_a_model_copy(tmp_path):
    model = trained_lora_model(tmp_path)
    forget = lm_dataset(8, 1)
    rows = forget[:]
    inputs = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}
    with torch.no_grad():
        original_logits = model(**inputs).logits
    base_parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    trainer = ScrubTrainer(
        model=model,
        args=scrub_config(tmp_path, num_train_epochs=1, forget_epochs=1, learning_rate=1e-2),
        forget_dataset=forget,
        retain_dataset=lm_dataset(16, 2),
    )
    assert type(trainer.teacher).__name__ == "FrozenAdapterTeacher"
    # the same base weights serve both: no second copy of them
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n) == base_parameters
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("scrub_teacher" not in n for n in trainable)
    trainer.train()
    student_logits = model(**inputs).logits.detach()
    assert not torch.allclose(student_logits, original_logits, atol=1e-4)  # the student moved
    torch.testing.assert_close(trainer.teacher.logits(model, inputs), original_logits)  # the teacher did not
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable  # switching restored them
    trainer.save_model(str(tmp_path / "saved"))
    assert (tmp_path / "saved" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "saved" / "scrub_teacher").exists()
