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
"""Unlearning accuracy: accuracy per split (forget / retain / test / forget-validation) in one pass."""

import datasets
import evaluate

from hf_scrub.metrics.functional import unlearning_accuracy

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
Accuracy of one model on each unlearning split, from one stream of (prediction, reference, split) triples.
The forget split is what the model should forget, the retain split what it must keep, the test split measures
generalisation and the forget-validation split (held-out data distributed like the forget set) is SCRUB+R's
reference. For class unlearning, passing `forget_classes` also reports test accuracy on the forgotten classes
and on the remaining classes separately. Accuracies are fractions in [0, 1]; error = 1 - accuracy.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): Predicted class id per example.
    references (`list` of `int`): True class id per example.
    splits (`list` of `str`): Split of each example: "forget", "retain", "test" or "forget_validation".
    forget_classes (`list` of `int`, *optional*): Forgotten class ids (class unlearning). Adds
        `test_forget_classes_accuracy` and `test_retain_classes_accuracy` when a "test" split is present.
Returns:
    `<split>_accuracy` (`float`): Accuracy in [0, 1] for every split present.
    test_forget_classes_accuracy (`float`): Test accuracy on examples of `forget_classes` (if given).
    test_retain_classes_accuracy (`float`): Test accuracy on the other classes (if given).
Examples:
    >>> import hf_scrub.metrics
    >>> metric = hf_scrub.metrics.load_metric("unlearning_accuracy")
    >>> results = metric.compute(
    ...     predictions=[0, 1, 1, 2, 2, 1],
    ...     references=[0, 0, 1, 2, 2, 0],
    ...     splits=["forget", "forget", "retain", "retain", "test", "test"],
    ...     forget_classes=[0],
    ... )
    >>> results["forget_accuracy"], results["test_forget_classes_accuracy"], results["test_retain_classes_accuracy"]
    (0.5, 0.0, 1.0)
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class UnlearningAccuracy(evaluate.Metric):
    """Per-split accuracy for machine unlearning (thin wrapper over `hf_scrub.metrics.functional`)."""

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
                    "splits": datasets.Value("string"),
                }
            ),
            homepage="https://arxiv.org/abs/2302.09880",
            reference_urls=["https://arxiv.org/abs/2302.09880"],
        )

    def _compute(self, predictions, references, splits, forget_classes=None):
        return unlearning_accuracy(predictions, references, splits, forget_classes=forget_classes)
