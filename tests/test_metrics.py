"""Tests for hf_scrub.metrics: known answers for the functional API and offline `evaluate` modules."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
import torch
import yaml
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedShuffleSplit, cross_val_score

import hf_scrub.metrics as metrics
from hf_scrub.metrics import (
    METRIC_NAMES,
    MIN_EXAMPLES_PER_GROUP,
    interclass_confusion,
    load_metric,
    membership_inference_attack,
    metric_path,
    per_example_cross_entropy,
    unlearning_accuracy,
)

# --------------------------------------------------------------------------------------------------------------
# unlearning_accuracy


def test_unlearning_accuracy_hand_count():
    # forget: 3 examples, 1 correct; retain: 4, 3 correct; forget_validation: 2, 2 correct;
    # test: 5 examples, classes 0 (forgotten) x2 -> 0 correct, classes 1/2 x3 -> 2 correct.
    predictions = [1, 0, 2, 1, 1, 2, 0, 0, 1, 1, 2, 1, 2, 0]
    references = [0, 0, 0, 1, 1, 2, 2, 0, 1, 0, 0, 1, 2, 2]
    splits = ["forget"] * 3 + ["retain"] * 4 + ["forget_validation"] * 2 + ["test"] * 5
    result = unlearning_accuracy(predictions, references, splits, forget_classes=[0])
    assert result == pytest.approx(
        {
            "forget_accuracy": 1 / 3,
            "retain_accuracy": 3 / 4,
            "test_accuracy": 2 / 5,
            "forget_validation_accuracy": 2 / 2,
            "test_forget_classes_accuracy": 0 / 2,
            "test_retain_classes_accuracy": 2 / 3,
        }
    )
    # Keys follow the documented split order, whatever the input order.
    assert list(result) == [
        "forget_accuracy",
        "retain_accuracy",
        "test_accuracy",
        "forget_validation_accuracy",
        "test_forget_classes_accuracy",
        "test_retain_classes_accuracy",
    ]


def test_unlearning_accuracy_reports_only_present_splits_and_accepts_arrays():
    result = unlearning_accuracy(
        np.array([3, 3, 1]), torch.tensor([3, 2, 1]), np.array(["retain", "retain", "test"]), forget_classes=None
    )
    assert result == pytest.approx({"retain_accuracy": 0.5, "test_accuracy": 1.0})
    # forget_classes without a test split: nothing to split, no class keys.
    assert set(unlearning_accuracy([1], [1], ["forget"], forget_classes=[1])) == {"forget_accuracy"}
    # Whole-number floats (e.g. after JSON) are accepted as class ids.
    assert unlearning_accuracy([1.0, 2.0], [1, 1], ["test", "test"]) == {"test_accuracy": 0.5}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"predictions": [0, 1], "references": [0], "splits": ["test", "test"]}, "lengths"),
        ({"predictions": [0], "references": [0], "splits": ["validation"]}, r"Unknown split.*validation"),
        ({"predictions": [], "references": [], "splits": []}, "No examples"),
        ({"predictions": [[0.1, 0.9]], "references": [1], "splits": ["test"]}, "argmax"),
        ({"predictions": [0.5], "references": [1], "splits": ["test"]}, "integer class ids"),
        (
            {"predictions": [0], "references": [0], "splits": ["test"], "forget_classes": []},
            "forget_classes` is empty",
        ),
        ({"predictions": [0], "references": [0], "splits": ["test"], "forget_classes": [3]}, "inside forget_classes"),
        ({"predictions": [0], "references": [0], "splits": ["test"], "forget_classes": [0]}, "outside forget_classes"),
    ],
)
def test_unlearning_accuracy_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        unlearning_accuracy(**kwargs)


# --------------------------------------------------------------------------------------------------------------
# membership_inference_attack


def _reference_attack(forget, test, seed, n_splits=5):
    """The attack written out step by step with cross_val_score, as docs/design.md §3 specifies it."""
    forget, test = np.asarray(forget, dtype=np.float64), np.asarray(test, dtype=np.float64)
    rng = np.random.default_rng(seed)
    n = min(len(forget), len(test))
    if len(forget) > n:
        forget = rng.choice(forget, size=n, replace=False)
    elif len(test) > n:
        test = rng.choice(test, size=n, replace=False)
    x = np.clip(np.concatenate([forget, test]), -100, 100).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    cv = StratifiedShuffleSplit(n_splits=n_splits, random_state=seed)
    acc = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy").mean() * 100
    auc = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="roc_auc").mean() * 100
    return {"mia": acc, "mia_auc": auc}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mia_is_chance_when_losses_share_a_distribution(seed):
    rng = np.random.default_rng(100 + seed)
    result = membership_inference_attack(rng.exponential(1.0, 2000), rng.exponential(1.0, 2000), seed=seed)
    assert set(result) == {"mia", "mia_auc"}
    assert 45.0 <= result["mia"] <= 55.0
    assert 45.0 <= result["mia_auc"] <= 55.0


def test_mia_detects_perfectly_separated_losses():
    rng = np.random.default_rng(0)
    forget = rng.normal(0.01, 0.002, 300)
    test = rng.normal(3.0, 0.3, 300)
    result = membership_inference_attack(forget, test, seed=0)
    assert result["mia"] > 95.0
    assert result["mia_auc"] > 95.0
    assert result["mia"] <= 100.0 and result["mia_auc"] <= 100.0


def test_mia_matches_step_by_step_reference_including_subsampling():
    rng = np.random.default_rng(3)
    forget, test = rng.gamma(2.0, 0.5, 80), rng.gamma(2.2, 0.5, 500)  # test is subsampled
    for seed in (0, 7):
        assert membership_inference_attack(forget, test, seed=seed) == pytest.approx(
            _reference_attack(forget, test, seed)
        )
    # ... and the other way round (forget is subsampled), with a non-default n_splits.
    assert membership_inference_attack(test, forget, seed=1, n_splits=3) == pytest.approx(
        _reference_attack(test, forget, seed=1, n_splits=3)
    )


def test_mia_subsampling_keeps_chance_at_50_for_unequal_sizes():
    # Without balancing, predicting "test" for everything would score 6000 / 6300 = 95 %.
    rng = np.random.default_rng(5)
    result = membership_inference_attack(rng.exponential(1.0, 300), rng.exponential(1.0, 6000), seed=0)
    assert 35.0 <= result["mia"] <= 65.0
    assert 35.0 <= result["mia_auc"] <= 65.0


def test_mia_is_deterministic_for_a_seed_and_depends_on_it():
    rng = np.random.default_rng(11)
    forget, test = rng.exponential(1.0, 120), rng.exponential(1.2, 700)
    first = membership_inference_attack(forget, test, seed=4)
    assert membership_inference_attack(list(forget), torch.tensor(test), seed=4) == first
    others = [membership_inference_attack(forget, test, seed=s) for s in (5, 6, 8)]
    assert any(other != first for other in others)


def test_mia_clips_infinite_losses():
    forget = np.full(20, 0.01)
    test = np.concatenate([np.full(19, 5.0), [np.inf]])
    result = membership_inference_attack(forget, test, seed=0)
    assert result["mia"] == pytest.approx(100.0)
    # inf is the same as 100 after clipping, and -inf the same as -100.
    assert result == membership_inference_attack(forget, np.concatenate([np.full(19, 5.0), [100.0]]), seed=0)
    assert membership_inference_attack(np.concatenate([forget[:-1], [-np.inf]]), test) == membership_inference_attack(
        np.concatenate([forget[:-1], [-100.0]]), test
    )


def test_mia_minimum_group_size_is_enough():
    # At the minimum size the attack still gives the answers it must: 2 x 6 examples, 10 % test size -> 2 test
    # examples, one per group. The test group is larger (n + 10), so it must be subsampled to n for chance to be 50.
    rng = np.random.default_rng(0)
    n = MIN_EXAMPLES_PER_GROUP
    assert n == 6  # ceil(0.2 * n) >= 2 first holds at n = 6 (see its definition)
    separable = membership_inference_attack(rng.uniform(0.0, 0.1, n), rng.uniform(5.0, 6.0, n + 10), seed=0)
    assert separable == {"mia": 100.0, "mia_auc": 100.0}  # one threshold tells the groups apart
    # Identical losses: nothing to learn. Balanced groups (after subsampling) give exactly 50; without it, the
    # 16-vs-6 majority class would be predicted everywhere and score about 16/22.
    identical = membership_inference_attack(np.ones(n), np.ones(n + 10), seed=0)
    assert identical == {"mia": 50.0, "mia_auc": 50.0}


@pytest.mark.parametrize(
    ("forget", "test", "kwargs", "match"),
    [
        ([0.1] * 10 + [float("nan")], [1.0] * 11, {}, "NaN"),
        ([0.1] * 11, [1.0] * 11 + [float("nan")], {}, "test_losses` contains 1 NaN"),
        ([0.1] * (MIN_EXAMPLES_PER_GROUP - 1), [1.0] * 100, {}, f"at least {MIN_EXAMPLES_PER_GROUP} forget"),
        ([0.1] * 100, [], {}, r"got 100 forget, 0 test"),
        ([[0.1, 0.2]] * 10, [1.0] * 10, {}, "one-dimensional"),
        ([0.1] * 20, [1.0] * 20, {"n_splits": 1}, "n_splits"),
    ],
)
def test_mia_errors(forget, test, kwargs, match):
    with pytest.raises(ValueError, match=match):
        membership_inference_attack(forget, test, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# interclass_confusion


def test_interclass_confusion_hand_built_case():
    # A = 2, B = 5. A examples: 2->2, 2->5, 2->5, 2->0 ; B examples: 5->5, 5->2, 5->5 ; others ignored.
    references = [2, 2, 2, 2, 5, 5, 5, 0, 1, 0]
    predictions = [2, 5, 5, 0, 5, 2, 5, 5, 2, 1]
    result = interclass_confusion(predictions, references, class_a=2, class_b=5)
    assert result == pytest.approx({"ic_error": 4 / 7, "fgt": 3.0, "ic_a_to_b": 2.0, "ic_b_to_a": 1.0})
    assert all(isinstance(value, float) for value in result.values())
    # Symmetric in the two classes, apart from the direction counts.
    swapped = interclass_confusion(predictions, references, class_a=5, class_b=2)
    assert swapped == pytest.approx({"ic_error": 4 / 7, "fgt": 3.0, "ic_a_to_b": 1.0, "ic_b_to_a": 2.0})


@pytest.mark.parametrize(
    ("predictions", "references", "class_a", "class_b", "match"),
    [
        ([0, 1], [0], 0, 1, "same length"),
        ([], [], 0, 1, "No examples"),
        ([0, 1], [0, 1], 1, 1, "two different classes"),
        ([0, 1], [0, 1], 2, 3, "No example has reference 2 or 3"),
    ],
)
def test_interclass_confusion_errors(predictions, references, class_a, class_b, match):
    with pytest.raises(ValueError, match=match):
        interclass_confusion(predictions, references, class_a, class_b)


# --------------------------------------------------------------------------------------------------------------
# per_example_cross_entropy


def test_per_example_cross_entropy_matches_manual_log_softmax():
    logits = np.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0], [1.0, 3.0, 0.5]])
    labels = np.array([0, 2, 1])
    expected = -(logits - np.log(np.exp(logits).sum(axis=1, keepdims=True)))[np.arange(3), labels]
    losses = per_example_cross_entropy(logits, labels)
    assert losses.dtype == np.float32 and losses.shape == (3,)
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    assert losses[1] == pytest.approx(np.log(3.0))
    # torch in (half precision, with grad): same values, float32 numpy out.
    torch_logits = torch.tensor(logits, dtype=torch.float16, requires_grad=True)
    out = per_example_cross_entropy(torch_logits, torch.tensor(labels))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-3)


def test_per_example_cross_entropy_shape_errors():
    with pytest.raises(ValueError, match="num_examples, num_classes"):
        per_example_cross_entropy(np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="labels"):
        per_example_cross_entropy(np.zeros((2, 3)), np.zeros(3, dtype=np.int64))


# --------------------------------------------------------------------------------------------------------------
# evaluate modules, loaded offline


def test_metric_names_match_the_packaged_folders():
    folders = {path.parent.name for path in metric_path(METRIC_NAMES[0]).parent.glob("*/*.py")}
    assert folders == set(METRIC_NAMES)
    for name in METRIC_NAMES:
        folder = metric_path(name)
        assert (folder / f"{name}.py").is_file()
        assert not (folder / "__init__.py").exists()
        card = (folder / "README.md").read_text(encoding="utf-8")
        header = yaml.safe_load(card.split("---")[1])
        assert header["title"] and header["description"]
        assert {"evaluate", "metric", "machine-unlearning"} <= set(header["tags"])
        for section in ("## Metric Description", "## How to Use", "### Inputs", "## Output Values", "## Citation"):
            assert section in card, (name, section)
        assert "2302.09880" in card and "evaluate.load(" in card and "hf_scrub.load_metric(" in card


@pytest.mark.parametrize("name", ["accuracy", "unlearning-accuracy", "", "../metrics"])
def test_unknown_metric_names_are_rejected(name):
    with pytest.raises(ValueError, match="available metrics: unlearning_accuracy, membership_inference"):
        metric_path(name)
    with pytest.raises(ValueError, match="Unknown metric"):
        load_metric(name)


def test_evaluate_modules_compute_the_functional_values(offline_evaluate):
    evaluate = offline_evaluate
    rng = np.random.default_rng(0)

    predictions = rng.integers(0, 4, 60)
    references = rng.integers(0, 4, 60)
    splits = rng.choice(["forget", "retain", "test", "forget_validation"], 60)
    expected = unlearning_accuracy(predictions, references, splits, forget_classes=[1])
    module = evaluate.load(str(metric_path("unlearning_accuracy")))
    assert module.compute(
        predictions=predictions.tolist(), references=references.tolist(), splits=splits.tolist(), forget_classes=[1]
    ) == pytest.approx(expected)
    for start in range(0, 60, 25):  # streamed in batches: same result
        stop = start + 25
        module.add_batch(
            predictions=predictions[start:stop], references=references[start:stop], splits=splits[start:stop]
        )
    assert module.compute(forget_classes=[1]) == pytest.approx(expected)

    forget_losses, test_losses = rng.gamma(2.0, 0.4, 90), rng.gamma(2.0, 0.6, 250)
    module = evaluate.load(str(metric_path("membership_inference")))
    assert module.compute(forget_losses=forget_losses, test_losses=test_losses, seed=3) == pytest.approx(
        membership_inference_attack(forget_losses, test_losses, seed=3)
    )
    module.add_batch(forget_losses=forget_losses[:40])
    module.add_batch(forget_losses=forget_losses[40:])
    assert module.compute(test_losses=test_losses, seed=3, n_splits=4) == pytest.approx(
        membership_inference_attack(forget_losses, test_losses, seed=3, n_splits=4)
    )
    with pytest.raises(ValueError, match="test_losses` is missing"):
        module.compute(forget_losses=forget_losses)

    module = evaluate.load(str(metric_path("interclass_confusion")))
    assert module.compute(
        predictions=predictions.tolist(), references=references.tolist(), class_a=1, class_b=3
    ) == pytest.approx(interclass_confusion(predictions, references, 1, 3))
    with pytest.raises(ValueError, match="class_a=<int>"):
        module.compute(predictions=[0], references=[0])


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_load_metric_and_its_documented_examples(offline_evaluate, name):
    module = load_metric(name, keep_in_memory=True)
    assert isinstance(module, offline_evaluate.EvaluationModule)
    assert module.name == name
    assert "2302.09880" in module.citation
    # The examples in the module's inputs description (shown by help() and on the Hub) are run as doctests.
    test = doctest.DocTestParser().get_doctest(module.inputs_description, {}, name, None, 0)
    assert test.examples
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


def test_package_reexports_functional_api():
    import hf_scrub.metrics.functional as functional

    # Every functional name is re-exported as the very same object (not a copy or a wrapper) ...
    assert set(functional.__all__) <= set(metrics.__all__)
    for name in functional.__all__:
        assert getattr(metrics, name) is getattr(functional, name), name
    # ... and the package's own names are what they say: one `evaluate` module folder per metric name.
    import hf_scrub.metrics.llm as llm

    own = set(metrics.__all__) - set(functional.__all__) - set(llm.__all__)
    assert own == {"METRIC_NAMES", "load_metric", "metric_path"}
    folders = {path.parent.name for path in metric_path("unlearning_accuracy").parent.glob("*/*.py")}
    assert set(metrics.METRIC_NAMES) == folders
    assert folders == {"unlearning_accuracy", "membership_inference", "interclass_confusion"} | {
        "llm_membership_inference",
        "truth_ratio",
    }
    for name in metrics.METRIC_NAMES:
        assert (metric_path(name) / f"{name}.py").is_file() and (metric_path(name) / "README.md").is_file()
    assert metrics.SPLIT_NAMES == ("forget", "retain", "test", "forget_validation")
    assert metrics.unlearning_accuracy([1, 0], [1, 1], ["forget", "forget"]) == {"forget_accuracy": 0.5}
