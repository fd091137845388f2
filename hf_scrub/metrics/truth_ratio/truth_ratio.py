# Copyright 2025 The hf_scrub contributors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""TOFU truth ratio of a causal LM on the forget set, and forget quality against the Retrain model."""

import datasets
import evaluate

from hf_scrub.metrics.llm import forget_quality, truth_ratio, truth_ratio_aggregate

_CITATION = """\
@inproceedings{kurmanji2023towards,
  title     = {Towards Unbounded Machine Unlearning},
  author    = {Kurmanji, Meghdad and Triantafillou, Peter and Hayes, Jamie and Triantafillou, Eleni},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  volume    = {36},
  year      = {2023},
  eprint    = {2302.09880},
  archivePrefix = {arXiv}
}
@article{maini2024tofu,
  title     = {TOFU: A Task of Fictitious Unlearning for LLMs},
  author    = {Maini, Pratyush and Feng, Zhili and Schwarzschild, Avi and Lipton, Zachary C. and Kolter, J. Zico},
  journal   = {arXiv preprint arXiv:2401.06121},
  year      = {2024}
}
"""

_DESCRIPTION = """\
Truth ratio from TOFU (Maini et al., 2024), on the convention of TOFU's and OpenUnlearning's code. For each question,
the model's length-normalised probability exp(-mean NLL) of the correct answer (a paraphrase of it on the forget and
retain sets) is compared with the geometric mean of its probabilities of wrong answers of the same form:
R = exp(mean over wrong answers of log P(wrong)) / P(correct). Near 0 the model still knows the answer, around 1 it
cannot tell it from wrong ones. `truth_ratios` are the per-question values and `truth_ratio` TOFU's aggregate of
them: mean(min(R, 1 / R)) on a forget set (1 = indifferent, the goal), mean(max(0, 1 - R)) with
`aggregate="true_better"` on the sets the model should keep. Given the Retrain model's `truth_ratios`,
`forget_quality` is the p-value of the two-sample Kolmogorov-Smirnov test between the two sets of ratios
(scipy.stats.ks_2samp); p >= 0.05 reads as "indistinguishable from a model that never saw the forget set".
`mean="arithmetic"` and `aggregate="mean"` give hf_scrub's earlier formulas (mean of P(wrong), mean of R).
"""

_KWARGS_DESCRIPTION = """
Args:
    paraphrased_probability (`list` of `float`): Per question, the probability of the paraphrased correct answer
        (`hf_scrub.metrics.answer_probability`). Per-example input.
    perturbed_probabilities (`list` of `list` of `float`): Per question, the probabilities of its wrong answers,
        the same number for every question. Per-example input.
    retrain_truth_ratios (`list` of `float`, *optional*): The Retrain model's `truth_ratios` on the same questions.
        Keyword argument of `compute`; adds `forget_quality`.
    mean (`str`, *optional*): "geometric" (default, TOFU's code) or "arithmetic" mean of the wrong answers.
    aggregate (`str`, *optional*): "closer_to_1" (default, TOFU's forget aggregate), "true_better" (retain,
        real authors, world facts) or "mean".
Returns:
    truth_ratio (`float`): TOFU's aggregate of the questions' truth ratios.
    truth_ratios (`list` of `float`): Truth ratio of every question (what `retrain_truth_ratios` takes).
    forget_quality (`float`): With `retrain_truth_ratios`, the KS test p-value in [0, 1]; >= 0.05 = like Retrain.
Examples:
    >>> import hf_scrub.metrics
    >>> metric = hf_scrub.metrics.load_metric("truth_ratio")
    >>> result = metric.compute(
    ...     paraphrased_probability=[0.5, 0.2], perturbed_probabilities=[[0.1, 0.4], [0.4, 0.4]],
    ...     retrain_truth_ratios=[0.4, 2.0],
    ... )
    >>> [round(value, 6) for value in result["truth_ratios"]], round(result["truth_ratio"], 6)
    ([0.4, 2.0], 0.45)
    >>> result["forget_quality"]
    1.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TruthRatio(evaluate.Metric):
    """TOFU truth ratio and forget quality (thin wrapper over `hf_scrub.metrics.llm`)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # float64 so that probabilities are not rounded on the way.
            features=datasets.Features(
                {
                    "paraphrased_probability": datasets.Value("float64"),
                    "perturbed_probabilities": datasets.Sequence(datasets.Value("float64")),
                }
            ),
            homepage="https://arxiv.org/abs/2302.09880",
            reference_urls=["https://arxiv.org/abs/2401.06121"],
        )

    def _compute(
        self,
        paraphrased_probability,
        perturbed_probabilities,
        retrain_truth_ratios=None,
        mean="geometric",
        aggregate="closer_to_1",
    ):
        ratios = truth_ratio(paraphrased_probability, perturbed_probabilities, mean)
        results = {"truth_ratio": truth_ratio_aggregate(ratios, aggregate), "truth_ratios": ratios.tolist()}
        if retrain_truth_ratios is not None:
            results["forget_quality"] = forget_quality(ratios, retrain_truth_ratios)
        return results
