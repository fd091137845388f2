"""End to end through `scripts/scrub.py`: real models saved to disk, real datasets, real launches (issue 2, 9e)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from cli_fixtures import folder_digest
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    ResNetConfig,
    ResNetForImageClassification,
    Trainer,
    TrainingArguments,
)

from hf_scrub.offline import load_digits, load_rotten_tomatoes, minilm_model_path
from hf_scrub.tasks import image_transform, prepare_dataset

pytestmark = pytest.mark.slow  # subprocess runs of the script on real models

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "scrub.py"


def train_original(model, train, output_dir, collator=None, epochs=4, lr=3e-3):
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        use_cpu=True,
        report_to="none",
        seed=0,
        num_train_epochs=epochs,
        per_device_train_batch_size=32,
        learning_rate=lr,
        save_strategy="no",
        disable_tqdm=True,
        remove_unused_columns=False,
    )
    Trainer(model=model, args=args, train_dataset=train, data_collator=collator).train()


@pytest.fixture(scope="session")
def digits_assets(tmp_path_factory):
    """A tiny ResNet trained on sklearn's 8x8 digits, saved with its image processor, and the dataset on disk."""
    from transformers import ViTImageProcessorPil

    root = tmp_path_factory.mktemp("digits")
    data = load_digits(seed=0)
    data.save_to_disk(str(root / "data"))
    processor = ViTImageProcessorPil(
        do_resize=False,
        do_rescale=True,
        rescale_factor=1 / 255,
        image_mean=[0.5],
        image_std=[0.5],
        do_convert_rgb=False,
    )
    torch.manual_seed(0)
    names = data["train"].features["label"].names
    model = ResNetForImageClassification(
        ResNetConfig(
            num_channels=1,
            embedding_size=16,
            hidden_sizes=[16, 32],
            depths=[1, 1],
            layer_type="basic",
            id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)},
        )
    )
    train_original(model, data["train"].with_transform(image_transform(processor)), root, epochs=6)
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    return root / "model", root / "data"


@pytest.fixture(scope="session")
def text_assets(tmp_path_factory):
    """A one-layer BERT with the MiniLM tokenizer trained on Rotten Tomatoes snippets, saved, and the data on disk."""
    root = tmp_path_factory.mktemp("text")
    data = load_rotten_tomatoes(max_examples=600, seed=0)
    data.save_to_disk(str(root / "data"))
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_path())
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=2,
            id2label={0: "rotten", 1: "fresh"},
            label2id={"rotten": 0, "fresh": 1},
        )
    )
    from transformers import DataCollatorWithPadding

    train = prepare_dataset(data["train"], "text-classification", tokenizer, max_length=64)
    train_original(model, train, root, collator=DataCollatorWithPadding(tokenizer), epochs=3, lr=5e-3)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model", root / "data"


def run_script(args, cwd, launcher=(sys.executable,)):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [*launcher, str(SCRIPT), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


SCRUB_FLAGS = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no"]


def check_results(output_dir: Path, task: str, forget_type: str, num_forget: int, method: str = "scrub") -> dict:
    results = json.loads((output_dir / "unlearning_results.json").read_text())
    assert results["method"] == method and results["task"] == task
    assert results["forget"]["type"] == forget_type and results["forget"]["num_examples"] == num_forget
    for model in ("original", "unlearned"):
        for key in ("forget_accuracy", "retain_accuracy", "test_accuracy"):
            assert 0.0 <= results[model][key] <= 1.0
        assert 0.0 <= results[model]["mia"] <= 100.0
    assert results["unlearning_seconds"] > 0
    assert (output_dir / "config.json").is_file() and (output_dir / "model.safetensors").is_file()
    assert not list(output_dir.glob(".staging-*"))
    return results


def test_image_class_unlearning_through_accelerate_launch(digits_assets, tmp_path):
    model_dir, data_dir = digits_assets
    before = folder_digest(model_dir)
    output_dir = tmp_path / "out"
    result = run_script(
        [
            "--model_name_or_path",
            model_dir,
            "--dataset_name",
            data_dir,
            "--forget_classes",
            "3",
            "--output_dir",
            output_dir,
            "--preset",
            "class",
            "--per_device_forget_batch_size",
            "32",
            "--per_device_train_batch_size",
            "64",
            "--learning_rate",
            "0.01",
            "--num_train_epochs",
            "3",
            *SCRUB_FLAGS,
        ],
        cwd=tmp_path,
        launcher=(str(Path(sys.executable).with_name("accelerate")), "launch", "--num_processes", "1", "--cpu"),
    )
    results = check_results(output_dir, "image-classification", "class", 146)
    original, unlearned = results["original"], results["unlearned"]
    assert results["forget"]["classes"] == [3] and results["forget"]["class_names"] == ["3"]
    assert original["forget_accuracy"] > 0.8 and unlearned["forget_accuracy"] < original["forget_accuracy"] - 0.3
    for model in (original, unlearned):
        assert {"test_forget_classes_accuracy", "test_retain_classes_accuracy"} <= set(model)
    assert results["hyperparameters"]["preset"] == "class" and results["hyperparameters"]["gamma"] == 0.99
    assert "test_retain_classes_accuracy" in result.stdout and "unlearned" in result.stdout  # the printed table
    assert (output_dir / "preprocessor_config.json").is_file()
    assert folder_digest(model_dir) == before  # the input model folder is never written to


def test_text_selective_unlearning_from_a_yaml_file(text_assets, tmp_path):
    model_dir, data_dir = text_assets
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: {model_dir}\ndataset_name: {data_dir}\nnum_forget_examples: 20\n"
        f"output_dir: {tmp_path / 'out'}\nnum_train_epochs: 2\nforget_epochs: 1\nper_device_forget_batch_size: 8\n"
        "per_device_train_batch_size: 32\nlearning_rate: 0.001\nreport_to: none\nuse_cpu: true\nsave_strategy: 'no'\n"
        "disable_tqdm: true\nmax_length: 64\nschedule: fixed\n"  # the paper's schedule: its epochs are counted
    )
    run_script(
        [
            config,
            "--retrain_model_name_or_path",
            model_dir,
            "--relearn_time",
            "true",
            "--relearn_max_epochs",
            "2",
            "--rewind",
            "true",
        ],
        cwd=tmp_path,
    )
    results = check_results(tmp_path / "out", "text-classification", "selective", 20)
    assert "test_forget_classes_accuracy" not in results["original"]
    assert (tmp_path / "out" / "tokenizer.json").is_file()
    # The "retrain" column here is the original model itself: its report must equal the original's exactly.
    assert results["retrain"] == results["original"]
    assert [entry["epoch"] for entry in results["history"]] == [0, 1, 2]
    assert results["history"][0]["forget_error"] == pytest.approx(1 - results["original"]["forget_accuracy"])
    # SCRUB+R's choice, recomputed from the recorded history: the epoch whose forget error is closest to the final
    # model's forget-validation error, the earliest on ties (errors are k/n fractions: compared exactly).
    from fractions import Fraction

    def exact(error):
        return Fraction(error).limit_denominator(1000)

    reference = exact(results["history"][-1]["forget_validation_error"])
    distances = [abs(exact(entry["forget_error"]) - reference) for entry in results["history"]]
    assert results["rewind_epoch"] == distances.index(min(distances)) and results["hyperparameters"]["rewind"] is True
    relearn = results["relearn_time"]
    assert relearn["target_loss"] == pytest.approx(results["original"]["forget_loss"])
    assert relearn["forget_losses"][0] == pytest.approx(results["unlearned"]["forget_loss"], rel=1e-4)
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Retrain" in card and "unlearning_history.png" in card


def test_output_dir_inside_the_model_folder_is_refused(digits_assets, tmp_path):
    model_dir, data_dir = digits_assets
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model_name_or_path",
            str(model_dir),
            "--dataset_name",
            str(data_dir),
            "--forget_classes",
            "3",
            "--output_dir",
            str(model_dir / "unlearned"),
            *SCRUB_FLAGS,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "is the input model folder or inside it" in result.stderr
    assert not (model_dir / "unlearned").exists()


def test_num_labels_mismatch_is_refused_before_training(digits_assets, tmp_path):
    model_dir, _ = digits_assets
    data = load_digits(seed=0)
    three_classes = data.filter(lambda row: row["label"] < 3).cast_column(
        "label", datasets.ClassLabel(names=["0", "1", "2"])
    )
    three_classes.save_to_disk(str(tmp_path / "three"))
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model_name_or_path",
            str(model_dir),
            "--dataset_name",
            str(tmp_path / "three"),
            "--forget_classes",
            "1",
            "--output_dir",
            str(tmp_path / "out"),
            *SCRUB_FLAGS,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "The model has num_labels=10 but the dataset's 'label' column has 3 classes" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("method", "flags"), [
    ("retrain", ["--num_train_epochs", "3", "--learning_rate", "3e-3"]),
    ("neggrad", ["--num_train_epochs", "1", "--learning_rate", "0.01", "--per_device_forget_batch_size", "32"]),
])  # fmt: skip
def test_baseline_methods_through_the_same_pipeline(digits_assets, tmp_path, method, flags):
    model_dir, data_dir = digits_assets
    run_script(
        ["--method", method, "--model_name_or_path", model_dir, "--dataset_name", data_dir, "--forget_classes", "3",
         "--output_dir", tmp_path / "out", "--per_device_train_batch_size", "64", *flags, *SCRUB_FLAGS],
        cwd=tmp_path,
    )  # fmt: skip
    results = check_results(tmp_path / "out", "image-classification", "class", 146, method=method)
    assert results["original"]["forget_accuracy"] > 0.8
    if method == "retrain":  # trained from scratch without a single "3": it cannot recognise them
        assert results["unlearned"]["forget_accuracy"] <= 0.02
        assert results["unlearned"]["test_retain_classes_accuracy"] > 0.5
    else:  # gradient ascent on the threes pushes their accuracy down
        assert results["unlearned"]["forget_accuracy"] < results["original"]["forget_accuracy"]


def test_lora_run_saves_the_adapter_and_the_merged_model(text_assets, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    model_dir, data_dir = text_assets
    before = folder_digest(model_dir)
    out = tmp_path / "out"
    run_script(
        [
            "--model_name_or_path",
            model_dir,
            "--dataset_name",
            data_dir,
            "--num_forget_examples",
            "20",
            "--output_dir",
            out,
            "--use_peft",
            "true",
            "--lora_r",
            "4",
            "--save_merged_model",
            "true",
            "--num_train_epochs",
            "2",
            "--forget_epochs",
            "1",
            "--per_device_forget_batch_size",
            "8",
            "--learning_rate",
            "0.01",
            "--max_length",
            "64",
            "--schedule",
            "fixed",
            *SCRUB_FLAGS,
        ],
        cwd=tmp_path,
    )  # fmt: skip  (fixed: this barely trained model meets the auto goal at epoch 0, and the merge needs steps)
    results = check_results_files(out)
    assert results["hyperparameters"]["use_peft"] is True
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged").eval()
    adapted = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(model_dir), out).eval()
    original = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    inputs = {"input_ids": torch.randint(1000, 5000, (4, 16)), "attention_mask": torch.ones(4, 16, dtype=torch.long)}
    with torch.no_grad():
        merged_logits, adapted_logits = merged(**inputs).logits, adapted(**inputs).logits
        original_logits = original(**inputs).logits
    assert torch.allclose(merged_logits, adapted_logits, atol=1e-4)  # merging preserves the unlearned model
    assert not torch.allclose(merged_logits, original_logits, atol=1e-4)  # and it is not the original
    assert folder_digest(model_dir) == before


def check_results_files(output_dir: Path) -> dict:
    results = json.loads((output_dir / "unlearning_results.json").read_text())
    assert (output_dir / "README.md").is_file() and (output_dir / "unlearning_history.png").is_file()
    return results


# ---- DeepSpeed ZeRO-3: the script under configs/accelerate/deepspeed_zero3.yaml's environment, 2 CPU processes ----


@pytest.fixture(scope="module")
def dropout_free_text_assets(tmp_path_factory):
    """An untrained dropout-free one-layer BERT with the MiniLM tokenizer, and 200 Rotten Tomatoes snippets, on disk.

    Without dropout, one process and two compute the same thing; untrained is enough to compare them.
    """
    root = tmp_path_factory.mktemp("zero3_text")
    load_rotten_tomatoes(max_examples=200, seed=0).save_to_disk(str(root / "data"))
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_path())
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root / "model", root / "data"


def zero3_environment(mixed_precision: str = "no", zero3_init: bool = False) -> dict[str, str]:
    from conftest import launch_environment

    environment = launch_environment("deepspeed_zero3.yaml")[2]
    environment["ACCELERATE_DEEPSPEED_ZERO3_INIT"] = str(zero3_init).lower()
    return {**os.environ, **environment, "ACCELERATE_MIXED_PRECISION": mixed_precision}


@pytest.mark.slow
def test_zero3_launch_of_the_script_with_rewind_equals_one_process(dropout_free_text_assets, tmp_path):
    """SCRUB+R through scripts/scrub.py: 2 ZeRO-3 processes (float32) against 1 process with the same global batch.

    Twice: as the shipped file is (zero3_init_flag false: the teacher is a copy of the student), and with
    zero3_init_flag true (`from_pretrained` partitions the model as it loads it, so the teacher is loaded again from
    the same folder). Forgetting class 1 of an untrained model with SGD at lr 5: epoch 0 predicts the class on every
    row, epoch 1 on none and keeps the retain rows, so the judge ranks epoch 1 first of the equal later epochs and
    SCRUB+R rewinds to it: the saved model is a gathered, restored ZeRO-3 checkpoint, not the last step's
    weights.
    """
    from conftest import free_port, rerun_after_teardown_abort
    from transformers import AutoModelForSequenceClassification

    model_dir, data_dir = dropout_free_text_assets
    before = folder_digest(model_dir)
    common = [
        "--model_name_or_path", model_dir, "--dataset_name", data_dir, "--forget_classes", "1",
        "--num_train_epochs", "3", "--forget_epochs", "2", "--optim", "sgd", "--learning_rate", "5.0",
        "--max_grad_norm", "0", "--lr_scheduler_type", "constant", "--max_length", "32", "--rewind", "true",
        "--per_device_eval_batch_size", "8", "--schedule", "fixed", *SCRUB_FLAGS,
    ]  # fmt: skip
    torchrun = str(Path(sys.executable).with_name("torchrun"))

    def two_processes() -> list:
        return [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", free_port(),
                SCRIPT, "--per_device_forget_batch_size", "4", "--per_device_train_batch_size", "16"]  # fmt: skip

    launches = {
        "one": ([sys.executable, SCRIPT, "--per_device_forget_batch_size", "8", "--per_device_train_batch_size", "32"],
                {**os.environ}),
        "zero3": (two_processes(), zero3_environment()),
        "zero3_init": (two_processes(), zero3_environment(zero3_init=True)),
    }  # fmt: skip

    def start(name: str) -> subprocess.Popen:
        command, env = launches[name]
        with open(tmp_path / f"{name}.log", "w") as log:  # a file, not a pipe: nobody reads while all three run
            return subprocess.Popen(
                [*map(str, command), *map(str, common), "--output_dir", str(tmp_path / name)],
                cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    procs = {name: start(name) for name in launches}
    codes = {name: proc.wait(timeout=300) for name, proc in procs.items()}
    outputs = ("unlearning_results.json", "model.safetensors", "README.md")
    for name in [
        n
        for n in ("zero3", "zero3_init")
        if rerun_after_teardown_abort(
            f"{n} launch", codes[n], (tmp_path / f"{n}.log").read_text(), [tmp_path / n / f for f in outputs]
        )
    ]:
        shutil.rmtree(tmp_path / name, ignore_errors=True)  # once more, from scratch, on a fresh port
        launches[name] = (two_processes(), launches[name][1])
        codes[name] = start(name).wait(timeout=300)
    for name, code in codes.items():
        assert code == 0, f"{name}:\n" + (tmp_path / f"{name}.log").read_text()[-5000:]

    results = {name: json.loads((tmp_path / name / "unlearning_results.json").read_text()) for name in launches}
    weights = {n: AutoModelForSequenceClassification.from_pretrained(tmp_path / n).state_dict() for n in launches}
    original = AutoModelForSequenceClassification.from_pretrained(model_dir).state_dict()
    moved = max((weights["one"][k] - original[k]).abs().max() for k in original)
    assert moved > 1.0
    one = results["one"]
    for name in ("zero3", "zero3_init"):
        zero3 = results[name]
        assert len(zero3["history"]) == 4 and zero3["rewind_epoch"] == one["rewind_epoch"] == 1
        assert zero3["history"] == one["history"]
        for model in ("original", "unlearned"):
            assert zero3[model] == pytest.approx(one[model], rel=1e-4, abs=1e-6), (name, model)
        gap = max((weights[name][k] - weights["one"][k]).abs().max() for k in original)
        assert gap / moved < 1e-4, name
        assert not list((tmp_path / name).glob(".staging-*")) and not (tmp_path / name / "rewind").exists()
    assert folder_digest(model_dir) == before


def test_options_that_need_a_second_model_are_refused_under_deepspeed(dropout_free_text_assets, tmp_path):
    model_dir, data_dir = dropout_free_text_assets
    args = ["--model_name_or_path", model_dir, "--dataset_name", data_dir, "--num_forget_examples", "16",
            "--output_dir", tmp_path / "out", "--relearn_time", "true", "--retrain_model_name_or_path", model_dir,
            "--schedule", "fixed", *SCRUB_FLAGS]  # fmt: skip
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=tmp_path, env=zero3_environment("bf16"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--retrain_model_name_or_path, --relearn_time cannot run under DeepSpeed" in result.stderr
    assert "Loading weights" not in result.stderr  # refused before the model was loaded
    assert not (tmp_path / "out").exists()


def test_the_goal_driven_default_is_refused_under_deepspeed_before_the_model_loads(dropout_free_text_assets, tmp_path):
    model_dir, data_dir = dropout_free_text_assets
    args = [
        "--model_name_or_path",
        model_dir,
        "--dataset_name",
        data_dir,
        "--num_forget_examples",
        "16",
        "--output_dir",
        tmp_path / "out",
        *SCRUB_FLAGS,
    ]  # fmt: skip  (no --preset, no --schedule)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], cwd=tmp_path, env=zero3_environment("bf16"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "The goal-driven schedule (schedule=auto, the default without --preset) is not available under DeepSpeed"
        in (result.stderr)
    )
    assert "Loading weights" not in result.stderr and not (tmp_path / "out").exists()
