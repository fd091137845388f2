"""Forget / retain / test / forget-validation splits from `datasets`, and the input checks that guard them.

`make_unlearning_splits` turns a user's description of what to forget (whole classes, N random examples within
classes, explicit indices or ids, a boolean column, or ready-made splits) into the four splits an unlearning run
needs. Every check raises before any model is loaded or trained, with a message that says what to change.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

logger = logging.getLogger(__name__)

LABEL_COLUMN_CANDIDATES = ("labels", "label", "label_ids")


# ---- checks ----------------------------------------------------------------------------------------------------


def require_columns(dataset: Dataset, columns: dict[str, str | None], where: str = "the dataset") -> None:
    """Raise if a configured column is missing; `columns` maps the CLI/API option name to the column name."""
    for option, column in columns.items():
        if column is not None and column not in dataset.column_names:
            raise ValueError(
                f"Column {column!r} (set by {option}) is not in {where}; its columns are {dataset.column_names}. "
                f"Pass the right name with --{option} / {option}=..."
            )


def label_column_of(dataset: Dataset) -> str | None:
    return next((name for name in LABEL_COLUMN_CANDIDATES if name in dataset.column_names), None)


def label_values(dataset: Dataset, label_column: str) -> np.ndarray:
    """The raw label column as a numpy array (ignores any transform set on the dataset)."""
    return np.asarray(dataset.select_columns([label_column]).with_format("numpy")[label_column])


def dataset_labels(dataset: Any) -> np.ndarray:
    """The integer labels of a forget / retain set, read without running its transform where possible."""
    if isinstance(dataset, Dataset) and label_column_of(dataset) is not None:
        return label_values(dataset, label_column_of(dataset))
    return np.array([int(dataset[i]["labels"]) for i in range(len(dataset))])


def check_label_range(dataset: Any, num_labels: int, name: str) -> None:
    """Raise when a `datasets.Dataset` holds labels the model's head cannot output (label/num_labels mismatch)."""
    if not isinstance(dataset, Dataset):
        return
    column = label_column_of(dataset)
    if column is None or len(dataset) == 0:
        return
    labels = label_values(dataset, column)
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"The {name} set's {column!r} column holds {labels.dtype} values; SCRUB needs integer class ids. "
            "Encode it with `dataset.class_encode_column(...)`."
        )
    if labels.min() < 0 or labels.max() >= num_labels:
        raise ValueError(
            f"The {name} set has labels in [{labels.min()}, {labels.max()}] "
            f"but the model has num_labels={num_labels}. "
            "Use the model that was fine-tuned on this dataset (same label set), or fix the label column."
        )


def row_digests(dataset: Dataset, columns: Sequence[str] | None = None) -> list[bytes]:
    """One digest per row of the raw data (transforms ignored), to find identical examples across splits."""
    arrow = dataset.select_columns(list(columns)) if columns is not None else dataset
    digests = []
    for batch in arrow.with_format("arrow").iter(batch_size=1024):
        for row in batch.to_pylist():
            digests.append(hashlib.blake2b(pickle.dumps(tuple(row.values())), digest_size=16).digest())
    return digests


def check_disjoint(forget_dataset: Any, retain_dataset: Any) -> None:
    """Raise when a forget example also appears, identical, in the retain set (it could not be forgotten)."""
    if not (isinstance(forget_dataset, Dataset) and isinstance(retain_dataset, Dataset)):
        return
    columns = [c for c in forget_dataset.column_names if c in retain_dataset.column_names]
    forget_rows = set(row_digests(forget_dataset, columns))
    overlap = sum(digest in forget_rows for digest in row_digests(retain_dataset, columns))
    if overlap:
        raise ValueError(
            f"{overlap} retain example(s) are identical to forget examples: an example cannot be forgotten while it "
            "is also retained. Remove them from the retain set (make_unlearning_splits does this), or set "
            "check_forget_retain_overlap=False if the duplicates are intended."
        )


# ---- splits ----------------------------------------------------------------------------------------------------


@dataclass
class UnlearningSplits:
    """The data of one unlearning request.

    `forget_validation` holds unseen examples from the forget set's distribution (e.g. test examples of the
    forgotten classes): the reference for SCRUB+R's rewind and the "unseen" side of the membership attack.
    `forget_rows` are the forget examples' positions in the original training split (or their ids when an id
    column was used), so a request can be recorded (hashed) without storing the examples.
    `test_held_out_from_train` is True when the dataset had no test split and `test` was drawn from the retain side
    of the training split: the original model saw those examples, so they are not "unseen" (see `warnings`).
    """

    forget: Dataset
    retain: Dataset
    test: Dataset
    forget_validation: Dataset
    forget_type: str
    forget_classes: list[int] = field(default_factory=list)
    class_names: list[str] | None = None
    forget_rows: list[Any] = field(default_factory=list)
    test_held_out_from_train: bool = False
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """The `forget` block of `unlearning_results.json`."""
        info: dict[str, Any] = {"type": self.forget_type, "num_examples": len(self.forget)}
        if self.forget_classes:
            info["classes"] = self.forget_classes
            if self.class_names:
                info["class_names"] = [self.class_names[c] for c in self.forget_classes]
        info["forget_ids_sha256"] = forget_ids_digest(self.forget_rows)
        info["num_retain_examples"] = len(self.retain)
        info["num_test_examples"] = len(self.test)
        info["num_forget_validation_examples"] = len(self.forget_validation)
        info["test_held_out_from_train"] = self.test_held_out_from_train
        return info


def forget_ids_digest(forget_rows: Iterable[Any]) -> str:
    """SHA-256 of the sorted forget ids (or row positions), one per line: records *which* examples were forgotten
    so a request can be verified later, without storing the examples themselves."""
    return hashlib.sha256("\n".join(str(row) for row in sorted(forget_rows)).encode()).hexdigest()


def read_forget_list(path: str | Path) -> list[Any]:
    """Read indices or ids from a JSON list or a text file with one entry per line (ints stay ints).

    A malformed file is refused with its name and the position of the first bad entry.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the forget indices file {str(path)!r}: {error}.") from None
    if text.lstrip().startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"The forget indices file {str(path)!r} is not valid JSON (line {error.lineno}, column {error.colno}: "
                f"{error.msg}). Write a JSON list such as [3, 17, 42], or one index/id per line."
            ) from None
        if not isinstance(entries, list):
            raise ValueError(
                f"The forget indices file {str(path)!r} must hold a JSON list, got {type(entries).__name__}."
            )
        for position, entry in enumerate(entries):
            if isinstance(entry, bool) or not isinstance(entry, (int, str)):
                raise ValueError(
                    f"Entry {position} of the forget indices file {str(path)!r} is {entry!r}: each entry must be a "
                    "row index (integer) or an id (string)."
                )
    else:
        entries = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [int(e) if isinstance(e, str) and e.lstrip("-").isdigit() else e for e in entries]


def class_names_of(dataset: Dataset, label_column: str) -> list[str] | None:
    feature = dataset.features.get(label_column)
    return list(feature.names) if isinstance(feature, ClassLabel) else None


def resolve_classes(classes: Iterable[int | str], names: list[str] | None, present: Iterable[int]) -> list[int]:
    """Map class names or ids (ints or digit strings) to label ids; unknown classes raise with the valid choices."""
    present = sorted(set(int(p) for p in present))
    resolved = []
    for cls in classes:
        if names is not None and isinstance(cls, str) and cls in names:
            resolved.append(names.index(cls))
        elif isinstance(cls, int) or (isinstance(cls, str) and cls.lstrip("-").isdigit()):
            resolved.append(int(cls))
        else:
            resolved.append(None)
        if resolved[-1] is None or resolved[-1] not in present:
            choices = [f"{i} ({names[i]})" if names else str(i) for i in present]
            raise ValueError(f"Forget class {cls!r} is not among the dataset's labels: {', '.join(choices)}.")
    return sorted(set(resolved))


HELD_OUT_SEEN_WARNING = (
    "The dataset has no test split, so {num_test} examples were held out of the training split (from its retain "
    "side) as the test set. The original model was trained on them: they are not unseen data, so the membership "
    "attack (mia) and the forget-validation numbers compare the forget set with other training data and are not "
    "privacy evidence. Pass a split the model never saw with --test_split (or a DatasetDict with a 'test' split)."
)


def check_labels(dataset: Dataset, label_column: str, split_name: str) -> np.ndarray:
    """The label column as integer class ids; missing (None/NaN) or non-integer labels raise, naming the rows."""
    column = dataset.select_columns([label_column]).with_format("arrow")[label_column]
    missing = np.flatnonzero(np.asarray(column.is_null(nan_is_null=True)))
    if len(missing):
        raise ValueError(
            f"{len(missing)} row(s) of the {split_name} split have no label in column {label_column!r} (None or NaN), "
            f"e.g. rows {missing[:5].tolist()}. Drop or fill them before unlearning, e.g. "
            f"`dataset.filter(lambda row: row[{label_column!r}] is not None)`."
        )
    labels = label_values(dataset, label_column)
    if labels.dtype.kind == "f":
        fractional = np.flatnonzero(labels != np.round(labels))
        if len(fractional):
            raise ValueError(
                f"The {split_name} split's {label_column!r} column holds non-integer values, e.g. "
                f"{labels[fractional[:3]].tolist()} in rows {fractional[:3].tolist()}: labels must be class ids."
            )
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iu":
        raise ValueError(
            f"The {split_name} split's {label_column!r} column holds {labels.dtype} values; unlearning needs integer "
            "class ids. Encode it with `dataset.class_encode_column(...)`."
        )
    return labels


def check_texts(dataset: Dataset, text_column: str, split_name: str) -> None:
    """Refuse None or empty texts, naming the rows: they would tokenize to nothing (or crash the tokenizer)."""
    texts = dataset.select_columns([text_column]).with_format("arrow")[text_column].to_pylist()
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise ValueError(
            f"{len(bad)} row(s) of the {split_name} split have no text in column {text_column!r} (None, empty or "
            f"not a string), e.g. rows {bad[:5]}. Drop or fill them before unlearning."
        )


def check_images(dataset: Dataset, image_column: str, split_name: str) -> None:
    """Decode every image once, before any model is loaded, and name the first unreadable one."""
    from datasets import Image as ImageFeature
    from PIL import Image

    if not isinstance(dataset.features.get(image_column), ImageFeature):
        return
    raw = dataset.select_columns([image_column]).cast_column(image_column, ImageFeature(decode=False))
    for row, value in enumerate(raw[image_column]):
        try:
            if value is None:
                raise ValueError("no image")
            source = io.BytesIO(value["bytes"]) if value.get("bytes") is not None else value["path"]
            with Image.open(source) as image:
                image.load()
        except Exception as error:  # PIL raises many types for corrupt data
            raise ValueError(
                f"Row {row} of the {split_name} split has an unreadable image in column {image_column!r} "
                f"({type(error).__name__}: {error}). Remove or repair it before unlearning."
            ) from None


def assert_disjoint_rows(parts: dict[str, np.ndarray], num_rows: int) -> None:
    """The forget / retain / held-out positions in one split must not share a row. Raised, never `assert`ed, so
    it cannot be switched off (`python -O`): a forget row in the retain set would be trained on, not forgotten."""
    owner = np.full(num_rows, -1)
    names = list(parts)
    for index, name in enumerate(names):
        rows = parts[name]
        clash = rows[owner[rows] >= 0]
        if len(clash) or len(np.unique(rows)) != len(rows):
            other = names[owner[clash[0]]] if len(clash) else name
            raise RuntimeError(
                f"Internal error: training row {int(clash[0]) if len(clash) else int(rows[0])} is in both the {name} "
                f"and the {other} split. Nothing was trained; please report this."
            )
        owner[rows] = index


def _held_out_rows(
    rows: np.ndarray, labels: np.ndarray | None, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split `rows` into (kept, held out), stratified by label (when there are labels) when every class has at least
    two rows."""
    from sklearn.model_selection import train_test_split

    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be in (0, 1) to hold out a test split, got {test_size}.")
    if len(rows) < 2:
        raise ValueError(
            f"The dataset has no test split and only {len(rows)} retain example(s) to hold one out from. "
            "Pass a test split (--test_split) or more data."
        )
    stratify = None
    if labels is not None:
        counts = np.unique(labels[rows], return_counts=True)[1]
        stratify = labels[rows] if counts.min() >= 2 and round(test_size * len(rows)) >= len(counts) else None
    if stratify is None:
        logger.warning("The held-out test split is not stratified: some class has fewer than 2 retain examples.")
    kept, held_out = train_test_split(rows, test_size=test_size, random_state=seed, stratify=stratify)
    return np.sort(kept), np.sort(held_out)


def make_unlearning_splits(
    dataset: Dataset | DatasetDict,
    *,
    label_column: str | None = "label",
    forget_classes: Sequence[int | str] | None = None,
    num_forget_examples: int | None = None,
    forget_indices: Sequence[Any] | str | Path | None = None,
    id_column: str | None = None,
    forget_column: str | None = None,
    train_split: str = "train",
    test_split: str | None = "test",
    test_size: float = 0.2,
    seed: int = 42,
) -> UnlearningSplits:
    """Build forget / retain / test / forget-validation splits.

    Ways to say what to forget (pick one; a `DatasetDict` with "forget" and "retain" splits needs none):
    - `forget_classes` alone: every training example of those classes (class unlearning);
    - `forget_classes` + `num_forget_examples`: that many random examples (seeded) within those classes, or
      `num_forget_examples` alone: random examples from the whole training split (selective unlearning);
    - `forget_indices`: positions in the training split, or ids in `id_column` when it is given; a list, or the
      path of a JSON list / text file with one entry per line;
    - `forget_column`: a boolean column, True = forget.

    The forget request is resolved on the training split exactly as given, before anything else. The test split is
    `dataset[test_split]`; when absent, a stratified `test_size` share of the *retain* rows is held out (never a
    forget row), and `warnings` says that the original model saw it (docs/design.md §15). Forget, retain and
    held-out rows are then checked to be disjoint by position, and retain examples identical to a forget example are
    dropped (they would make the request contradictory).

    `label_column=None` is for data without class labels (a causal LM's text): examples are then forgotten by
    number, index, id, column or split, and the forget-validation examples are the whole test split (held-out text
    of the same distribution).
    """
    if label_column is None and forget_classes:
        raise ValueError(
            "forget_classes needs class labels, and this data has none (a causal LM's text). Say what to forget with "
            "forget_indices (--forget_indices_file), forget_column (--forget_column), num_forget_examples, or "
            "'forget' and 'retain' splits."
        )
    if num_forget_examples is not None and num_forget_examples < 1:
        raise ValueError(f"num_forget_examples must be a positive number of examples, got {num_forget_examples}.")
    forget_split_given = isinstance(dataset, DatasetDict) and "forget" in dataset and "retain" in dataset
    chosen = [
        name
        for name, value in (
            ("forget_classes/num_forget_examples", forget_classes or num_forget_examples),
            ("forget_indices", forget_indices is not None),
            ("forget_column", forget_column),
        )
        if value
    ]
    if len(chosen) > 1:
        raise ValueError(f"Choose one way to select the forget set, got {' and '.join(chosen)}.")
    if not chosen and not forget_split_given:
        raise ValueError(
            "Nothing to forget was specified: pass forget_classes, num_forget_examples, forget_indices or "
            "forget_column, or a DatasetDict with 'forget' and 'retain' splits."
        )

    if isinstance(dataset, DatasetDict):
        base_name = "retain" if forget_split_given and not chosen else train_split
        if base_name not in dataset:
            raise ValueError(f"Split {base_name!r} not found; the dataset has splits {list(dataset)}.")
        train = dataset[base_name]
        if test_split and test_split not in dataset and test_split != "test":
            raise ValueError(f"Split {test_split!r} (--test_split) not found; the dataset has splits {list(dataset)}.")
        test = dataset[test_split] if test_split and test_split in dataset else None
    else:
        base_name, train, test = train_split, dataset, None
    require_columns(train, {"label_column": label_column, "id_column": id_column, "forget_column": forget_column})
    if test is not None and label_column is not None:
        require_columns(test, {"label_column": label_column}, where="the test split")
        check_labels(test, label_column, test_split or "test")
    names = class_names_of(train, label_column) if label_column is not None else None
    labels = check_labels(train, label_column, base_name) if label_column is not None else None

    # 1. The forget request, on the training split as given.
    classes: list[int] = []
    if forget_split_given and not chosen:
        forget, forget_type = dataset["forget"], "splits"
        if label_column is not None:
            require_columns(forget, {"label_column": label_column}, where="the forget split")
            check_labels(forget, label_column, "forget")
        forget_positions = np.array([], dtype=np.int64)  # the forget split is not part of `train`
        forget_rows: list[Any] = list(range(len(forget)))
    else:
        if forget_classes or num_forget_examples:
            if forget_classes:
                classes = resolve_classes(forget_classes, names, labels)
                candidates = np.flatnonzero(np.isin(labels, classes))
            else:
                candidates = np.arange(len(train))
            if num_forget_examples:
                if num_forget_examples > len(candidates):
                    raise ValueError(
                        f"num_forget_examples={num_forget_examples} but only {len(candidates)} training examples "
                        "match the forget classes."
                    )
                rng = np.random.default_rng(seed)
                forget_positions = np.sort(rng.choice(candidates, size=num_forget_examples, replace=False))
                forget_type = "selective"
            else:
                forget_positions, forget_type = candidates, "class"
        elif forget_indices is not None:
            source = str(forget_indices) if isinstance(forget_indices, (str, Path)) else "forget_indices"
            entries = read_forget_list(forget_indices) if isinstance(forget_indices, (str, Path)) else forget_indices
            forget_positions = _rows_for_entries(train, list(entries), id_column, source)
            forget_type = "ids" if id_column else "indices"
        else:
            flags = np.asarray(train[forget_column])
            if flags.dtype != bool:
                raise ValueError(f"forget_column {forget_column!r} must be boolean, got {flags.dtype} values.")
            forget_positions, forget_type = np.flatnonzero(flags), "column"
        if len(forget_positions) == 0:
            raise ValueError("The forget set is empty: the selection matched no training example.")
        forget_positions = np.asarray(forget_positions, dtype=np.int64)
        forget_rows = (
            [train[id_column][int(r)] for r in forget_positions] if id_column else [int(r) for r in forget_positions]
        )
        forget = train.select(forget_positions)
    if len(forget) == 0:
        raise ValueError("The forget set is empty: there is nothing to unlearn.")

    # 2. The retain rows are everything else; a held-out test split, when needed, comes from them only.
    is_forget = np.zeros(len(train), dtype=bool)
    is_forget[forget_positions] = True
    retain_positions = np.flatnonzero(~is_forget)
    held_out_positions = np.array([], dtype=np.int64)
    warnings: list[str] = []
    if test is None:
        retain_positions, held_out_positions = _held_out_rows(retain_positions, labels, test_size, seed)
        test = train.select(held_out_positions)
        warnings.append(HELD_OUT_SEEN_WARNING.format(num_test=len(test)))
        logger.warning(warnings[-1])
    assert_disjoint_rows(
        {"forget": forget_positions, "retain": retain_positions, "test": held_out_positions}, len(train)
    )
    if len(retain_positions) == 0:
        raise ValueError(
            "The retain set is empty: the forget request covers the whole training split, and unlearning needs the "
            "data the model should keep. Forget fewer examples or classes."
        )
    retain = train.select(retain_positions)
    if forget_type == "splits":
        check_disjoint(forget, retain)
    else:
        retain = _drop_duplicates_of(retain, forget)

    if label_column is None:
        forget_validation = test
    else:
        validation_classes = classes or sorted(set(label_values(forget, label_column).tolist()))
        test_labels = label_values(test, label_column)
        forget_validation = test.select(np.flatnonzero(np.isin(test_labels, validation_classes)))
    if len(forget_validation) == 0:
        warnings.append(
            "The test split has no example of the forget set's classes, so nothing unseen from the forget set's "
            "distribution exists: the membership attack (mia), the forgotten classes' test accuracy and SCRUB+R's "
            "reference are not available. Pass a test split that holds such examples (--test_split)."
        )
        logger.warning(warnings[-1])
    return UnlearningSplits(
        forget=forget,
        retain=retain,
        test=test,
        forget_validation=forget_validation,
        forget_type=forget_type,
        forget_classes=classes,
        class_names=names,
        forget_rows=forget_rows,
        test_held_out_from_train=bool(len(held_out_positions)),
        warnings=warnings,
    )


def _rows_for_entries(train: Dataset, entries: list[Any], id_column: str | None, source: str) -> np.ndarray:
    if not entries:
        raise ValueError(f"The forget set is empty: {source} lists no indices/ids.")
    if id_column:
        position = {value: i for i, value in enumerate(train[id_column])}
        missing = [e for e in entries if e not in position]
        if missing:
            raise ValueError(
                f"{len(missing)} forget id(s) from {source} are not in column {id_column!r}, e.g. {missing[:5]}."
            )
        return np.array(sorted({position[e] for e in entries}))
    bad = [
        (i, e)
        for i, e in enumerate(entries)
        if isinstance(e, bool) or not isinstance(e, (int, np.integer)) or not 0 <= e < len(train)
    ]
    if bad:
        where = ", ".join(f"entry {i}: {e!r}" for i, e in bad[:5])
        raise ValueError(
            f"Forget indices must be row positions in [0, {len(train)}) of the training split; {source} has {where}. "
            "To select by an id column, pass id_column (--id_column)."
        )
    return np.array(sorted(set(int(e) for e in entries)))


def _drop_duplicates_of(retain: Dataset, forget: Dataset) -> Dataset:
    forget_rows = set(row_digests(forget))
    keep = [i for i, digest in enumerate(row_digests(retain)) if digest not in forget_rows]
    if len(keep) < len(retain):
        logger.warning("Dropped %d retain example(s) identical to forget examples.", len(retain) - len(keep))
        retain = retain.select(keep)
    return retain
