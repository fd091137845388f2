"""Causal-LM unlearning metrics as plain numpy / scipy / scikit-learn / rouge_score functions (docs/design.md §20).

Like :mod:`hf_scrub.metrics.functional`, this module computes the numbers and the ``evaluate`` modules
``llm_membership_inference`` and ``truth_ratio`` only wrap it. Token-level inputs are padded ``(N, L)`` arrays of
log-probabilities of the actual next tokens, with a boolean ``mask`` (True = scored token: completion tokens only,
never prompt or padding). Two pitfalls of public implementations are ruled out by construction:

- every input is converted to float64 *before* any arithmetic, so a bf16 / fp16 tensor loses nothing beyond its own
  rounding (a bf16 sum over a few hundred tokens, or an fp16 one over a few thousand, is already visibly wrong);
- masked positions are never read, whatever they hold (-100, NaN, -inf), so padding cannot leak into a score.

Every default follows the field's reference evaluation code (OpenUnlearning, TOFU's and MUSE's released code), so a
number here can stand beside a published one; where an earlier hf_scrub formula (or a paper's text) differs, it is
kept as a named option (the table in ``hf_scrub/metrics/README.md``; docs/design.md §21).

Invalid inputs raise :class:`ValueError` with a message that names the problem and the fix, as in
:mod:`hf_scrub.metrics.functional`.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .functional import _as_1d

__all__ = [
    "DEFAULT_MIN_K",
    "MEMBERSHIP_SCORES",
    "answer_probability",
    "forget_quality",
    "llm_membership_inference",
    "loss_score",
    "membership_auc",
    "membership_scores",
    "min_k_plus_plus_score",
    "min_k_score",
    "min_k_tokens",
    "model_utility",
    "normalised_probability",
    "perplexity",
    "privleak",
    "rouge_l",
    "rouge_l_recall",
    "truth_ratio",
    "truth_ratio_aggregate",
    "zlib_score",
]

#: Membership scores computed by :func:`membership_scores`, in reporting order. Higher = more likely a member.
MEMBERSHIP_SCORES: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus")

#: Fraction of lowest-scoring tokens averaged by Min-K% and Min-K%++ (docs/design.md §10).
DEFAULT_MIN_K = 0.4

#: Floor on Min-K%++'s *variance* sigma^2 (so sigma >= 1e-3), the reference implementation's (OpenUnlearning's
#: Min-K%++ clamps the variance at 1e-6 before the square root). sigma = 0 means a one-hot next-token distribution,
#: where (log p - mu) / sigma is 0 / 0 for the predicted token and -inf / 0 for any other. With the floor, the
#: predicted token scores (about) 0, "as expected", and any other token scores hugely negative, "as surprising as it
#: gets", the limit of the standardised score as the distribution sharpens.
_VARIANCE_FLOOR = 1e-6


def _float64(values: Any, name: str, matrix: str | None = None) -> np.ndarray:
    """A float64 numpy array from a list, numpy array or torch tensor of any float dtype: 1-D, or 2-D of the shape
    described by ``matrix``.

    Widening happens first (torch tensors in torch, since bfloat16 has no numpy dtype): float16 and bfloat16 values
    are exactly representable in float64, so the result is the float64 computation on the values passed.
    """
    if hasattr(values, "detach"):  # torch.Tensor, without importing torch
        values = values.detach().cpu().double()
    if matrix is None:
        array = _as_1d(values, name)
    else:
        try:
            array = np.asarray(values)
        except ValueError as error:  # ragged nested lists
            raise ValueError(f"`{name}` must be rectangular, of shape {matrix}; rows differ in length.") from error
        if array.ndim != 2:
            raise ValueError(f"`{name}` must have shape {matrix}, got {array.shape}.")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"`{name}` must hold numbers, got dtype {array.dtype}.")
    return array.astype(np.float64)


_TOKENS = "(num_examples, num_tokens): pad the rows to one length and mark the scored tokens in `mask`"


def _token_inputs(log_probs: Any, mask: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``(float64 log_probs, bool mask)`` of equal shape (N, L), N >= 1, every row scoring a token."""
    values = _float64(log_probs, "log_probs", _TOKENS)
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.shape != values.shape:
        raise ValueError(
            f"`mask` must have the shape of `log_probs` {values.shape}, got {mask.shape}: one flag per token "
            "(True = scored completion token)."
        )
    if mask.dtype != bool:
        if not np.issubdtype(mask.dtype, np.integer) or not np.isin(mask, (0, 1)).all():
            raise ValueError(f"`mask` must be boolean (True = scored token) or 0/1 integers, got dtype {mask.dtype}.")
        mask = mask.astype(bool)
    if values.shape[0] == 0:
        raise ValueError("No examples were given: pass at least one row of token log-probabilities.")
    empty = np.flatnonzero(~mask.any(axis=1))
    if empty.size:
        raise ValueError(
            f"Row(s) {empty[:10].tolist()} have no scored token, so their score is undefined. Drop examples whose "
            "completion is empty (or was truncated away), or lengthen `max_length`."
        )
    scored = values[mask]
    if np.isnan(scored).any():
        raise ValueError(
            "`log_probs` is NaN at scored positions: the forward pass broke (e.g. overflow in fp16). Compute the "
            "log-softmax in float32."
        )
    if (scored > 0).any():
        raise ValueError(
            "`log_probs` has positive values at scored positions, so these are not log-probabilities. Pass "
            "log p(token) (<= 0), not the negative log-likelihood."
        )
    return values, mask


def _check_k(k: float) -> float:
    if not 0 < k <= 1:
        raise ValueError(f"`k` is the fraction of tokens to average and must be in (0, 1], got {k}; the usual is 0.4.")
    return float(k)


def _masked_sum(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, values, 0.0).sum(axis=1)


def loss_score(log_probs: Any, mask: Any) -> np.ndarray:
    """LOSS attack score (Yeom et al. 2018): ``-mean NLL`` over each row's scored tokens, shape (N,).

    Length-normalised so that long and short answers are comparable; higher = more likely a training member.
    """
    values, mask = _token_inputs(log_probs, mask)
    return _masked_sum(values, mask) / mask.sum(axis=1)


def answer_probability(log_probs: Any, mask: Any) -> np.ndarray:
    """Length-normalised probability of each answer, ``exp(-mean NLL)`` over its completion tokens, shape (N,).

    The geometric mean of the token probabilities: unlike the product, it does not shrink with answer length, so
    answers of different lengths (a paraphrase and its perturbations, say) can be compared.
    """
    return np.exp(loss_score(log_probs, mask))


ZLIB_NLL = ("mean", "sum")


def zlib_score(log_probs: Any, mask: Any, texts: Sequence[str], nll: str = "mean") -> np.ndarray:
    """zlib attack score (Carlini et al. 2021): ``-mean NLL / len(zlib.compress(text.encode("utf-8")))``, (N,).

    Dividing by the zlib length calibrates for how predictable the text is in itself (repetitive text is likely
    under any model), so what is left is what *this* model learnt. ``texts[i]`` should be the text of row ``i``'s
    scored tokens. ``nll="mean"`` (the default) divides the mean NLL over the row's tokens, as OpenUnlearning's and
    MUSE's code do (the log-perplexity of the paper); ``nll="sum"`` divides the summed NLL (hf_scrub before §21),
    which also ranks rows by their length.
    """
    if nll not in ZLIB_NLL:
        raise ValueError(f"`nll` must be one of {ZLIB_NLL} (what is divided by the zlib length), got {nll!r}.")
    values, mask = _token_inputs(log_probs, mask)
    if isinstance(texts, str) or len(texts) != len(values):
        got = "a single string" if isinstance(texts, str) else f"{len(texts)} texts"
        raise ValueError(f"`texts` must hold one string per row of `log_probs` ({len(values)}), got {got}.")
    lengths = np.array([len(zlib.compress(text.encode("utf-8"))) for text in texts], dtype=np.float64)
    total = _masked_sum(values, mask)
    return (total / mask.sum(axis=1) if nll == "mean" else total) / lengths


def _without_final_token(mask: np.ndarray) -> np.ndarray:
    """The mask without each row's last scored token (for prompt/completion rows: the end-of-sequence prediction),
    as the reference implementation ranks tokens (OpenUnlearning's `tokenwise_logprobs`). A row with a single scored
    token keeps it: with none left its score would be undefined (the reference scores such a row 0)."""
    counts = mask.sum(axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    trimmed = mask.copy()
    rows = np.flatnonzero(counts > 1)
    trimmed[rows, last[rows]] = False
    return trimmed


def _lowest_k(values: np.ndarray, mask: np.ndarray, k: float) -> np.ndarray:
    """Where each row's ``max(1, int(k * n))`` lowest scored values are (n = its number of scored tokens; ties by
    position), as a mask of ``values``' shape."""
    counts = np.maximum(1, (k * mask.sum(axis=1)).astype(np.int64))
    order = np.argsort(np.where(mask, values, np.inf), axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")
    return mask & (ranks < counts[:, None])


def _lowest_k_mean(values: np.ndarray, mask: np.ndarray, k: float) -> np.ndarray:
    """Mean of the ``max(1, int(k * n))`` lowest scored values of each row, n = its number of scored tokens."""
    taken = _lowest_k(values, mask, k)
    return _masked_sum(values, taken) / taken.sum(axis=1)


def min_k_tokens(log_probs: Any, mask: Any, k: float = DEFAULT_MIN_K, include_final_token: bool = False) -> np.ndarray:
    """The tokens :func:`min_k_score` averages, as a boolean mask of ``log_probs``' shape: each row's least likely
    ``k`` fraction of scored tokens (at least one), the final one left out unless ``include_final_token``."""
    k = _check_k(k)
    values, mask = _token_inputs(log_probs, mask)
    return _lowest_k(values, mask if include_final_token else _without_final_token(mask), k)


def min_k_score(log_probs: Any, mask: Any, k: float = DEFAULT_MIN_K, include_final_token: bool = False) -> np.ndarray:
    """Min-K% attack score (Shi et al. 2024): mean of the lowest ``k`` fraction of token log-probabilities, (N,).

    A text seen in training rarely has very unlikely tokens, so its worst tokens are better than an unseen text's;
    averaging only those ignores the many tokens that are easy for any model. At least one token is used. Each row's
    last scored token (a completion's end-of-sequence prediction) is left out, as in the reference implementation;
    ``include_final_token=True`` ranks it too (hf_scrub before §21).
    """
    k = _check_k(k)
    values, mask = _token_inputs(log_probs, mask)
    return _lowest_k_mean(values, mask if include_final_token else _without_final_token(mask), k)


def min_k_plus_plus_score(
    log_probs: Any, mu: Any, sigma: Any, mask: Any, k: float = DEFAULT_MIN_K, include_final_token: bool = False
) -> np.ndarray:
    """Min-K%++ attack score (Zhang et al. 2024): Min-K% over standardised token scores, shape (N,).

    Token t scores ``(log p(x_t) - mu_t) / sigma_t``, with ``mu_t = E_z[log p_t(z)]`` and
    ``sigma_t = sqrt(E_z[(log p_t(z))^2] - mu_t^2)`` under the model's own next-token distribution ``p_t``: training
    makes a seen token a local maximum of the likelihood, i.e. high *relative to the alternatives at that position*,
    which the raw log-probability does not show. ``sigma^2`` is floored at 1e-6 (sigma at 1e-3), as in the reference
    implementation (a one-hot distribution has sigma 0): the predicted token then scores about 0 and any other token
    hugely negative. The final scored token is left out unless ``include_final_token`` (as in :func:`min_k_score`).
    """
    k = _check_k(k)
    values, mask = _token_inputs(log_probs, mask)
    means, spreads = _float64(mu, "mu", _TOKENS), _float64(sigma, "sigma", _TOKENS)
    for name, array in (("mu", means), ("sigma", spreads)):
        if array.shape != values.shape:
            raise ValueError(f"`{name}` must have the shape of `log_probs` {values.shape}, got {array.shape}.")
        if np.isnan(array[mask]).any():
            raise ValueError(f"`{name}` is NaN at scored positions: compute the next-token statistics in float32.")
    if (spreads[mask] < 0).any():
        raise ValueError(
            "`sigma` is negative at scored positions: pass the standard deviation, not a log or variance."
        )
    standardised = np.zeros_like(values)
    standardised[mask] = (values[mask] - means[mask]) / np.sqrt(np.maximum(spreads[mask] ** 2, _VARIANCE_FLOOR))
    return _lowest_k_mean(standardised, mask if include_final_token else _without_final_token(mask), k)


def membership_scores(
    log_probs: Any, mask: Any, texts: Sequence[str], mu: Any, sigma: Any, k: float = DEFAULT_MIN_K
) -> dict[str, np.ndarray]:
    """All four membership scores of each row, ``{name: (N,) array}`` in :data:`MEMBERSHIP_SCORES` order, each on the
    field's convention (the defaults of the functions above)."""
    return {
        "loss": loss_score(log_probs, mask),
        "zlib": zlib_score(log_probs, mask, texts),
        "min_k": min_k_score(log_probs, mask, k),
        "min_k_plus_plus": min_k_plus_plus_score(log_probs, mu, sigma, mask, k),
    }


def _scores(values: Any, name: str) -> np.ndarray:
    array = _float64(values, name)
    if array.size == 0:
        raise ValueError(f"`{name}` is empty: pass at least one score per group.")
    if np.isnan(array).any():
        raise ValueError(f"`{name}` contains NaN: recompute the scores from finite float32 log-probabilities.")
    return array


def membership_auc(member_scores: Any, nonmember_scores: Any) -> float:
    """ROC AUC (a fraction in [0, 1]) of telling members (label 1) from non-members (label 0) by a score.

    Threshold-free: the probability that a random member outscores a random non-member (ties count half), so 0.5 is
    chance. The scores are replaced by their ranks (ties averaged) first, which leaves the AUC unchanged and lets
    infinite scores (a token of probability 0) through scikit-learn's finiteness check.
    """
    from scipy.stats import rankdata
    from sklearn.metrics import roc_auc_score

    members = _scores(member_scores, "member_scores")
    nonmembers = _scores(nonmember_scores, "nonmember_scores")
    labels = np.concatenate([np.ones(len(members), dtype=np.int64), np.zeros(len(nonmembers), dtype=np.int64)])
    return float(roc_auc_score(labels, rankdata(np.concatenate([members, nonmembers]))))


def llm_membership_inference(forget: Mapping[str, Any], holdout: Mapping[str, Any]) -> dict[str, float]:
    """``{"auc_<score>": ROC AUC}`` of forget (members) vs holdout (non-members) for every score in both dicts.

    ``forget`` and ``holdout`` map score names of :data:`MEMBERSHIP_SCORES` to per-example scores (e.g. the output of
    :func:`membership_scores`). The holdout set must come from the forget set's distribution and never have been
    trained on; then a Retrain model's AUC is the reference (see :func:`privleak`), and 0.5 means no leak at all.
    """
    unknown = sorted((set(forget) | set(holdout)) - set(MEMBERSHIP_SCORES))
    if unknown:
        raise ValueError(f"Unknown membership score(s) {unknown}; score names are {list(MEMBERSHIP_SCORES)}.")
    common = [name for name in MEMBERSHIP_SCORES if name in forget and name in holdout]
    if not common:
        raise ValueError(
            f"`forget` has scores {sorted(forget)} and `holdout` {sorted(holdout)}: none in common. Compute the same "
            "scores on both groups (e.g. with `membership_scores`)."
        )
    return {f"auc_{name}": membership_auc(forget[name], holdout[name]) for name in common}


PRIVLEAK_CONVENTIONS = ("muse", "relative_auc")


def privleak(auc_unlearned: float, auc_retrain: float, convention: str = "muse") -> float:
    """PrivLeak (MUSE, Shi et al. 2024) in percent, from ROC AUCs with the forget rows as members (1 = every forget
    row more likely than every holdout row, :func:`membership_auc`'s orientation).

    ``convention="muse"`` (the default): ``((1 - AUC_u) - (1 - AUC_r)) / (1 - AUC_r) * 100``, MUSE's formula on its
    AUC orientation (holdout as the positive class, i.e. ``1 - AUC`` here), as MUSE's and OpenUnlearning's code
    compute it. 0 = leaks forget-set membership as much as a model that never saw it; *negative* = still more
    (under-unlearning: the original model scores about -100); positive = the forget set stands out by being too
    unlikely (over-unlearning), which leaks membership too. ``convention="relative_auc"``: ``(AUC_u - AUC_r) / AUC_r
    * 100`` on this AUC (hf_scrub before §21): the opposite sign, another denominator.
    """
    if convention not in PRIVLEAK_CONVENTIONS:
        raise ValueError(f"`convention` must be one of {PRIVLEAK_CONVENTIONS}, got {convention!r}.")
    for name, value in (("auc_unlearned", auc_unlearned), ("auc_retrain", auc_retrain)):
        if not 0 <= value <= 1:
            raise ValueError(
                f"`{name}` must be a ROC AUC fraction in [0, 1], got {value}; divide a percentage by 100."
            )
    if convention == "relative_auc":
        if auc_retrain == 0:
            raise ValueError("`auc_retrain` is 0, so the relative difference is undefined; check the Retrain scores.")
        return float((auc_unlearned - auc_retrain) / auc_retrain * 100.0)
    if auc_retrain == 1:
        raise ValueError(
            "`auc_retrain` is 1 (MUSE's AUC 0), so MUSE's relative difference is undefined: the Retrain model tells "
            "forget from holdout rows perfectly, i.e. the holdout rows are not from the forget set's distribution."
        )
    return float(((1 - auc_unlearned) - (1 - auc_retrain)) / (1 - auc_retrain) * 100.0)


TRUTH_RATIO_MEANS = ("geometric", "arithmetic")
TRUTH_RATIO_AGGREGATES = ("closer_to_1", "true_better", "mean")


def _probabilities(values: Any, name: str, matrix: str | None = None) -> np.ndarray:
    array = _float64(values, name, matrix)
    if not ((array >= 0) & (array <= 1)).all():
        raise ValueError(
            f"`{name}` must hold probabilities in [0, 1] (see `answer_probability`), not log-probabilities or NaN."
        )
    return array


def truth_ratio(paraphrased_probability: Any, perturbed_probabilities: Any, mean: str = "geometric") -> np.ndarray:
    """TOFU truth ratio per question, ``R = P(perturbed) / P(correct)``, shape (N,).

    Probabilities are length-normalised (:func:`answer_probability`); the correct answer is the paraphrased one on
    the forget and retain sets, the answer itself on TOFU's real-authors and world-facts sets. ``P(perturbed)`` is
    the *geometric* mean over the wrong answers by default, ``exp(mean_j log P_j)``: TOFU's and OpenUnlearning's code
    average the wrong answers' mean NLLs. ``mean="arithmetic"`` averages their probabilities (TOFU's paper text, and
    hf_scrub before §21). Comparing the correct answer with wrong answers of the same form asks whether the model
    still *prefers* the truth, which a drop of the answer's probability alone does not show. Near 0: knows the
    answer; around 1: indifferent; :func:`truth_ratio_aggregate` reduces the ratios to the reported number.
    """
    if mean not in TRUTH_RATIO_MEANS:
        raise ValueError(f"`mean` must be one of {TRUTH_RATIO_MEANS} (of the wrong answers), got {mean!r}.")
    paraphrased = _probabilities(paraphrased_probability, "paraphrased_probability")
    perturbed = _probabilities(
        perturbed_probabilities,
        "perturbed_probabilities",
        "(num_questions, num_wrong_answers); reshape a single wrong answer per question to (N, 1)",
    )
    if perturbed.shape[0] != len(paraphrased) or perturbed.shape[1] == 0 or len(paraphrased) == 0:
        raise ValueError(
            f"`perturbed_probabilities` must have shape (N, P) with N = {len(paraphrased)} questions (one row per "
            f"`paraphrased_probability`) and P >= 1 wrong answers, got {perturbed.shape}."
        )
    if (paraphrased == 0).any():
        raise ValueError(
            "`paraphrased_probability` is 0 for some question, so its truth ratio is undefined: a token of "
            "probability 0 (a masked vocabulary entry?) is among the scored tokens."
        )
    if mean == "arithmetic":
        wrong = perturbed.mean(axis=1)
    else:
        with np.errstate(divide="ignore"):  # a wrong answer of probability 0 makes the geometric mean 0
            wrong = np.exp(np.log(perturbed).mean(axis=1))
    return wrong / paraphrased


def truth_ratio_aggregate(truth_ratios: Any, aggregate: str = "closer_to_1") -> float:
    """The one number TOFU reports from a set's truth ratios R (higher is better in both of TOFU's forms).

    - ``"closer_to_1"`` (forget set): ``mean(min(R, 1 / R))``: 1 = the model cannot tell right from wrong answers;
    - ``"true_better"`` (retain, real authors, world facts): ``mean(max(0, 1 - R))``: 1 = it clearly prefers the
      right ones;
    - ``"mean"``: ``mean(R)`` (hf_scrub's forget truth ratio before §21; lower = knows more).

    The first two are TOFU's and OpenUnlearning's aggregators (`closer_to_1_better`, `true_better`).
    """
    if aggregate not in TRUTH_RATIO_AGGREGATES:
        raise ValueError(f"`aggregate` must be one of {TRUTH_RATIO_AGGREGATES}, got {aggregate!r}.")
    ratios = _scores(truth_ratios, "truth_ratios")
    if (ratios < 0).any():
        raise ValueError("`truth_ratios` must be ratios of probabilities (>= 0); see `truth_ratio`.")
    if aggregate == "closer_to_1":
        with np.errstate(divide="ignore"):  # R = 0: min(0, inf) = 0
            values = np.minimum(ratios, 1.0 / ratios)
    elif aggregate == "true_better":
        values = np.maximum(0.0, 1.0 - ratios)
    else:
        values = ratios
    return float(values.mean())


def normalised_probability(correct_probability: Any, perturbed_probabilities: Any) -> np.ndarray:
    """Per question, ``P(correct) / (P(correct) + sum_j P(perturbed_j))``, shape (N,): TOFU's probability on the
    real-authors and world-facts sets (OpenUnlearning's `probability_w_options`), where a model is scored by how
    much of its mass over the listed options falls on the right one, not by the answer's probability alone."""
    correct = _probabilities(correct_probability, "correct_probability")
    perturbed = _probabilities(perturbed_probabilities, "perturbed_probabilities", "(num_questions, num_options)")
    if perturbed.shape[0] != len(correct) or len(correct) == 0:
        raise ValueError(
            f"`perturbed_probabilities` must have one row per question ({len(correct)}), got {perturbed.shape}."
        )
    total = correct + perturbed.sum(axis=1)
    if (total == 0).any():
        raise ValueError("Some question has probability 0 for every option: its normalised probability is undefined.")
    return correct / total


def model_utility(values: Mapping[str, float]) -> float:
    """TOFU's model utility: the harmonic mean of its utility numbers (answer probability, ROUGE-L recall and truth
    ratio on the retain, real-authors and world-facts sets; OpenUnlearning's `hm_aggregate`). Each lies in [0, 1];
    the harmonic mean is 0 as soon as one of them is, so a model cannot buy utility on one set with another."""
    from scipy.stats import hmean

    if not values:
        raise ValueError("No utility numbers were given: pass {name: value} for at least one of TOFU's sets.")
    array = np.array([float(value) for value in values.values()], dtype=np.float64)
    bad = [name for name, value in values.items() if not 0 <= float(value) <= 1]
    if bad:
        raise ValueError(f"Utility numbers must lie in [0, 1]; {bad} do not.")
    return 0.0 if (array == 0).any() else float(hmean(array))


def forget_quality(unlearned_truth_ratios: Any, retrain_truth_ratios: Any) -> float:
    """TOFU forget quality: p-value of the two-sample KS test between the unlearned and Retrain truth ratios.

    High p (>= 0.05) reads as "indistinguishable from Retrain" on the forget set. It is a test statistic, not an
    effect size: for the same difference between the two distributions it shrinks as the forget set grows, so compare
    models on the same questions.
    """
    from scipy.stats import ks_2samp

    unlearned = _scores(unlearned_truth_ratios, "unlearned_truth_ratios")
    retrain = _scores(retrain_truth_ratios, "retrain_truth_ratios")
    return float(ks_2samp(unlearned, retrain).pvalue)


ROUGE_MEASURES = ("recall", "f1")


def rouge_l(
    predictions: Sequence[str], references: Sequence[str], measure: str = "recall", use_stemmer: bool = True
) -> np.ndarray:
    """ROUGE-L of each generated answer against its reference, shape (N,), with ``rouge_score``.

    ``measure="recall"`` (TOFU: how much of the reference the model still produces, so a long answer that contains
    it counts) or ``"f1"`` (MUSE's knowmem and verbmem). ``use_stemmer=True`` (TOFU's and OpenUnlearning's setting;
    MUSE's own code scores without stemming) compares Porter stems, so "married" matches "marries". rouge_score's
    tokenizer lowercases and keeps only ``[a-z0-9]`` runs, so text in other scripts scores 0.
    """
    from rouge_score import rouge_scorer

    if measure not in ROUGE_MEASURES:
        raise ValueError(f"`measure` must be one of {ROUGE_MEASURES}, got {measure!r}.")
    for name, texts in (("predictions", predictions), ("references", references)):
        if isinstance(texts, str):
            raise ValueError(f"`{name}` must be a sequence of strings (one per example), got a single string.")
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"`predictions` ({len(predictions)}) and `references` ({len(references)}) must be non-empty and of equal "
            "length: one generated answer per reference."
        )
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    field = "recall" if measure == "recall" else "fmeasure"
    return np.array(
        [
            getattr(scorer.score(target=reference, prediction=prediction)["rougeL"], field)
            for prediction, reference in zip(predictions, references, strict=True)
        ],
        dtype=np.float64,
    )


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> np.ndarray:
    """ROUGE-L recall of each answer (:func:`rouge_l` with ``measure="recall"``), stemming on by default (TOFU)."""
    return rouge_l(predictions, references, "recall", use_stemmer)


def perplexity(log_probs: Any, mask: Any) -> float:
    """Corpus perplexity ``exp(total NLL / total scored tokens)`` on a generic text set.

    Pooled over tokens, not a mean of per-text perplexities, so each token weighs the same and a few short texts
    cannot dominate. A rise relative to the original model measures the damage unlearning did to general ability.
    """
    values, mask = _token_inputs(log_probs, mask)
    return float(np.exp(-values[mask].sum() / mask.sum()))
