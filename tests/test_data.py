"""Forget / retain / test / forget-validation splits and the input checks (docs/design.md §4, §15)."""

import hashlib
import json

import datasets
import numpy as np
import pytest

from hf_scrub.data import check_disjoint, check_label_range, make_unlearning_splits

NAMES = ["cat", "dog", "bird"]


def toy(n_train=60, n_test=30, with_test=True):
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES), "uid": datasets.Value("string")}
    )

    def split(n, prefix):
        return datasets.Dataset.from_dict(
            {
                "text": [f"{prefix} example {i}" for i in range(n)],
                "label": [i % 3 for i in range(n)],
                "uid": [f"{prefix}-{i}" for i in range(n)],
            },
            features=features,
        )

    parts = {"train": split(n_train, "train")}
    if with_test:
        parts["test"] = split(n_test, "test")
    return datasets.DatasetDict(parts)


def labels(ds):
    return list(ds["label"])


def test_whole_class():
    splits = make_unlearning_splits(toy(), forget_classes=["dog"])
    assert splits.forget_type == "class" and splits.forget_classes == [1]
    assert len(splits.forget) == 20 and set(labels(splits.forget)) == {1}
    assert len(splits.retain) == 40 and 1 not in labels(splits.retain)
    assert len(splits.forget_validation) == 10 and set(labels(splits.forget_validation)) == {1}
    assert len(splits.test) == 30
    assert splits.forget_rows == list(range(1, 60, 3))
    digest = hashlib.sha256("\n".join(str(row) for row in range(1, 60, 3)).encode()).hexdigest()
    assert splits.describe() == {
        "forget_ids_sha256": digest,
        "type": "class",
        "num_examples": 20,
        "classes": [1],
        "class_names": ["dog"],
        "num_retain_examples": 40,
        "num_test_examples": 30,
        "num_forget_validation_examples": 10,
        "test_held_out_from_train": False,
    }
    # Class ids work too, as ints or digit strings (the CLI passes strings).
    assert make_unlearning_splits(toy(), forget_classes=["1"]).forget_rows == splits.forget_rows


def test_selective_is_seeded_and_within_classes():
    a = make_unlearning_splits(toy(), forget_classes=[2], num_forget_examples=5, seed=1)
    b = make_unlearning_splits(toy(), forget_classes=[2], num_forget_examples=5, seed=1)
    c = make_unlearning_splits(toy(), forget_classes=[2], num_forget_examples=5, seed=2)
    assert a.forget_type == "selective" and len(a.forget) == 5 and set(labels(a.forget)) == {2}
    assert a.forget_rows == b.forget_rows != c.forget_rows
    assert len(a.retain) == 55 and not set(a.forget["uid"]) & set(a.retain["uid"])
    assert set(labels(a.forget_validation)) == {2}
    anywhere = make_unlearning_splits(toy(), num_forget_examples=7, seed=0)
    assert len(anywhere.forget) == 7 and len(anywhere.forget_validation) == 30  # whole test set: same distribution


def test_indices_list_and_files(tmp_path):
    by_list = make_unlearning_splits(toy(), forget_indices=[4, 0, 4, 9])
    assert by_list.forget_type == "indices" and by_list.forget_rows == [0, 4, 9]
    assert by_list.forget["uid"] == ["train-0", "train-4", "train-9"]
    text_file = tmp_path / "forget.txt"
    text_file.write_text("# rows to delete\n0\n4\n9\n")
    json_file = tmp_path / "forget.json"
    json_file.write_text(json.dumps([9, 4, 0]))
    for path in (text_file, str(json_file)):
        assert make_unlearning_splits(toy(), forget_indices=path).forget_rows == [0, 4, 9]


def test_ids_from_an_id_column(tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text("train-3\ntrain-5\n")
    splits = make_unlearning_splits(toy(), forget_indices=ids, id_column="uid")
    assert splits.forget_type == "ids" and splits.forget_rows == ["train-3", "train-5"]
    with pytest.raises(ValueError, match="not in column 'uid'"):
        make_unlearning_splits(toy(), forget_indices=["train-3", "nope"], id_column="uid")


def test_boolean_column():
    data = toy()
    data["train"] = data["train"].add_column("delete_me", [i < 6 for i in range(60)])
    splits = make_unlearning_splits(data, forget_column="delete_me")
    assert splits.forget_type == "column" and splits.forget_rows == list(range(6))
    data["train"] = data["train"].add_column("not_bool", list(range(60)))
    with pytest.raises(ValueError, match="must be boolean"):
        make_unlearning_splits(data, forget_column="not_bool")


def test_ready_made_splits_and_their_overlap():
    data = toy()
    ready = datasets.DatasetDict(
        {"forget": data["train"].select(range(5)), "retain": data["train"].select(range(5, 60)), "test": data["test"]}
    )
    splits = make_unlearning_splits(ready)
    assert splits.forget_type == "splits" and len(splits.forget) == 5 and len(splits.retain) == 55
    overlapping = datasets.DatasetDict({**ready, "retain": data["train"].select(range(3, 60))})
    with pytest.raises(ValueError, match="2 retain example\\(s\\) are identical to forget examples"):
        make_unlearning_splits(overlapping)


def test_test_split_is_held_out_stratified_from_the_retain_side_when_absent():
    splits = make_unlearning_splits(toy(with_test=False), forget_classes=[0], test_size=0.2, seed=0)
    # Every training example of class 0 is forgotten; the 20 % hold-out comes from the 40 retain rows only,
    # stratified: 4 + 4 of the two remaining classes, none of the forgotten class.
    assert len(splits.forget) == 20 and len(splits.retain) == 32 and len(splits.test) == 8
    assert np.bincount(labels(splits.test), minlength=3).tolist() == [0, 4, 4]
    assert len(splits.forget_validation) == 0  # no unseen example of a wholly forgotten class exists
    uids = [set(split["uid"]) for split in (splits.forget, splits.retain, splits.test)]
    assert set.union(*uids) == set(toy(with_test=False)["train"]["uid"]) and sum(map(len, uids)) == 60
    assert splits.test_held_out_from_train and "The original model was trained on them" in splits.warnings[0]
    assert make_unlearning_splits(toy(), forget_classes=[0]).warnings == []


@pytest.mark.parametrize("how", ["indices", "indices_file", "column", "ids"])
def test_forget_request_is_resolved_before_the_hold_out(tmp_path, how):
    """Issue 9, case 1: without a test split every requested row is forgotten, none is retained or held out."""
    train = toy(with_test=False)["train"]
    requested = [2, 5, 11, 17, 23, 29, 31, 41, 47, 58]
    train = train.add_column("forget_me", [i in requested for i in range(60)])
    single = train  # a plain Dataset, as from a CSV / JSON file
    file = tmp_path / "forget.txt"
    file.write_text("\n".join(map(str, requested)) + "\n")
    kwargs = {
        "indices": {"forget_indices": requested},
        "indices_file": {"forget_indices": str(file)},
        "column": {"forget_column": "forget_me"},
        "ids": {"forget_indices": [f"train-{i}" for i in requested], "id_column": "uid"},
    }[how]
    splits = make_unlearning_splits(single, test_size=0.3, seed=1, **kwargs)
    forgotten = {f"train-{i}" for i in requested}
    assert set(splits.forget["uid"]) == forgotten and len(splits.forget) == 10
    assert not forgotten & set(splits.retain["uid"]) and not forgotten & set(splits.test["uid"])
    assert len(splits.retain) + len(splits.test) == 50 and len(splits.test) == 15
    expected = [f"train-{i}" for i in requested] if how == "ids" else requested
    assert splits.forget_rows == expected  # the digest records exactly the forgotten rows


def test_row_disjointness_is_checked_by_position():
    from hf_scrub.data import assert_disjoint_rows

    assert_disjoint_rows({"forget": np.array([0, 3]), "retain": np.array([1, 2]), "test": np.array([4])}, 5)
    with pytest.raises(RuntimeError, match="training row 3 is in both the test and the forget split"):
        assert_disjoint_rows({"forget": np.array([0, 3]), "retain": np.array([1]), "test": np.array([3])}, 5)


def test_retain_duplicates_of_forget_examples_are_dropped():
    data = toy()
    train = data["train"]
    data["train"] = datasets.concatenate_datasets([train, train.select([0, 0])])  # two exact copies of row 0
    splits = make_unlearning_splits(data, forget_indices=[0])
    assert len(splits.forget) == 1 and len(splits.retain) == 59  # 62 - 1 forgotten - 2 identical copies


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"forget_classes": ["fish"]}, r"Forget class 'fish' is not among the dataset's labels: 0 \(cat\)"),
        ({"forget_classes": [7]}, "Forget class 7 is not among"),
        ({"forget_classes": [0], "label_column": "y"}, "Column 'y' \\(set by label_column\\) is not in"),
        ({"forget_column": "missing"}, "Column 'missing' \\(set by forget_column\\)"),
        ({"forget_indices": []}, "forget set is empty"),
        ({"forget_indices": [60]}, r"row positions in \[0, 60\)"),
        ({"forget_classes": [0], "num_forget_examples": 21}, "only 20 training examples"),
        ({"forget_classes": [0], "forget_indices": [1]}, "Choose one way"),
        ({}, "Nothing to forget was specified"),
    ],
)
def test_bad_requests_are_refused_with_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_unlearning_splits(toy(), **kwargs)


def test_empty_selection_by_column():
    data = toy()
    data["train"] = data["train"].add_column("delete_me", [False] * 60)
    with pytest.raises(ValueError, match="forget set is empty"):
        make_unlearning_splits(data, forget_column="delete_me")


def test_label_range_and_disjointness_checks():
    train = toy()["train"]
    check_label_range(train, 3, "retain")
    with pytest.raises(ValueError, match="labels in \\[0, 2\\] but the model has num_labels=2"):
        check_label_range(train, 2, "retain")
    check_disjoint(train.select(range(3)), train.select(range(3, 60)))
    with pytest.raises(ValueError, match="1 retain example"):
        check_disjoint(train.select(range(3)), train.select(range(2, 60)))
