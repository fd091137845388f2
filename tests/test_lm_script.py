"""`scripts/scrub.py` on a causal LM, end to end on real files: a tiny Llama with SmolLM2's real tokenizer and chat
template, saved with `save_pretrained`, and fictitious-facts data saved with `save_to_disk` / as JSON lines.

What a user of the CLI relies on: the task is inferred from the model, LoRA and the `llm` preset are the defaults,
the output holds the adapter (and the merged model on request) and the evidence, the input model folder is never
written, and bad requests are refused before the model loads.
"""

import json

import datasets
import pytest
from cli_fixtures import folder_digest, refused, results_of

from hf_scrub import cli
from hf_scrub.lm_models import make_fictitious_facts, smollm2_tokenizer, tiny_llama

FAST = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no",
        "--num_train_epochs", "2", "--forget_epochs", "1", "--per_device_train_batch_size", "8",
        "--per_device_forget_batch_size", "4", "--max_length", "48", "--learning_rate", "1e-3",
        "--activation_checkpointing", "false"]  # fmt: skip


@pytest.fixture(scope="module")
def lm_assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm_assets")
    tokenizer = smollm2_tokenizer()
    model = tiny_llama(seed=0)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    facts = make_fictitious_facts(12, seed=0)
    data = datasets.DatasetDict({"train": facts["train"], "test": facts["holdout"]})
    data.save_to_disk(str(root / "facts"))
    (root / "forget.json").write_text(json.dumps([0, 1, 2, 3]))
    messages = [
        {"messages": [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]}
        for row in facts["train"]
    ]
    with open(root / "chat.jsonl", "w") as file:
        for index, row in enumerate(messages):
            file.write(json.dumps({**row, "forget": index < 4}) + "\n")
    return root


def lm_run(lm_assets, tmp_path, *flags, data=None):
    return ["--model_name_or_path", str(lm_assets / "model"), "--dataset_name", str(data or lm_assets / "facts"),
            "--output_dir", str(tmp_path / "out"), *FAST, *map(str, flags)]  # fmt: skip


def test_default_run_is_lora_with_the_goal_driven_preset_and_writes_the_evidence(lm_assets, tmp_path, capsys):
    before = folder_digest(lm_assets / "model")
    argv = lm_run(
        lm_assets, tmp_path, "--forget_indices_file", lm_assets / "forget.json", "--save_merged_model", "true"
    )
    assert cli.main(argv) == 0
    out = tmp_path / "out"
    results = results_of(out)
    assert results["task"] == "causal-lm"
    assert results["hyperparameters"]["preset"] == "llm_auto" and results["hyperparameters"]["use_peft"] is True
    assert results["hyperparameters"]["schedule"] == "auto"
    assert results["forget"]["num_examples"] == 4
    verdict = results["verdict"]  # the judgement of the returned epoch: the stop reason and the verdict agree
    assert verdict["kind"] == "distribution" and verdict["stopped_because"].startswith("goal-driven schedule: ")
    assert verdict["epoch"] in [entry["epoch"] for entry in results["history"]]
    if "goal reached" in verdict["stopped_because"]:
        assert verdict["forget_target_met"] is True and verdict["retain_kept"] is True
    for column in ("original", "unlearned"):
        report = results[column]
        for key in ("forget_accuracy", "retain_accuracy", "test_accuracy", "forget_answer_accuracy", "forget_loss"):
            assert 0 <= report[key] <= (1 if "accuracy" in key else 100), key
    assert [entry["epoch"] for entry in results["history"]][0] == 0
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert not (out / "model.safetensors").exists() and not (out / "scrub_teacher").exists()
    assert (out / "merged" / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert folder_digest(lm_assets / "model") == before  # the input model is never written
    printed = capsys.readouterr().out
    assert "forget_answer_accuracy" in printed and "verdict:" in printed


def test_chat_messages_with_a_forget_column(lm_assets, tmp_path):
    flags = ["--forget_column", "forget", "--test_size", "0.25", "--max_length", "96"]
    assert cli.main(lm_run(lm_assets, tmp_path, *flags, data=lm_assets / "chat.jsonl")) == 0
    results = results_of(tmp_path / "out")
    assert results["task"] == "causal-lm" and results["forget"]["num_examples"] == 4
    # one assistant turn: the greedy continuation of the rendered conversation is compared with the answer
    assert 0 <= results["unlearned"]["forget_answer_accuracy"] <= 1


@pytest.mark.parametrize(
    ("flags", "messages"),
    [
        (["--forget_classes", "3"], ["forget_classes needs class labels"]),
        (["--num_forget_examples", "4", "--cache_teacher_outputs", "true"], ["refused for causal LMs"]),
        (["--num_forget_examples", "4", "--max_length", "8"], ["carry no loss-bearing token", "--max_length"]),
    ],
)
def test_bad_requests_are_refused_before_the_model_loads(lm_assets, tmp_path, capsys, loads, flags, messages):
    refused(capsys, lm_run(lm_assets, tmp_path, *flags), *messages)
    assert loads == []  # the data is tokenized (and its rows checked) with the tokenizer alone


def test_classifier_only_baselines_are_refused_for_causal_lms(lm_assets, tmp_path, capsys, loads):
    argv = lm_run(lm_assets, tmp_path, "--num_forget_examples", "4", "--method", "neggrad_plus")
    argv = [a for i, a in enumerate(argv) if "--forget_epochs" not in argv[max(i - 1, 0) : i + 1]]
    refused(capsys, argv, "--method neggrad_plus is not available for causal language models")
    assert loads == []


def test_retrain_column_adds_privleak_and_forget_quality_and_generic_text_is_the_users(lm_assets, tmp_path, capsys):
    retrain = tmp_path / "retrain"
    tiny_llama(seed=1).save_pretrained(retrain)
    smollm2_tokenizer().save_pretrained(retrain)
    generic = tmp_path / "generic.txt"
    generic.write_text("The river runs past the old mill and into the lake.\nBread rises in a warm kitchen.\n")
    argv = lm_run(lm_assets, tmp_path, "--forget_indices_file", lm_assets / "forget.json",
                  "--retrain_model_name_or_path", retrain, "--generic_text_file", generic)  # fmt: skip
    assert cli.main(argv) == 0
    results = results_of(tmp_path / "out")
    unlearned, original, retrained = results["unlearned"], results["original"], results["retrain"]
    for report in (unlearned, original, retrained):
        ratios = report["forget_truth_ratios"]
        assert len(ratios) == 4  # one per forget row (3 perturbed answers each)
        assert report["forget_truth_ratio"] == pytest.approx(sum(min(r, 1 / r) for r in ratios) / 4)  # TOFU's
        assert 0.0 <= report["auc_min_k"] <= 1.0 and report["generic_perplexity"] > 1.0
        # The retain rows carry the truth-ratio columns, so they are TOFU's retain set: model utility is the
        # harmonic mean of its answer probability, ROUGE-L recall and truth ratio (no real authors, world facts).
        utility = [report[f"retain_qa_{key}"] for key in ("answer_probability", "rouge_l_recall", "truth_ratio")]
        assert report["model_utility"] == pytest.approx(0.0 if 0 in utility else 3 / sum(1 / u for u in utility))
    for report in (unlearned, original):  # compared with Retrain: its own column has no comparison
        # MUSE's PrivLeak, on its AUC orientation (1 - AUC here)
        assert report["privleak_min_k"] == pytest.approx(
            100 * ((1 - report["auc_min_k"]) - (1 - retrained["auc_min_k"])) / (1 - retrained["auc_min_k"])
        )
        assert 0.0 <= report["forget_quality"] <= 1.0
    assert "forget_quality" not in retrained and original["generic_perplexity_ratio"] == 1.0
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Forget quality (KS p-value vs Retrain)" in card and "PrivLeak (Min-K%)" in card
    assert "Model utility (TOFU: harmonic mean)" in card
    # The user's generic text replaced the shipped one: 2 short lines give another perplexity than 48 paragraphs.
    shipped = tmp_path / "shipped"
    argv = lm_run(lm_assets, shipped, "--forget_indices_file", lm_assets / "forget.json")
    assert cli.main(argv) == 0
    assert results_of(shipped / "out")["original"]["generic_perplexity"] != original["generic_perplexity"]


def test_a_missing_generic_text_file_is_refused_before_the_model_loads(lm_assets, tmp_path, capsys, loads):
    argv = lm_run(lm_assets, tmp_path, "--num_forget_examples", "4", "--generic_text_file", tmp_path / "nope.txt")
    refused(capsys, argv, "--generic_text_file", "no such file")
    assert loads == []
