"""Causal-LM unlearning metrics as plain numpy / scipy / scikit-learn / rouge_score functions (docs/design.md §20).

Like :mod:`hf_scrub.metrics.functional`, this module computes the numbers and the ``evaluate`` modules
``llm_membership_inference`` and ``truth_ratio`` only wrap it. Token-level inputs are padded ``(N, L)`` arrays of
log-probabilities of the actual next tokens, with a boolean ``mask`` (True = scored token: completion tokens only,
never prompt or padding). Two pitfalls of public implementations are ruled out by construction:

- every input is converted to float64 *before* any arithmetic, so a bf16 / fp16 tensor loses nothing beyond its own
  rounding (a bf16 sum over a few hundred tokens, or an fp16 one over a few thousand, is already visibly wrong);
- masked positions are never read, whatever they hold (-100, NaN, -inf), so padding cannot leak into a score.

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
    "perplexity",
    "privleak",
    "rouge_l_recall",
    "truth_ratio",
    "zlib_score",
]

#: Membership scores computed by :func:`membership_scores`, in reporting order. Higher = more likely a member.
MEMBERSHIP_SCORES: tuple[str, ...] = ("loss", "zlib", "min_k", "min_k_plus_plus")

#: Fraction of lowest-scoring tokens averaged by Min-K% and Min-K%++ (docs/design.md §10).
DEFAULT_MIN_K = 0.4

#: Floor on Min-K%++'s sigma. sigma = 0 means a one-hot next-token distribution, where (log p - mu) / sigma is 0 / 0
#: for the predicted token and -inf / 0 for any other. With the floor, the predicted token scores (about) 0, "as
#: expected", and any other token scores hugely negative, "as surprising as it gets", which is the limit of the
#: standardised score as the distribution sharpens. A sigma below 1e-6 only comes from a distribution that is one-hot
#: to float precision, and the floor keeps float32 rounding of log p - mu (~1e-7) from turning into a large score.
_SIGMA_FLOOR = 1e-6


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


def zlib_score(log_probs: Any, mask: Any, texts: Sequence[str]) -> np.ndarray:
    """zlib attack score (Carlini et al. 2021): ``-NLL_sum / len(zlib.compress(text.encode("utf-8")))``, shape (N,).

    Dividing by the zlib length calibrates for how predictable the text is in itself (repetitive text is likely
    under any model), so what is left is what *this* model learnt. ``texts[i]`` should be the text of row ``i``'s
    scored tokens.
    """
    values, mask = _token_inputs(log_probs, mask)
    if isinstance(texts, str) or len(texts) != len(values):
        got = "a single string" if isinstance(texts, str) else f"{len(texts)} texts"
        raise ValueError(f"`texts` must hold one string per row of `log_probs` ({len(values)}), got {got}.")
    lengths = np.array([len(zlib.compress(text.encode("utf-8"))) for text in texts], dtype=np.float64)
    return _masked_sum(values, mask) / lengths


def _lowest_k_mean(values: np.ndarray, mask: np.ndarray, k: float) -> np.ndarray:
    """Mean of the ``max(1, int(k * n))`` lowest scored values of each row, n = its number of scored tokens."""
    counts = np.maximum(1, (k * mask.sum(axis=1)).astype(np.int64))
    lowest_first = np.sort(np.where(mask, values, np.inf), axis=1)
    taken = np.arange(values.shape[1]) < counts[:, None]
    return _masked_sum(lowest_first, taken) / counts


def min_k_score(log_probs: Any, mask: Any, k: float = DEFAULT_MIN_K) -> np.ndarray:
    """Min-K% attack score (Shi et al. 2024): mean of the lowest ``k`` fraction of token log-probabilities, (N,).

    A text seen in training rarely has very unlikely tokens, so its worst tokens are better than an unseen text's;
    averaging only those ignores the many tokens that are easy for any model. At least one token is used.
    """
    k = _check_k(k)
    values, mask = _token_inputs(log_probs, mask)
    return _lowest_k_mean(values, mask, k)


def min_k_plus_plus_score(log_probs: Any, mu: Any, sigma: Any, mask: Any, k: float = DEFAULT_MIN_K) -> np.ndarray:
    """Min-K%++ attack score (Zhang et al. 2024): Min-K% over standardised token scores, shape (N,).

    Token t scores ``(log p(x_t) - mu_t) / sigma_t``, with ``mu_t = E_z[log p_t(z)]`` and
    ``sigma_t = sqrt(E_z[(log p_t(z))^2] - mu_t^2)`` under the model's own next-token distribution ``p_t``: training
    makes a seen token a local maximum of the likelihood, i.e. high *relative to the alternatives at that position*,
    which the raw log-probability does not show. ``sigma`` is floored at 1e-6 (a one-hot distribution has sigma 0):
    the predicted token then scores about 0 and any other token hugely negative.
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
    standardised[mask] = (values[mask] - means[mask]) / np.maximum(spreads[mask], _SIGMA_FLOOR)
    return _lowest_k_mean(standardised, mask, k)


def membership_scores(
    log_probs: Any, mask: Any, texts: Sequence[str], mu: Any, sigma: Any, k: float = DEFAULT_MIN_K
) -> dict[str, np.ndarray]:
    """All four membership scores of each row, ``{name: (N,) array}`` in :data:`MEMBERSHIP_SCORES` order."""
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


def privleak(auc_unlearned: float, auc_retrain: float) -> float:
    """PrivLeak (MUSE, Shi et al. 2024): ``(AUC_unlearned - AUC_retrain) / AUC_retrain * 100``, in percent.

    0 = the unlearned model leaks forget-set membership exactly as much as a model that never saw it; positive =
    still more (under-unlearning); negative = less, i.e. the forget set now stands out by being *too* unlikely
    (over-unlearning), which leaks membership too.
    """
    for name, value in (("auc_unlearned", auc_unlearned), ("auc_retrain", auc_retrain)):
        if not 0 <= value <= 1:
            raise ValueError(
                f"`{name}` must be a ROC AUC fraction in [0, 1], got {value}; divide a percentage by 100."
            )
    if auc_retrain == 0:
        raise ValueError("`auc_retrain` is 0, so the relative difference is undefined; check the Retrain scores.")
    return float((auc_unlearned - auc_retrain) / auc_retrain * 100.0)


def truth_ratio(paraphrased_probability: Any, perturbed_probabilities: Any) -> np.ndarray:
    """TOFU truth ratio per question: mean over wrong answers of ``P(perturbed) / P(paraphrased correct)``, (N,).

    Probabilities are length-normalised (:func:`answer_probability`). Comparing the correct answer with wrong answers
    of the same form asks whether the model still *prefers* the truth, which a drop of the answer's probability alone
    does not show. Near 0: knows the answer; around 1: indifferent; the Retrain model's distribution is the target.
    """
    paraphrased = _float64(paraphrased_probability, "paraphrased_probability")
    perturbed = _float64(
        perturbed_probabilities,
        "perturbed_probabilities",
        "(num_questions, num_wrong_answers); reshape a single wrong answer per question to (N, 1)",
    )
    if perturbed.shape[0] != len(paraphrased) or perturbed.shape[1] == 0 or len(paraphrased) == 0:
        raise ValueError(
            f"`perturbed_probabilities` must have shape (N, P) with N = {len(paraphrased)} questions (one row per "
            f"`paraphrased_probability`) and P >= 1 wrong answers, got {perturbed.shape}."
        )
    for name, array in (("paraphrased_probability", paraphrased), ("perturbed_probabilities", perturbed)):
        if not ((array >= 0) & (array <= 1)).all():
            raise ValueError(
                f"`{name}` must hold probabilities in [0, 1] (see `answer_probability`), not log-probabilities or NaN."
            )
    if (paraphrased == 0).any():
        raise ValueError(
            "`paraphrased_probability` is 0 for some question, so its truth ratio is undefined: a token of "
            "probability 0 (a masked vocabulary entry?) is among the scored tokens."
        )
    return perturbed.mean(axis=1) / paraphrased


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


def rouge_l_recall(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """ROUGE-L recall of each greedy answer against its reference, shape (N,), with ``rouge_score`` (no stemming).

    Recall, not F1: the question is how much of the reference the model still produces, and a long answer that
    contains it should count. rouge_score's tokenizer lowercases and keeps only ``[a-z0-9]`` runs, so text in other
    scripts scores 0.
    """
    from rouge_score import rouge_scorer

    for name, texts in (("predictions", predictions), ("references", references)):
        if isinstance(texts, str):
            raise ValueError(f"`{name}` must be a sequence of strings (one per example), got a single string.")
    if len(predictions) != len(references) or not predictions:
        raise ValueError(
            f"`predictions` ({len(predictions)}) and `references` ({len(references)}) must be non-empty and of equal "
            "length: one generated answer per reference."
        )
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return np.array(
        [
            scorer.score(target=reference, prediction=prediction)["rougeL"].recall
            for prediction, reference in zip(predictions, references, strict=True)
        ],
        dtype=np.float64,
    )


def perplexity(log_probs: Any, mask: Any) -> float:
    """Corpus perplexity ``exp(total NLL / total scored tokens)`` on a generic text set.

    Pooled over tokens, not a mean of per-text perplexities, so each token weighs the same and a few short texts
    cannot dominate. A rise relative to the original model measures the damage unlearning did to general ability.
    """
    values, mask = _token_inputs(log_probs, mask)
    return float(np.exp(-values[mask].sum() / mask.sum()))
