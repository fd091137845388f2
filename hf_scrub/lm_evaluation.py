"""The LLM-unlearning evidence of a causal LM's report (docs/design.md §20), from one prediction pass per split.

Per split (forget, retain, test / forget-validation): the answer probability (exp of the mean log-likelihood of the
completion tokens), the greedy answer match rate and ROUGE-L recall of the greedy answer. Forget vs forget-validation
(held-out rows never trained on): membership-inference ROC AUCs for the LOSS, zlib, Min-K% and Min-K%++ scores. When
the forget rows carry TOFU's ``paraphrased_completion`` and ``perturbed_completions`` columns: the truth ratio of
every forget row. On a generic text set: perplexity. Against the Retrain model (`add_comparisons`): PrivLeak per
membership score and forget quality (the KS test of the truth ratios); against the original: the perplexity ratio.

Everything is computed from `hf_scrub.lm_metrics.token_statistics` (float32 whatever the model's dtype, gathered
over processes by `Trainer.predict`) by the plain functions of `hf_scrub.metrics.llm`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from importlib import resources
from typing import Any

import datasets
import numpy as np

from .lm_metrics import Completion
from .metrics.llm import (
    MEMBERSHIP_SCORES,
    answer_probability,
    forget_quality,
    llm_membership_inference,
    loss_score,
    membership_scores,
    min_k_plus_plus_score,
    min_k_score,
    perplexity,
    privleak,
    rouge_l_recall,
    truth_ratio,
)

PARAPHRASED_COLUMN = "paraphrased_completion"
PERTURBED_COLUMN = "perturbed_completions"
PARAPHRASED_SPLIT = "forget_paraphrased"  # the forget prompts with the paraphrased correct answers
PERTURBED_SPLIT = "forget_perturbed"  # the forget prompts with every perturbed (wrong) answer, row by row
GENERIC_SPLIT = "generic"  # plain text: perplexity only
TRUTH_RATIOS = "forget_truth_ratios"  # per forget row, kept in the report so forget quality can be recomputed


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
    forget: datasets.Dataset, prepare: Callable[[datasets.Dataset], datasets.Dataset]
) -> dict[str, datasets.Dataset]:
    """The paraphrased and perturbed answers of the forget rows, prepared as model inputs, or {} when the rows do not
    carry them. Every row needs the same number of perturbed answers (TOFU's format), so that the perturbed split
    reshapes into ``(rows, answers)``."""
    if not {"prompt", PARAPHRASED_COLUMN, PERTURBED_COLUMN} <= set(forget.column_names):
        return {}
    counts = sorted({len(answers) for answers in forget[PERTURBED_COLUMN]})
    if counts[0] == 0 or len(counts) > 1:
        raise ValueError(
            f"Every forget row needs the same number (at least 1) of `{PERTURBED_COLUMN}` to compute truth ratios; "
            f"found {counts}. Give every row the same number of wrong answers, or drop the column."
        )
    prompts, perturbed = forget["prompt"], forget[PERTURBED_COLUMN]
    return {
        PARAPHRASED_SPLIT: prepare(
            datasets.Dataset.from_dict({"prompt": prompts, "completion": forget[PARAPHRASED_COLUMN]})
        ),
        PERTURBED_SPLIT: prepare(
            datasets.Dataset.from_dict(
                {
                    "prompt": [prompt for prompt, answers in zip(prompts, perturbed, strict=True) for _ in answers],
                    "completion": [answer for answers in perturbed for answer in answers],
                }
            )
        ),
    }


def _texts(labels: np.ndarray, mask: np.ndarray, tokenizer: Any) -> list[str]:
    """The scored text of every row (its loss-carrying tokens), for the zlib score."""
    return [
        tokenizer.decode(row[keep].tolist(), skip_special_tokens=True) for row, keep in zip(labels, mask, strict=True)
    ]


def llm_report(
    predictions: Mapping[str, Any],
    completions: Mapping[str, Sequence[Completion] | None],
    tokenizer: Any,
    splits: Sequence[str],
) -> dict[str, Any]:
    """The LLM metrics of one model from its `TokenPredictions` per split and its greedy completions per split.

    Without a tokenizer (`tokenizer=None`, e.g. a `Trainer` built without `processing_class`) the metrics that read
    text -- ROUGE-L recall and the zlib score -- are left out; every other one needs token ids only.
    """
    report: dict[str, Any] = {}
    for name in splits:
        if name in predictions:
            split = predictions[name]
            report[f"{name}_answer_probability"] = float(np.mean(answer_probability(split.log_probs, split.mask)))
    for name, split_completions in completions.items():
        if split_completions:
            report[f"{name}_answer_accuracy"] = float(np.mean([c.matches for c in split_completions]))
            if tokenizer is None:
                continue
            generated = tokenizer.batch_decode([c.generated for c in split_completions], skip_special_tokens=True)
            references = tokenizer.batch_decode([c.reference for c in split_completions], skip_special_tokens=True)
            report[f"{name}_rouge_l_recall"] = float(np.mean(rouge_l_recall(generated, references)))
    if "forget" in predictions and "forget_validation" in predictions:
        scores = {}
        for name in ("forget", "forget_validation"):
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
        report.update(llm_membership_inference(scores["forget"], scores["forget_validation"]))
    if PARAPHRASED_SPLIT in predictions and PERTURBED_SPLIT in predictions:
        paraphrased, perturbed = predictions[PARAPHRASED_SPLIT], predictions[PERTURBED_SPLIT]
        paraphrased_probability = answer_probability(paraphrased.log_probs, paraphrased.mask)
        perturbed_probability = answer_probability(perturbed.log_probs, perturbed.mask)
        ratios = truth_ratio(paraphrased_probability, perturbed_probability.reshape(len(paraphrased_probability), -1))
        report["forget_truth_ratio"] = float(np.mean(ratios))
        report[TRUTH_RATIOS] = [float(value) for value in ratios]
    if GENERIC_SPLIT in predictions:
        report["generic_perplexity"] = perplexity(
            predictions[GENERIC_SPLIT].log_probs, predictions[GENERIC_SPLIT].mask
        )
    return report


def add_comparisons(reports: MutableMapping[str, dict[str, Any]]) -> None:
    """Add the metrics that compare two models: the generic perplexity relative to the original's
    (``generic_perplexity_ratio``), and, when a ``retrain`` report is present, PrivLeak per membership score
    (``privleak_<score>``, percent) and forget quality (KS p-value of the forget truth ratios) of every other model."""
    original, retrain = reports.get("original", {}), reports.get("retrain")
    for name, report in reports.items():
        if "generic_perplexity" in report and "generic_perplexity" in original:
            report["generic_perplexity_ratio"] = report["generic_perplexity"] / original["generic_perplexity"]
        if retrain is None or name == "retrain":
            continue
        for score in MEMBERSHIP_SCORES:
            key = f"auc_{score}"
            if key in report and key in retrain:
                report[f"privleak_{score}"] = privleak(report[key], retrain[key])
        if TRUTH_RATIOS in report and TRUTH_RATIOS in retrain:
            report["forget_quality"] = forget_quality(report[TRUTH_RATIOS], retrain[TRUTH_RATIOS])
