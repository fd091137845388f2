"""The end-to-end unlearning job behind `scripts/scrub.py`: load, split, check, unlearn, evaluate, save.

Order matters for "bad input gets a clear error before any expensive work": the dataset and the forget request are
checked first, then the model's head against the labels, then the output folder, and only then is anything trained.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from huggingface_hub.utils import validate_repo_id
from torch import nn
from transformers import TrainerCallback, set_seed

from .baselines import METHODS, check_retrain_start, fresh_model_like
from .benchmark_data import BENCHMARKS, HUB_IDS, TOFU, BenchmarkData, load_muse, load_tofu
from .config import UnlearningConfig
from .data import (
    UnlearningSplits,
    check_images,
    check_texts,
    forget_ids_digest,
    make_unlearning_splits,
    require_columns,
)
from .evaluation import evaluate_model, prediction_trainer
from .evidence import save_unlearning_report
from .hub import push_folder_to_hub
from .lm_data import detect_lm_format
from .lm_evaluation import GENERIC_SPLIT, generic_text, llm_evaluation_splits
from .output import (
    RESULTS_FILE,
    RequestStamp,
    check_output_location,
    resolve_resume_checkpoint,
)
from .relearn import relearn_time
from .tasks import (
    CAUSAL_LM,
    IMAGE_CLASSIFICATION,
    TASKS,
    check_model_matches_labels,
    check_model_reference,
    data_collator_for,
    infer_task,
    load_model,
    load_processor,
    prepare_dataset,
)
from .trainer import ScrubTrainer, check_causal_lm_settings

logger = logging.getLogger(__name__)


@dataclass
class ScriptArguments:
    """What to unlearn from which model. Training hyperparameters live in `ScrubConfig`."""

    method: str = field(
        default="scrub",
        metadata={
            "help": "Unlearning method: scrub, or a baseline: retrain (on the retain set, from the original's "
            "starting point), finetune, neggrad (gradient ascent), graddiff, npo, simnpo, rmu (causal LMs only), "
            "neggrad_plus, bad_teacher (the last two: classifiers only)."
        },
    )
    retrain_init_from: str | None = field(
        default=None,
        metadata={
            "help": "--method retrain: the pretrained checkpoint the original was fine-tuned from (a classifier gets "
            "a new head); without it the retrained model is initialised from the original's config. Required for "
            "a causal LM."
        },
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "The original model: a Hub model id or a local folder (never written to)."}
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "A Hub dataset id, a folder saved with `save_to_disk`, or a data file (.csv, .json, .jsonl, "
            ".parquet) or a folder of them."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration name."})
    task: str | None = field(
        default=None,
        metadata={
            "help": "image-classification, text-classification or causal-lm; inferred from the model and the columns "
            "when omitted (causal-lm for a ...ForCausalLM model or prompt/completion or messages data)."
        },
    )
    image_column: str = field(default="image", metadata={"help": "Column with the images (image tasks)."})
    text_column: str = field(
        default="text",
        metadata={"help": "Column with the text (text tasks; causal-lm plain-text data, every token trained on)."},
    )
    label_column: str = field(
        default="label", metadata={"help": "Column with the integer class labels (classifiers; causal-lm has none)."}
    )
    id_column: str | None = field(
        default=None, metadata={"help": "Column with example ids; --forget_indices_file then lists ids."}
    )
    forget_classes: list[str] | None = field(
        default=None,
        metadata={
            "help": "Classes to forget, by id or name. Alone: class unlearning; with num_forget_examples: "
            "that many random examples within these classes."
        },
    )
    num_forget_examples: int | None = field(
        default=None, metadata={"help": "Forget this many random examples (seeded by --seed): selective unlearning."}
    )
    forget_indices_file: str | None = field(
        default=None,
        metadata={
            "help": "A JSON list or a text file (one per line) of training-row indices, or ids with --id_column."
        },
    )
    forget_column: str | None = field(default=None, metadata={"help": "A boolean column; True rows are forgotten."})
    train_split: str = field(default="train", metadata={"help": "The split the model was trained on."})
    test_split: str | None = field(
        default="test", metadata={"help": "Held-out split; when absent, --test_size of train is held out."}
    )
    test_size: float = field(default=0.2, metadata={"help": "Fraction of train held out when there is no test split."})
    max_length: int | None = field(default=128, metadata={"help": "Maximum tokens per text example."})
    preset: str | None = field(
        default=None,
        metadata={
            "help": "A named SCRUB preset (auto, llm_auto, selective, class, small, transformer, llm); explicit "
            "arguments override it. Default for --method scrub: auto (llm_auto for a causal LM), unless --schedule is "
            "given."
        },
    )
    require_target: bool = field(
        default=False,
        metadata={
            "help": "Exit with status 1 (and push nothing) unless the verdict says the forget target was met. The "
            "result is still written, with its verdict, for inspection."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Allow --output_dir to be a non-empty folder that hf_scrub did not write: its content is replaced "
            "as a whole by this run's output. A folder written by an earlier hf_scrub run is always replaced."
        },
    )
    generic_text_file: str | None = field(
        default=None,
        metadata={
            "help": "causal-lm: a text file (one paragraph per line) for the generic-text perplexity check; default: "
            "the 48 paragraphs of everyday English shipped with hf_scrub (hf_scrub/data/generic_text.txt)."
        },
    )
    retrain_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A model retrained without the forget set (the gold standard): adds a Retrain column."},
    )
    relearn_time: bool = field(
        default=False,
        metadata={
            "help": "Also measure relearn time: epochs of fine-tuning on the forget set until its loss is back "
            "at the original model's (costs up to relearn_max_epochs passes over the forget set)."
        },
    )
    relearn_max_epochs: int = field(default=10, metadata={"help": "Upper bound for the relearn-time measurement."})
    use_peft: bool = field(
        default=False,
        metadata={
            "help": "Train fresh LoRA adapters only; the teacher is the model with adapters disabled (no second "
            "copy). The CLI's default for a causal LM (--task causal-lm or a ...ForCausalLM model) is true."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: peft's per-architecture choice, or all-linear)."}
    )
    save_merged_model: bool = field(
        default=False,
        metadata={
            "help": "With --use_peft: also write the adapters merged into the base model to <output_dir>/merged."
        },
    )
    benchmark: str | None = field(
        default=None,
        metadata={
            "help": "tofu or muse: read --dataset_name (default: the benchmark's Hub id, locuslab/TOFU or "
            "muse-bench/MUSE-News) in the benchmark's published layout, the forget, retain and held-out rows from "
            "its configs (--forget_split, --retain_split, --holdout_split), and report its metrics too (TOFU's model "
            "utility, MUSE's knowmem / verbmem ROUGE and privleak)."
        },
    )
    forget_split: str | None = field(
        default=None,
        metadata={
            "help": "--benchmark: the forget set: TOFU's config (forget01, forget05, forget10; default forget10) or "
            "MUSE's raw split (default forget)."
        },
    )
    retain_split: str | None = field(
        default=None,
        metadata={"help": "--benchmark: the retain set (TOFU: the complement, forget10 -> retain90; MUSE: retain1)."},
    )
    holdout_split: str | None = field(
        default=None,
        metadata={
            "help": "--benchmark: held-out rows never trained on (TOFU: forget10 -> holdout10; MUSE: holdout), the "
            "forget-validation set of the membership attacks."
        },
    )
    benchmark_prompt_format: str = field(
        default="chat",
        metadata={
            "help": "--benchmark tofu: chat (each question a user message and its answer the assistant's, rendered "
            "by the tokenizer's chat template, as for instruct models) or plain ('Question: ...' / 'Answer: ...')."
        },
    )


def load_any_dataset(name: str, config_name: str | None = None) -> datasets.Dataset | datasets.DatasetDict:
    """A `save_to_disk` folder, local data files, or a Hub dataset id, in that order of preference."""
    path = Path(name).expanduser()
    if path.is_dir() and any((path / marker).exists() for marker in ("dataset_dict.json", "dataset_info.json")):
        return datasets.load_from_disk(str(path))
    suffixes = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
    if path.is_file() and path.suffix in suffixes:
        return datasets.load_dataset(suffixes[path.suffix], data_files=str(path))
    if path.is_file():
        raise ValueError(
            f"--dataset_name {name!r} is a {path.suffix or 'suffix-less'} file; data files must be .csv, .json, "
            ".jsonl or .parquet (or pass a save_to_disk folder)."
        )
    if not path.exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise ValueError(f"--dataset_name {name!r}: no such file or folder. Check the path.")
    try:
        return datasets.load_dataset(name, config_name)
    except (OSError, ConnectionError, FileNotFoundError) as error:
        raise ValueError(f"Could not load the dataset {name!r}: {error}") from None


def lora_config(script_args: ScriptArguments, task: str) -> Any:
    """The `peft.LoraConfig` of `--use_peft`: for text the SEQ_CLS task (it keeps the classifier head trainable),
    for images the classifier listed in `modules_to_save`, for causal LMs every linear layer of the blocks (the
    output head, often tied to the embeddings, stays frozen)."""
    from peft import LoraConfig, TaskType

    common = dict(
        r=script_args.lora_r,
        lora_alpha=script_args.lora_alpha,
        lora_dropout=script_args.lora_dropout,
        target_modules=script_args.lora_target_modules
        or ("all-linear" if task in (IMAGE_CLASSIFICATION, CAUSAL_LM) else None),
    )
    if task == CAUSAL_LM:
        return LoraConfig(**common, task_type=TaskType.CAUSAL_LM)
    if task == IMAGE_CLASSIFICATION:
        return LoraConfig(**common, modules_to_save=["classifier"])
    return LoraConfig(**common, task_type=TaskType.SEQ_CLS)


def format_table(reports: dict[str, dict[str, float]]) -> str:
    """A before/after table: one row per metric, one column per model."""
    columns = list(reports)
    # Per-row values (a causal LM's truth ratios) are in the results file only.
    metrics = [m for m in dict.fromkeys(k for r in reports.values() for k, v in r.items() if not isinstance(v, list))]
    width = max(len(m) for m in metrics) + 2
    lines = [f"{'metric':<{width}}" + "".join(f"{c:>12}" for c in columns)]
    for metric in metrics:
        cells = []
        for column in columns:
            value = reports[column].get(metric)
            cells.append(
                f"{'-':>12}" if value is None else f"{value:>12.2f}" if metric.startswith("mia") else f"{value:>12.4f}"
            )
        lines.append(f"{metric:<{width}}" + "".join(cells))
    return "\n".join(lines)


def build_splits(script_args: ScriptArguments, seed: int) -> tuple[UnlearningSplits, str]:
    """Load the data and resolve the forget request, checking every split's labels and inputs (no model needed)."""
    if not script_args.dataset_name:
        raise ValueError("--dataset_name is required (a Hub id, a save_to_disk folder or a data file).")
    dataset = load_any_dataset(script_args.dataset_name, script_args.dataset_config_name)
    reference = dataset
    if isinstance(dataset, datasets.DatasetDict):
        name = next((n for n in (script_args.train_split, "retain") if n in dataset), next(iter(dataset)))
        reference = dataset[name]
    if script_args.task is not None and script_args.task not in TASKS:
        raise ValueError(f"Unknown --task {script_args.task!r}; choose one of {', '.join(TASKS)}.")
    task = script_args.task or infer_task(
        reference, script_args.image_column, script_args.text_column, script_args.model_name_or_path
    )
    label_column: str | None = script_args.label_column
    if task == CAUSAL_LM:
        label_column = None  # the tokens are the labels
        lm_format = detect_lm_format(reference, script_args.text_column)
        data_column = script_args.text_column if lm_format == "text" else None
    else:
        data_column = script_args.image_column if task == IMAGE_CLASSIFICATION else script_args.text_column
        require_columns(reference, {"image_column" if task == IMAGE_CLASSIFICATION else "text_column": data_column})
    # Unreadable inputs are named by the user's own split and row, before anything is split off or loaded.
    check_inputs = check_images if task == IMAGE_CLASSIFICATION else check_texts
    parts = dataset if isinstance(dataset, datasets.DatasetDict) else {script_args.train_split: dataset}
    for split_name in dict.fromkeys((script_args.train_split, "forget", "retain", script_args.test_split)):
        if split_name in parts and data_column is not None:
            check_inputs(parts[split_name], data_column, split_name)
    splits = make_unlearning_splits(
        dataset,
        label_column=label_column,
        forget_classes=script_args.forget_classes,
        num_forget_examples=script_args.num_forget_examples,
        forget_indices=script_args.forget_indices_file,
        id_column=script_args.id_column,
        forget_column=script_args.forget_column,
        train_split=script_args.train_split,
        test_split=script_args.test_split,
        test_size=script_args.test_size,
        seed=seed,
    )
    return splits, task


def load_benchmark(script_args: ScriptArguments) -> BenchmarkData | None:
    """`--benchmark tofu|muse`: the benchmark's published configs read into forget / retain / held-out rows and its
    evaluation sets (`hf_scrub.benchmark_data`), every check done before the model loads; None without it."""
    given = [f"--{name}" for name in ("forget_split", "retain_split", "holdout_split") if getattr(script_args, name)]
    benchmark = script_args.benchmark
    if benchmark is None:
        if given:
            raise ValueError(f"{', '.join(given)} name a benchmark's configs: pass --benchmark tofu or muse too.")
        return None
    if benchmark not in BENCHMARKS:
        raise ValueError(f"Unknown --benchmark {benchmark!r}; choose one of {', '.join(BENCHMARKS)}.")
    selection = {
        "--forget_classes": script_args.forget_classes,
        "--num_forget_examples": script_args.num_forget_examples,
        "--forget_indices_file": script_args.forget_indices_file,
        "--forget_column": script_args.forget_column,
        "--id_column": script_args.id_column,
    }
    conflicting = [option for option, value in selection.items() if value]
    if conflicting:
        raise ValueError(
            f"--benchmark {benchmark} takes its forget set from --forget_split; drop {', '.join(conflicting)}."
        )
    if script_args.task not in (None, CAUSAL_LM):
        raise ValueError(f"--benchmark {benchmark} unlearns a causal LM; drop --task {script_args.task}.")
    source = script_args.dataset_name or HUB_IDS[benchmark]
    if benchmark == TOFU:
        return load_tofu(
            source,
            script_args.forget_split or "forget10",
            script_args.retain_split,
            script_args.holdout_split,
            script_args.benchmark_prompt_format,
        )
    if script_args.text_column != "text":
        raise ValueError("--benchmark muse reads MUSE's `text` column; drop --text_column.")
    # MUSE's documents are cut into --max_length chunks (room left for the BOS and EOS tokens) with the tokenizer.
    chunk = None if script_args.max_length is None else max(1, script_args.max_length - 2)
    tokenizer = load_processor(script_args.model_name_or_path, CAUSAL_LM)
    return load_muse(
        source,
        script_args.forget_split or "forget",
        script_args.retain_split or "retain1",
        script_args.holdout_split or "holdout",
        tokenizer,
        chunk,
    )


def check_schedule_supported(config: UnlearningConfig) -> None:
    """The goal-driven schedule (the CLI's default) is refused under DeepSpeed and FSDP before the model loads; the
    trainer refuses it too, but only once the model is loaded (docs/design.md §18)."""
    if getattr(config, "schedule", None) != "auto":
        return
    sharded = {
        # TrainingArguments builds the plugin for --deepspeed and for `accelerate launch` with DeepSpeed (its env)
        "DeepSpeed": getattr(config, "deepspeed_plugin", None) is not None,
        # FSDP from `accelerate launch` only shows in the environment the Accelerator will read
        "FSDP": bool(config.fsdp) or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true",
    }
    named = [name for name, used in sharded.items() if used]
    if named:
        raise ValueError(
            f"The goal-driven schedule (schedule=auto, the default without --preset) is not available under "
            f"{' or '.join(named)} yet: its per-step decisions are not verified there. Pass --schedule fixed with "
            "your own settings, or a paper preset such as --preset transformer."
        )


def check_deepspeed_options(script_args: ScriptArguments, config: UnlearningConfig) -> None:
    """Refuse, before any work, what cannot run beside a DeepSpeed training run in the same processes.

    A process holds one DeepSpeed Accelerator, so no second Trainer (retrain evaluation, relearn time, a retrain's
    original model) can run next to the unlearning one; under ZeRO-3 the weights are partitioned, so the unlearned
    model cannot be copied (merged LoRA output) either.
    """
    plugin = getattr(config, "deepspeed_plugin", None)
    if plugin is None:
        return
    refused = {
        "--method retrain": script_args.method == "retrain",
        "--retrain_model_name_or_path": bool(script_args.retrain_model_name_or_path),
        "--relearn_time": script_args.relearn_time,
        "--save_merged_model (ZeRO-3)": script_args.save_merged_model and plugin.zero_stage == 3,
    }
    named = [option for option, given in refused.items() if given]
    if named:
        raise ValueError(
            f"{', '.join(named)} cannot run under DeepSpeed: each needs a second model run or copied beside the "
            "DeepSpeed training run in the same processes. Run without it under DeepSpeed, then evaluate the saved "
            "output folder (or run that option) in a launch without DeepSpeed."
        )


def check_causal_lm_method(script_args: ScriptArguments, config: UnlearningConfig) -> None:
    """What a causal LM cannot run, refused before the model loads: the classifier-only baselines, a retrain without
    its pretrained starting point, and SCRUB's settings for classifiers (`check_causal_lm_settings`)."""
    if script_args.method == "scrub":
        check_causal_lm_settings(config)
        return
    if not METHODS[script_args.method][0].supports_causal_lm:
        raise ValueError(
            f"--method {script_args.method} is not available for causal language models (it is defined on class "
            "predictions); use --method graddiff (gradient ascent on the forget set plus descent on the retain set) "
            "or --method npo, simnpo or rmu, the field's LLM counterparts, or scrub, neggrad, finetune, retrain."
        )
    if script_args.method == "retrain":
        check_retrain_start(causal_lm=True, init_from=script_args.retrain_init_from)


class _ReportAtTrainBegin(TrainerCallback):
    """Evaluates the model as training starts, before the first step: the original model, inside the training run.

    The report also goes into the request stamp, so that checkpoints carry it for a resumed run.
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]], stamp: RequestStamp) -> None:
        self.evaluate = evaluate
        self.stamp = stamp
        self.report: dict[str, float] = {}
        self.seconds = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        self.report = self.evaluate()
        self.stamp.request["original"] = self.report
        self.seconds = time.perf_counter() - start


def _linear_module_names(model: Any) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)})


class TargetNotMetError(RuntimeError):
    """`--require_target true` and the verdict says the forget target was not met (or could not be judged)."""


def run_unlearning(script_args: ScriptArguments, config: UnlearningConfig) -> dict[str, Any]:
    """Unlearn, evaluate before/after (and a retrained model), save to `config.output_dir`, optionally push.

    Every check that needs no model (arguments, output folder, data, forget request, resume checkpoint) runs before
    the model is loaded (docs/design.md §15). Returns the results written to `unlearning_results.json`.
    """
    if not script_args.model_name_or_path:
        raise ValueError("--model_name_or_path is required (a Hub model id or a local folder).")
    check_model_reference(script_args.model_name_or_path)
    if script_args.retrain_model_name_or_path:
        check_model_reference(script_args.retrain_model_name_or_path, "--retrain_model_name_or_path")
    if script_args.retrain_init_from:
        if script_args.method != "retrain":
            raise ValueError(
                f"--retrain_init_from is the starting point of --method retrain; it has no effect on --method "
                f"{script_args.method}. Drop it, or use --method retrain."
            )
        check_model_reference(script_args.retrain_init_from, "--retrain_init_from")
    check_output_location(config.output_dir, script_args.model_name_or_path, script_args.overwrite_output_dir)
    check_schedule_supported(config)
    check_deepspeed_options(script_args, config)
    # The Trainer pushes inside save_model and at every checkpoint; the finished folder is pushed once, at the end.
    push_to_hub, config.push_to_hub = config.push_to_hub, False
    # Keep the token out of training_args.bin, which the Trainer pickles into every checkpoint and the output.
    hub_token, config.hub_token = config.hub_token, None
    repo_id = (config.hub_model_id or Path(config.output_dir).resolve().name) if push_to_hub else None
    if repo_id is not None:
        try:
            validate_repo_id(repo_id)
        except Exception as error:
            raise ValueError(f"--hub_model_id {repo_id!r} is not a valid Hub repo id ({error}).") from None
    if config.learning_rate == 0:
        logger.warning("learning_rate is 0: no step changes the model, so the 'unlearned' model is the original.")
    set_seed(config.seed)
    benchmark = load_benchmark(script_args)
    if benchmark is None:
        splits, task = build_splits(script_args, config.seed)
    else:
        splits, task = benchmark.unlearning_splits(config.seed), CAUSAL_LM
    if task == CAUSAL_LM:
        check_causal_lm_method(script_args, config)
    elif script_args.method == "rmu":
        raise ValueError("--method rmu steers a causal LM's hidden states; for a classifier use scrub or a baseline.")
    if config.rewind and len(splits.forget_validation) == 0:
        raise ValueError(
            "--rewind true (SCRUB+R) needs held-out examples of the forget set's classes, and there are none (a whole "
            "class forgotten from a dataset without a test split has no unseen example left). Pass a test split "
            "(--test_split) or run without --rewind."
        )
    request = {
        "method": script_args.method,
        "forget_type": splits.forget_type,
        "num_forget_examples": len(splits.forget),
        "forget_ids_sha256": forget_ids_digest(splits.forget_rows),
    }
    resume = resolve_resume_checkpoint(config.resume_from_checkpoint, config.output_dir, request)

    # The data is prepared (and a causal LM's rows checked) with the processor alone, before the model loads.
    processor = load_processor(script_args.model_name_or_path, task)
    if task == IMAGE_CLASSIFICATION and config.remove_unused_columns:
        # The image transform needs the raw image column, which the Trainer would otherwise drop before it runs.
        config.remove_unused_columns = False

    def prepare(split: datasets.Dataset, max_length: int | None = script_args.max_length) -> datasets.Dataset:
        return prepare_dataset(
            split,
            task,
            processor,
            image_column=script_args.image_column,
            text_column=script_args.text_column,
            label_column=script_args.label_column,
            max_length=max_length,
        )

    eval_splits = {
        "forget": prepare(splits.forget),
        "retain": prepare(splits.retain),
        "test": prepare(splits.test),
    }
    # Without labels (a causal LM) the forget-validation split is the whole test split: prepared once.
    same = splits.forget_validation is splits.test
    eval_splits["forget_validation"] = eval_splits["test"] if same else prepare(splits.forget_validation)
    if task == CAUSAL_LM:  # the LLM evidence's own inputs (hf_scrub.lm_evaluation; docs/design.md §20)
        sets = benchmark.evaluation_sets if benchmark is not None else None
        eval_splits |= llm_evaluation_splits(splits.forget, splits.retain, prepare, sets)
        generic = generic_text(script_args.generic_text_file, script_args.text_column)
        # Whole paragraphs (--max_length is for the unlearning data): the perplexity of the text as written.
        eval_splits[GENERIC_SPLIT] = prepare_dataset(generic, task, processor, text_column=script_args.text_column)
    model = load_model(script_args.model_name_or_path, task)
    labelled = [splits.forget, splits.retain, splits.test]
    if task != CAUSAL_LM:
        check_model_matches_labels(model, labelled, script_args.label_column)
    collator = data_collator_for(task, processor)
    trainer_class = ScrubTrainer if script_args.method == "scrub" else METHODS[script_args.method][0]
    student = model
    if script_args.method == "retrain":
        student = fresh_model_like(model, config.seed, script_args.retrain_init_from)
    try:
        trainer = trainer_class(
            model=student,
            # held-out rows of the training split were seen: the judge takes no selective target from them
            forget_validation_is_unseen=not splits.test_held_out_from_train,
            args=config,
            peft_config=lora_config(script_args, task) if script_args.use_peft else None,
            forget_dataset=eval_splits["forget"],
            retain_dataset=eval_splits["retain"],
            forget_validation_dataset=eval_splits["forget_validation"],
            data_collator=collator,
            processing_class=processor,
        )
    except ValueError as error:
        if script_args.use_peft and "target modules" in str(error).lower():
            raise ValueError(
                f"--use_peft: {error} Name modules of this model with --lora_target_modules; its linear modules "
                f"are {_linear_module_names(student)}."
            ) from None
        raise
    stamp = RequestStamp(request)
    trainer.add_callback(stamp)

    def evaluate_original() -> dict[str, float]:
        original_trainer = trainer if student is model else prediction_trainer(model, config, collator, processor)
        return evaluate_model(original_trainer, eval_splits, splits.forget_classes, config.seed)

    # The original is evaluated as training starts, before the first step, not before `train()`: DeepSpeed wraps
    # the model in an engine at its first `predict` or `train`, and the Trainer cannot train a model first wrapped
    # for `predict` (a plain Trainer fails alike). Its evaluation time is not counted as unlearning time. A resumed
    # run takes the original's report from the checkpoint: at train begin its model is no longer the original.
    original_report = _ReportAtTrainBegin(evaluate_original, stamp)
    if resume:
        original_report.report = stamp.request["original"] = resume["original"]
    else:
        trainer.add_callback(original_report)
    start = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume.get("path"))
    unlearning_seconds = time.perf_counter() - start - original_report.seconds
    reports = {}
    if script_args.retrain_model_name_or_path:
        retrain_model = load_model(script_args.retrain_model_name_or_path, task)
        if task != CAUSAL_LM:
            check_model_matches_labels(retrain_model, labelled, script_args.label_column)
        retrain_trainer = prediction_trainer(retrain_model, config, collator, processor)
        reports["retrain"] = evaluate_model(retrain_trainer, eval_splits, splits.forget_classes, config.seed)
    extra: dict[str, Any] = {"unlearning_seconds": round(unlearning_seconds, 3)}
    if benchmark is not None:
        extra |= {"dataset": benchmark.source, "benchmark": benchmark.describe()}
    if resume:
        extra["resumed_from"] = Path(resume["path"]).name
    if script_args.relearn_time:
        extra["relearn_time"] = relearn_time(
            trainer.model,
            eval_splits["forget"],
            target_loss=original_report.report["forget_loss"],
            args=config,
            data_collator=collator,
            max_epochs=script_args.relearn_max_epochs,
        )
    results = save_unlearning_report(
        trainer,
        config.output_dir,
        splits,
        eval_splits,
        original_report.report,
        method=script_args.method,
        model_name_or_path=script_args.model_name_or_path,
        task=task,
        reports=reports,
        hyperparameters={"preset": script_args.preset, "use_peft": script_args.use_peft},
        extra=extra,
        save_merged=script_args.save_merged_model,
        keep=stamp.saved,
        repo_id=repo_id,
    )
    if trainer.is_world_process_zero():
        print(format_table({name: results[name] for name in ("original", "unlearned", *reports)}))
        for warning in results["warnings"]:
            print(f"warning: {warning}", file=sys.stderr)
        print(f"unlearning time: {unlearning_seconds:.1f} s; results in {Path(config.output_dir) / RESULTS_FILE}")
        print(f"verdict: {results['verdict']['summary']}")
    if script_args.require_target and results["verdict"]["forget_target_met"] is not True:
        raise TargetNotMetError(
            f"--require_target true: the forget target was not met ({results['verdict']['summary']}). The result is "
            f"in {Path(config.output_dir).resolve()} for inspection; nothing was pushed."
        )
    if trainer.is_world_process_zero() and repo_id is not None:
        url = push_folder_to_hub(config.output_dir, repo_id, private=config.hub_private_repo, token=hub_token)
        print(f"pushed to {url}")
    return results
