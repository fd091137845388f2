"""Tests for hf_scrub.metrics.llm: known answers on hand-made token statistics, and the `evaluate` modules.

Every convention of the field (docs/design.md §21) has a case built so that it and hf_scrub's earlier formula give
different numbers: a silent change of either default fails here."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import scipy.stats
import torch

from hf_scrub.metrics import (
    MEMBERSHIP_SCORES,
    answer_probability,
    forget_quality,
    llm_membership_inference,
    load_metric,
    loss_score,
    membership_auc,
    membership_scores,
    min_k_plus_plus_score,
    min_k_score,
    model_utility,
    normalised_probability,
    perplexity,
    privleak,
    rouge_l,
    rouge_l_recall,
    truth_ratio,
    truth_ratio_aggregate,
    zlib_score,
)

# Values at masked positions must never be read: padding holds garbage that would change every score.
PAD = np.nan

# --------------------------------------------------------------------------------------------------------------
# token-level scores


def test_min_k_averages_the_lowest_fraction_of_scored_tokens_without_the_final_one():
    log_probs = np.array([[-0.1, -2.0, -0.5, -3.0, -0.2, PAD], [-1.0, -4.0, PAD, -2.0, -np.inf, 5.0]])
    mask = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 0, 1, 0, 0]], dtype=bool)
    # The field's convention: each row's last scored token (a completion's EOS prediction) is not ranked.
    # Row 0: 4 tokens left, int(0.4 * 4) = 1 lowest -> -3. Row 1: 2 tokens left, at least 1 -> -4.
    np.testing.assert_allclose(min_k_score(log_probs, mask), [-3.0, -4.0])
    np.testing.assert_allclose(min_k_score(log_probs, mask, k=1.0), [-5.6 / 4, -5.0 / 2])
    np.testing.assert_allclose(min_k_score(log_probs, mask, k=0.1), [-3.0, -4.0])  # at least one token
    # hf_scrub's earlier convention ranks it too: 5 tokens, int(2.0) = 2 lowest -> (-3 - 2) / 2.
    np.testing.assert_allclose(min_k_score(log_probs, mask, include_final_token=True), [-2.5, -4.0])
    np.testing.assert_allclose(min_k_score(log_probs, mask, k=1.0, include_final_token=True), [-5.8 / 5, -7.0 / 3])
    # A row with one scored token keeps it (with none its score would be undefined).
    np.testing.assert_allclose(min_k_score(np.array([[-0.7, PAD]]), np.array([[True, False]])), [-0.7])


def test_min_k_plus_plus_standardises_by_the_model_distribution():
    def log_p_mu_sigma(probs, token):  # by hand, from the next-token distribution
        probs = np.asarray(probs, dtype=np.float64)
        logs = np.log(probs, where=probs > 0, out=np.zeros_like(probs))
        mu = float(np.sum(probs * logs))
        return math.log(probs[token]), mu, math.sqrt(max(np.sum(probs * logs**2) - mu**2, 0.0))

    # p = (1/2, 1/4, 1/4): mu = -1.5 ln 2, sigma = 0.5 ln 2; token 0 scores +1, token 1 scores -1.
    # A one-hot distribution (sigma = 0) and its predicted token: log p = mu = 0, so the score is 0, not NaN.
    positions = [log_p_mu_sigma([0.5, 0.25, 0.25], 0), log_p_mu_sigma([0.5, 0.25, 0.25], 1)]
    positions.append(log_p_mu_sigma([1.0, 0.0, 0.0], 0))
    assert positions[0][1:] == pytest.approx((-1.5 * math.log(2), 0.5 * math.log(2)))
    log_probs, mu, sigma = (np.array([[*column, PAD]]) for column in zip(*positions, strict=True))
    mask = np.array([[True, True, True, False]])
    # The final token (here the one-hot position, score 0) is not ranked: +1 and -1 are.
    np.testing.assert_allclose(min_k_plus_plus_score(log_probs, mu, sigma, mask, k=1.0), [0.0], atol=1e-12)
    np.testing.assert_allclose(min_k_plus_plus_score(log_probs, mu, sigma, mask, k=2 / 3), [-1.0])  # 1 of 2
    with_final = dict(include_final_token=True)
    np.testing.assert_allclose(
        min_k_plus_plus_score(log_probs, mu, sigma, mask, k=1.0, **with_final), [0.0], atol=1e-12
    )
    np.testing.assert_allclose(min_k_plus_plus_score(log_probs, mu, sigma, mask, k=0.4, **with_final), [-1.0])
    np.testing.assert_allclose(min_k_plus_plus_score(log_probs, mu, sigma, mask, k=2 / 3, **with_final), [-0.5])
    # Any other token of a one-hot distribution is as surprising as it gets.
    other = min_k_plus_plus_score(np.array([[-np.inf]]), np.array([[0.0]]), np.array([[0.0]]), np.array([[True]]))
    assert other[0] == -np.inf
    # sigma is floored where the reference floors it, at sqrt(1e-6) = 1e-3: (-0.01 - 0) / 1e-3, not / 1e-4.
    tiny = min_k_plus_plus_score(np.array([[-0.01]]), np.array([[0.0]]), np.array([[1e-4]]), np.array([[True]]))
    np.testing.assert_allclose(tiny, [-10.0])


def test_loss_zlib_and_answer_probability():
    log_probs = np.array([[-1.0, -2.0, -3.0, PAD], [-0.5, PAD, PAD, PAD]])
    mask = ~np.isnan(log_probs)
    texts = ["the cat sat on the mat", "ok"]
    np.testing.assert_allclose(loss_score(log_probs, mask), [-2.0, -0.5])
    np.testing.assert_allclose(answer_probability(log_probs, mask), [math.exp(-2.0), math.exp(-0.5)])
    compressed = [len(zlib.compress(text.encode("utf-8"))) for text in texts]
    # The field divides the *mean* NLL (2 nats over row 0's 3 tokens); hf_scrub's earlier score the sum (6).
    np.testing.assert_allclose(zlib_score(log_probs, mask, texts), [-2.0 / compressed[0], -0.5 / compressed[1]])
    summed = zlib_score(log_probs, mask, texts, nll="sum")
    np.testing.assert_allclose(summed, [-6.0 / compressed[0], -0.5 / compressed[1]])

    mu, sigma = np.full_like(log_probs, -1.0), np.full_like(log_probs, 2.0)
    scores = membership_scores(log_probs, mask, texts, mu, sigma)
    assert tuple(scores) == MEMBERSHIP_SCORES == ("loss", "zlib", "min_k", "min_k_plus_plus")
    np.testing.assert_allclose(scores["zlib"], zlib_score(log_probs, mask, texts))
    np.testing.assert_allclose(scores["min_k"], [-2.0, -0.5])  # row 0 without its final token: -1, -2
    np.testing.assert_allclose(scores["min_k_plus_plus"], [-0.5, 0.25])  # (-2 + 1) / 2 of 0, -0.5


def test_perplexity_is_pooled_over_tokens():
    log_probs = np.array([[-1.0, -2.0, PAD], [-3.0, PAD, PAD]])
    # 6 nats over 3 tokens; a mean of per-row perplexities would give (e^1.5 + e^3) / 2 instead.
    assert perplexity(log_probs, ~np.isnan(log_probs)) == pytest.approx(math.exp(2.0))


def test_low_precision_inputs_are_widened_before_any_arithmetic():
    # bf16 has 8 significant bits: summing 300 x -0.1 in bf16 drifts far from 300 x bf16(-0.1).
    bf16 = torch.full((2, 300), -0.1, dtype=torch.bfloat16)
    value = float(bf16[0, 0])  # -0.10009765625, exact in float64
    mask = torch.ones(2, 300, dtype=torch.bool)
    total = torch.zeros((), dtype=torch.bfloat16)
    for token in bf16[0]:  # what a running sum in bf16 would report
        total = total + token
    assert abs(float(total) / 300 - value) > 1e-3
    exact = bf16.double().numpy()
    np.testing.assert_allclose(loss_score(bf16, mask), [value, value], rtol=1e-13)
    np.testing.assert_array_equal(loss_score(bf16, mask), loss_score(exact, mask.numpy()))
    mu, sigma = torch.full_like(bf16, -0.5), torch.full_like(bf16, 0.3)
    np.testing.assert_array_equal(
        min_k_plus_plus_score(bf16, mu, sigma, mask), min_k_plus_plus_score(exact, mu.double(), sigma.double(), mask)
    )
    # fp16 overflows at 65504: a float16 sum of 2000 x -40 is -inf, the float64 one gives perplexity e^40.
    fp16 = np.full((1, 2000), -40.0, dtype=np.float16)
    with np.errstate(over="ignore"):
        assert np.isinf(fp16.sum(dtype=np.float16))
    assert perplexity(fp16, np.ones_like(fp16, dtype=bool)) == pytest.approx(math.exp(40.0))
    np.testing.assert_allclose(
        truth_ratio(np.array([0.5], np.float16), np.array([[0.1, 0.4]], np.float16)), [0.4], 1e-3
    )


# --------------------------------------------------------------------------------------------------------------
# membership AUC and PrivLeak


def test_membership_auc_known_cases():
    assert membership_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert membership_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert membership_auc([1.0, 1.0], [1.0, 1.0, 1.0]) == 0.5
    assert membership_auc([-np.inf, 0.0], [-1.0]) == 0.5  # rank-based: infinite scores are fine
    assert membership_auc(torch.tensor([2.0, 0.0]), np.array([1.0])) == 0.5


def test_llm_membership_inference_reports_the_shared_scores():
    forget = {"loss": [-0.1, -0.2], "min_k": [-1.0, -3.0]}
    holdout = {"loss": [-1.0, -2.0, -3.0], "min_k": [-2.0, -2.0, -2.0], "zlib": [0.0, 0.0, 0.0]}
    assert llm_membership_inference(forget, holdout) == {"auc_loss": 1.0, "auc_min_k": 0.5}


def test_privleak_is_muses_formula_on_muses_auc_orientation():
    # MUSE: ((1 - AUC_u) - (1 - AUC_r)) / (1 - AUC_r) x 100, negative when the forget set still stands out.
    assert privleak(0.9, 0.6) == pytest.approx((0.1 - 0.4) / 0.4 * 100)  # -75
    assert privleak(0.4, 0.5) == pytest.approx(20.0)
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # a model that remembers every forget row
    # hf_scrub's earlier convention: the opposite sign and the other denominator.
    assert privleak(0.9, 0.6, convention="relative_auc") == pytest.approx(0.3 / 0.6 * 100)  # +50
    assert privleak(0.4, 0.5, convention="relative_auc") == pytest.approx(-20.0)


# --------------------------------------------------------------------------------------------------------------
# truth ratio, forget quality, ROUGE-L


def test_truth_ratio_takes_the_geometric_mean_of_the_wrong_answers():
    # TOFU's and OpenUnlearning's code average the wrong answers' mean NLLs: exp(mean log P) = sqrt(0.1 x 0.4) = 0.2.
    np.testing.assert_allclose(truth_ratio([0.5, 0.2], [[0.1, 0.4], [0.2, 0.2]]), [0.4, 1.0])
    np.testing.assert_allclose(truth_ratio([0.5, 0.2], [[0.1, 0.4], [0.2, 0.2]], mean="arithmetic"), [0.5, 1.0])
    np.testing.assert_allclose(truth_ratio([0.5], [[0.0, 0.4]]), [0.0])  # a wrong answer of probability 0


def test_truth_ratio_aggregates_are_tofus_forget_and_retain_ones():
    ratios = [0.5, 2.0, 0.2]
    assert truth_ratio_aggregate(ratios) == pytest.approx((0.5 + 0.5 + 0.2) / 3)  # mean(min(R, 1 / R))
    assert truth_ratio_aggregate(ratios, "true_better") == pytest.approx((0.5 + 0.0 + 0.8) / 3)  # mean(max(0, 1 - R))
    assert truth_ratio_aggregate(ratios, "mean") == pytest.approx(2.7 / 3)  # hf_scrub's earlier forget number
    assert truth_ratio_aggregate([0.0, 1.0]) == 0.5


def test_normalised_probability_and_model_utility():
    # TOFU's real-authors / world-facts probability: P(correct) / (P(correct) + sum of the wrong ones).
    np.testing.assert_allclose(normalised_probability([0.6, 0.1], [[0.1, 0.3], [0.3, 0.6]]), [0.6, 0.1])
    # Model utility is the harmonic mean: 3 / (1/0.5 + 1/0.25 + 1/1.0), and 0 as soon as one number is 0.
    assert model_utility({"a": 0.5, "b": 0.25, "c": 1.0}) == pytest.approx(3 / 7)
    assert model_utility({"a": 0.5, "b": 0.0}) == 0.0


def test_forget_quality_is_the_ks_p_value():
    unlearned = [0.1, 0.4, 0.7, 0.2, 0.9, 0.35]
    retrain = [0.3, 0.5, 0.6, 0.8, 0.95]
    assert forget_quality(unlearned, retrain) == scipy.stats.ks_2samp(unlearned, retrain).pvalue
    assert forget_quality(unlearned, unlearned) == 1.0
    assert forget_quality([0.0, 0.1, 0.2, 0.3], [5.0, 6.0, 7.0, 8.0]) < 0.05


def test_rouge_l_recall_hand_checked():
    references = ["the cat sat on the mat", "the cat sat on the mat", "Paris"]
    predictions = ["the cat lay on a mat", "The cat sat on the mat, I think.", "London"]
    # Longest common subsequence "the cat on mat": 4 of the reference's 6 words. Recall ignores extra words and
    # rouge_score lowercases and drops punctuation.
    np.testing.assert_allclose(rouge_l_recall(predictions, references), [4 / 6, 1.0, 0.0])


def test_rouge_l_stems_by_default_and_measures_f1_on_request():
    # TOFU's scorer stems: "married" and "marries" are both "marri"; unstemmed, 2 of 3 reference words match.
    assert rouge_l_recall(["she marries twice"], ["she married twice"])[0] == 1.0
    assert rouge_l_recall(["she marries twice"], ["she married twice"], use_stemmer=False)[0] == pytest.approx(2 / 3)
    # MUSE's F1: LCS 2 of a 2-word reference and a 4-word answer -> 2PR / (P + R) = 2 x 0.5 x 1 / 1.5.
    f1 = rouge_l(["Mara Velt built it"], ["Mara Velt"], measure="f1", use_stemmer=False)
    np.testing.assert_allclose(f1, [2 / 3])


# --------------------------------------------------------------------------------------------------------------
# input errors


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: loss_score(np.zeros((2, 3)), np.ones((2, 4), dtype=bool)), "shape of `log_probs`"),
        (lambda: loss_score(np.zeros(3), np.ones(3, dtype=bool)), r"num_examples, num_tokens"),
        (lambda: loss_score(np.zeros((2, 2)), np.array([[1, 1], [0, 0]], dtype=bool)), r"Row\(s\) \[1\]"),
        (lambda: loss_score(np.zeros((0, 2)), np.zeros((0, 2), dtype=bool)), "No examples"),
        (lambda: loss_score(np.array([[1.0]]), np.array([[True]])), "not the negative log-likelihood"),
        (lambda: loss_score(np.array([[np.nan]]), np.array([[True]])), "NaN"),
        (lambda: loss_score(np.zeros((1, 1)), np.array([[0.5]])), "boolean"),
        (lambda: min_k_score(np.zeros((1, 2)), np.ones((1, 2), dtype=bool), k=0.0), r"\(0, 1\]"),
        (lambda: min_k_score(np.zeros((1, 2)), np.ones((1, 2), dtype=bool), k=1.5), r"\(0, 1\]"),
        (
            lambda: min_k_plus_plus_score(np.zeros((1, 2)), np.zeros((1, 2)), -np.ones((1, 2)), np.ones((1, 2), bool)),
            "sigma",
        ),
        (
            lambda: min_k_plus_plus_score(np.zeros((1, 2)), np.zeros((1, 3)), np.ones((1, 2)), np.ones((1, 2), bool)),
            "`mu`",
        ),
        (lambda: zlib_score(np.zeros((2, 1)), np.ones((2, 1), dtype=bool), ["one"]), "one string per row"),
        (lambda: zlib_score(np.zeros((1, 1)), np.ones((1, 1), dtype=bool), "text"), "single string"),
        (lambda: membership_auc([], [1.0]), "empty"),
        (lambda: llm_membership_inference({"losss": [1.0]}, {"loss": [1.0]}), "Unknown membership score"),
        (lambda: llm_membership_inference({"loss": [1.0]}, {"zlib": [1.0]}), "none in common"),
        (lambda: privleak(60.0, 50.0), "divide a percentage by 100"),
        (lambda: privleak(0.5, 1.0), "undefined"),
        (lambda: privleak(0.5, 0.0, convention="relative_auc"), "undefined"),
        (lambda: privleak(0.5, 0.5, convention="paper"), "convention"),
        (lambda: zlib_score(np.zeros((1, 1)), np.ones((1, 1), dtype=bool), ["a"], nll="max"), "nll"),
        (lambda: truth_ratio([0.5], [[0.1]], mean="harmonic"), "geometric"),
        (lambda: truth_ratio_aggregate([0.5], "median"), "closer_to_1"),
        (lambda: truth_ratio_aggregate([-0.5]), ">= 0"),
        (lambda: model_utility({"a": 1.5}), r"\[0, 1\]"),
        (lambda: model_utility({}), "at least one"),
        (lambda: rouge_l(["a"], ["a"], measure="precision"), "measure"),
        (lambda: truth_ratio([0.5, 0.5], [[0.1, 0.2]]), r"shape \(N, P\)"),
        (lambda: truth_ratio([0.5], [0.1, 0.2]), r"\(N, 1\)"),
        (lambda: truth_ratio([0.5, 0.5], [[0.1], [0.1, 0.2]]), "rectangular"),
        (lambda: truth_ratio([-0.7], [[0.1]]), "log-probabilities"),
        (lambda: truth_ratio([0.0], [[0.1]]), "is 0"),
        (lambda: forget_quality([0.1, np.nan], [0.2]), "NaN"),
        (lambda: rouge_l_recall(["a", "b"], ["a"]), "equal length"),
        (lambda: rouge_l_recall("a", "a"), "single string"),
    ],
)
def test_input_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --------------------------------------------------------------------------------------------------------------
# evaluate modules, loaded offline


@pytest.mark.usefixtures("offline_evaluate")
def test_llm_membership_inference_module_matches_the_functions():
    rng = np.random.default_rng(0)
    forget = {name: rng.normal(0.3, 1.0, 40) for name in MEMBERSHIP_SCORES}
    holdout = {name: rng.normal(0.0, 1.0, 70) for name in MEMBERSHIP_SCORES}
    retrain = {f"auc_{name}": 0.55 for name in MEMBERSHIP_SCORES}
    expected = llm_membership_inference(forget, holdout)
    expected.update({f"privleak_{name}": privleak(expected[f"auc_{name}"], 0.55) for name in MEMBERSHIP_SCORES})

    module = load_metric("llm_membership_inference", keep_in_memory=True)
    assert module.compute(**forget, holdout_scores=holdout, retrain_aucs=retrain) == pytest.approx(expected)
    module.add_batch(**{name: scores[:15] for name, scores in forget.items()})
    module.add_batch(**{name: scores[15:] for name, scores in forget.items()})
    assert module.compute(holdout_scores={"loss": holdout["loss"]}) == pytest.approx(
        {"auc_loss": expected["auc_loss"]}
    )
    with pytest.raises(ValueError, match="holdout_scores` is missing"):
        module.compute(**forget)
    with pytest.raises(ValueError, match="retrain_aucs` has none"):
        module.compute(**forget, holdout_scores=holdout, retrain_aucs={"loss": 0.5})


@pytest.mark.usefixtures("offline_evaluate")
def test_truth_ratio_module_matches_the_functions():
    rng = np.random.default_rng(1)
    paraphrased, perturbed = rng.uniform(0.1, 0.9, 30), rng.uniform(0.0, 0.5, (30, 3))
    retrain = truth_ratio(rng.uniform(0.1, 0.9, 30), rng.uniform(0.0, 0.5, (30, 3)))
    ratios = truth_ratio(paraphrased, perturbed)

    module = load_metric("truth_ratio", keep_in_memory=True)
    result = module.compute(
        paraphrased_probability=paraphrased, perturbed_probabilities=perturbed, retrain_truth_ratios=retrain
    )
    assert set(result) == {"truth_ratio", "truth_ratios", "forget_quality"}
    np.testing.assert_allclose(result["truth_ratios"], ratios, rtol=1e-15)
    assert result["truth_ratio"] == pytest.approx(truth_ratio_aggregate(ratios))
    earlier = module.compute(
        paraphrased_probability=paraphrased, perturbed_probabilities=perturbed, mean="arithmetic", aggregate="mean"
    )
    assert earlier["truth_ratio"] == pytest.approx(float(truth_ratio(paraphrased, perturbed, "arithmetic").mean()))
    assert result["forget_quality"] == pytest.approx(forget_quality(ratios, retrain))
    module.add_batch(paraphrased_probability=paraphrased[:10], perturbed_probabilities=perturbed[:10])
    module.add_batch(paraphrased_probability=paraphrased[10:], perturbed_probabilities=perturbed[10:])
    streamed = module.compute()
    assert set(streamed) == {"truth_ratio", "truth_ratios"}
    assert streamed["truth_ratio"] == pytest.approx(result["truth_ratio"])
    np.testing.assert_allclose(streamed["truth_ratios"], ratios, rtol=1e-15)
