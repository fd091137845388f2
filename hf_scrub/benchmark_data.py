"""TOFU and MUSE as their users bring them: the published Hub layouts read as they are (docs/design.md §21).

A TOFU user has `locuslab/TOFU`: one config per part (``forget10``, ``retain90``, ``holdout10``,
``forget10_perturbed``, ``retain_perturbed``, ``real_authors_perturbed``, ``world_facts_perturbed``, ...), each a
``train`` split of ``question`` / ``answer`` rows, the ``*_perturbed`` ones with ``paraphrased_answer`` and a list of
``perturbed_answer``.
A MUSE user has `muse-bench/MUSE-News` (or ``-Books``): a ``raw`` config of ``text`` documents (splits ``forget``,
``retain1``, ``retain2``, ``holdout``), ``knowmem`` (``question`` / ``answer``), ``verbmem`` (``prompt`` / ``gt``) and
``privleak`` (``text``). `load_tofu` and `load_muse` read those configs (from the Hub, a local copy, or the replicas
shipped in ``hf_scrub/data/tofu`` and ``hf_scrub/data/muse``: invented rows in exactly these schemas) and map them
onto hf_scrub's splits without the user renaming anything:

- ``forget`` / ``retain`` / ``test`` (held out, never trained on): TRL prompt/completion rows for TOFU (the forget
  rows carry the truth-ratio columns of `hf_scrub.lm_evaluation`), text rows for MUSE (its documents cut into
  chunks of the training length, as OpenUnlearning's pretraining datasets do);
- ``evaluation_sets``: TOFU's model-utility sets and MUSE's knowmem / verbmem / privleak sets, named as
  `hf_scrub.lm_evaluation` expects them.

Every check (a config or split that is not there, a missing column) raises before any model is loaded, naming the
problem and the option that fixes it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets
from datasets.exceptions import DatasetGenerationError

from .data import UnlearningSplits, make_unlearning_splits
from .lm_evaluation import KNOWMEM_SETS, MUSE_MEMBERSHIP, PARAPHRASED_COLUMN, PERTURBED_COLUMN, VERBMEM_SET

logger = logging.getLogger(__name__)

TOFU, MUSE = "tofu", "muse"
BENCHMARKS = (TOFU, MUSE)
TOFU_HUB_ID = "locuslab/TOFU"
MUSE_HUB_ID = "muse-bench/MUSE-News"  # or muse-bench/MUSE-Books: the same layout
HUB_IDS = {TOFU: TOFU_HUB_ID, MUSE: MUSE_HUB_ID}
PROMPT_FORMATS = ("chat", "plain")
# TOFU's utility configs -> the evaluation set names of hf_scrub.lm_evaluation.UTILITY_SETS.
TOFU_UTILITY_CONFIGS = {
    "retain_qa": "retain_perturbed",
    "real_authors": "real_authors_perturbed",
    "world_facts": "world_facts_perturbed",
}
_TOFU_FORGET = re.compile(r"forget(\d\d)")


@dataclass
class BenchmarkData:
    """A benchmark's data mapped onto hf_scrub's splits.

    `splits` holds ``forget``, ``retain`` and ``test`` (held out) rows for `make_unlearning_splits`;
    `evaluation_sets` the benchmark's own evaluation sets for `hf_scrub.lm_evaluation.llm_evaluation_splits`;
    `configs` says which config and split each part was read from (recorded in the results file).
    """

    benchmark: str
    source: str
    splits: datasets.DatasetDict
    evaluation_sets: dict[str, datasets.Dataset] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)

    def unlearning_splits(self, seed: int = 42) -> UnlearningSplits:
        """The forget / retain / test / forget-validation splits of the request (the held-out rows are both)."""
        return make_unlearning_splits(self.splits, label_column=None, seed=seed)

    def describe(self) -> dict[str, Any]:
        """The ``benchmark`` entry of ``unlearning_results.json``."""
        return {"name": self.benchmark, "dataset": self.source, "configs": dict(self.configs)}


def _config_names(source: str, benchmark: str) -> list[str]:
    try:
        return list(datasets.get_dataset_config_names(source))
    except (OSError, ValueError) as error:  # ConnectionError (offline Hub) is an OSError
        raise ValueError(
            f"--benchmark {benchmark}: cannot read the configs of {source!r} ({error}). Pass --dataset_name the Hub "
            f"id ({HUB_IDS[benchmark]}) with network access, or a local copy of it (a folder with its README.md and "
            "data files)."
        ) from None


def _load(source: str, config: str, split: str, names: Sequence[str], option: str, benchmark: str) -> datasets.Dataset:
    """One split of one config, with an error naming the option that chose it when either is not there."""
    if config not in names:
        raise ValueError(
            f"--benchmark {benchmark}: {source} has no config {config!r} (from {option}); its configs are "
            f"{sorted(names)}. Pass {option} one of them."
        )
    try:
        return datasets.load_dataset(source, config, split=split)
    except ValueError as error:  # an unknown split: datasets lists the available ones
        raise ValueError(f"--benchmark {benchmark}: config {config!r} of {source}: {error} Check {option}.") from None
    except DatasetGenerationError as error:  # e.g. the splits of one config with different columns
        cause = " ".join(str(error.__cause__ or error).split())  # one line: datasets' message spans several
        raise ValueError(
            f"--benchmark {benchmark}: config {config!r} of {source} cannot be read ({cause}). "
            "Every split of a config must have the published columns: use the benchmark's data as published."
        ) from None


def _require(rows: datasets.Dataset, columns: Sequence[str], where: str, benchmark: str) -> None:
    missing = [column for column in columns if column not in rows.column_names]
    if missing:
        raise ValueError(
            f"--benchmark {benchmark}: {where} lacks the column(s) {missing} of the published layout; its columns are "
            f"{rows.column_names}. Pass the benchmark's data as published (--dataset_name {HUB_IDS[benchmark]} or a "
            "copy of it), or run without --benchmark on prompt/completion or text data."
        )


def _parts(forget: str, retain: str, holdout: str) -> tuple[tuple[str, str, str], ...]:
    """(unlearning split, the benchmark's config or split holding it, the option that chose it)."""
    return (
        ("forget", forget, "--forget_split"),
        ("retain", retain, "--retain_split"),
        ("test", holdout, "--holdout_split"),
    )


# ---- TOFU ---------------------------------------------------------------------------------------------------------


def _qa_rows(rows: datasets.Dataset, prompt_format: str) -> dict[str, list[Any]]:
    """TOFU's question/answer (and truth-ratio) columns as TRL prompt/completion columns, in `prompt_format`:
    ``chat`` (a user and an assistant message, rendered by the tokenizer's chat template, as OpenUnlearning does for
    instruct models) or ``plain`` (``"Question: ...\\nAnswer:"`` and the answer after a space)."""

    def answer(text: str) -> Any:
        return [{"role": "assistant", "content": text}] if prompt_format == "chat" else f" {text}"

    questions = rows["question"]
    mapped: dict[str, list[Any]] = {
        "prompt": [
            [{"role": "user", "content": q}] if prompt_format == "chat" else f"Question: {q}\nAnswer:"
            for q in questions
        ],
        "completion": [answer(text) for text in rows["answer"]],
    }
    if "paraphrased_answer" in rows.column_names:
        mapped[PARAPHRASED_COLUMN] = [answer(text) for text in rows["paraphrased_answer"]]
    if "perturbed_answer" in rows.column_names:
        mapped[PERTURBED_COLUMN] = [[answer(text) for text in texts] for texts in rows["perturbed_answer"]]
    return mapped


def load_tofu(
    source: str = TOFU_HUB_ID,
    forget_split: str = "forget10",
    retain_split: str | None = None,
    holdout_split: str | None = None,
    prompt_format: str = "chat",
) -> BenchmarkData:
    """TOFU from `source` (its Hub id, a local copy, or ``hf_scrub/data/tofu``): forget `forget_split`, retain
    `retain_split` (default: the complement, ``forget10`` -> ``retain90``), held out `holdout_split` (default
    ``forget10`` -> ``holdout10``). The forget rows get their paraphrased and perturbed answers from
    ``<forget_split>_perturbed`` (same questions, same order), and the model-utility sets are read from
    ``retain_perturbed``, ``real_authors_perturbed`` and ``world_facts_perturbed`` where `source` has them."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"--benchmark_prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}.")
    match = _TOFU_FORGET.fullmatch(forget_split)
    if match is None and (retain_split is None or holdout_split is None):
        raise ValueError(
            f"--forget_split {forget_split!r} is not one of TOFU's forget configs (forget01, forget05, forget10), so "
            "the retain and holdout configs cannot be derived from it: pass --retain_split and --holdout_split too."
        )
    percent = int(match.group(1)) if match else 0
    retain_split = retain_split or f"retain{100 - percent}"
    holdout_split = holdout_split or f"holdout{percent:02d}"
    names = _config_names(source, TOFU)
    parts = {}
    for part, config, option in _parts(forget_split, retain_split, holdout_split):
        rows = _load(source, config, "train", names, option, TOFU)
        _require(rows, ("question", "answer"), f"config {config!r}", TOFU)
        parts[part] = rows
    configs = {"forget": forget_split, "retain": retain_split, "holdout": holdout_split}
    forget = parts["forget"]
    perturbed_config = f"{forget_split}_perturbed"
    if perturbed_config in names:
        perturbed = _load(source, perturbed_config, "train", names, "--forget_split", TOFU)
        _require(
            perturbed, ("question", "paraphrased_answer", "perturbed_answer"), f"config {perturbed_config!r}", TOFU
        )
        if perturbed["question"] != forget["question"]:
            raise ValueError(
                f"--benchmark tofu: config {perturbed_config!r} does not hold the questions of {forget_split!r} in "
                "the same order, so its paraphrased and perturbed answers cannot be paired with the forget rows. Use "
                "an unmodified copy of TOFU."
            )
        forget = forget.add_column("paraphrased_answer", perturbed["paraphrased_answer"])
        forget = forget.add_column("perturbed_answer", perturbed["perturbed_answer"])
        configs["forget_truth_ratio"] = perturbed_config
    else:
        logger.warning("%s has no config %r: no forget truth ratio or forget quality.", source, perturbed_config)
    splits = datasets.DatasetDict(
        {
            "forget": datasets.Dataset.from_dict(_qa_rows(forget, prompt_format)),
            "retain": datasets.Dataset.from_dict(_qa_rows(parts["retain"], prompt_format)),
            "test": datasets.Dataset.from_dict(_qa_rows(parts["test"], prompt_format)),
        }
    )
    evaluation_sets = {}
    for name, config in TOFU_UTILITY_CONFIGS.items():
        if config not in names:
            logger.warning("%s has no config %r: model utility without the %s set.", source, config, name)
            continue
        rows = _load(source, config, "train", names, "--dataset_name", TOFU)
        _require(rows, ("question", "answer", "perturbed_answer"), f"config {config!r}", TOFU)
        evaluation_sets[name] = datasets.Dataset.from_dict(_qa_rows(rows, prompt_format))
        configs[name] = config
    return BenchmarkData(TOFU, source, splits, evaluation_sets, configs)


# ---- MUSE ---------------------------------------------------------------------------------------------------------

KNOWMEM_SPLITS = dict(zip(KNOWMEM_SETS, ("forget_qa", "retain_qa"), strict=True))  # each with `<split>_icl` shots


def chunk_documents(texts: Sequence[str], tokenizer: Any, chunk_tokens: int) -> list[str]:
    """The documents joined by blank lines and cut into pieces of `chunk_tokens` tokens (decoded back to text), as
    OpenUnlearning prepares MUSE's raw corpus for training: every token is trained on, none is cut off by
    truncation."""
    if chunk_tokens < 1:
        raise ValueError(f"MUSE's documents are cut into chunks of --max_length tokens; got {chunk_tokens}.")
    ids = tokenizer("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    return [tokenizer.decode(ids[start : start + chunk_tokens]) for start in range(0, len(ids), chunk_tokens)]


def _knowmem_prompt(shots: datasets.Dataset, question: str) -> str:
    """MUSE's knowmem prompt: its in-context examples, then the question (MUSE's own code's format)."""
    context = "".join(
        f"Question: {q}\nAnswer: {a}\n\n" for q, a in zip(shots["question"], shots["answer"], strict=True)
    )
    return f"{context}Question: {question}\nAnswer: "


def load_muse(
    source: str = MUSE_HUB_ID,
    forget_split: str = "forget",
    retain_split: str = "retain1",
    holdout_split: str = "holdout",
    tokenizer: Any = None,
    chunk_tokens: int | None = None,
) -> BenchmarkData:
    """MUSE from `source` (``muse-bench/MUSE-News`` or ``-Books``, a local copy, or ``hf_scrub/data/muse``): the
    ``raw`` config's `forget_split` / `retain_split` / `holdout_split` documents as forget / retain / held-out text
    (cut into `chunk_tokens`-token chunks with `tokenizer` when both are given), and MUSE's evaluation sets:
    ``knowmem_forget`` / ``knowmem_retain`` (questions after MUSE's in-context examples), ``verbmem_forget`` (the
    passage's opening as the prompt, its continuation as the completion), ``privleak_forget`` /
    ``privleak_holdout`` (the passages of MUSE's membership-inference test)."""
    names = _config_names(source, MUSE)
    parts = {}
    for part, split, option in _parts(forget_split, retain_split, holdout_split):
        rows = _load(source, "raw", split, names, option, MUSE)
        _require(rows, ("text",), f"the raw config's {split!r} split", MUSE)
        texts = rows["text"]
        if tokenizer is not None and chunk_tokens is not None:
            texts = chunk_documents(texts, tokenizer, chunk_tokens)
        parts[part] = datasets.Dataset.from_dict({"text": texts})
    configs = {"forget": f"raw/{forget_split}", "retain": f"raw/{retain_split}", "holdout": f"raw/{holdout_split}"}
    evaluation_sets = {}
    for name, split in KNOWMEM_SPLITS.items():
        rows = _load(source, "knowmem", split, names, "--dataset_name", MUSE)
        shots = _load(source, "knowmem", f"{split}_icl", names, "--dataset_name", MUSE)
        for where, table in ((split, rows), (f"{split}_icl", shots)):
            _require(table, ("question", "answer"), f"the knowmem config's {where!r} split", MUSE)
        prompts = [_knowmem_prompt(shots, question) for question in rows["question"]]
        evaluation_sets[name] = datasets.Dataset.from_dict({"prompt": prompts, "completion": rows["answer"]})
        configs[name] = f"knowmem/{split}"
    verbmem = _load(source, "verbmem", "forget", names, "--dataset_name", MUSE)
    _require(verbmem, ("prompt", "gt"), "the verbmem config's 'forget' split", MUSE)
    evaluation_sets[VERBMEM_SET] = datasets.Dataset.from_dict(
        {"prompt": verbmem["prompt"], "completion": verbmem["gt"]}
    )
    configs[VERBMEM_SET] = "verbmem/forget"
    for name, split in zip(MUSE_MEMBERSHIP, ("forget", "holdout"), strict=True):
        rows = _load(source, "privleak", split, names, "--dataset_name", MUSE)
        _require(rows, ("text",), f"the privleak config's {split!r} split", MUSE)
        evaluation_sets[name] = rows.select_columns(["text"])
        configs[name] = f"privleak/{split}"
    return BenchmarkData(MUSE, source, datasets.DatasetDict(parts), evaluation_sets, configs)
