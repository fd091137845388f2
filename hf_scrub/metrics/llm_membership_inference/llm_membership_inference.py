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
"""LLM membership inference: ROC AUC of the LOSS, zlib, Min-K% and Min-K%++ scores, forget set vs holdout."""

import datasets
import evaluate

from hf_scrub.metrics.llm import MEMBERSHIP_SCORES, llm_membership_inference, privleak

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
@inproceedings{carlini2021extracting,
  title     = {Extracting Training Data from Large Language Models},
  author    = {Carlini, Nicholas and Tram{\\`e}r, Florian and Wallace, Eric and Jagielski, Matthew and Herbert-Voss,
               Ariel and Lee, Katherine and Roberts, Adam and Brown, Tom and Song, Dawn and Erlingsson, {\\'U}lfar and
               Oprea, Alina and Raffel, Colin},
  booktitle = {USENIX Security Symposium},
  year      = {2021},
  eprint    = {2012.07805},
  archivePrefix = {arXiv}
}
@inproceedings{shi2024detecting,
  title     = {Detecting Pretraining Data from Large Language Models},
  author    = {Shi, Weijia and Ajith, Anirudh and Xia, Mengzhou and Huang, Yangsibo and Liu, Daogao and Blevins, Terra
               and Chen, Danqi and Zettlemoyer, Luke},
  booktitle = {International Conference on Learning Representations (ICLR)},
  year      = {2024},
  eprint    = {2310.16789},
  archivePrefix = {arXiv}
}
@article{zhang2024minkplusplus,
  title     = {Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language Models},
  author    = {Zhang, Jingyang and Sun, Jingwei and Yeats, Eric and Ouyang, Yang and Kuo, Martin and Zhang, Jianyi and
               Yang, Hao Frank and Li, Hai},
  journal   = {arXiv preprint arXiv:2404.02936},
  year      = {2024}
}
@article{shi2024muse,
  title     = {MUSE: Machine Unlearning Six-Way Evaluation for Language Models},
  author    = {Shi, Weijia and Lee, Jaechan and Huang, Yangsibo and Malladi, Sadhika and Zhao, Jieyu and Holtzman, Ari
               and Liu, Daogao and Zettlemoyer, Luke and Smith, Noah A. and Zhang, Chiyuan},
  journal   = {arXiv preprint arXiv:2407.06460},
  year      = {2024}
}
"""

_DESCRIPTION = """\
Membership inference against a causal LM after unlearning, on the convention of OpenUnlearning's and MUSE's code.
Each example has four scores, higher meaning "more likely trained on": LOSS (-mean NLL of the scored tokens), zlib
(-mean NLL / zlib-compressed length of the text), Min-K% (mean of the lowest 40 % token log-probabilities, the final
end-of-sequence prediction left out) and Min-K%++ (the same over log-probabilities standardised by the mean and
standard deviation of log p under the model's own next-token distribution); compute them with
`hf_scrub.metrics.membership_scores`. For every score this metric reports the ROC AUC (a fraction) of telling the
forget set (members, label 1) from a holdout set of the same distribution that was never trained on (label 0). With
the Retrain model's AUCs it also reports PrivLeak in percent, MUSE's ((1 - AUC) - (1 - AUC_retrain)) /
(1 - AUC_retrain) x 100: 0 = leaks like a model that never saw the forget set, negative = leaks more
(`privleak_convention="relative_auc"`: hf_scrub's earlier (AUC - AUC_retrain) / AUC_retrain x 100).

The forget and holdout sets have different sizes, so the forget scores are the per-example inputs (stream them with
`add_batch(**membership_scores(...))`) and the holdout scores are one `compute` keyword argument, a dict of lists.
"""

_KWARGS_DESCRIPTION = """
Args:
    loss, zlib, min_k, min_k_plus_plus (`list` of `float`): The forget set's per-example scores (all four; e.g.
        `membership_scores(...)` of the forget rows). Per-example inputs: can be accumulated with `add_batch`.
    holdout_scores (`dict` of `str` to `list` of `float`): The holdout set's scores under the same names (any
        length; a subset of the names restricts the AUCs to it). Keyword argument of `compute`.
    retrain_aucs (`dict` of `str` to `float`, *optional*): The Retrain model's result of this metric (its
        `auc_<score>` entries are used, other keys are ignored). Adds `privleak_<score>` keys.
    privleak_convention (`str`, *optional*): "muse" (default) or "relative_auc" (see `hf_scrub.metrics.privleak`).
Returns:
    auc_<score> (`float`): ROC AUC in [0, 1] of forget vs holdout by that score; 0.5 = chance.
    privleak_<score> (`float`): with `retrain_aucs`, MUSE's PrivLeak in percent; 0 = like Retrain, negative = still
        leaks more than Retrain (the original model: about -100).
Examples:
    >>> import hf_scrub.metrics
    >>> metric = hf_scrub.metrics.load_metric("llm_membership_inference")
    >>> forget = {"loss": [-0.1, -0.2, -0.3], "zlib": [-0.01, -0.02, -0.03], "min_k": [-0.5, -0.6, -0.7],
    ...           "min_k_plus_plus": [0.2, 0.1, 0.0]}
    >>> holdout = {"loss": [-1.0, -2.0], "zlib": [-0.1, -0.2], "min_k": [-3.0, -4.0], "min_k_plus_plus": [0.5, -1.0]}
    >>> result = metric.compute(**forget, holdout_scores=holdout, retrain_aucs={"auc_loss": 0.5})
    >>> result["auc_loss"], result["auc_min_k_plus_plus"], result["privleak_loss"]
    (1.0, 0.5, -100.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LlmMembershipInference(evaluate.Metric):
    """LLM membership-inference AUCs and PrivLeak (thin wrapper over `hf_scrub.metrics.llm`)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # evaluate stores per-example inputs in one Arrow table of equal-length columns, so the holdout group
            # travels as a `compute` keyword argument. float64 so that scores are not rounded on the way.
            features=datasets.Features({name: datasets.Value("float64") for name in MEMBERSHIP_SCORES}),
            homepage="https://arxiv.org/abs/2302.09880",
            reference_urls=["https://arxiv.org/abs/2310.16789", "https://arxiv.org/abs/2404.02936"],
        )

    def _compute(self, holdout_scores=None, retrain_aucs=None, privleak_convention="muse", **forget_scores):
        if holdout_scores is None:
            raise ValueError(
                "`holdout_scores` is missing: call `compute(..., holdout_scores={score name: list of scores})` with "
                "the model's membership scores on held-out rows of the forget set's distribution."
            )
        results = llm_membership_inference(forget_scores, holdout_scores)
        if retrain_aucs is not None:
            shared = [key for key in results if key in retrain_aucs]
            if not shared:
                raise ValueError(
                    f"`retrain_aucs` has none of the keys {list(results)}: pass the Retrain model's result of this "
                    "metric (its `auc_<score>` entries)."
                )
            for key in shared:
                value = privleak(results[key], retrain_aucs[key], privleak_convention)
                results[f"privleak_{key.removeprefix('auc_')}"] = value
        return results
