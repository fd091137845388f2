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
"""Membership inference: the SCRUB paper's loss-based attack, forget set vs unseen test data."""

import datasets
import evaluate

from hf_scrub.metrics.functional import membership_inference_attack

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
"""

_DESCRIPTION = """\
Loss-based membership inference attack from SCRUB (Kurmanji et al., NeurIPS 2023). An attacker sees the
model's per-example cross-entropy on the forget set (label 1) and on unseen test examples of the forget set's
classes (label 0), balanced by seeded subsampling of the larger group, and fits a logistic regression on the
loss (clipped to [-100, 100]) under 5-fold StratifiedShuffleSplit cross-validation. `mia` is the mean attack
accuracy and `mia_auc` the mean ROC AUC, both in percent; 50 means the attacker cannot tell forgotten examples
from unseen ones, which is what a model retrained without the forget set gets in selective unlearning.

The two groups have different sizes, so only `forget_losses` is a per-example input (it can be streamed with
`add_batch`); `test_losses` is a keyword argument of `compute`, which evaluate passes through to the metric.
"""

_KWARGS_DESCRIPTION = """
Args:
    forget_losses (`list` of `float`): Per-example cross-entropy of the model on the forget set. Per-example
        input: can also be accumulated with `add_batch(forget_losses=...)`.
    test_losses (`list` of `float`): Per-example cross-entropy on unseen test examples of the forget set's
        classes. Keyword argument of `compute` (any length; not accumulated by `add_batch`).
    seed (`int`, *optional*, defaults to 0): Seeds the subsampling and the cross-validation splits.
    n_splits (`int`, *optional*, defaults to 5): Number of cross-validation splits.
Returns:
    mia (`float`): Mean attack accuracy in percent, in [0, 100]; 50 = chance.
    mia_auc (`float`): Mean attack ROC AUC in percent over the same splits, in [0, 100]; 50 = chance.
Examples:
    >>> import numpy as np
    >>> import hf_scrub.metrics
    >>> metric = hf_scrub.metrics.load_metric("membership_inference")
    >>> rng = np.random.default_rng(0)
    >>> result = metric.compute(
    ...     forget_losses=rng.uniform(0.0, 0.1, 200).tolist(), test_losses=rng.uniform(2.0, 4.0, 300).tolist(), seed=0
    ... )
    >>> result["mia"]
    100.0
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MembershipInference(evaluate.Metric):
    """Loss-based membership inference attack (thin wrapper over `hf_scrub.metrics.functional`)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            # evaluate stores per-example inputs in one Arrow table, so all features need the same length; the
            # test group's losses therefore travel as a `compute` keyword argument (evaluate forwards keyword
            # arguments that are not features to `_compute`). float64 so that values are not rounded on the way.
            features=datasets.Features({"forget_losses": datasets.Value("float64")}),
            homepage="https://arxiv.org/abs/2302.09880",
            reference_urls=["https://arxiv.org/abs/2302.09880"],
        )

    def _compute(self, forget_losses, test_losses=None, seed=0, n_splits=5):
        if test_losses is None:
            raise ValueError(
                "`test_losses` is missing: call `compute(forget_losses=..., test_losses=...)` with the model's "
                "per-example losses on unseen test examples of the forget set's classes."
            )
        return membership_inference_attack(forget_losses, test_losses, seed=seed, n_splits=n_splits)
