"""Every method and data option a user can pass to `scripts/scrub.py`, end to end on real files (issue 14, item 4).

The original is the tiny trained classifier of `cli_fixtures.assets` (it reads the label word in each review). Each
test states what the option must change in the result, so a flag that is silently ignored fails here.
"""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest
import torch
from cli_fixtures import assert_complete, refused, results_of, review_rows, scrub
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from hf_scrub import cli
from hf_scrub.offline import minilm_model_path

pytestmark = pytest.mark.slow  # real CLI runs


def without_forget_epochs(argv: list[str]) -> list[str]:
    """The baselines have no max-step passes, so no `--forget_epochs` (a SCRUB option)."""
    index = argv.index("--forget_epochs")
    return argv[:index] + argv[index + 2 :]


def data_dict(tmp_path, n_train=60, n_test=15):
    path = tmp_path / "dict"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(review_rows(n_train)),
            "test": datasets.Dataset.from_dict(review_rows(n_test)),
        }
    ).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("method", ["finetune", "neggrad_plus", "bad_teacher"])
def test_baseline_methods(assets, tmp_path, method):
    flags = {
        "finetune": ["--num_train_epochs", "2"],
        "neggrad_plus": ["--num_train_epochs", "3", "--beta", "0.5", "--learning_rate", "3e-2"],
        "bad_teacher": ["--num_train_epochs", "3", "--learning_rate", "3e-2", "--retain_fraction", "0.5"],
    }[method]
    argv = scrub(assets, tmp_path, "--method", method, "--forget_classes", "1", *flags, data=data_dict(tmp_path))
    assert cli.main(without_forget_epochs(argv)) == 0
    results = assert_complete(tmp_path / "out")
    original, unlearned = results["original"], results["unlearned"]
    assert results["method"] == method and original["forget_accuracy"] == 1.0
    if method == "finetune":  # cross-entropy on the retain set only: the retained classes stay right
        assert unlearned["test_retain_classes_accuracy"] == 1.0
    else:  # both push the forgotten class away: its loss rises well above the original's
        assert unlearned["forget_loss"] > 2 * original["forget_loss"]
    if method == "neggrad_plus":
        assert results["hyperparameters"]["beta"] == 0.5  # the method's own option reached its config
    else:
        assert "beta" not in results["hyperparameters"]


def test_retrain_init_from_starts_from_that_checkpoint(assets, tmp_path):
    """--method retrain --retrain_init_from: the retrained encoder starts at the given checkpoint, not at random."""
    common = ["--method", "retrain", "--forget_classes", "1", "--learning_rate", "1e-4"]
    for out, extra in (("init", ["--retrain_init_from", assets / "model"]), ("scratch", [])):
        assert cli.main(without_forget_epochs(scrub(assets, tmp_path, *common, *extra, out=out))) == 0
    start = AutoModelForSequenceClassification.from_pretrained(assets / "model").state_dict()
    key = "bert.embeddings.word_embeddings.weight"
    for folder, close in (("init", True), ("scratch", False)):
        weights = AutoModelForSequenceClassification.from_pretrained(tmp_path / folder).state_dict()
        assert torch.allclose(weights[key], start[key], atol=1e-2) is close, folder


def test_retrain_init_from_without_retrain_is_refused(assets, tmp_path, capsys, loads):
    argv = scrub(assets, tmp_path, "--num_forget_examples", "5", "--retrain_init_from", assets / "model")
    assert (
        cli.main(argv) == 2
        and "--retrain_init_from is the starting point of --method retrain" in capsys.readouterr().err
    )
    assert loads == []


def test_dataset_config_name_picks_the_configuration(assets, tmp_path):
    """A local dataset folder with two configurations (README.md `configs:`), loaded like a Hub dataset."""
    root = tmp_path / "reviews_by_size"
    for name, size in (("small", 30), ("large", 60)):
        (root / name).mkdir(parents=True)
        pd.DataFrame(review_rows(size)).to_csv(root / name / "train.csv", index=False)
        pd.DataFrame(review_rows(9)).to_csv(root / name / "test.csv", index=False)
    (root / "README.md").write_text(
        "---\nconfigs:\n"
        + "".join(
            f"- config_name: {name}\n  data_files:\n  - split: train\n    path: {name}/train.csv\n"
            f"  - split: test\n    path: {name}/test.csv\n"
            for name in ("small", "large")
        )
        + "---\n"
    )
    for name, size in (("small", 30), ("large", 60)):
        argv = scrub(assets, tmp_path, "--forget_classes", "2", "--dataset_config_name", name, data=root, out=name)
        assert cli.main(argv) == 0
        forget = results_of(tmp_path / name)["forget"]
        assert forget["num_examples"] == size // 3 and forget["num_retain_examples"] == size - size // 3
        assert forget["num_test_examples"] == 9 and not forget["test_held_out_from_train"]


def test_task_flag_overrides_the_inferred_task(assets, tmp_path, capsys):
    """A text column named 'image' makes the task look like image classification; --task says otherwise."""
    rows = review_rows(60)
    pd.DataFrame({"image": rows["text"], "label": rows["label"]}).to_csv(tmp_path / "odd.csv", index=False)
    argv = scrub(assets, tmp_path, "--forget_classes", "0", "--text_column", "image", data=tmp_path / "odd.csv")
    assert cli.main(argv) != 0  # inferred as image classification: the "images" are strings
    capsys.readouterr()
    assert cli.main([*argv, "--task", "text-classification"]) == 0
    assert results_of(tmp_path / "out")["task"] == "text-classification"


@pytest.mark.parametrize("file_format", ["json", "parquet"])
def test_json_and_parquet_files_with_ids(assets, tmp_path, file_format):
    """Data files without a test split, the forget set named by ids in an id column."""
    rows = review_rows(60) | {"uid": [f"u{i:03d}" for i in range(60)]}
    frame = pd.DataFrame(rows)
    path = tmp_path / f"reviews.{file_format}"
    frame.to_json(path, orient="records") if file_format == "json" else frame.to_parquet(path)
    ids = ["u004", "u010", "u033", "u059"]
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    argv = scrub(assets, tmp_path, "--id_column", "uid", "--forget_indices_file", tmp_path / "ids.json", data=path)
    assert cli.main(argv) == 0
    forget = results_of(tmp_path / "out")["forget"]
    assert forget["type"] == "ids" and forget["num_examples"] == 4
    assert forget["num_retain_examples"] + forget["num_test_examples"] == 56 and forget["test_held_out_from_train"]


def test_goal_driven_preset_stops_on_its_target_and_says_so(assets, tmp_path, capsys):
    """`--preset auto` (`--schedule auto`, `--retain_steps_per_forget_step`) through the script: the class is
    forgotten, the run stops before its budget, and the verdict says why; the fixed schedule would run every epoch."""
    argv = scrub(assets, tmp_path, "--preset", "auto", "--forget_classes", "1", data=data_dict(tmp_path))
    argv = without_forget_epochs(argv) + ["--forget_epochs", "1"]
    argv[argv.index("--num_train_epochs") + 1] = "6"
    assert cli.main(argv) == 0
    results = assert_complete(tmp_path / "out")
    verdict = results["verdict"]
    assert results["unlearned"]["forget_accuracy"] <= 0.02 and verdict["forget_target_met"] is True
    assert verdict["stopped_because"].startswith("goal-driven schedule: goal reached after epoch ")
    epochs = int(verdict["stopped_because"].split("after epoch ")[1].split()[0])
    assert 1 <= epochs < 6
    assert f"goal reached after epoch {epochs} of at most 6" in capsys.readouterr().out


def test_without_preset_or_schedule_scrub_is_goal_driven_and_schedule_fixed_is_the_papers(assets, tmp_path):
    """The CLI's default for --method scrub is the goal-driven preset (`cli.DEFAULT_PRESET`): it stops on its own
    target and says so; `--schedule fixed` gives the paper's schedule, which runs every epoch of its budget."""
    data = data_dict(tmp_path)
    runs = {}
    for schedule in (None, "fixed"):
        argv = scrub(assets, tmp_path, "--forget_classes", "1", data=data, out=f"out-{schedule}", schedule=schedule)
        argv[argv.index("--num_train_epochs") + 1] = "4"
        assert ("--schedule" in argv) == (schedule is not None)
        assert cli.main(argv) == 0
        runs[schedule] = assert_complete(tmp_path / f"out-{schedule}")
    auto, fixed = runs[None], runs["fixed"]
    assert auto["hyperparameters"]["schedule"] == "auto" and fixed["hyperparameters"]["schedule"] == "fixed"
    # The preset's own setting arrives; the fixed schedule keeps ScrubConfig's default (no bound).
    assert auto["hyperparameters"]["retain_steps_per_forget_step"] == 1.0
    assert fixed["hyperparameters"]["retain_steps_per_forget_step"] is None
    assert auto["verdict"]["stopped_because"].startswith("goal-driven schedule: goal reached after epoch ")
    assert len(auto["history"]) < 4 + 1
    assert [entry["epoch"] for entry in fixed["history"]] == [0, 1, 2, 3, 4]
    assert "goal-driven" not in fixed["verdict"]["stopped_because"]


@pytest.fixture(scope="module")
def memorising_text_assets(tmp_path_factory):
    """A small BERT fine-tuned on 160 Rotten Tomatoes snippets until it memorises them (train accuracy ~1, unseen
    ~0.6): the fine-tuned text classifier whose stop reason once said "goal reached" beside "retain NOT kept"."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from hf_scrub.offline import load_rotten_tomatoes
    from hf_scrub.tasks import prepare_dataset

    root = tmp_path_factory.mktemp("memorising")
    data = load_rotten_tomatoes(max_examples=200, seed=3)
    data.save_to_disk(str(root / "data"))
    tokenizer = AutoTokenizer.from_pretrained(minilm_model_path())
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=2)  # fmt: skip
    model = BertForSequenceClassification(config)
    train = prepare_dataset(data["train"], "text-classification", tokenizer, max_length=32)
    args = TrainingArguments(output_dir=str(root / "trainer"), use_cpu=True, report_to="none", seed=0,
                             num_train_epochs=25, per_device_train_batch_size=16, learning_rate=3e-3,
                             save_strategy="no", disable_tqdm=True)  # fmt: skip
    Trainer(model=model, args=args, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer)).train()
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    return root


def test_stop_reason_verdict_and_returned_epoch_are_one_judgement(memorising_text_assets, tmp_path):
    """The CLI default on a memorising text classifier (selective request, unseen test rows): the verdict is the
    judgement of the epoch the run returned, its summary carries the stop reason, no epoch after the first one the
    judge accepted was run, and "goal reached" never stands beside a target not met or retain not kept."""
    root = memorising_text_assets
    argv = ["--model_name_or_path", str(root / "model"), "--dataset_name", str(root / "data"),
            "--output_dir", str(tmp_path / "out"), "--forget_classes", "1", "--num_forget_examples", "20",
            "--test_split", "test", "--num_train_epochs", "4", "--max_length", "32", "--report_to", "none",
            "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no"]  # fmt: skip
    assert cli.main(argv) == 0
    results = assert_complete(tmp_path / "out")
    verdict, history = results["verdict"], results["history"]
    assert results["hyperparameters"]["schedule"] == "auto" and verdict["kind"] == "distribution"
    assert verdict["epoch"] == results["returned_epoch"] in [entry["epoch"] for entry in history]
    judged = next(entry for entry in history if entry["epoch"] == verdict["epoch"])
    assert judged["forget_status"] == verdict["forget_status"] and judged["retain_kept"] == verdict["retain_kept"]
    assert verdict["summary"].endswith(verdict["stopped_because"] + ".")
    accepted = [entry["epoch"] for entry in history if entry["forget_status"] == "met" and entry["retain_kept"]]
    assert not accepted or accepted[0] == history[-1]["epoch"]  # no epoch after the judge was satisfied
    if accepted:
        assert "goal reached" in verdict["stopped_because"] and verdict["forget_target_met"] is verdict["retain_kept"]
    else:
        assert "goal reached" not in verdict["stopped_because"]
    assert history[0]["forget_status"] == "short"  # the original memorised its forget rows


def test_the_goal_driven_default_is_refused_under_fsdp_before_the_model_loads(
    assets, tmp_path, capsys, loads, monkeypatch
):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what `accelerate launch` with an FSDP config sets
    argv = scrub(assets, tmp_path, "--forget_classes", "1", schedule=None)
    refused(capsys, argv, "The goal-driven schedule", "not available under FSDP", "--schedule fixed")
    assert loads == [] and not (tmp_path / "out").exists()


def test_a_launched_run_leaves_its_process_group_once_done_and_only_then(assets, tmp_path):
    """A run that succeeded destroys its process group, as torch asks of launched programs (docs/design.md §7); one
    that failed leaves it to the other ranks' error path (destroying there could wait on a rank still inside a
    collective)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert cli.main(scrub(assets, tmp_path, "--forget_classes", "7", out="refused")) == 2  # no such class
        assert dist.is_initialized()
        assert cli.main(scrub(assets, tmp_path, "--forget_classes", "1")) == 0
        assert not dist.is_initialized()
        assert_complete(tmp_path / "out")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
