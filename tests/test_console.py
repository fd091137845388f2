"""What a run prints: one progress bar per pass and per evaluation (hf_scrub.progress), and none of the warnings the
project itself used to cause (accelerate's launch defaults, CPU pin memory, DeepSpeed's accelerator detection)."""

import importlib.util
import itertools
import os
import subprocess
import sys

import pytest
from cli_fixtures import ROOT, scrub
from conftest import scrub_config, tiny_bert, token_dataset
from transformers import PrinterCallback, ProgressCallback

from hf_scrub import ScrubTrainer
from hf_scrub.progress import PhaseProgressCallback

_dev_spec = importlib.util.spec_from_file_location("dev", ROOT / "dev.py")
dev = importlib.util.module_from_spec(_dev_spec)
_dev_spec.loader.exec_module(dev)  # the quickstart runner: its demo's launch flags

# Each once caused by this project's own runs (issue 13).
PROJECT_WARNINGS = [
    "were not passed to `accelerate launch`",  # the demo's launch without explicit flags
    "pin_memory",  # torch's DataLoader on a machine without an accelerator
    "Setting accelerator to CPU",  # DeepSpeed's accelerator detection, in a run without DeepSpeed
]


def test_one_bar_per_pass_and_evaluation(tmp_path):
    trainer = ScrubTrainer(
        model=tiny_bert(),
        args=scrub_config(tmp_path, disable_tqdm=False, num_train_epochs=3, forget_epochs=2),
        forget_dataset=token_dataset(8, seed=1),
        retain_dataset=token_dataset(24, seed=2),
    )
    callbacks = trainer.callback_handler.callbacks
    assert not any(isinstance(callback, ProgressCallback) for callback in callbacks)
    (progress,) = [callback for callback in callbacks if isinstance(callback, PhaseProgressCallback)]
    trainer.train()

    # The evaluation of every epoch: forget (8 examples) and retain (24) in batches of 8: 1 + 3 batches.
    expected = [("epoch 0 evaluation", 4)]
    for (epoch, phase), steps in itertools.groupby(trainer.schedule, key=lambda step: (step.epoch, step.phase)):
        expected.append((f"epoch {epoch} {phase.name.lower()} pass", len(list(steps))))
        if expected[-1][0].endswith("retain pass"):
            expected.append((f"epoch {epoch} evaluation", 4))
    assert progress.opened == expected
    assert [name for name, _ in expected[:6]] == [
        "epoch 0 evaluation", "epoch 1 forget pass", "epoch 1 retain pass", "epoch 1 evaluation",
        "epoch 2 forget pass", "epoch 2 retain pass",
    ]  # fmt: skip
    assert expected[1][1] == 2 and expected[2][1] == 3  # 8 forget examples in batches of 4, 24 retain in batches of 8
    assert progress.pass_bar is None and progress.evaluation_bar is None

    progress.bars.clear()
    trainer.predict(token_dataset(24, seed=3))  # after training: a bar of its own, closed when done
    assert progress.opened == [("evaluation", 3)] and progress.evaluation_bar is None


def test_disable_tqdm_keeps_the_trainer_s_printer(tmp_path):
    trainer = ScrubTrainer(
        model=tiny_bert(),
        args=scrub_config(tmp_path),  # disable_tqdm=True
        forget_dataset=token_dataset(8, seed=1),
        retain_dataset=token_dataset(24, seed=2),
    )
    kinds = {type(callback) for callback in trainer.callback_handler.callbacks}
    assert PrinterCallback in kinds and PhaseProgressCallback not in kinds and ProgressCallback not in kinds


@pytest.mark.slow
def test_script_run_prints_bars_and_none_of_the_project_s_warnings(assets, tmp_path):
    """`accelerate launch` with the demo's flags (dev.py) of `scripts/scrub.py` on a tiny model, on CPU."""
    command = [sys.executable, "-m", "accelerate.commands.launch", *dev.DEMO_LAUNCH, "scripts/scrub.py"]
    argv = scrub(assets, tmp_path, "--forget_classes", "1", "--disable_tqdm", "false", "--num_train_epochs", "2")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for warning in PROJECT_WARNINGS:
        assert warning not in result.stdout + result.stderr, warning
    bars = result.stderr
    for name in ["epoch 0 evaluation", "epoch 1 forget pass", "epoch 1 retain pass", "epoch 2 retain pass"]:
        assert name in bars, name
    assert "epoch 2 forget pass" not in bars  # forget_epochs 1
    logs = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert any("'scrub_epoch': 2" in line for line in logs) and all(line.endswith("}") for line in logs)
