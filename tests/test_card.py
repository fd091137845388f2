"""The evaluation model card: metadata (model-index with custom metrics), body (exact numbers), plot, redaction."""

import copy
import re
import struct

import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_scrub.card import PLOT_FILE, build_model_card, plot_history, write_card

TOKEN = "hf_AbCdEfGhIjKlMnOpQrStUvWxYz012345"
VERSIONS = {"hf_scrub": "0.1.0", "transformers": "5.24.0", "torch": "2.13.0"}

HISTORY = [
    {"epoch": 0, "forget_error": 0.0, "retain_error": 0.0, "forget_validation_error": 0.02},
    {"epoch": 1, "forget_error": 0.9, "retain_error": 0.05, "forget_validation_error": 0.85},
    {"epoch": 2, "forget_error": 0.97, "retain_error": 0.01, "forget_validation_error": 0.99},
    {"epoch": 3, "forget_error": 1.0, "retain_error": 0.003, "forget_validation_error": 1.0},
]


def make_results(**overrides):
    results = {
        "method": "scrub",
        "task": "image-classification",
        "model": "acme/mnist-cnn",
        "forget": {
            "type": "class",
            "classes": [3],
            "class_names": ["three"],
            "num_examples": 400,
            "num_retain_examples": 3600,
            "num_test_examples": 1000,
            "num_forget_validation_examples": 100,
            "forget_ids_sha256": "0f" * 32,
        },
        "original": {
            "forget_accuracy": 1.0,
            "retain_accuracy": 1.0,
            "test_accuracy": 0.973,
            "forget_validation_accuracy": 0.98,
            "test_forget_classes_accuracy": 0.98,
            "test_retain_classes_accuracy": 0.9722,
            "mia": 53.0,
            "mia_auc": 47.6,
        },
        "unlearned": {
            "forget_accuracy": 0.0025,
            "retain_accuracy": 0.9969,
            "test_accuracy": 0.876,
            "forget_validation_accuracy": 0.01,
            "test_forget_classes_accuracy": 0.0,
            "test_retain_classes_accuracy": 0.9733,
            "mia": 61.0,
            "mia_auc": 64.2,
        },
        "retrain": {
            "forget_accuracy": 0.0,
            "retain_accuracy": 0.999,
            "test_accuracy": 0.88,
            "forget_validation_accuracy": 0.0,
            "test_forget_classes_accuracy": 0.0,
            "test_retain_classes_accuracy": 0.975,
            "mia": 55.5,
            "mia_auc": 60.2,
        },
        "unlearning_seconds": 4.5,
        "retrain_seconds": 30.0,
        "rewind_epoch": 2,
        "history": copy.deepcopy(HISTORY),
        "hyperparameters": {
            "alpha": 0.001,
            "gamma": 0.99,
            "kd_temperature": 4.0,
            "forget_epochs": 1,
            "num_train_epochs": 3,
            "per_device_forget_batch_size": 128,
            "per_device_train_batch_size": 64,
            "learning_rate": 0.01,
            "optim": "sgd",
            "weight_decay": 0.0005,
            "max_grad_norm": 0.0,
            "retain_fraction": 1.0,
            "seed": 42,
            "rewind": True,
            "preset": "class",
        },
        "hf_scrub_version": "0.1.0",
        "relearn_time": {
            "epochs": 3,
            "forget_losses": [2.5, 1.25, 0.5, 0.0125],
            "target_loss": 0.02,
            "max_epochs": 10,
        },
    }
    for key, value in overrides.items():
        if value is None:
            results.pop(key, None)
        else:
            results[key] = value
    return results


def table_rows(text):
    """{metric type: [cells]} for the rows of the metrics table (first cell names the metric as `type`)."""
    rows = {}
    for line in text.splitlines():
        match = re.match(r"^\| [^|]*\(`(\w+)`\) \|(.*)\|$", line)
        if match:
            rows[match.group(1)] = [cell.strip() for cell in match.group(2).split(" | ")]
    return rows


def front_matter(text):
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def png_size(data):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# --------------------------------------------------------------------------------------------------------------------


def test_card_loads_and_model_index_round_trips_custom_metrics(tmp_path):
    results = make_results()
    readme = write_card(results, tmp_path, repo_id="alice/mnist-without-3", library_versions=VERSIONS)
    assert readme == tmp_path / "README.md"

    card = ModelCard.load(readme)
    assert card.data.base_model == "acme/mnist-cnn"
    assert card.data.library_name == "transformers"
    assert card.data.pipeline_tag == "image-classification"
    assert {"machine-unlearning", "scrub", "image-classification", "scrub-r"} <= set(card.data.tags)

    # The raw YAML model-index, parsed by huggingface_hub's own reader.
    model_index = front_matter(readme.read_text())["model-index"]
    name, evals = model_index_to_eval_results(model_index)
    assert name == "mnist-without-3"
    assert {e.metric_type: e.metric_value for e in evals} == results["unlearned"]
    assert {e.task_type for e in evals} == {"image-classification"}
    by_type = {e.metric_type: e for e in evals}
    assert by_type["forget_accuracy"].dataset_name == "forget set"
    assert by_type["forget_accuracy"].dataset_split == "forget"
    assert by_type["retain_accuracy"].dataset_name == "retain set"
    assert by_type["test_accuracy"].dataset_split == "test"
    assert by_type["forget_validation_accuracy"].dataset_split == "forget_validation"
    assert by_type["mia"].metric_value == 61.0 and by_type["mia"].metric_name == "MIA attack accuracy"
    assert all(isinstance(e.dataset_type, str) and e.dataset_type for e in evals)
    # ModelCard.load parsed the same eval results into its card data.
    assert {e.metric_type: e.metric_value for e in card.data.eval_results} == results["unlearned"]


def test_unknown_extra_metric_survives_in_model_index():
    results = make_results()
    results["unlearned"]["ic_error"] = 0.125
    results["unlearned"]["note"] = "not a number"
    card = build_model_card(results, library_versions=VERSIONS)
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    values = {e.metric_type: e.metric_value for e in evals}
    assert values["ic_error"] == 0.125 and "note" not in values
    assert table_rows(card.text)["ic_error"][:3] == ["–", "12.50 %", "–"]


def test_local_model_path_never_reaches_metadata_or_card(tmp_path, monkeypatch):
    local = tmp_path / "private" / "alice-home" / "my-mnist-model"
    local.mkdir(parents=True)
    for model in (str(local), "./relative/model", "/abs/deleted/model-folder"):
        card = build_model_card(make_results(model=model), library_versions=VERSIONS)
        text = str(card)
        meta = front_matter(text)
        assert "base_model" not in meta and card.data.base_model is None
        assert model not in text  # the full path is not published ...
        assert f"`{model.rstrip('/').split('/')[-1]}`" in card.text  # ... only the folder name, in the text
        assert "not on the Hub" in card.text
    # A Hub-id-shaped string that is an existing local folder is a local path too.
    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert build_model_card(make_results(model="org/model"), library_versions=VERSIONS).data.base_model is None


def test_table_has_exact_numbers_with_retrain():
    card = build_model_card(make_results(), library_versions=VERSIONS)
    text = card.text
    assert "| Metric | Original | Unlearned | Retrain | \\|Unlearned − Retrain\\| | Good unlearning |" in text
    rows = table_rows(text)
    assert list(rows) == [
        "forget_accuracy",
        "retain_accuracy",
        "test_accuracy",
        "forget_validation_accuracy",
        "test_forget_classes_accuracy",
        "test_retain_classes_accuracy",
        "mia",
        "mia_auc",
    ]
    assert rows["forget_accuracy"][:4] == ["100.00 %", "0.25 %", "0.00 %", "0.25 pp"]
    assert rows["retain_accuracy"][:4] == ["100.00 %", "99.69 %", "99.90 %", "0.21 pp"]
    assert rows["test_accuracy"][:4] == ["97.30 %", "87.60 %", "88.00 %", "0.40 pp"]
    assert rows["test_retain_classes_accuracy"][:3] == ["97.22 %", "97.33 %", "97.50 %"]
    assert rows["mia"][:4] == ["53.00 %", "61.00 %", "55.50 %", "5.50 pp"]
    assert rows["mia_auc"][:3] == ["47.60 %", "64.20 %", "60.20 %"]
    assert "Retrain" in rows["forget_accuracy"][4]  # "what good looks like"


def test_selective_guidance_and_table_without_retrain():
    results = make_results(retrain=None, retrain_seconds=None)
    results["forget"] = {"type": "selective", "classes": [1], "num_examples": 100}
    text = build_model_card(results, library_versions=VERSIONS).text
    assert "| Metric | Original | Unlearned | Good unlearning |" in text
    rows = table_rows(text)
    assert rows["forget_accuracy"][:2] == ["100.00 %", "0.25 %"] and len(rows["forget_accuracy"]) == 3
    assert "50 %" in rows["mia"][2]  # selective: the attack should be at chance level
    assert "0 % would make the forget set stand out" in rows["forget_accuracy"][2]
    assert "100 training examples selected from class 1" in text
    assert "retrained from scratch" not in text and "× the retraining time" not in text


def test_forget_description_hyperparameters_time_and_citation():
    text = build_model_card(make_results(), repo_id="alice/mnist-without-3", library_versions=VERSIONS).text
    assert "- **Classes:** `3` (`three`)" in text
    assert "- **Forgotten examples:** 400" in text
    assert f"`{'0f' * 32}`" in text
    assert "| `alpha` | 0.001 |" in text and "| `optim` | sgd |" in text and "| `rewind` | true |" in text
    assert "unlearning took 4.5 s" in text and "0.15× the retraining time" in text and "(6.7× faster)" in text
    assert "original model's, 0.02): 3 epochs (forget loss per epoch, from 0: 2.5, 1.25, 0.5, 0.0125)." in text
    assert 'AutoModelForImageClassification.from_pretrained("alice/mnist-without-3")' in text
    assert "- transformers: 5.24.0" in text and "- torch: 2.13.0" in text
    assert "@inproceedings{kurmanji2023towards" in text and "2302.09880" in text
    assert "Kurmanji, Meghdad and Triantafillou, Peter and Hayes, Jamie and Triantafillou, Eleni" in text


def test_text_task_usage_and_default_library_versions():
    results = make_results(task="text-classification")
    card = build_model_card(results)
    assert 'AutoModelForSequenceClassification.from_pretrained("path/to/this/folder")' in card.text
    assert "AutoTokenizer" in card.text
    for library in ("hf_scrub", "transformers", "torch", "datasets", "accelerate", "peft", "huggingface_hub"):
        assert re.search(rf"^- {library}: \S+", card.text, re.MULTILINE), library
    assert "- hf_scrub: 0.1.0" in card.text


def test_plot_written_valid_deterministic_and_referenced(tmp_path):
    readme = write_card(make_results(), tmp_path, library_versions=VERSIONS)
    png = tmp_path / PLOT_FILE
    data = png.read_bytes()
    width, height = png_size(data)
    assert 800 <= width <= 1600 and 400 <= height <= 1000  # readable at Hub card width
    assert b"Software" not in data and b"matplotlib" not in data.lower()
    assert f"]({PLOT_FILE})" in readme.read_text()
    # Same input, same bytes; the rewind marker changes the picture.
    again = plot_history(HISTORY, 2, tmp_path / "again.png")
    assert again.read_bytes() == data
    assert plot_history(HISTORY, None, tmp_path / "no_rewind.png").read_bytes() != data
    # No leftover temporary files from the atomic writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md", "again.png", "no_rewind.png", PLOT_FILE]


def test_no_history_no_plot(tmp_path):
    readme = write_card(make_results(history=None, rewind_epoch=None), tmp_path, library_versions=VERSIONS)
    assert not (tmp_path / PLOT_FILE).exists()
    assert ".png" not in readme.read_text() and "## Training curves" not in readme.read_text()
    assert "SCRUB+R (rewind):** enabled, but no epoch" in readme.read_text()  # rewind=True, nothing recorded


def test_history_without_forget_validation_plots(tmp_path):
    history = [{k: v for k, v in row.items() if k != "forget_validation_error"} for row in HISTORY]
    path = plot_history(history, None, tmp_path / "h.png")
    png_size(path.read_bytes())
    text = build_model_card(make_results(history=history, rewind_epoch=None), library_versions=VERSIONS).text
    assert "| Epoch | Forget error | Retain error |\n" in text


def test_rewind_epoch_marked_in_text():
    text = build_model_card(make_results(), library_versions=VERSIONS).text
    assert "**SCRUB+R (rewind):** the returned model is the one after **epoch 2**" in text
    assert "its forget error (97.00 %)" in text and "(100.00 %)" in text
    assert "| 2 (SCRUB+R) | 97.00 % | 1.00 % | 99.00 % |" in text
    assert "with SCRUB+R" in text

    text0 = build_model_card(make_results(rewind_epoch=0), library_versions=VERSIONS).text
    assert "after **epoch 0** — the original model itself" in text0

    hyper = dict(make_results()["hyperparameters"], rewind=False)
    plain = build_model_card(make_results(rewind_epoch=None, hyperparameters=hyper), library_versions=VERSIONS)
    assert "SCRUB+R" not in plain.text and "scrub-r" not in plain.data.tags


def test_minimal_results_without_optional_keys(tmp_path):
    results = {
        "method": "scrub",
        "task": "image-classification",
        "model": "acme/mnist-cnn",
        "forget": {"type": "indices", "num_examples": 7},
        "original": {"forget_accuracy": 1.0, "mia": 70.0},
        "unlearned": {"forget_accuracy": 0.5, "mia": 50.0},
    }
    readme = write_card(results, tmp_path, library_versions=VERSIONS)
    card = ModelCard.load(readme)
    assert {e.metric_type: e.metric_value for e in card.data.eval_results} == {"forget_accuracy": 0.5, "mia": 50.0}
    assert table_rows(card.text)["mia"][:2] == ["70.00 %", "50.00 %"]
    assert list(tmp_path.iterdir()) == [readme]


def test_token_like_strings_never_reach_the_card(tmp_path):
    results = make_results(model=f"/home/u/{TOKEN}/model")
    results["hyperparameters"]["hub_token"] = TOKEN
    results["hyperparameters"]["run_name"] = f"run-{TOKEN}"
    results["forget"]["class_names"] = [TOKEN]
    readme = write_card(results, tmp_path, repo_id="alice/x", library_versions=VERSIONS)
    text = readme.read_text()
    assert TOKEN not in text and TOKEN[3:] not in text
    assert "hub_token" not in text
    assert "[redacted]" in text
    assert TOKEN in str(results)  # the caller's dict is not modified


def test_write_card_overwrites_atomically(tmp_path):
    (tmp_path / "README.md").write_text("old card")
    readme = write_card(make_results(), tmp_path, library_versions=VERSIONS)
    assert readme.read_text().startswith("---\n")
    assert oct(readme.stat().st_mode & 0o777) == oct(0o644)
    with pytest.raises(ValueError, match="relative path"):
        build_model_card(make_results(), plot_file="../outside.png")


def test_forget_loss_row_and_relearn_not_reached():
    results = make_results(relearn_time={"epochs": None, "forget_losses": [3.0, 2.0], "max_epochs": 1})
    for model, loss in (("original", 0.0123), ("unlearned", 2.75), ("retrain", 3.5)):
        results[model]["forget_loss"] = loss
    card = build_model_card(results, library_versions=VERSIONS)
    assert table_rows(card.text)["forget_loss"][:4] == ["0.0123", "2.75", "3.5", "0.75"]  # raw, not a percentage
    assert "not relearned within 1 epochs (forget loss per epoch, from 0: 3, 2)" in card.text
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    assert {e.metric_type: e.metric_value for e in evals}["forget_loss"] == 2.75
