"""TOFU and MUSE as published (hf_scrub.benchmark_data): the shipped replicas (invented rows in the Hub's exact
configs and columns) read through `datasets.load_dataset`, as a user's copy or the Hub dataset would be; the Hub ids
through the same code with only the network boundary redirected to the replicas; bad layouts refused with the fix
named, before any model loads; and `scripts/scrub.py --benchmark tofu|muse` end to end, whose results and card hold
TOFU's model utility and MUSE's knowmem / verbmem / privleak numbers."""

import json
import shutil
from importlib import resources
from pathlib import Path

import datasets
import numpy as np
import pytest
from cli_fixtures import refused, results_of

from hf_scrub import cli
from hf_scrub.benchmark_data import MUSE_HUB_ID, TOFU_HUB_ID, chunk_documents, load_muse, load_tofu
from hf_scrub.lm_evaluation import EVALUATION_MAX_LENGTHS, llm_evaluation_splits
from hf_scrub.lm_models import smollm2_tokenizer, tiny_llama

DATA = Path(str(resources.files("hf_scrub").joinpath("data")))
TOFU_REPLICA, MUSE_REPLICA = DATA / "tofu", DATA / "muse"


def raw(config: str, split: str = "train", folder: Path = TOFU_REPLICA) -> datasets.Dataset:
    return datasets.load_dataset(str(folder), config, split=split)


@pytest.fixture
def hub(monkeypatch):
    """The Hub ids resolve to the replicas: only `datasets`' network entry points are redirected."""
    replicas = {TOFU_HUB_ID: str(TOFU_REPLICA), MUSE_HUB_ID: str(MUSE_REPLICA)}
    load, names = datasets.load_dataset, datasets.get_dataset_config_names
    monkeypatch.setattr(datasets, "load_dataset", lambda path, *a, **k: load(replicas.get(path, path), *a, **k))
    monkeypatch.setattr(datasets, "get_dataset_config_names", lambda path, **k: names(replicas.get(path, path), **k))


# ---- TOFU ---------------------------------------------------------------------------------------------------------


def test_tofu_configs_become_forget_retain_holdout_and_utility_sets_without_renaming():
    data = load_tofu(str(TOFU_REPLICA), "forget10")
    forget, retain, test = data.splits["forget"], data.splits["retain"], data.splits["test"]
    assert (len(forget), len(retain), len(test)) == (8, 72, 8)
    source, perturbed = raw("forget10"), raw("forget10_perturbed")
    # chat format: the question is the user's message, the answers the assistant's
    assert forget["prompt"][0] == [{"role": "user", "content": source["question"][0]}]
    assert forget["completion"][3] == [{"role": "assistant", "content": source["answer"][3]}]
    assert forget["paraphrased_completion"][5][0]["content"] == perturbed["paraphrased_answer"][5]
    assert [m[0]["content"] for m in forget["perturbed_completions"][2]] == perturbed["perturbed_answer"][2]
    assert test["prompt"][0][0]["content"] == raw("holdout10")["question"][0]
    assert data.configs == {
        "forget": "forget10", "retain": "retain90", "holdout": "holdout10",
        "forget_truth_ratio": "forget10_perturbed", "retain_qa": "retain_perturbed",
        "real_authors": "real_authors_perturbed", "world_facts": "world_facts_perturbed",
    }  # fmt: skip
    sets = data.evaluation_sets
    assert set(sets) == {"retain_qa", "real_authors", "world_facts"}
    assert "paraphrased_completion" in sets["retain_qa"].column_names  # TOFU's retain truth ratio uses paraphrases
    assert "paraphrased_completion" not in sets["world_facts"].column_names  # the answer itself is the right one
    splits = data.unlearning_splits(seed=0)
    assert splits.forget_type == "splits" and len(splits.forget_validation) == 8  # held out: never trained on


def test_tofu_plain_format_and_derived_configs():
    data = load_tofu(str(TOFU_REPLICA), "forget01", prompt_format="plain")
    assert data.configs["retain"] == "retain99" and data.configs["holdout"] == "holdout01"
    question, answer = raw("forget01")[0]["question"], raw("forget01")[0]["answer"]
    assert data.splits["forget"][0]["prompt"] == f"Question: {question}\nAnswer:"
    assert data.splits["forget"][0]["completion"] == f" {answer}"


def test_tofu_hub_id_reads_the_same_configs(hub):
    from_hub = load_tofu(TOFU_HUB_ID, "forget05")
    local = load_tofu(str(TOFU_REPLICA), "forget05")
    assert from_hub.source == TOFU_HUB_ID and from_hub.describe()["dataset"] == TOFU_HUB_ID
    for name in ("forget", "retain", "test"):
        assert from_hub.splits[name].to_list() == local.splits[name].to_list()


def test_tofu_evaluation_splits_for_truth_ratios_and_utility():
    data = load_tofu(str(TOFU_REPLICA), "forget10")
    splits = data.unlearning_splits()
    limits = []

    def prepare(rows, max_length=64):
        limits.append(max_length)
        return rows

    built = llm_evaluation_splits(splits.forget, splits.retain, prepare, data.evaluation_sets)
    assert set(built) == {
        "forget_paraphrased", "forget_perturbed", "retain_qa", "retain_qa_paraphrased", "retain_qa_perturbed",
        "real_authors", "real_authors_perturbed", "world_facts", "world_facts_perturbed",
    }  # fmt: skip
    assert len(built["real_authors_perturbed"]) == 3 * len(built["real_authors"])  # 3 wrong answers per row
    assert limits.count(EVALUATION_MAX_LENGTHS["retain_qa"]) == 7 and limits.count(64) == 2


@pytest.mark.parametrize(
    ("call", "messages"),
    [
        (lambda: load_tofu(str(TOFU_REPLICA), "forget07"), ["no config 'forget07' (from --forget_split)", "forget10"]),
        (lambda: load_tofu(str(TOFU_REPLICA), "forget10", retain_split="retain80"), ["--retain_split", "retain90"]),
        (lambda: load_tofu(str(TOFU_REPLICA), "my_forget"), ["pass --retain_split and --holdout_split"]),
        (lambda: load_tofu(TOFU_HUB_ID), ["cannot read the configs of 'locuslab/TOFU'", "local copy"]),
        (lambda: load_tofu(str(TOFU_REPLICA), prompt_format="llama2"), ["chat", "plain"]),
    ],
)
def test_tofu_layout_errors_name_the_fix(call, messages):
    with pytest.raises(ValueError) as error:
        call()
    for message in messages:
        assert message in str(error.value)


def edited_copy(tmp_path: Path, source: Path, name: str, edit) -> Path:
    """A copy of a replica with one data file's rows rewritten by `edit`, under a name of its own: `datasets` caches a
    local folder's configs by the folder's name and data-file names, so an edited copy called "tofu" would be read
    from the cache of the replica."""
    folder = tmp_path / f"{source.name}-{name.replace('/', '-').removesuffix('.json')}-edited"
    shutil.copytree(source, folder)
    path = folder / name
    rows = [edit(json.loads(line)) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def test_tofu_wrong_columns_and_misaligned_perturbed_answers_are_refused(tmp_path):
    renamed = edited_copy(tmp_path, TOFU_REPLICA, "forget10.json", lambda r: {"q": r["question"], "a": r["answer"]})
    with pytest.raises(ValueError, match=r"config 'forget10' lacks the column\(s\) \['question', 'answer'\]"):
        load_tofu(str(renamed))
    shuffled = edited_copy(tmp_path, TOFU_REPLICA, "forget10_perturbed.json", lambda r: {**r, "question": "?"})
    with pytest.raises(ValueError, match="does not hold the questions of 'forget10' in the same order"):
        load_tofu(str(shuffled))


# ---- MUSE ---------------------------------------------------------------------------------------------------------


def test_muse_configs_become_text_splits_and_its_evaluation_sets():
    tokenizer = smollm2_tokenizer()
    data = load_muse(str(MUSE_REPLICA), tokenizer=tokenizer, chunk_tokens=20)
    documents = raw("raw", "forget", MUSE_REPLICA)["text"]
    chunks = data.splits["forget"]["text"]
    ids = tokenizer("\n\n".join(documents), add_special_tokens=False)["input_ids"]
    assert len(chunks) == -(-len(ids) // 20) and "".join(chunks) == tokenizer.decode(ids)  # every token kept
    assert len(data.splits["retain"]) > len(raw("raw", "retain1", MUSE_REPLICA))  # cut into 20-token pieces
    sets = data.evaluation_sets
    assert set(sets) == {"knowmem_forget", "knowmem_retain", "verbmem_forget", "privleak_forget", "privleak_holdout"}
    shots, questions = raw("knowmem", "forget_qa_icl", MUSE_REPLICA), raw("knowmem", "forget_qa", MUSE_REPLICA)
    context = "".join(
        f"Question: {q}\nAnswer: {a}\n\n" for q, a in zip(shots["question"], shots["answer"], strict=True)
    )
    assert sets["knowmem_forget"][1]["prompt"] == f"{context}Question: {questions['question'][1]}\nAnswer: "
    assert sets["knowmem_forget"]["completion"] == questions["answer"]
    verbmem = raw("verbmem", "forget", MUSE_REPLICA)
    assert (
        sets["verbmem_forget"]["prompt"] == verbmem["prompt"] and sets["verbmem_forget"]["completion"] == verbmem["gt"]
    )
    assert sets["privleak_holdout"]["text"] == raw("privleak", "holdout", MUSE_REPLICA)["text"]
    assert data.configs["forget"] == "raw/forget" and data.configs["privleak_forget"] == "privleak/forget"
    # Without a tokenizer the documents stay whole.
    assert load_muse(str(MUSE_REPLICA)).splits["forget"]["text"] == documents


def test_muse_errors_name_the_fix(tmp_path):
    with pytest.raises(ValueError, match=r'Unknown split "retain3".*Check --retain_split'):
        load_muse(str(MUSE_REPLICA), retain_split="retain3")
    no_gt = edited_copy(tmp_path, MUSE_REPLICA, "verbmem/forget.json", lambda r: {"prompt": r["prompt"], "x": r["gt"]})
    with pytest.raises(ValueError, match=r"the verbmem config's 'forget' split lacks the column\(s\) \['gt'\]"):
        load_muse(str(no_gt))
    # One split of the raw config renamed: datasets cannot build the config; the error says what to fix.
    no_text = edited_copy(tmp_path, MUSE_REPLICA, "raw/forget.json", lambda r: {"body": r["text"]})
    with pytest.raises(ValueError, match="config 'raw' of .* cannot be read .* published columns"):
        load_muse(str(no_text))
    with pytest.raises(ValueError, match="chunks of --max_length tokens"):
        chunk_documents(["a b"], smollm2_tokenizer(), 0)


# ---- scripts/scrub.py ---------------------------------------------------------------------------------------------

FAST = ["--report_to", "none", "--use_cpu", "true", "--disable_tqdm", "true", "--save_strategy", "no",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "8",
        "--per_device_forget_batch_size", "4", "--max_length", "48", "--learning_rate", "1e-3",
        "--activation_checkpointing", "false", "--method", "graddiff",
        "--per_device_eval_batch_size", "64"]  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmark_models")
    for name, seed in (("model", 0), ("retrain", 1)):
        tiny_llama(seed=seed).save_pretrained(root / name)
        smollm2_tokenizer().save_pretrained(root / name)
    return root


def argv(models, tmp_path, *flags):
    return [
        "--model_name_or_path",
        str(models / "model"),
        "--output_dir",
        str(tmp_path / "out"),
        *FAST,
        *map(str, flags),
    ]


def test_script_runs_tofu_from_its_hub_id_end_to_end(models, tmp_path, hub):
    flags = ["--benchmark", "tofu", "--forget_split", "forget05", "--retain_split", "retain95",
             "--holdout_split", "holdout05", "--benchmark_prompt_format", "plain",
             "--retrain_model_name_or_path", models / "retrain"]  # fmt: skip
    assert cli.main(argv(models, tmp_path, *flags)) == 0
    results = results_of(tmp_path / "out")
    assert results["dataset"] == TOFU_HUB_ID and results["benchmark"]["configs"]["retain"] == "retain95"
    assert results["forget"]["num_examples"] == 4 and results["forget"]["num_retain_examples"] == 76
    unlearned, retrain = results["unlearned"], results["retrain"]
    for report in (unlearned, retrain, results["original"]):
        assert len(report["forget_truth_ratios"]) == 4
        ratios = np.array(report["forget_truth_ratios"])
        assert report["forget_truth_ratio"] == pytest.approx(np.mean(np.minimum(ratios, 1 / ratios)))
        utility = [report[key] for key in (
            "retain_qa_answer_probability", "retain_qa_rouge_l_recall", "retain_qa_truth_ratio",
            "real_authors_normalised_probability", "real_authors_rouge_l_recall", "real_authors_truth_ratio",
            "world_facts_normalised_probability", "world_facts_rouge_l_recall", "world_facts_truth_ratio",
        )]  # fmt: skip
        expected = 0.0 if min(utility) == 0 else len(utility) / sum(1 / value for value in utility)
        assert report["model_utility"] == pytest.approx(expected)
    assert unlearned["privleak_min_k"] == pytest.approx(
        ((1 - unlearned["auc_min_k"]) - (1 - retrain["auc_min_k"])) / (1 - retrain["auc_min_k"]) * 100
    )
    assert 0 <= unlearned["forget_quality"] <= 1
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Model utility (TOFU: harmonic mean)" in card and "type: locuslab/TOFU" in card
    assert "type: model_utility" in card  # in the model-index


def test_script_runs_muse_end_to_end(models, tmp_path):
    flags = ["--benchmark", "muse", "--dataset_name", MUSE_REPLICA, "--forget_split", "forget", "--retain_split",
             "retain2", "--holdout_split", "holdout", "--retrain_model_name_or_path", models / "retrain"]  # fmt: skip
    assert cli.main(argv(models, tmp_path, *flags)) == 0
    results = results_of(tmp_path / "out")
    assert results["benchmark"]["name"] == "muse" and results["benchmark"]["configs"]["retain"] == "raw/retain2"
    unlearned, retrain = results["unlearned"], results["retrain"]
    for key in ("knowmem_forget_rouge_l_f1", "knowmem_retain_rouge_l_f1", "verbmem_forget_rouge_l_f1"):
        assert 0 <= unlearned[key] <= 1
    assert unlearned["muse_privleak_min_k"] == pytest.approx(
        ((1 - unlearned["muse_auc_min_k"]) - (1 - retrain["muse_auc_min_k"])) / (1 - retrain["muse_auc_min_k"]) * 100
    )
    card = (tmp_path / "out" / "README.md").read_text()
    assert "KnowMem on forget set (MUSE, ROUGE-L F1)" in card and "type: muse_privleak_min_k" in card


@pytest.mark.parametrize(
    ("flags", "messages"),
    [
        (["--benchmark", "tofu", "--dataset_name", TOFU_REPLICA, "--forget_split", "forget07"],
         ["no config 'forget07'"]),
        (["--benchmark", "tofu", "--dataset_name", TOFU_REPLICA, "--num_forget_examples", "2"],
         ["takes its forget set from --forget_split", "drop --num_forget_examples"]),
        (["--forget_split", "forget10", "--dataset_name", TOFU_REPLICA, "--num_forget_examples", "2"],
         ["--forget_split name a benchmark's configs"]),
        (["--benchmark", "tofu"], ["cannot read the configs of 'locuslab/TOFU'"]),
        (["--benchmark", "squad", "--dataset_name", TOFU_REPLICA], ["Unknown --benchmark 'squad'"]),
        (["--benchmark", "muse", "--dataset_name", MUSE_REPLICA, "--text_column", "body"], ["drop --text_column"]),
    ],
)  # fmt: skip
def test_bad_benchmark_requests_are_refused_before_the_model_loads(models, tmp_path, capsys, loads, flags, messages):
    refused(capsys, argv(models, tmp_path, *flags), *messages)
    assert loads == []
