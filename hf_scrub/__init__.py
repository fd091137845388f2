"""hf_scrub: machine unlearning with SCRUB (Kurmanji et al., NeurIPS 2023) for Hugging Face models.

- `ScrubConfig` (a `transformers.TrainingArguments`) and `ScrubTrainer` (a `transformers.Trainer`): the algorithm.
- `make_unlearning_splits`: forget / retain / test / forget-validation splits from `datasets`.
- `evaluate_model` and `hf_scrub.metrics` (`load_metric`): the unlearning metrics.
- `save_unlearning_report` (also `trainer.save_unlearning_report`): the evidence folder, as `scripts/scrub.py` writes.
"""

__version__ = "0.1.0"

from .config import PRESETS, ScrubConfig
from .data import UnlearningSplits, make_unlearning_splits
from .evaluation import evaluate_model
from .evidence import save_unlearning_report
from .losses import forget_loss, kd_distance, retain_loss
from .metrics import load_metric
from .trainer import ScrubTrainer

__all__ = [
    "PRESETS",
    "ScrubConfig",
    "ScrubTrainer",
    "UnlearningSplits",
    "evaluate_model",
    "forget_loss",
    "kd_distance",
    "load_metric",
    "make_unlearning_splits",
    "retain_loss",
    "save_unlearning_report",
]
