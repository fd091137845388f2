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
"""Interclass confusion: IC error and FGT for the label-noise (confused classes A <-> B) scenario."""

import datasets
import evaluate

from hf_scrub.metrics.functional import interclass_confusion

_CITATION = """\
@article{goel2022towards,
  title   = {Towards Adversarial Evaluations for Inexact Machine Unlearning},
  author  = {Goel, Shashwat and Prabhu, Ameya and Sanyal, Amartya and Lim, Ser-Nam and Torr, Philip and
             Kumaraguru, Ponnurangam},
  journal = {arXiv preprint arXiv:2201.06640},
  year    = {2022}
}
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
Interclass confusion (Goel et al., 2022), as used by SCRUB (Kurmanji et al., NeurIPS 2023) for removing
mislabelled data: the original model was trained with the labels of k examples swapped between classes A and
B, and those examples are the forget set. On clean test data, `ic_error` is the error on examples of A or B and
`fgt` the number of A -> B plus B -> A confusions; unlearning should bring both down to a retrained model's level.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class id per example (test set).
    references (`list` of `int`): True class id per example.
    class_a (`int`): One of the two confused classes.
    class_b (`int`): The other one.
Returns:
    ic_error (`float`): Fraction in [0, 1] of A or B examples that are misclassified (into any class).
    fgt (`float`): Number of A <-> B confusions, `ic_a_to_b + ic_b_to_a` (integer-valued).
    ic_a_to_b (`float`): Number of A examples predicted as B.
    ic_b_to_a (`float`): Number of B examples predicted as A.
Examples:
    >>> import hf_scrub.metrics
    >>> metric = hf_scrub.metrics.load_metric("interclass_confusion")
    >>> metric.compute(predictions=[0, 1, 1, 0, 2], references=[0, 0, 1, 1, 2], class_a=0, class_b=1)
    {'ic_error': 0.5, 'fgt': 2.0, 'ic_a_to_b': 1.0, 'ic_b_to_a': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class InterclassConfusion(evaluate.Metric):
    """Interclass-confusion metrics (thin wrapper over `hf_scrub.metrics.functional`)."""

    def _info(self):
        return evaluate.MetricInfo(
            module_type="metric",
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                }
            ),
            homepage="https://arxiv.org/abs/2201.06640",
            reference_urls=["https://arxiv.org/abs/2201.06640", "https://arxiv.org/abs/2302.09880"],
        )

    def _compute(self, predictions, references, class_a=None, class_b=None):
        if class_a is None or class_b is None:
            raise ValueError("Pass the two confused classes: `compute(..., class_a=<int>, class_b=<int>)`.")
        return interclass_confusion(predictions, references, class_a, class_b)
