"""The LLM-unlearning evidence of a causal LM's report (docs/design.md §20, §21), from one prediction pass per split.

Per split (forget, retain, test / forget-validation): the answer probability (exp of the mean log-likelihood of the
completion tokens), the greedy answer match rate and the ROUGE-L recall of the greedy answer. Forget vs
forget-validation (held-out rows never trained on): membership-inference ROC AUCs for the LOSS, zlib, Min-K% and
Min-K%++ scores. When the forget rows carry TOFU's ``paraphrased_completion`` and ``perturbed_completions`` columns:
the truth ratio of every forget row and TOFU's aggregate of them. TOFU's utility sets (``retain_qa``,
``real_authors``, ``world_facts``): their answer probability, ROUGE-L and truth ratio, and the harmonic mean of
those, the model utility. MUSE's sets: knowmem / verbmem ROUGE-L and the membership AUCs of its privleak split. On
a generic text set: perplexity. Against the Retrain model (`add_comparisons`): PrivLeak per membership score and
forget quality (the KS test of the truth ratios); against the original: the perplexity ratio.

Every number follows the field's reference code by default (`hf_scrub.metrics.llm`; the conventions table is
``hf_scrub/metrics/README.md``). Everything is computed from `hf_scrub.lm_metrics.token_statistics` (float32 whatever
the model's dtype, gathered over processes by `Trainer.predict`) and the greedy completions of
`hf_scrub.lm_metrics.greedy_completions`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import datasets
import numpy as np

from .lm_metrics import MAX_NEW_TOKENS, Completion
from .metrics.llm import (
    MEMBERSHIP_SCORES,
    answer_probability,
    forget_quality,
    llm_membership_inference,
    loss_score,
    membership_scores,
    min_k_plus_plus_score,
    min_k_score,
    model_utility,
    normalised_probability,
    perplexity,
    privleak,
    rouge_l,
    truth_ratio,
    truth_ratio_aggregate,
)

logger = logging.getLogger(__name__)

PARAPHRASED_COLUMN = "paraphrased_completion"
PERTURBED_COLUMN = "perturbed_completions"
PARAPHRASED = "_paraphrased"  # suffix of a set's split with the paraphrased correct answers
PERTURBED = "_perturbed"  # suffix of a set's split with every perturbed (wrong) answer, row by row
PARAPHRASED_SPLIT = "forget" + PARAPHRASED
PERTURBED_SPLIT = "forget" + PERTURBED
GENERIC_SPLIT = "generic"  # plain text: perplexity only
TRUTH_RATIOS = "forget_truth_ratios"  # per forget row, kept in the report so forget quality can be recomputed
ANSWER_SPLITS = ("forget", "retain", "test", "forget_validation")  # the request's own splits

# TOFU's model-utility sets (retain_perturbed, real_authors_perturbed, world_facts_perturbed on the Hub).
UTILITY_SETS = ("retain_qa", "real_authors", "world_facts")
RETAIN_QA_ROWS = 400  # TOFU's retain_perturbed size: retain rows with truth-ratio columns become `retain_qa`
# MUSE's evaluation sets: knowledge QA (forget / retain), verbatim continuation, and its membership-inference split.
KNOWMEM_SETS = ("knowmem_forget", "knowmem_retain")
VERBMEM_SET = "verbmem_forget"
MUSE_MEMBERSHIP = ("privleak_forget", "privleak_holdout")
MUSE_PREFIX = "muse_"  # MUSE's privleak-split AUCs and PrivLeak: muse_auc_<score>, muse_privleak_<score>
# Token limits of the evaluation sets, OpenUnlearning's (the request's own splits use --max_length).
EVALUATION_MAX_LENGTHS = {
    **dict.fromkeys(UTILITY_SETS, 512),
    **dict.fromkeys(KNOWMEM_SETS, 512),
    VERBMEM_SET: 2048,
    **dict.fromkeys(MUSE_MEMBERSHIP, 2048),
}


@dataclass(frozen=True)
class AnswerScoring:
    """How one split's greedy answers are generated and scored: the convention of the benchmark it belongs to."""

    max_new_tokens: int = MAX_NEW_TOKENS
    measure: str = "recall"  # ROUGE-L recall (TOFU) or F1 (MUSE)
    use_stemmer: bool = True
    stop_strings: tuple[str, ...] = ()  # the answer is cut before the first of these (MUSE's knowmem)
    reference_tokens: int | None = None  # score against the reference's first tokens only (MUSE's verbmem)


TOFU_SCORING = AnswerScoring()  # up to 200 new tokens, ROUGE-L recall with stemming (TOFU, OpenUnlearning)
# MUSE's own code: 32 new tokens cut at the next question, 128 against the first 128 reference tokens; ROUGE-L F1,
# no stemming.
KNOWMEM_SCORING = AnswerScoring(32, "f1", False, ("\n\n", "\nQuestion", "Question:"))
VERBMEM_SCORING = AnswerScoring(128, "f1", False, reference_tokens=128)


def answer_scoring(split: str) -> AnswerScoring | None:
    """How `split`'s greedy answers are generated and scored, or None when the split is not generated from."""
    if split in ANSWER_SPLITS or split in UTILITY_SETS:
        return TOFU_SCORING
    if split in KNOWMEM_SETS:
        return KNOWMEM_SCORING
    return VERBMEM_SCORING if split == VERBMEM_SET else None


def generic_text(path: str | None = None, text_column: str = "text") -> datasets.Dataset:
    """The generic text set of the perplexity check, one paragraph per row of `text_column`: the lines of `path` (a
    text file), by default the 48 paragraphs of everyday English shipped with hf_scrub (written for it, so no model
    has trained on them)."""
    if path is None:
        text = resources.files("hf_scrub").joinpath("data/generic_text.txt").read_text(encoding="utf-8")
    elif not os.path.isfile(path):
        raise ValueError(f"--generic_text_file {path}: no such file. Pass a text file with one paragraph per line.")
    else:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"The generic text file {path} holds no text: pass a file with one paragraph per line.")
    return datasets.Dataset.from_dict({text_column: lines})


def truth_ratio_splits(
    rows: datasets.Dataset, prepare: Callable[[datasets.Dataset], datasets.Dataset], name: str = "forget"
) -> dict[str, datasets.Dataset]:
    """The correct and wrong answers of a set's rows, prepared as model inputs: ``<name>_paraphrased`` (when the rows
    carry `PARAPHRASED_COLUMN`; otherwise the truth ratio compares with the answer itself, as TOFU does on its
    real-authors and world-facts sets) and ``<name>_perturbed`` (every wrong answer, row by row); {} when the rows
    carry no `PERTURBED_COLUMN`. Every row needs the same number of wrong answers (TOFU's format), so that the
    perturbed split reshapes into ``(rows, answers)``."""
    if not {"prompt", PERTURBED_COLUMN} <= set(rows.column_names):
        return {}
    counts = sorted({len(answers) for answers in rows[PERTURBED_COLUMN]})
    if counts[0] == 0 or len(counts) > 1:
        raise ValueError(
            f"Every {name} row needs the same number (at least 1) of `{PERTURBED_COLUMN}` to compute truth ratios; "
            f"found {counts}. Give every row the same number of wrong answers, or drop the column."
        )
    prompts, perturbed = rows["prompt"], rows[PERTURBED_COLUMN]
    splits = {
        name + PERTURBED: prepare(
            datasets.Dataset.from_dict(
                {
                    "prompt": [prompt for prompt, answers in zip(prompts, perturbed, strict=True) for _ in answers],
                    "completion": [answer for answers in perturbed for answer in answers],
                }
            )
        )
    }
    if PARAPHRASED_COLUMN in rows.column_names:
        paraphrased = datasets.Dataset.from_dict({"prompt": prompts, "completion": rows[PARAPHRASED_COLUMN]})
        splits[name + PARAPHRASED] = prepare(paraphrased)
    return splits


def llm_evaluation_splits(
    forget: datasets.Dataset,
    retain: datasets.Dataset,
    prepare: Callable[..., datasets.Dataset],
    evaluation_sets: Mapping[str, datasets.Dataset] | None = None,
) -> dict[str, datasets.Dataset]:
    """The extra evaluation splits of a causal LM, prepared as model inputs (`prepare(rows, max_length=...)`):

    - the forget rows' truth-ratio splits (`truth_ratio_splits`);
    - every set of `evaluation_sets` (TOFU's `UTILITY_SETS`, MUSE's knowmem / verbmem / privleak sets, as
      `hf_scrub.benchmark_data` loads them) and its truth-ratio splits, each within `EVALUATION_MAX_LENGTHS`;
    - without a ``retain_qa`` set, the first `RETAIN_QA_ROWS` retain rows as ``retain_qa`` when they carry the
      truth-ratio columns, so that data in TOFU's shape gets TOFU's retain utility numbers too.
    """
    sets = dict(evaluation_sets or {})
    if "retain_qa" not in sets and {PERTURBED_COLUMN, PARAPHRASED_COLUMN} <= set(retain.column_names):
        sets["retain_qa"] = retain.select(range(min(len(retain), RETAIN_QA_ROWS)))
    splits = truth_ratio_splits(forget, prepare)
    for name, rows in sets.items():

        def within_limit(split: datasets.Dataset, limit: int | None = EVALUATION_MAX_LENGTHS.get(name)) -> Any:
            return prepare(split, max_length=limit)

        answers = rows.remove_columns([c for c in (PARAPHRASED_COLUMN, PERTURBED_COLUMN) if c in rows.column_names])
        splits[name] = within_limit(answers)
        splits |= truth_ratio_splits(rows, within_limit, name)
    return splits


def _texts(labels: np.ndarray, mask: np.ndarray, tokenizer: Any) -> list[str]:
    """The scored text of every row (its loss-carrying tokens), for the zlib score."""
    return [
        tokenizer.decode(row[keep].tolist(), skip_special_tokens=True) for row, keep in zip(labels, mask, strict=True)
    ]


def _cut(text: str, stop_strings: Sequence[str]) -> str:
    for stop in stop_strings:
        text = text.split(stop)[0]
    return text.strip()


def _membership_aucs(predictions: Mapping[str, Any], members: str, others: str, tokenizer: Any) -> dict[str, float]:
    scores = {}
    for name in (members, others):
        split = predictions[name]
        if tokenizer is None:
            scores[name] = {
                "loss": loss_score(split.log_probs, split.mask),
                "min_k": min_k_score(split.log_probs, split.mask),
                "min_k_plus_plus": min_k_plus_plus_score(split.log_probs, split.mu, split.sigma, split.mask),
            }
        else:
            texts = _texts(split.labels, split.mask, tokenizer)
            scores[name] = membership_scores(split.log_probs, split.mask, texts, split.mu, split.sigma)
    return llm_membership_inference(scores[members], scores[others])


def _probability(split: Any) -> np.ndarray:
    return answer_probability(split.log_probs, split.mask)


def _truth_ratio_report(predictions: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A set's truth ratios (and, without a paraphrase, its normalised probability) from its splits' predictions."""
    correct = predictions.get(name + PARAPHRASED, predictions.get(name))
    if correct is None or name + PERTURBED not in predictions:
        return {}
    correct_probability = _probability(correct)
    perturbed = _probability(predictions[name + PERTURBED]).reshape(len(correct_probability), -1)
    ratios = truth_ratio(correct_probability, perturbed)
    if name == "forget":  # TOFU's forget aggregate: closer to 1 (indifferent between right and wrong) is better
        return {"forget_truth_ratio": truth_ratio_aggregate(ratios), TRUTH_RATIOS: [float(r) for r in ratios]}
    report: dict[str, Any] = {f"{name}_truth_ratio": truth_ratio_aggregate(ratios, "true_better")}
    if name + PARAPHRASED not in predictions:
        normalised = normalised_probability(correct_probability, perturbed)
        report[f"{name}_normalised_probability"] = float(np.mean(normalised))
    return report


def utility_numbers(report: Mapping[str, Any]) -> dict[str, float]:
    """TOFU's model-utility inputs present in `report`: per utility set its probability (the plain answer
    probability where the set has paraphrases, as TOFU's retain set; the normalised one otherwise, as its
    real-authors and world-facts sets), ROUGE-L recall and truth ratio."""
    keys = []
    for name in UTILITY_SETS:
        probability = f"{name}_normalised_probability"
        if probability not in report:
            probability = f"{name}_answer_probability"
        keys += [probability, f"{name}_rouge_l_recall", f"{name}_truth_ratio"]
    return {key: report[key] for key in keys if key in report}


def llm_report(
    predictions: Mapping[str, Any],
    completions: Mapping[str, Sequence[Completion] | None],
    tokenizer: Any,
    splits: Sequence[str],
) -> dict[str, Any]:
    """The LLM metrics of one model from its `TokenPredictions` per split and its greedy completions per split.

    Without a tokenizer (`tokenizer=None`, e.g. a `Trainer` built without `processing_class`) the metrics that read
    text -- ROUGE-L and the zlib score -- are left out; every other one needs token ids only.
    """
    report: dict[str, Any] = {}
    for name in (*splits, *UTILITY_SETS):
        if name in predictions:
            report[f"{name}_answer_probability"] = float(np.mean(_probability(predictions[name])))
    for name, split_completions in completions.items():
        scoring = answer_scoring(name)
        if not split_completions or scoring is None:
            continue
        report[f"{name}_answer_accuracy"] = float(np.mean([c.matches for c in split_completions]))
        if tokenizer is None:
            continue
        answers = tokenizer.batch_decode(
            [c.generated[: scoring.max_new_tokens] for c in split_completions], skip_special_tokens=True
        )
        references = tokenizer.batch_decode(
            [c.reference[: scoring.reference_tokens] for c in split_completions], skip_special_tokens=True
        )
        answers = [_cut(answer, scoring.stop_strings) for answer in answers]
        values = rouge_l(answers, references, scoring.measure, scoring.use_stemmer)
        report[f"{name}_rouge_l_{scoring.measure}"] = float(np.mean(values))
    if "forget" in predictions and "forget_validation" in predictions:
        report.update(_membership_aucs(predictions, "forget", "forget_validation", tokenizer))
    if all(name in predictions for name in MUSE_MEMBERSHIP):
        aucs = _membership_aucs(predictions, *MUSE_MEMBERSHIP, tokenizer)
        report.update({MUSE_PREFIX + key: value for key, value in aucs.items()})
    for name in ("forget", *UTILITY_SETS):
        report.update(_truth_ratio_report(predictions, name))
    utility = utility_numbers(report)
    if utility:
        report["model_utility"] = model_utility(utility)
    if GENERIC_SPLIT in predictions:
        report["generic_perplexity"] = perplexity(
            predictions[GENERIC_SPLIT].log_probs, predictions[GENERIC_SPLIT].mask
        )
    return report


def add_comparisons(reports: MutableMapping[str, dict[str, Any]]) -> None:
    """Add the metrics that compare two models: the generic perplexity relative to the original's
    (``generic_perplexity_ratio``), and, when a ``retrain`` report is present, PrivLeak per membership score
    (``privleak_<score>``, percent, MUSE's convention; ``muse_privleak_<score>`` on MUSE's privleak split) and forget
    quality (KS p-value of the forget truth ratios) of every other model."""
    original, retrain = reports.get("original", {}), reports.get("retrain")
    for name, report in reports.items():
        if "generic_perplexity" in report and "generic_perplexity" in original:
            report["generic_perplexity_ratio"] = report["generic_perplexity"] / original["generic_perplexity"]
        if retrain is None or name == "retrain":
            continue
        for prefix in ("", MUSE_PREFIX):
            for score in MEMBERSHIP_SCORES:
                key = f"{prefix}auc_{score}"
                if key in report and key in retrain:
                    try:
                        report[f"{prefix}privleak_{score}"] = privleak(report[key], retrain[key])
                    except ValueError as error:  # Retrain separates forget from holdout perfectly: undefined
                        logger.warning("%sprivleak_%s of %s left out: %s", prefix, score, name, error)
        if TRUTH_RATIOS in report and TRUTH_RATIOS in retrain:
            report["forget_quality"] = forget_quality(report[TRUTH_RATIOS], retrain[TRUTH_RATIOS])
