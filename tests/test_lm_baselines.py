"""The LLM-unlearning baselines (GA, GradDiff, NPO, SimNPO, RMU, finetune/retrain) on causal LMs: losses by hand,
weights counted, step losses against a direct computation from the model's own logits (or hidden states),
accumulation invariance, the reference model, and `scripts/scrub.py` end to end.

The trainer tests use the tiny Llama of `conftest.tiny_causal_lm` on pre-padded rows whose numbers of loss-carrying
tokens differ (`conftest.lm_dataset`): a per-row or per-micro-batch mean would weight them differently from the
per-set means of one large batch.
"""

import copy
import json
import math

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from cli_fixtures import folder_digest, refused, results_of
from conftest import lm_dataset, tiny_bert, tiny_causal_lm, tiny_run_args
from peft import LoraConfig, TaskType
from safetensors.torch import load_file

from hf_scrub import cli
from hf_scrub.baselines import (
    METHODS,
    GradDiffTrainer,
    NegGradPlusTrainer,
    NegGradTrainer,
    NPOTrainer,
    RMUTrainer,
    SimNPOTrainer,
    captured_output,
    fresh_model_like,
    transformer_block,
)
from hf_scrub.config import NPOConfig, RMUConfig, SimNPOConfig
from hf_scrub.lm_losses import (
    npo_loss,
    representation_distance,
    sequence_log_likelihood,
    simnpo_loss,
    spread_over_tokens,
)
from hf_scrub.lm_models import make_fictitious_facts, smollm2_tokenizer, tiny_llama
from hf_scrub.schedule import GroupMean, Phase, build_paired_schedule, build_schedule, weight_by_tokens

F_, R_ = Phase.FORGET, Phase.RETAIN
LORA = dict(r=4, lora_alpha=8, target_modules="all-linear", task_type=TaskType.CAUSAL_LM)


# ---- pure functions ----------------------------------------------------------------------------------------------


def test_npo_loss_by_hand():
    student, reference = torch.tensor([-2.0, -1.0]), torch.tensor([-1.0, -1.0])
    loss = npo_loss(student, reference, beta=0.1)
    # log ratio -1: -(2 / 0.1) * log(sigmoid(0.1)) = 20 * log(1 + e^-0.1); equal likelihoods: (2 / beta) * log 2
    assert loss[0].item() == pytest.approx(20 * math.log(1 + math.exp(-0.1)), rel=1e-6)
    assert loss[1].item() == pytest.approx(20 * math.log(2), rel=1e-6)
    assert npo_loss(student.bfloat16(), reference.bfloat16()).dtype == torch.float32


def test_npo_gradient_is_gradient_ascent_scaled_and_tends_to_it_as_beta_goes_to_zero():
    """d NPO / d log p_student = 2 * sigmoid(beta * log_ratio); gradient ascent's (minimising log p) is 1."""
    for beta, expected in ((0.1, 2 / (1 + math.exp(0.1))), (1e-5, 1.0)):
        student = torch.tensor([-2.0], requires_grad=True)
        npo_loss(student, torch.tensor([-1.0]), beta).sum().backward()
        assert student.grad.item() == pytest.approx(expected, rel=1e-4)


def test_simnpo_loss_by_hand():
    # -(2 / beta) * logsigmoid(beta * (mean NLL - delta)): at beta 2, delta 1 and a mean NLL of 1, (2 / 2) * log 2.
    assert simnpo_loss(torch.tensor([1.0]), beta=2.0, delta=1.0).item() == pytest.approx(math.log(2), rel=1e-6)
    loss = simnpo_loss(torch.tensor([2.0, 0.5]), beta=4.5)
    expected = [(2 / 4.5) * math.log(1 + math.exp(-4.5 * nll)) for nll in (2.0, 0.5)]
    torch.testing.assert_close(loss, torch.tensor(expected))
    # The push fades as a forget answer's mean NLL grows: d loss / d NLL = -2 * sigmoid(-beta * NLL).
    nll = torch.tensor([0.5], requires_grad=True)
    simnpo_loss(nll, beta=4.5).sum().backward()
    assert nll.grad.item() == pytest.approx(-2 / (1 + math.exp(4.5 * 0.5)), rel=1e-5)
    assert simnpo_loss(torch.tensor([1.0]).bfloat16()).dtype == torch.float32


def test_representation_distance_by_hand():
    # Row 0 scores tokens 1 and 2, row 1 token 2 only (position 0 never counts, nor -100).
    hidden = torch.tensor([[[9.0, 9.0], [1.0, 3.0], [0.0, 0.0]], [[5.0, 5.0], [7.0, 7.0], [2.0, 2.0]]])
    labels = torch.tensor([[5, 4, 6], [-100, -100, 7]])
    target = torch.tensor([1.0, 1.0])  # broadcast: RMU's steering vector
    # row 0: token 1 ((0 + 4) / 2 = 2), token 2 ((1 + 1) / 2 = 1) -> 1.5; row 1: token 2 (1 + 1) / 2 = 1
    torch.testing.assert_close(representation_distance(hidden, target, labels), torch.tensor([1.5, 1.0]))
    own = representation_distance(hidden, hidden.clone(), labels)
    torch.testing.assert_close(own, torch.zeros(2))


def test_sequence_log_likelihood_on_a_three_token_vocabulary():
    # position i's logits predict label i + 1; softmax([log 2, 0, 0]) = (1/2, 1/4, 1/4)
    half_on = [[math.log(2), 0.0, 0.0], [0.0, 0.0, math.log(2)], [0.0, math.log(2), 0.0]]
    logits = torch.tensor([half_on, half_on])
    labels = torch.tensor([[-100, 0, 2], [-100, 1, -100]])  # row 2: one loss token, predicted at position 0
    expected = torch.tensor([2 * math.log(1 / 2), math.log(1 / 4)])
    for chunk_size in (None, 1):
        torch.testing.assert_close(sequence_log_likelihood(logits, labels, chunk_size), expected)
    assert sequence_log_likelihood(logits.bfloat16(), labels).dtype == torch.float32


def test_spread_over_tokens_sums_back_to_each_sequence():
    labels = torch.tensor([[-100, 5, 6, 7], [-100, -100, 5, -100]])
    spread = spread_over_tokens(torch.tensor([3.0, 2.0]), labels)
    torch.testing.assert_close(spread, torch.tensor([[1.0, 1.0, 1.0], [0.0, 2.0, 0.0]]))


# ---- weights -----------------------------------------------------------------------------------------------------


def real_examples(step):
    return [ex for micro in step.micro_batches for batch in micro for ex in batch if ex.weight > 0]


@pytest.mark.parametrize("forget_mean", [GroupMean.TOKENS, GroupMean.SEQUENCES])
def test_paired_step_weights_sum_to_each_sets_mean(forget_mean):
    """Per-group means over 2 processes x 2 micro-batches, with unequal token counts: summing weight x value over
    every position of a step and averaging over processes gives each set's exact mean."""
    counts = {F_: np.array([3, 1, 7, 2, 5]), R_: np.array([2, 4, 6, 8, 10, 1, 3, 9, 5, 7, 11])}
    schedule = build_paired_schedule(5, 11, forget_batch_size=1, retain_batch_size=2, num_epochs=2,
                                     gradient_accumulation_steps=2, num_processes=2, passes_over=F_)  # fmt: skip
    assert len(schedule) == 2 * 2  # ceil(5 / (1 x 4)) forget batches per epoch
    weighted = weight_by_tokens(schedule, counts, 2, {F_: forget_mean, R_: GroupMean.TOKENS})
    for step in weighted:
        forget = [ex for ex in real_examples(step) if ex.phase == F_]
        retain = [ex for ex in real_examples(step) if ex.phase == R_]
        assert forget and retain
        tokens = {phase: sum(counts[phase][ex.row] for ex in group) for phase, group in ((F_, forget), (R_, retain))}
        # a per-token term: weight x (its tokens) summed = 1; a per-sequence term spread over its tokens: weight each
        forget_total = sum(ex.weight * (counts[F_][ex.row] if forget_mean is GroupMean.TOKENS else 1) for ex in forget)
        assert forget_total / 2 == pytest.approx(1.0, abs=1e-12)
        assert sum(ex.weight * counts[R_][ex.row] for ex in retain) / 2 == pytest.approx(1.0, abs=1e-12)
        forget_size = tokens[F_] if forget_mean is GroupMean.TOKENS else len(forget)
        assert all(ex.weight == 2 / forget_size for ex in forget)
        assert all(ex.weight == 2 / tokens[R_] for ex in retain)


def test_forget_paired_schedule_passes_over_the_forget_set_each_epoch():
    schedule = build_paired_schedule(5, 3, forget_batch_size=2, retain_batch_size=2, num_epochs=2, passes_over=F_)
    for epoch in (1, 2):
        rows = [ex.row for step in schedule if step.epoch == epoch for ex in real_examples(step) if ex.phase == F_]
        assert sorted(rows) == list(range(5))
    retain = [ex.row for step in schedule for ex in real_examples(step) if ex.phase == R_]
    assert len(retain) == 2 * len(schedule) and sorted(retain[:3]) == [0, 1, 2]  # cycled, each cycle a permutation


def test_one_set_steps_weigh_the_same_with_per_set_token_means():
    schedule = build_schedule(3, 5, forget_batch_size=2, retain_batch_size=4, num_epochs=1, forget_epochs=1,
                              gradient_accumulation_steps=2)  # fmt: skip
    counts = {F_: np.array([3, 1, 7]), R_: np.array([2, 4, 6, 8, 10])}
    per_set = {F_: GroupMean.TOKENS, R_: GroupMean.TOKENS}
    assert weight_by_tokens(schedule, counts, 1, per_set) == weight_by_tokens(schedule, counts)


# ---- trainers on the tiny Llama ----------------------------------------------------------------------------------


def sgd_args(tmp_path, **kwargs):
    """Plain SGD without clipping: a loss off by any factor shows in the weights (Adam would normalise it)."""
    defaults = dict(optim="sgd", learning_rate=0.5, max_grad_norm=0.0, lr_scheduler_type="constant")
    return {**tiny_run_args(tmp_path), "num_train_epochs": 1, **defaults, **kwargs}


def make_trainer(method_class, tmp_path, model=None, **kwargs):
    config_class = next(config for trainer, config in METHODS.values() if trainer is method_class)
    return method_class(
        model=model if model is not None else tiny_causal_lm(),
        args=config_class(**sgd_args(tmp_path, **kwargs)),
        forget_dataset=lm_dataset(10, 1),
        retain_dataset=lm_dataset(30, 2),
    )


def shifted_ce(logits, labels):
    """Direct per-position cross-entropy: logits[:, i] against labels[:, i + 1], 0 where that label is -100."""
    targets = labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets.clamp(min=0), reduction="none")
    return ce * (targets != -100)


def first_step_loss(trainer):
    """compute_loss on the first micro-batch of the schedule (one micro-batch per step: that is the step's loss)."""
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item(), batch


def rmu_targets(trainer, model, original, inputs, is_forget):
    """RMU's expected targets, from the hidden states transformers returns (block 0's output is hidden_states[1])."""
    with torch.no_grad():
        student = model(**inputs, output_hidden_states=True).hidden_states[1]
        reference = original(**inputs, output_hidden_states=True).hidden_states[1]
    steering = trainer.control_vector.expand_as(student)
    return student, torch.where(is_forget[:, None, None], steering, reference)


@pytest.mark.parametrize("method_class", [NegGradTrainer, GradDiffTrainer, NPOTrainer, SimNPOTrainer, RMUTrainer])
def test_a_step_loss_equals_a_direct_computation_from_the_logits(tmp_path, method_class):
    model = tiny_causal_lm()
    original = copy.deepcopy(model)
    settings = {
        NPOTrainer: {"npo_beta": 0.5},
        SimNPOTrainer: {"simnpo_beta": 2.0, "simnpo_delta": 0.5, "forget_weight": 0.25, "retain_weight": 2.0},
        RMUTrainer: {"rmu_layer": 0, "rmu_steering_coeff": 3.0, "forget_weight": 0.5, "retain_weight": 4.0},
    }
    trainer = make_trainer(method_class, tmp_path, model=model, **settings.get(method_class, {}))
    with torch.no_grad():  # move the student off the reference, so that NPO's log ratio is not 0
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    loss, batch = first_step_loss(trainer)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    labels, is_forget = batch["labels"], batch["scrub_source"] == Phase.FORGET
    with torch.no_grad():
        ce = shifted_ce(model(**inputs).logits, labels)
        reference_ce = shifted_ce(original(**inputs).logits, labels)
    tokens = (labels[:, 1:] != -100).sum(1)
    forget_ce = ce[is_forget].sum() / tokens[is_forget].sum()
    retain_ce = ce[~is_forget].sum() / tokens[~is_forget].sum()
    if method_class is NegGradTrainer:
        assert is_forget.all()
        expected = -forget_ce
    elif method_class is GradDiffTrainer:
        expected = -forget_ce + retain_ce
    elif method_class is SimNPOTrainer:
        mean_nll = ce[is_forget].sum(1) / tokens[is_forget]
        simnpo = -(2 / 2.0) * F.logsigmoid(2.0 * (mean_nll - 0.5))
        expected = 0.25 * simnpo.mean() + 2.0 * retain_ce
    elif method_class is RMUTrainer:
        hidden, targets = rmu_targets(trainer, model, original, inputs, is_forget)
        squared = (hidden - targets).square().mean(-1)[:, 1:]
        distance = (squared * (labels[:, 1:] != -100)).sum(1) / tokens
        assert trainer.control_vector.norm().item() == pytest.approx(3.0)
        expected = 0.5 * distance[is_forget].mean() + 4.0 * distance[~is_forget].mean()
    else:
        log_ratio = -ce[is_forget].sum(1) + reference_ce[is_forget].sum(1)
        npo = -(2 / 0.5) * F.logsigmoid(-0.5 * log_ratio)
        assert log_ratio.abs().min() > 1e-2
        expected = npo.mean() + retain_ce
    assert loss == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("method_class", [GradDiffTrainer, NPOTrainer, SimNPOTrainer, RMUTrainer])
def test_gradient_accumulation_matches_one_large_batch(tmp_path, method_class):
    def final_weights(**kwargs):
        # lr 0.1: NPO's forget term is a per-sequence sum of log-probabilities, steeper than a per-token mean; at
        # 0.5 its steps grow large enough for float32 rounding to change the trajectory
        extra = {"rmu_layer": 1, "rmu_steering_coeff": 10.0} if method_class is RMUTrainer else {}
        trainer = make_trainer(method_class, tmp_path, num_train_epochs=2, learning_rate=0.1, **extra, **kwargs)
        trainer.train()
        return trainer.state.global_step, trainer.model.state_dict()

    steps_big, big = final_weights(per_device_forget_batch_size=4, per_device_train_batch_size=8)
    steps_acc, acc = final_weights(
        per_device_forget_batch_size=2, per_device_train_batch_size=4, gradient_accumulation_steps=2
    )
    assert steps_big == steps_acc == 2 * 3  # ceil(10 / 4) forget batches per epoch, each with a retain batch
    moved = max((big[name] - tiny_causal_lm().state_dict()[name]).abs().max().item() for name in big)
    assert moved > 1e-2
    for name in big:
        torch.testing.assert_close(big[name], acc[name], atol=1e-6, rtol=0, msg=name)


def test_npo_reference_is_the_original_with_adapters_disabled_and_never_moves(tmp_path):
    model = tiny_causal_lm()
    rows = lm_dataset(10, 1)[:]
    inputs = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}
    with torch.no_grad():
        original_logits = model(**inputs).logits
    trainer = NPOTrainer(
        model=model, args=NPOConfig(**sgd_args(tmp_path, optim="adamw_torch", learning_rate=1e-2)),
        forget_dataset=lm_dataset(10, 1), retain_dataset=lm_dataset(30, 2), peft_config=LoraConfig(**LORA),
    )  # fmt: skip
    assert type(trainer.teacher).__name__ == "AdapterDisabledTeacher"
    trainer.train()
    student = trainer.model
    assert not torch.allclose(student(**inputs).logits.detach(), original_logits, atol=1e-4)  # the adapters moved
    torch.testing.assert_close(trainer.teacher.logits(student, inputs), original_logits)
    assert any("forget_npo" in entry for entry in trainer.state.log_history)


def test_npo_frozen_reference_copy_does_not_change(tmp_path):
    trainer = make_trainer(NPOTrainer, tmp_path)
    before = {name: p.clone() for name, p in trainer.teacher.module.state_dict().items()}
    trainer.train()
    assert all(torch.equal(before[name], p) for name, p in trainer.teacher.module.state_dict().items())
    assert any(not torch.equal(before[name], p) for name, p in trainer.model.state_dict().items())


def test_rmu_reference_is_the_original_with_adapters_disabled_and_the_steering_vector_is_seeded(tmp_path):
    model = tiny_causal_lm()
    rows = lm_dataset(10, 1)[:]
    inputs = {"input_ids": rows["input_ids"], "attention_mask": rows["attention_mask"]}
    with torch.no_grad():
        # block 0's output (the last block's is normed in hidden_states, not in RMU's hook)
        original_states = model(**inputs, output_hidden_states=True).hidden_states[1]

    def rmu(seed):
        args = RMUConfig(**sgd_args(tmp_path, optim="adamw_torch", learning_rate=1e-2, rmu_layer=0, seed=seed))
        return RMUTrainer(
            model=copy.deepcopy(model), args=args, forget_dataset=lm_dataset(10, 1),
            retain_dataset=lm_dataset(30, 2), peft_config=LoraConfig(**LORA),
        )  # fmt: skip

    trainer = rmu(seed=0)
    assert type(trainer.teacher).__name__ == "AdapterDisabledTeacher" and trainer.teacher_block is trainer.block
    assert torch.equal(trainer.control_vector, rmu(seed=0).control_vector)
    assert not torch.equal(trainer.control_vector, rmu(seed=1).control_vector)
    assert (trainer.control_vector >= 0).all()  # uniform in [0, 1) per dimension, then normalised
    trainer.train()
    student = trainer.model
    moved = student(**inputs, output_hidden_states=True).hidden_states[1].detach()
    assert not torch.allclose(moved, original_states, atol=1e-4)
    with captured_output(trainer.teacher_block) as reference:
        trainer.teacher.logits(student, inputs)
    torch.testing.assert_close(reference[0], original_states)
    assert any("forget_rmu" in entry for entry in trainer.state.log_history)


def test_rmu_trains_alike_with_activation_checkpointing(tmp_path):
    """The block's hooked output is part of the graph whether the block is recomputed in the backward or not."""

    def final_weights(checkpointing):
        trainer = make_trainer(RMUTrainer, tmp_path, rmu_layer=0, rmu_steering_coeff=10.0, learning_rate=0.1,
                               activation_checkpointing=checkpointing)  # fmt: skip
        trainer.train()
        assert trainer.model.is_activation_checkpointing == checkpointing
        return trainer.model.state_dict()

    plain, checkpointed = final_weights(False), final_weights(True)
    start = tiny_causal_lm().state_dict()
    assert max((plain[name] - start[name]).abs().max().item() for name in plain) > 1e-2
    for name in plain:
        torch.testing.assert_close(plain[name], checkpointed[name], atol=1e-6, rtol=0, msg=name)


def test_rmu_refuses_blocks_the_model_does_not_have_and_classifiers(tmp_path):
    with pytest.raises(ValueError, match=r"--rmu_layer 7: the model has 2 transformer blocks \(0..1\)"):
        make_trainer(RMUTrainer, tmp_path)
    assert transformer_block(tiny_causal_lm(), 1) is not None
    bert = tiny_bert()
    forget = datasets.Dataset.from_dict({"input_ids": [[1, 2, 3]] * 2, "labels": [0, 1]})
    retain = datasets.Dataset.from_dict({"input_ids": [[4, 5, 6]] * 2, "labels": [0, 1]})
    with pytest.raises(ValueError, match="language model's hidden states"):
        RMUTrainer(model=bert, args=RMUConfig(**tiny_run_args(tmp_path)), forget_dataset=forget, retain_dataset=retain)
    for bad in ({"rmu_layer": -1}, {"rmu_steering_coeff": 0.0}, {"forget_weight": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RMUConfig(**tiny_run_args(tmp_path), **bad)
    with pytest.raises(ValueError, match="simnpo_beta"):
        SimNPOConfig(**tiny_run_args(tmp_path), simnpo_beta=0.0)


def test_classifier_only_baselines_and_random_retrains_are_refused_for_causal_lms(tmp_path):
    from hf_scrub.config import NegGradPlusConfig

    with pytest.raises(ValueError, match="does not support causal language models.*GradDiffTrainer"):
        NegGradPlusTrainer(
            model=tiny_causal_lm(), args=NegGradPlusConfig(**tiny_run_args(tmp_path)),
            forget_dataset=lm_dataset(4, 1), retain_dataset=lm_dataset(8, 2),
        )  # fmt: skip
    with pytest.raises(ValueError, match="--retrain_init_from"):
        fresh_model_like(tiny_causal_lm(), seed=0)
    tiny_causal_lm(seed=3).save_pretrained(tmp_path / "base")
    fresh = fresh_model_like(tiny_causal_lm(), seed=0, init_from=str(tmp_path / "base"))
    for name, value in tiny_causal_lm(seed=3).state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value), name


# ---- scripts/scrub.py end to end ---------------------------------------------------------------------------------

FAST = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--per_device_forget_batch_size", "4",
        "--max_length", "48", "--activation_checkpointing", "false", "--save_merged_model", "true"]  # fmt: skip


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """A tiny Llama (the 'original') and another (its 'pretrained base'), both with SmolLM2's tokenizer, and
    prompt/completion JSON-lines data with a list of rows to forget."""
    root = tmp_path_factory.mktemp("lm_baseline_assets")
    tokenizer = smollm2_tokenizer()
    for name, seed in (("model", 0), ("base", 1)):
        tiny_llama(seed=seed).save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
    facts = make_fictitious_facts(8, seed=0)
    with open(root / "facts.jsonl", "w") as file:
        for row in facts["train"]:
            file.write(json.dumps({"prompt": row["prompt"], "completion": row["completion"]}) + "\n")
    (root / "forget.json").write_text(json.dumps([0, 1, 2, 3]))
    return root


def lm_argv(lm_files, tmp_path, *flags):
    return ["--model_name_or_path", str(lm_files / "model"), "--dataset_name", str(lm_files / "facts.jsonl"),
            "--forget_indices_file", str(lm_files / "forget.json"), "--test_size", "0.25",
            "--output_dir", str(tmp_path / "out"), *FAST, *flags]  # fmt: skip


@pytest.mark.parametrize(
    "flags",
    [
        ["--method", "npo"],
        ["--method", "graddiff"],
        ["--method", "simnpo", "--simnpo_beta", "3.0", "--simnpo_delta", "0.5", "--forget_weight", "0.5"],
        ["--method", "rmu", "--rmu_layer", "1", "--rmu_steering_coeff", "4.0"],
        ["--method", "retrain", "--retrain_init_from", "base"],
    ],
)
def test_script_runs_the_baseline_on_a_causal_lm(lm_files, tmp_path, flags):
    flags = [str(lm_files / flag) if flag == "base" else flag for flag in flags]
    before = folder_digest(lm_files / "model")
    assert cli.main(lm_argv(lm_files, tmp_path, *flags)) == 0
    out = tmp_path / "out"
    results = results_of(out)
    assert results["method"] == flags[1] and results["task"] == "causal-lm"
    assert results["hyperparameters"]["use_peft"] is True  # the causal-LM default, as for SCRUB
    assert results["hyperparameters"]["learning_rate"] == 1e-3  # the llm preset's optimiser settings
    given = dict(zip(flags[2::2], flags[3::2], strict=True))
    for option in ("--simnpo_beta", "--simnpo_delta", "--forget_weight", "--rmu_layer", "--rmu_steering_coeff"):
        if option in given:
            assert results["hyperparameters"][option[2:]] == float(given[option])
    assert (out / "adapter_model.safetensors").is_file() and not (out / "scrub_teacher").exists()
    merged, original = (
        load_file(out / "merged" / "model.safetensors"),
        load_file(lm_files / "model" / "model.safetensors"),
    )
    assert any(not torch.equal(merged[name], original[name]) for name in original)
    assert folder_digest(lm_files / "model") == before  # the input model is never written


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--method", "neggrad_plus"], "--method graddiff"),
        (["--method", "bad_teacher"], "--method npo"),
        (["--method", "retrain"], "needs --retrain_init_from"),
    ],
)
def test_script_refuses_what_a_causal_lm_cannot_run_before_the_model_loads(
    lm_files, tmp_path, capsys, loads, flags, message
):
    refused(capsys, lm_argv(lm_files, tmp_path, *flags), message)
    assert loads == []
