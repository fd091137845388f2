"""Fault injection through `scripts/scrub.py` (issue 9): every bad or unusual input gets its exact outcome.

Each case asserts one of two outcomes:
- refused before the model is loaded (`loads` stays empty), exit status 2, one line on stderr that names the problem
  and the fix, no output folder written;
- or, where work had to start, the input model byte-identical and the output folder complete or absent.

Most cases call `hf_scrub.cli.main` in this process (the script's own code path, minus interpreter start-up); the
cases about exit statuses, tracebacks and the Hub run the real script in a subprocess. Real files, real tiny
models, the Hub unreachable (`HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
from cli_fixtures import FAST, SCRIPT, assert_complete, folder_digest, refused, results_of, review_rows, scrub
from PIL import Image
from transformers import BertForSequenceClassification

from hf_scrub import cli, evidence

# ---- the six serious cases ------------------------------------------------------------------------------------


pytestmark = pytest.mark.slow  # every case runs the CLI on a real model


@pytest.mark.parametrize("how", ["indices_file", "forget_column"])
def test_1_forget_rows_in_a_dataset_without_test_split_are_all_forgotten(assets, tmp_path, how):
    requested = [2, 5, 11, 17, 23, 29, 31, 41, 47, 58]
    if how == "indices_file":
        (tmp_path / "forget.txt").write_text("\n".join(map(str, requested)) + "\n")
        data, flags = assets / "reviews.csv", ["--forget_indices_file", tmp_path / "forget.txt"]
    else:  # a JSON lines file with a boolean column
        rows = review_rows(60) | {"erase": [i in requested for i in range(60)]}
        pd.DataFrame(rows).to_json(tmp_path / "reviews.jsonl", orient="records", lines=True)
        data, flags = tmp_path / "reviews.jsonl", ["--forget_column", "erase"]
    assert cli.main(scrub(assets, tmp_path, *flags, data=data)) == 0
    results = assert_complete(tmp_path / "out")
    forget = results["forget"]
    assert forget["num_examples"] == 10
    assert forget["forget_ids_sha256"] == hashlib.sha256("\n".join(map(str, requested)).encode()).hexdigest()
    # The hold-out (20 %) came from the 50 retain rows only: 40 retained + 10 held out + 10 forgotten = 60.
    assert forget["num_retain_examples"] == 40 and forget["num_test_examples"] == 10
    assert forget["test_held_out_from_train"] is True
    assert any("The original model was trained on them" in w for w in results["warnings"])


def test_2_failed_hub_push_keeps_the_complete_local_result(assets, tmp_path):
    before = folder_digest(assets / "model")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    argv = scrub(assets, tmp_path, "--num_forget_examples", "6", "--push_to_hub", "true", "--hub_model_id", "user/x")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Pushing to the Hub repo 'user/x' failed")
    assert f"The local folder is intact and complete at {(tmp_path / 'out').resolve()}" in last
    assert "hf upload user/x" in last and "Traceback" not in result.stderr
    results = assert_complete(tmp_path / "out")  # written completely before the upload was tried
    assert results["forget"]["num_examples"] == 6
    assert folder_digest(assets / "model") == before


def test_3_integer_labels_count_classes_from_all_the_data(assets, tmp_path):
    """Forgetting class 0 of a CSV with labels 0..2 (not the highest class) against a 3-class head."""
    assert cli.main(scrub(assets, tmp_path, "--forget_classes", "0")) == 0
    results = assert_complete(tmp_path / "out")
    assert results["forget"]["classes"] == [0] and results["forget"]["num_examples"] == 20


def test_3b_labels_outside_the_head_state_the_real_range(assets, tmp_path, capsys, loads):
    rows = review_rows(60)
    rows["label"] = [i % 5 for i in range(60)]
    pd.DataFrame(rows).to_csv(tmp_path / "five.csv", index=False)
    refused(capsys, scrub(assets, tmp_path, "--forget_classes", "0", data=tmp_path / "five.csv"),
            "labels range over [0, 4], but the model's head outputs classes 0..2 (num_labels=3)")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_4_a_reused_output_folder_holds_only_the_new_run(assets, tmp_path):
    assert cli.main(scrub(assets, tmp_path, "--num_forget_examples", "6", "--use_peft", "true", "--lora_r", "2")) == 0
    assert (tmp_path / "out" / "adapter_config.json").is_file()
    assert cli.main(scrub(assets, tmp_path, "--num_forget_examples", "6")) == 0
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "adapter_config.json" not in names and "adapter_model.safetensors" not in names
    assert results_of(tmp_path / "out")["hyperparameters"]["use_peft"] is False
    assert_complete(tmp_path / "out")


def test_4b_a_folder_hf_scrub_did_not_write_is_refused_unless_overwrite(assets, tmp_path, capsys, loads):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("months of work")
    refused(capsys, scrub(assets, tmp_path, "--num_forget_examples", "6"),
            "already holds files that hf_scrub did not write", "--overwrite_output_dir true")  # fmt: skip
    assert loads == [] and (tmp_path / "out" / "thesis.tex").read_text() == "months of work"
    assert cli.main(scrub(assets, tmp_path, "--num_forget_examples", "6", "--overwrite_output_dir", "true")) == 0
    assert not (tmp_path / "out" / "thesis.tex").exists()
    assert_complete(tmp_path / "out")


def test_5_a_diverged_run_is_not_written_as_success(assets, tmp_path, capsys):
    before = folder_digest(assets / "model")
    argv = scrub(assets, tmp_path, "--num_forget_examples", "6", "--learning_rate", "1e30", "--optim", "sgd",
                 "--max_grad_norm", "0", "--num_train_epochs", "3", "--forget_epochs", "3")  # fmt: skip
    assert cli.main(argv) == 1
    assert "not finite" in capsys.readouterr().err
    assert not (tmp_path / "out" / "unlearning_results.json").exists()
    assert not (tmp_path / "out" / "model.safetensors").exists()
    assert folder_digest(assets / "model") == before


def test_5b_non_finite_weights_and_metrics_are_caught_before_writing(assets, tmp_path):
    from hf_scrub import ScrubConfig, ScrubTrainer

    with pytest.raises(FloatingPointError, match=r"results.unlearned.mia is nan"):
        evidence.check_finite_results({"unlearned": {"mia": float("nan")}, "history": [{"forget_error": 0.1}]})
    model = BertForSequenceClassification.from_pretrained(assets / "model")
    data = datasets.Dataset.from_dict({"input_ids": [[101, 2000, 102]] * 4, "labels": [0, 1, 2, 0]})
    args = ScrubConfig(output_dir=str(tmp_path / "t"), use_cpu=True, report_to="none")
    trainer = ScrubTrainer(model=model, args=args, forget_dataset=data.select([0]), retain_dataset=data.select([1]))
    evidence.check_finite_model(trainer)  # finite: passes
    with torch.no_grad():
        model.classifier.weight[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite weights \\(classifier.weight"):
        evidence.check_finite_model(trainer)


def test_6_an_unwritable_output_location_is_refused_before_loading(assets, tmp_path, capsys, loads):
    (tmp_path / "a_file").write_text("not a folder")
    argv = scrub(assets, tmp_path, "--num_forget_examples", "6")
    argv[argv.index("--output_dir") + 1] = str(tmp_path / "a_file" / "out")
    refused(capsys, argv, "cannot be created", "is a file, not a folder")
    assert loads == []


@pytest.mark.parametrize(("flag", "value"), [("--per_device_train_batch_size", "0"),
                                             ("--gradient_accumulation_steps", "0"),
                                             ("--per_device_forget_batch_size", "0")])  # fmt: skip
def test_6b_zero_batch_sizes_are_refused_before_loading(assets, tmp_path, capsys, loads, flag, value):
    refused(capsys, scrub(assets, tmp_path, "--num_forget_examples", "6", flag, value),
            f"{flag[2:]} must be an integer >= 1, got 0")  # fmt: skip
    assert loads == [] and not (tmp_path / "out").exists()


# ---- named errors instead of tracebacks or silence ------------------------------------------------------------


def bad_rows_csv(tmp_path, column, value) -> Path:
    rows = review_rows(60)
    rows[column][7] = value
    pd.DataFrame(rows).to_csv(tmp_path / "bad.csv", index=False)
    return tmp_path / "bad.csv"


REFUSED_BEFORE_LOADING = {
    "missing_model_folder": (
        ["--num_forget_examples", "6"],
        {"model": "does/not/exist/here"},
        ["'does/not/exist/here': no such folder"],
    ),
    "negative_num_forget_examples": (
        ["--num_forget_examples", "-3"],
        {},
        ["num_forget_examples must be a positive number of examples, got -3"],
    ),
    "too_many_forget_examples": (["--num_forget_examples", "61"], {}, ["num_forget_examples=61 but only 60"]),
    "unknown_class": (["--forget_classes", "7"], {}, ["Forget class '7' is not among the dataset's labels: 0, 1, 2"]),
    "missing_label_column": (
        ["--forget_classes", "0", "--label_column", "stars"],
        {},
        ["Column 'stars' (set by label_column) is not in", "--label_column"],
    ),
    "missing_test_split": (
        ["--forget_classes", "0", "--test_split", "validation"],
        {"data": "dict"},
        ["Split 'validation' (--test_split) not found; the dataset has splits ['train', 'test']"],
    ),
    "missing_dataset": (
        ["--num_forget_examples", "6"],
        {"data": "./no/such/data.csv"},
        ["'./no/such/data.csv': no such file or folder"],
    ),
    "unsupported_data_file": (["--num_forget_examples", "6"], {"data": "txt"}, ["data files must be .csv, .json"]),
    "forget_everything": (["--forget_classes", "0", "1", "2"], {"data": "dict"}, ["The retain set is empty"]),
    "rewind_without_unseen_forget_class": (
        ["--forget_classes", "1", "--rewind", "true"],
        {},
        ["--rewind true (SCRUB+R) needs held-out examples", "--test_split"],
    ),
    "index_out_of_range": (["--forget_indices_file", "[3, 60]"], {}, ["row positions in [0, 60)", "entry 1: 60"]),
    "malformed_indices_json": (["--forget_indices_file", "[3, 4"], {}, ["is not valid JSON (line 1, column 6"]),
    "non_integer_index_line": (["--forget_indices_file", "3\n4\nfive\n"], {}, ["entry 2: 'five'", "--id_column"]),
    "two_ways_to_forget": (
        ["--forget_classes", "0", "--num_forget_examples", "3", "--forget_column", "x"],
        {},
        ["Choose one way to select the forget set"],
    ),
    "unknown_task": (
        ["--num_forget_examples", "6", "--task", "summarization"],
        {},
        ["Unknown --task 'summarization'"],
    ),
    "invalid_hub_model_id": (
        ["--num_forget_examples", "6", "--push_to_hub", "true", "--hub_model_id", "a/b/c"],
        {},
        ["--hub_model_id 'a/b/c' is not a valid Hub repo id"],
    ),
    "negative_learning_rate": (
        ["--num_forget_examples", "6", "--learning_rate", "-1"],
        {},
        ["learning_rate must be a finite number >= 0"],
    ),
    "nan_label": (
        ["--num_forget_examples", "6"],
        {"data": ("label", None)},
        ["1 row(s) of the train split have no label in column 'label' (None or NaN), e.g. rows [7]"],
    ),
    "empty_text": (
        ["--num_forget_examples", "6"],
        {"data": ("text", "   ")},
        ["1 row(s) of the train split have no text in column 'text'", "e.g. rows [7]"],
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSED_BEFORE_LOADING))
def test_bad_input_is_refused_before_the_model_loads(assets, tmp_path, capsys, loads, case):
    flags, where, messages = REFUSED_BEFORE_LOADING[case]
    flags = list(flags)
    if "--forget_indices_file" in flags:  # the value is the file's content
        position = flags.index("--forget_indices_file") + 1
        (tmp_path / "indices.txt").write_text(flags[position])
        flags[position] = str(tmp_path / "indices.txt")
    data = where.get("data")
    if data == "dict":  # a DatasetDict with a real test split
        data = tmp_path / "dict"
        datasets.DatasetDict(
            {"train": datasets.Dataset.from_dict(review_rows(60)), "test": datasets.Dataset.from_dict(review_rows(15))}
        ).save_to_disk(str(data))
    elif data == "txt":
        data = tmp_path / "reviews.txt"
        data.write_text("a review\n")
    elif isinstance(data, tuple):
        data = bad_rows_csv(tmp_path, *data)
    argv = scrub(assets, tmp_path, *flags, data=data)
    if "model" in where:
        argv[1] = where["model"]
    refused(capsys, argv, *messages)
    assert loads == [] and not (tmp_path / "out").exists()


def test_corrupt_image_bytes_name_the_split_and_row(tmp_path, capsys, loads):
    def png(value: int) -> dict:
        buffer = io.BytesIO()
        Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    images = [png(i * 20) for i in range(12)]
    images[5] = {"bytes": b"\x89PNG\r\n\x1a\n not really an image", "path": None}
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    data = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(12)]}, features=features),
        "test": datasets.Dataset.from_dict({"image": images[:3], "label": [0, 1, 2]}, features=features),
    })  # fmt: skip
    data.save_to_disk(str(tmp_path / "images"))
    argv = ["--model_name_or_path", str(tmp_path / "model"), "--dataset_name", str(tmp_path / "images"),
            "--forget_classes", "a", "--output_dir", str(tmp_path / "out"), *FAST]  # fmt: skip
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # looks like a model folder: the data is checked first
    refused(capsys, argv, "Row 5 of the train split has an unreadable image in column 'image'")
    assert loads == []


def test_lora_target_modules_that_match_nothing(assets, tmp_path, capsys, loads):
    message = refused(capsys, scrub(assets, tmp_path, "--num_forget_examples", "6", "--use_peft", "true",
                                    "--lora_target_modules", "q_proj", "v_proj"), "--use_peft:")  # fmt: skip
    assert "--lora_target_modules" in message and "'query'" in message and "'classifier'" in message
    assert not (tmp_path / "out").exists()


def test_resume_of_a_different_request_is_refused_and_the_same_one_resumes(assets, tmp_path, capsys, loads):
    saving = ["--save_strategy", "epoch", "--num_train_epochs", "2", "--forget_epochs", "1"]
    assert cli.main(scrub(assets, tmp_path, "--num_forget_examples", "6", *saving)) == 0
    first = results_of(tmp_path / "out")
    checkpoints = sorted((p.name for p in (tmp_path / "out").glob("checkpoint-*")), key=lambda n: int(n.split("-")[1]))
    assert len(checkpoints) == 2  # this run's checkpoints stay in the folder beside its result
    loads.clear()
    checkpoint = str(tmp_path / "out" / checkpoints[0])
    resume = ["--resume_from_checkpoint", checkpoint]
    other_request = scrub(assets, tmp_path, "--num_forget_examples", "7", *saving, *resume)
    refused(capsys, other_request, "was made for a different unlearning request", "num_forget_examples")
    assert loads == [] and results_of(tmp_path / "out") == first
    assert cli.main(scrub(assets, tmp_path, "--num_forget_examples", "6", *saving, "--resume_from_checkpoint",
                          checkpoint)) == 0  # fmt: skip
    resumed = results_of(tmp_path / "out")
    assert resumed["resumed_from"] == checkpoints[0]
    assert resumed["original"] == first["original"]  # the original's report, not the half-unlearned model's
    assert resumed["unlearned"] == pytest.approx(first["unlearned"], abs=1e-6)  # resume = uninterrupted run


def test_learning_rate_zero_and_rewind_to_epoch_zero_are_reported(assets, tmp_path, capsys):
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict(review_rows(60)), "test": datasets.Dataset.from_dict(review_rows(15))}
    ).save_to_disk(str(tmp_path / "dict"))
    argv = scrub(assets, tmp_path, "--num_forget_examples", "9", "--learning_rate", "0", "--rewind", "true",
                 data=tmp_path / "dict")  # fmt: skip
    assert cli.main(argv) == 0
    results = results_of(tmp_path / "out")
    assert results["rewind_epoch"] == 0
    assert [w.split(":")[0] for w in results["warnings"]] == ["learning_rate is 0", "SCRUB+R chose epoch 0"]
    err = capsys.readouterr().err
    assert "warning: learning_rate is 0" in err and "warning: SCRUB+R chose epoch 0" in err
    assert "test_held_out_from_train" in results["forget"] and not results["forget"]["test_held_out_from_train"]


def test_hub_token_is_never_written_to_disk(assets, tmp_path):
    token = "hf_" + "Q" * 30
    argv = scrub(assets, tmp_path, "--num_forget_examples", "6", "--hub_token", token, "--save_strategy", "epoch")
    assert cli.main(argv) == 0
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "training_args.bin" for p in files) and any("checkpoint-" in str(p) for p in files)
    assert not [p for p in files if token.encode() in p.read_bytes()]


# ---- the CLI's own behaviour, as a user's shell sees it -------------------------------------------------------


def test_user_error_is_one_line_with_exit_2_and_debug_keeps_the_traceback(tmp_path):
    def run(*extra):
        return subprocess.run([sys.executable, str(SCRIPT), "--method", "magic", *extra], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    plain = run()
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        "error: Unknown --method 'magic'; choose one of ['bad_teacher', 'finetune', 'graddiff', 'neggrad', "
        "'neggrad_plus', 'npo', 'retrain', 'rmu', 'scrub', 'simnpo']. (run again with --debug for the traceback)"
    ]
    debug = run("--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "Unknown --method 'magic'" in debug.stderr


@pytest.mark.parametrize(("argv", "message"), [
    (["--method", "neggrad", "--preset", "class"], "--preset class holds SCRUB settings; it applies to --method"),
    (["run.yaml"], "Unknown argument(s) ['colour'] in run.yaml"),
])  # fmt: skip
def test_cli_configuration_errors(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("colour: blue\n")
    refused(capsys, argv, message)


def test_require_target_fails_a_run_that_did_not_forget_and_keeps_its_result(assets, tmp_path, capsys):
    """Issue 10's verdict: with learning rate 0 nothing is forgotten; the result says so and the run exits 1."""
    argv = scrub(assets, tmp_path, "--forget_classes", "1", "--learning_rate", "0", "--require_target", "true")
    assert cli.main(argv) == 1
    captured = capsys.readouterr()
    assert "verdict: forget target NOT met" in captured.out
    assert "error: --require_target true: the forget target was not met" in captured.err
    results = assert_complete(tmp_path / "out")  # written, for inspection
    assert results["verdict"]["forget_target_met"] is False and results["unlearned"]["forget_accuracy"] == 1.0
    assert results["warnings"][0].startswith("Not forgotten: forget target NOT met")
    card = (tmp_path / "out" / "README.md").read_text()
    body = card[card.index("\n# ") :]
    assert body.splitlines()[3].startswith("**Verdict:** forget target NOT met")  # first thing under the title
