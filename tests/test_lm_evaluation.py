"""A causal LM's evaluation (hf_scrub.lm_metrics, hf_scrub.lm_evaluation): the per-token statistics the metrics are
computed from, checked by hand; the report's numbers against direct computations from the model's own logits; the
comparisons against the original and the Retrain model on constructed reports."""

import math

import datasets
import numpy as np
import pytest
import torch
from conftest import tiny_causal_lm, tiny_run_args
from transformers import TrainingArguments

from hf_scrub.evaluation import evaluate_model, prediction_trainer
from hf_scrub.lm_data import causal_lm_collator
from hf_scrub.lm_evaluation import (
    GENERIC_SPLIT,
    PARAPHRASED_SPLIT,
    PERTURBED_SPLIT,
    RETAIN_QA_ROWS,
    TRUTH_RATIOS,
    add_comparisons,
    generic_text,
    llm_evaluation_splits,
    truth_ratio_splits,
)
from hf_scrub.lm_metrics import MAX_NEW_TOKENS, Completion, greedy_completions, token_statistics
from hf_scrub.metrics.llm import forget_quality, membership_auc


def test_token_statistics_by_hand():
    logits = torch.tensor([[[0.0, 1.0, 2.0], [2.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    labels = torch.tensor([[-100, 1, -100]])  # only position 1 is scored, predicted from position 0
    statistics = token_statistics(logits, labels)
    assert statistics.shape == (1, 3, 4) and statistics.dtype == torch.float32
    assert (statistics[0, 0] == -100).all() and (statistics[0, 2] == -100).all()
    p = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
    mu = float((p * np.log(p)).sum())
    sigma = math.sqrt(float((p * np.log(p) ** 2).sum()) - mu**2)
    argmax, log_prob, got_mu, got_sigma = statistics[0, 1].tolist()
    assert argmax == 2
    assert log_prob == pytest.approx(math.log(p[1]), abs=1e-6)
    assert got_mu == pytest.approx(mu, abs=1e-6) and got_sigma == pytest.approx(sigma, abs=1e-6)


def test_token_statistics_in_float32_from_bf16_logits_and_any_chunk_size():
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(3, 7, 50, generator=generator) * 4).to(torch.bfloat16)
    labels = torch.randint(0, 50, (3, 7), generator=generator)
    labels[:, :2] = -100
    labels[1, 5:] = -100
    whole = token_statistics(logits, labels, chunk_size=1000)
    assert whole.dtype == torch.float32
    assert torch.equal(token_statistics(logits, labels, chunk_size=2), whole)
    expected = torch.log_softmax(logits.float(), -1)[:, :-1].gather(-1, labels[:, 1:].clamp_min(0)[..., None])[..., 0]
    scored = labels[:, 1:] != -100
    assert torch.allclose(whole[:, 1:, 1][scored], expected[scored], atol=1e-6)
    # A bf16 log-softmax would be off by ~1e-2 here: the statistics are not computed in low precision.
    low = torch.log_softmax(logits, -1)[:, :-1].gather(-1, labels[:, 1:].clamp_min(0)[..., None])[..., 0].float()
    assert (whole[:, 1:, 1][scored] - low[scored]).abs().max() > 1e-3


def facts(n: int, seed: int) -> datasets.Dataset:
    """Rows of ids in the shape of tokenized prompt/completion data: a prompt of 3 ids, a completion of 2-4 ids."""
    rng = np.random.default_rng(seed)
    rows = {"input_ids": [], "attention_mask": [], "labels": []}
    for _ in range(n):
        prompt, completion = rng.integers(3, 32, 3).tolist(), rng.integers(3, 32, int(rng.integers(2, 5))).tolist()
        rows["input_ids"].append(prompt + completion)
        rows["attention_mask"].append([1] * (len(prompt) + len(completion)))
        rows["labels"].append([-100] * len(prompt) + completion)
    return datasets.Dataset.from_dict(rows)


def direct_log_likelihoods(model, dataset) -> list[np.ndarray]:
    """Per row, the float64 log-probability of each labelled token, from one unbatched forward pass."""
    result = []
    with torch.no_grad():
        for row in dataset:
            ids = torch.tensor([row["input_ids"]])
            log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
            labels = torch.tensor(row["labels"][1:])
            keep = labels != -100
            result.append(log_probs[keep].gather(-1, labels[keep][:, None])[:, 0].numpy())
    return result


class IdTokenizer:
    """Decodes ids to space-separated numbers (the tiny model has no real tokenizer)."""

    pad_token_id = 0
    eos_token_id = 2

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(i) for i in ids)

    def batch_decode(self, rows, skip_special_tokens=True):
        return [self.decode(row) for row in rows]


def test_report_numbers_equal_direct_computations_from_the_model(tmp_path):
    model = tiny_causal_lm(seed=0).eval()
    forget, holdout, generic = facts(8, 1), facts(8, 2), facts(4, 3)
    paraphrased = facts(8, 4)
    perturbed = facts(16, 5)  # two wrong answers per forget row, row by row
    args = TrainingArguments(**{k: v for k, v in tiny_run_args(tmp_path).items() if "forget" not in k})
    trainer = prediction_trainer(model, args, causal_lm_collator(IdTokenizer()), IdTokenizer())
    splits = {"forget": forget, "retain": forget, "forget_validation": holdout, GENERIC_SPLIT: generic,
              PARAPHRASED_SPLIT: paraphrased, PERTURBED_SPLIT: perturbed}  # fmt: skip
    report = evaluate_model(trainer, splits)

    forget_ll = direct_log_likelihoods(model, forget)
    probability = np.mean([np.exp(ll.mean()) for ll in forget_ll])
    assert report["forget_answer_probability"] == pytest.approx(probability, rel=1e-5)
    generic_ll = np.concatenate(direct_log_likelihoods(model, generic))
    assert report["generic_perplexity"] == pytest.approx(np.exp(-generic_ll.mean()), rel=1e-5)
    p_para = np.array([np.exp(ll.mean()) for ll in direct_log_likelihoods(model, paraphrased)])
    mean_nll_pert = np.array([-ll.mean() for ll in direct_log_likelihoods(model, perturbed)]).reshape(8, 2)
    # TOFU's code: the wrong answers' mean NLLs averaged, then exp; the forget aggregate is mean(min(R, 1 / R)).
    ratios = np.exp(-mean_nll_pert.mean(1)) / p_para
    np.testing.assert_allclose(report[TRUTH_RATIOS], ratios, rtol=1e-5)
    closer_to_1 = float(np.mean(np.minimum(ratios, 1 / ratios)))
    assert report["forget_truth_ratio"] == pytest.approx(closer_to_1, rel=1e-5)
    # LOSS AUC: forget rows (members) vs held-out rows ranked by their mean log-likelihood.
    holdout_ll = direct_log_likelihoods(model, holdout)
    members, others = [ll.mean() for ll in forget_ll], [ll.mean() for ll in holdout_ll]
    pairs = [(m > o) + 0.5 * (m == o) for m in members for o in others]
    assert report["auc_loss"] == pytest.approx(np.mean(pairs))

    # Min-K% (k = 0.4) without each row's final token, as OpenUnlearning ranks them.
    def min_k(ll):
        kept = np.sort(ll[:-1])
        return kept[: max(1, int(0.4 * len(kept)))].mean()

    expected = membership_auc([min_k(ll) for ll in forget_ll], [min_k(ll) for ll in holdout_ll])
    assert report["auc_min_k"] == pytest.approx(expected)
    for key in ("auc_zlib", "auc_min_k_plus_plus"):
        assert 0.0 <= report[key] <= 1.0
    # Generation: rows of one prompt and one labelled span; the answer match agrees with the ROUGE-L recall of 1.
    completions = greedy_completions(model, forget, pad_token_id=0)
    assert report["forget_answer_accuracy"] == np.mean([c.matches for c in completions])
    assert 0.0 <= report["forget_rouge_l_recall"] <= 1.0
    # The extra splits feed their own metrics only: no accuracy, probability or generation of their own.
    extra = [key for key in report if key.startswith((f"{GENERIC_SPLIT}_", PARAPHRASED_SPLIT, PERTURBED_SPLIT))]
    assert extra == ["generic_perplexity"]


def test_greedy_completions_generate_up_to_200_tokens_and_stop_at_eos():
    model = tiny_causal_lm(seed=1).eval()
    dataset = facts(5, 7)
    completions = greedy_completions(model, dataset, pad_token_id=0, batch_size=2)
    earlier = greedy_completions(model, dataset, pad_token_id=0, batch_size=2, max_new_tokens=None)
    eos = model.generation_config.eos_token_id
    for row, completion, short in zip(dataset, completions, earlier, strict=True):
        prompt = [i for i, label in zip(row["input_ids"], row["labels"], strict=True) if label == -100]
        reference = [label for label in row["labels"] if label != -100]
        ids = torch.tensor([prompt])
        output = model.generate(input_ids=ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False, pad_token_id=0)
        continuation = output[0, len(prompt) :].tolist()
        stop = continuation.index(eos) + 1 if eos in continuation else len(continuation)
        assert completion.generated == continuation[:stop]
        assert completion.reference == reference
        # hf_scrub's earlier convention: exactly as many tokens as the reference
        assert short.generated == continuation[: len(reference)] and short.matches == completion.matches
    assert any(len(completion.generated) > len(completion.reference) for completion in completions)
    assert Completion([5, 2], [5, 2]).matches and not Completion([5, 3], [5, 2]).matches
    assert Completion([5, 7, 9], [5, 7]).matches  # the reference reproduced, then more: it was still said


def test_comparisons_on_constructed_reports():
    reports = {
        "original": {"generic_perplexity": 10.0, "auc_min_k": 0.9, TRUTH_RATIOS: [0.1, 0.2, 0.3]},
        "unlearned": {"generic_perplexity": 10.5, "auc_min_k": 0.6, TRUTH_RATIOS: [0.5, 0.6, 0.7]},
        "retrain": {"generic_perplexity": 9.0, "auc_min_k": 0.5, TRUTH_RATIOS: [0.55, 0.6, 0.65]},
    }
    add_comparisons(reports)
    assert reports["unlearned"]["generic_perplexity_ratio"] == pytest.approx(1.05)
    assert reports["retrain"]["generic_perplexity_ratio"] == pytest.approx(0.9)
    # MUSE's PrivLeak: ((1 - 0.6) - (1 - 0.5)) / (1 - 0.5), in percent; negative = the forget set still stands out
    assert reports["unlearned"]["privleak_min_k"] == pytest.approx(-20.0)
    assert reports["original"]["privleak_min_k"] == pytest.approx(-80.0)
    assert "privleak_min_k" not in reports["retrain"] and "forget_quality" not in reports["retrain"]
    assert reports["unlearned"]["forget_quality"] == forget_quality([0.5, 0.6, 0.7], [0.55, 0.6, 0.65])
    assert reports["original"]["forget_quality"] < reports["unlearned"]["forget_quality"]
    assert "privleak_loss" not in reports["unlearned"]  # no such AUC in the reports
    # MUSE's own privleak split has its own keys; a Retrain AUC of 1 leaves MUSE's PrivLeak undefined: left out.
    muse = {"unlearned": {"muse_auc_min_k": 0.7, "auc_loss": 0.6}, "retrain": {"muse_auc_min_k": 0.4, "auc_loss": 1.0}}
    add_comparisons(muse)
    assert muse["unlearned"]["muse_privleak_min_k"] == pytest.approx((0.3 - 0.6) / 0.6 * 100)
    assert "privleak_loss" not in muse["unlearned"]


def test_truth_ratio_splits_flatten_the_perturbed_answers_row_by_row():
    forget = datasets.Dataset.from_dict(
        {"prompt": ["Q1", "Q2"], "completion": [" a", " b"], "paraphrased_completion": [" A", " B"],
         "perturbed_completions": [[" x", " y"], [" z", " w"]]}
    )  # fmt: skip
    splits = truth_ratio_splits(forget, lambda split: split)
    assert splits[PARAPHRASED_SPLIT]["completion"] == [" A", " B"]
    assert splits[PERTURBED_SPLIT]["prompt"] == ["Q1", "Q1", "Q2", "Q2"]
    assert splits[PERTURBED_SPLIT]["completion"] == [" x", " y", " z", " w"]
    # Without paraphrases (TOFU's real-authors and world-facts sets) the answer itself is the correct one.
    unparaphrased = truth_ratio_splits(forget.remove_columns("paraphrased_completion"), lambda split: split)
    assert list(unparaphrased) == [PERTURBED_SPLIT]
    assert truth_ratio_splits(forget.remove_columns("perturbed_completions"), lambda split: split) == {}
    uneven = forget.map(
        lambda row, i: {"perturbed_completions": row["perturbed_completions"][: i + 1]}, with_indices=True
    )
    with pytest.raises(ValueError, match="same number"):
        truth_ratio_splits(uneven, lambda split: split)


def test_retain_rows_in_tofus_shape_become_its_retain_set(monkeypatch):
    rows = datasets.Dataset.from_dict(
        {"prompt": ["Q1", "Q2", "Q3"], "completion": [" a", " b", " c"], "paraphrased_completion": [" A", " B", " C"],
         "perturbed_completions": [[" x"], [" y"], [" z"]]}
    )  # fmt: skip

    def prepare(split, max_length=None):
        return split

    monkeypatch.setattr("hf_scrub.lm_evaluation.RETAIN_QA_ROWS", 2)
    splits = llm_evaluation_splits(rows, rows, prepare)
    assert RETAIN_QA_ROWS == 400  # TOFU's retain_perturbed size; 2 here
    assert set(splits) == {PARAPHRASED_SPLIT, PERTURBED_SPLIT, "retain_qa", "retain_qa_paraphrased",
                           "retain_qa_perturbed"}  # fmt: skip
    assert splits["retain_qa"]["prompt"] == ["Q1", "Q2"]
    assert set(splits["retain_qa"].column_names) == {"prompt", "completion"}  # the answers themselves
    assert splits["retain_qa_perturbed"]["completion"] == [" x", " y"]
    # A retain set the caller gives wins; retain rows without the truth-ratio columns add none.
    given = rows.select([2])
    assert llm_evaluation_splits(rows, rows, prepare, {"retain_qa": given})["retain_qa"]["prompt"] == ["Q3"]
    plain = rows.remove_columns(["paraphrased_completion", "perturbed_completions"])
    assert set(llm_evaluation_splits(plain, plain, prepare)) == set()


def test_generic_text_ships_with_the_package(tmp_path):
    shipped = generic_text()
    assert len(shipped) == 48 and all(len(text.split()) >= 40 for text in shipped["text"])
    own = tmp_path / "generic.txt"
    own.write_text("first paragraph\n\n second one \n")
    assert generic_text(str(own))["text"] == ["first paragraph", "second one"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="no text"):
        generic_text(str(tmp_path / "empty.txt"))
