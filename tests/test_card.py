"""The evaluation model card: metadata (model-index with custom metrics), body (exact numbers), plot, redaction."""

import copy
import re
import struct

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results

from hf_scrub.card import PLOT_FILE, build_model_card, history_figure, plot_history, strip_local_paths, write_card

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


def model_index_values(card):
    _, evals = model_index_to_eval_results(card.data.to_dict()["model-index"])
    return {e.metric_type: e.metric_value for e in evals}


def drawn_lines(ax):
    """{gid: Line2D} of the lines drawn in `ax` (the curves have their history key as gid)."""
    return {line.get_gid(): line for line in ax.get_lines()}


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
    forget_ax, retain_ax = history_figure(history, None).axes
    assert list(drawn_lines(forget_ax)) == ["forget_error"] and list(drawn_lines(retain_ax)) == ["retain_error"]
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


# --------------------------------------------------------------------------------------------------------------------
# What the plot draws


def test_plot_draws_each_history_value_in_its_panel():
    fig = history_figure(HISTORY, 2)
    forget_ax, retain_ax = fig.axes
    epochs = [0, 1, 2, 3]
    forget_lines, retain_lines = drawn_lines(forget_ax), drawn_lines(retain_ax)
    assert list(forget_lines) == ["forget_error", "forget_validation_error", "rewind_target", "rewind_epoch"]
    assert list(retain_lines) == ["retain_error", "rewind_epoch"]
    for ax, key in ((forget_ax, "forget_error"), (forget_ax, "forget_validation_error"), (retain_ax, "retain_error")):
        line = drawn_lines(ax)[key]
        assert list(line.get_xdata()) == epochs, key
        np.testing.assert_allclose(line.get_ydata(), [100 * row[key] for row in HISTORY], err_msg=key)
    assert forget_lines["forget_error"].get_label() == "forget"
    assert forget_lines["forget_validation_error"].get_label() == "forget-validation (held out)"
    assert retain_lines["retain_error"].get_label() == "retain"
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert legend == ["forget", "forget-validation (held out)", "retain", "rewind target"]
    # The retain panel has its own scale: 0-5 % fills it instead of hugging the bottom of a 0-100 % axis.
    assert forget_ax.get_ylim()[1] >= 100
    low, high = retain_ax.get_ylim()
    assert low <= 0 and 5 < high < 10


def test_plot_marks_the_rewind_epoch_and_target():
    forget_ax, retain_ax = history_figure(HISTORY, 2).axes
    for ax in (forget_ax, retain_ax):
        assert list(drawn_lines(ax)["rewind_epoch"].get_xdata()) == [2, 2]
    assert list(drawn_lines(forget_ax)["rewind_target"].get_ydata()) == [100.0, 100.0]  # final forget-validation
    (label,) = forget_ax.texts
    assert label.get_text() == "SCRUB+R keeps epoch 2" and label.xy[0] == 2

    (label0,) = history_figure(HISTORY, 0).axes[0].texts
    assert label0.get_text() == "SCRUB+R keeps original model" and label0.xy[0] == 0

    plain = history_figure(HISTORY, None)
    assert not plain.axes[0].texts
    assert {"rewind_epoch", "rewind_target"}.isdisjoint(gid for ax in plain.axes for gid in drawn_lines(ax))


def test_plot_overlapping_curves_stay_distinguishable():
    # forget and forget-validation error coincide at 100 % in epoch 3: marker, size, line style and z-order differ,
    # the one drawn on top is the smaller, and the lower one has open markers, so both stay visible.
    lines = drawn_lines(history_figure(HISTORY, None).axes[0])
    forget, validation = lines["forget_error"], lines["forget_validation_error"]
    assert forget.get_ydata()[-1] == validation.get_ydata()[-1] == 100.0
    assert forget.get_marker() != validation.get_marker()
    assert forget.get_linestyle() != validation.get_linestyle()
    assert forget.get_color() != validation.get_color()
    assert validation.get_zorder() > forget.get_zorder()
    assert validation.get_markersize() < forget.get_markersize()
    assert forget.get_markerfacecolor() == "none"


# --------------------------------------------------------------------------------------------------------------------
# Model name, rounding, paths, warnings


def test_model_name_from_repo_id_then_output_folder_never_from_the_original():
    results = make_results()

    def name(**kwargs):
        card = build_model_card(results, library_versions=VERSIONS, **kwargs)
        title = re.search(r"^# (.+)$", card.text, re.MULTILINE).group(1)
        assert card.data.model_name == title
        return title

    assert name(repo_id="alice/mnist-without-3", model_name="out-folder") == "mnist-without-3"
    assert name(model_name="mnist-without-3-run") == "mnist-without-3-run"
    assert name(model_name="/tmp/runs/final-out/") == "final-out"
    assert name() == "unlearned-model"  # not "mnist-cnn-...": that is the original model
    assert name(model_name=".staging-1234") == "unlearned-model"
    assert name(model_name="models--acme--mnist-cnn") == "unlearned-model"


def test_write_card_into_a_staging_folder_takes_the_given_name(tmp_path):
    staging = tmp_path / "final-out" / ".staging-77"
    readme = write_card(make_results(), staging, model_name="final-out", library_versions=VERSIONS)
    text = readme.read_text()
    assert front_matter(text)["model-index"][0]["name"] == "final-out" and "\n# final-out\n" in text
    assert ".staging" not in text
    assert "staging-77" not in write_card(make_results(), staging, library_versions=VERSIONS).read_text()


def test_cache_snapshot_of_the_original_is_shown_by_its_repository_name():
    model = "/root/.cache/huggingface/hub/models--acme--mnist-cnn/snapshots/0123abcd"
    card = build_model_card(make_results(model=model), library_versions=VERSIONS)
    assert card.data.base_model is None and card.data.model_name == "unlearned-model"
    assert "a local model (`mnist-cnn`, not on the Hub)" in card.text
    assert "0123abcd" not in str(card) and "models--" not in str(card) and ".cache" not in str(card)


def test_model_index_values_are_rounded():
    results = make_results()
    results["unlearned"].update(
        forget_accuracy=0.97222222,
        retain_accuracy=np.float64(0.99687499),
        test_accuracy=np.float32(0.875),
        mia=61.23456,
        mia_auc=64.2,
        forget_loss=2.7512345,
        num_seen=np.int64(12),
        forget_validation_accuracy=-1e-9,
    )
    card = build_model_card(results, library_versions=VERSIONS)
    values = model_index_values(card)
    assert values["forget_accuracy"] == 0.9722 and values["retain_accuracy"] == 0.9969
    assert values["test_accuracy"] == 0.875 and values["mia"] == 61.23 and values["mia_auc"] == 64.2
    assert values["forget_loss"] == 2.751 and values["num_seen"] == 12 and type(values["num_seen"]) is int
    assert values["forget_validation_accuracy"] == 0.0
    meta = str(card).split("---\n", 2)[1]
    assert "0.97222222" not in meta and "61.23456" not in meta and "2.7512345" not in meta and "-0.0" not in meta
    assert "mia: 61.23" not in meta and "value: 61.23" in meta  # plain YAML numbers


ABSOLUTE = re.compile(r"(?:^|[\s(\[{\"'`=,;|])(?:~?/[\w.~-]|[A-Za-z]:\\|\\\\)")


def test_no_absolute_local_path_anywhere(tmp_path):
    results = make_results(
        model="/tmp/x/y/model",
        dataset="/root/cache/abc",
        retrain_model_name_or_path="/root/ckpt/retrain-model",
        output_dir="/tmp/out/final-out",
        warnings=["the held-out share in /root/data/heldout was seen by the original model; MIA is not evidence"],
    )
    results["hyperparameters"].update(
        output_dir="/tmp/out/final-out",
        logging_dir="C:\\Users\\bob\\logs",
        resume_from_checkpoint="~/ckpt/checkpoint-9",
        run_name="runs/alice/2024/exp",
    )
    results["forget"]["forget_ids_file"] = str(tmp_path / "ids.txt")
    staging = tmp_path / "final-out" / ".staging-9"
    text = write_card(results, staging, model_name=str(tmp_path / "final-out"), library_versions=VERSIONS).read_text()
    for fragment in ("/tmp", "/root", "/home", "Users", "~/", "C:", str(tmp_path), ".staging", "ckpt", "alice/2024"):
        assert fragment not in text, fragment
    assert not ABSOLUTE.search(text), ABSOLUTE.search(text)
    meta = front_matter(text)
    assert "base_model" not in meta and "datasets" not in meta
    assert "# final-out\n" in text and "a local model (`model`, not on the Hub)" in text
    assert "the held-out share in heldout was seen" in text
    assert "| `output_dir` | final-out |" in text and "| `logging_dir` | logs |" in text
    assert "| `run_name` | exp |" in text
    # Hub ids, URLs and relative names are not paths.
    assert "https://huggingface.co/" not in text and "https://arxiv.org/abs/2302.09880" in text
    hub = build_model_card(make_results(dataset="acme/mnist"), library_versions=VERSIONS)
    assert hub.data.base_model == "acme/mnist-cnn" and hub.data.datasets == ["acme/mnist"]
    assert "[`acme/mnist-cnn`](https://huggingface.co/acme/mnist-cnn)" in hub.text


def test_warnings_shown_above_the_numbers():
    results = make_results(
        warnings=[
            "The held-out share was seen by the original model:\nMIA is not privacy evidence.",
            "Only 7 forget examples.",
        ],
        verdict={"passed": False, "warnings": ["Only 7 forget examples.", "No retrained reference."]},
    )
    text = build_model_card(results, library_versions=VERSIONS).text
    blocks = [line for line in text.splitlines() if line.startswith("> ")]
    assert blocks == [
        "> ⚠️ **Warning:** The held-out share was seen by the original model: MIA is not privacy evidence.",
        "> ⚠️ **Warning:** Only 7 forget examples.",
        "> ⚠️ **Warning:** No retrained reference.",
    ]
    first = text.index(blocks[0])
    assert text.index("# unlearned-model") < first
    assert max(text.index(b) for b in blocks) < text.index("This model is") < text.index("| Metric |")
    assert text.count("Only 7 forget examples.") == 1  # a warning repeated in the verdict is shown once
    assert "Warning" not in build_model_card(make_results(), library_versions=VERSIONS).text
    single = build_model_card(make_results(warnings="one warning"), library_versions=VERSIONS).text
    assert "> ⚠️ **Warning:** one warning" in single


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("saved in /tmp/x/y/model.", "saved in model."),
        ("(/root/a, ~/b/c; C:\\Users\\bob\\d and \\\\srv\\share\\e)", "(a, c; d and e)"),
        ("see https://huggingface.co/acme/x </details> 1/2 path/to/folder forget / retain", None),
    ],
)
def test_absolute_paths_in_free_text_reduced_urls_and_markup_kept(text, expected):
    assert strip_local_paths({"note": text}) == {"note": text if expected is None else expected}
