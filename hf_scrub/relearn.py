"""Relearn time (docs/design.md §3): how many fine-tuning passes bring the forget loss back to the original's level.

A model that still "knows" the forget set underneath relearns it in fewer passes than one that never saw it, so
relearn time complements the accuracy and attack metrics. Opt-in: it fine-tunes a copy of the model (the unlearned
model itself is untouched) with plain cross-entropy on the forget set, one epoch at a time, and measures the mean
forget loss after each epoch.
"""

from __future__ import annotations

import copy
import tempfile
from typing import Any

import numpy as np
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

from .evaluation import predict_splits


class _StopWhenRelearned(TrainerCallback):
    """After every epoch: measure the forget loss; stop once it is back at the target."""

    trainer: Trainer  # set once the trainer exists

    def __init__(self, forget_dataset: Any, target_loss: float) -> None:
        self.forget_dataset, self.target_loss = forget_dataset, target_loss
        self.forget_losses: list[float] = []

    def on_epoch_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> Any:
        loss = mean_forget_loss(self.trainer, self.forget_dataset)
        self.forget_losses.append(loss)
        if loss <= self.target_loss:
            control.should_training_stop = True
        return control


def mean_forget_loss(trainer: Trainer, forget_dataset: Any) -> float:
    """Mean cross-entropy of the trainer's model on the forget set (eval mode, gathered over processes)."""
    return float(np.mean(predict_splits(trainer, {"forget": forget_dataset})["forget"].losses))


def relearn_time(
    model: nn.Module,
    forget_dataset: Any,
    *,
    target_loss: float,
    args: TrainingArguments,
    data_collator: Any = None,
    max_epochs: int = 10,
) -> dict[str, Any]:
    """Epochs of cross-entropy fine-tuning on the forget set until its mean loss is <= `target_loss`.

    `args` supplies the optimizer, learning rate, batch size (`per_device_train_batch_size`), precision and seed;
    checkpointing and reporting are switched off. Returns `{"epochs": n or None (not relearned within max_epochs),
    "forget_losses": [loss after epoch 0 (before fine-tuning), 1, ...], "target_loss", "max_epochs"}`.
    """
    with tempfile.TemporaryDirectory(prefix="hf_scrub_relearn_") as output_dir:
        relearn_args = TrainingArguments(
            output_dir=output_dir,
            num_train_epochs=max_epochs,
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            optim=args.optim,
            optim_args=args.optim_args,
            lr_scheduler_type="constant",
            max_grad_norm=args.max_grad_norm,
            per_device_train_batch_size=args.per_device_train_batch_size,
            per_device_eval_batch_size=args.per_device_eval_batch_size,
            bf16=args.bf16,
            fp16=args.fp16,
            use_cpu=args.use_cpu,
            seed=args.seed,
            remove_unused_columns=args.remove_unused_columns,
            save_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
        )
        stopper = _StopWhenRelearned(forget_dataset, target_loss)
        trainer = Trainer(
            model=copy.deepcopy(model),
            args=relearn_args,
            train_dataset=forget_dataset,
            data_collator=data_collator,
            callbacks=[stopper],
        )
        stopper.trainer = trainer
        initial = mean_forget_loss(trainer, forget_dataset)
        if initial > target_loss:
            trainer.train()
        losses = [initial, *stopper.forget_losses]
    relearned = [epoch for epoch, loss in enumerate(losses) if loss <= target_loss]
    return {
        "epochs": relearned[0] if relearned else None,
        "forget_losses": losses,
        "target_loss": target_loss,
        "max_epochs": max_epochs,
    }
