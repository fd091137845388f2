"""Command line of `scripts/scrub.py`: `HfArgumentParser` over `ScriptArguments` + `ScrubConfig`.

Three ways in, with one precedence rule (command line > config file > preset > defaults):
- flags: `scrub.py --model_name_or_path ... --forget_classes 3 --preset class --learning_rate 1e-3`;
- one YAML/JSON file, alone (`scrub.py run.yaml`) or with overriding flags (`scrub.py run.yaml --seed 1`);
- no arguments at all: the embedded offline demo (`hf_scrub.demo`).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser

from .baselines import METHODS
from .config import PRESETS, ScrubConfig, preset_values
from .hub import HubPushError
from .pipeline import ScriptArguments, TargetNotMetError, run_unlearning
from .tasks import is_causal_lm_request

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
METHOD_CONFIGS = {"scrub": ScrubConfig, **{name: config for name, (_, config) in METHODS.items()}}


def _read_config_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values.")
    return values


# ---- `--help`: the options grouped by what they are about (the parsing itself is HfArgumentParser's, unchanged) ----

# Group title -> (what the group is for, its options in display order). An option of some method's config that the
# chosen method does not take is still listed, marked "(only with --method ...)", but is not accepted.
HELP_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "What to forget": (
        "The forget set: whole classes, random examples (within classes), listed rows or ids, or a boolean column.",
        ("forget_classes", "num_forget_examples", "forget_indices_file", "id_column", "forget_column"),
    ),
    "Data": (
        "The data set the model was trained on and how to read it.",
        ("dataset_name", "dataset_config_name", "task", "image_column", "text_column", "label_column")
        + ("train_split", "test_split", "test_size", "max_length")
        + ("benchmark", "forget_split", "retain_split", "holdout_split", "benchmark_prompt_format"),
    ),
    "Model and method": (
        "The original model and the unlearning method.",
        ("model_name_or_path", "method", "preset", "retrain_init_from"),
    ),
    "SCRUB": (
        "Each of the first forget_epochs epochs is a forget pass (max-steps away from the original model on the "
        "forget set) then a retain pass (min-steps: cross-entropy + distillation on the retain set); the remaining "
        "epochs are retain passes only.",
        ("alpha", "gamma", "kd_temperature", "forget_epochs", "num_train_epochs", "per_device_forget_batch_size")
        + ("per_device_train_batch_size", "rewind", "retain_fraction", "cache_teacher_outputs", "lr_decay_epochs")
        + ("lr_decay_factor", "history_retain_examples", "check_forget_retain_overlap", "token_chunk_size")
        + ("retain_warmup_steps",),
    ),
    "Evaluation and Hub": (
        "What is measured besides the before/after accuracies, where the results go.",
        ("retrain_model_name_or_path", "generic_text_file", "relearn_time", "relearn_max_epochs", "output_dir")
        + ("overwrite_output_dir", "require_target", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_token"),
    ),
    "LoRA": (
        "Train fresh LoRA adapters instead of the whole model.",
        ("use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "save_merged_model"),
    ),
}
BASELINES_GROUP = "Baseline methods"  # the options that only some --method takes, found from the config classes
OTHER_GROUP = "Everything else from TrainingArguments"


def _method_options() -> dict[str, list[str]]:
    """Option name -> the methods whose config has it, for the options that not every method's config has."""
    fields = {method: [f.name for f in dataclasses.fields(config)] for method, config in METHOD_CONFIGS.items()}
    every = set.intersection(*map(set, fields.values()))
    found: dict[str, list[str]] = {}
    for method, names in fields.items():
        for name in names:
            if name not in every:
                found.setdefault(name, []).append(method)
    return found


def _describe_presets() -> str:
    lines = ["Presets (--preset NAME sets these values; the config file and the command line override them):"]
    for name, values in PRESETS.items():
        settings = " ".join(f"{key}={value}" for key, value in values.items())
        lines.append(f"  {name}: {settings}")
    return "\n".join(lines)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option with its default. In descriptions, paragraphs are wrapped; indented lines (examples, presets)
    stay one per line, their continuation indented further."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        paragraphs = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if lines[-1].startswith("  "):
                wrap = {"width": width, "initial_indent": indent, "subsequent_indent": indent + "      "}
                paragraphs.append(
                    "\n".join(line if line.endswith(":") else textwrap.fill(line, **wrap) for line in lines)
                )
            else:
                paragraphs.append(
                    textwrap.fill(" ".join(lines), width, initial_indent=indent, subsequent_indent=indent)
                )
        return "\n\n".join(paragraphs)


DESCRIPTION = """Unlearn a forget set from a Hugging Face classifier with SCRUB (or a baseline method), then evaluate
and save the result.

  scrub.py                            the offline demo: forget the digit 3 from a small MNIST model
  scrub.py --demo llm                 the LLM demo: forget invented people's facts from a small SmolLM2
  scrub.py run.yaml [--option value]  the arguments from a YAML/JSON file; flags override it
  scrub.py --model_name_or_path M --dataset_name D --forget_classes 3 --preset class --output_dir out

Precedence: command line > config file > preset > defaults. The options of unlearning come first, grouped; the
last group holds the other options of transformers.TrainingArguments."""


def build_parser(method: str) -> HfArgumentParser:
    """The parser of `--method method`: `HfArgumentParser((ScriptArguments, <its config>))`, its options arranged
    into HELP_GROUPS for `--help`. Only the display is arranged: which options exist and how they parse is
    HfArgumentParser's."""
    parser = HfArgumentParser(
        (ScriptArguments, METHOD_CONFIGS[method]),
        usage="%(prog)s [CONFIG.yaml | CONFIG.json] [--option value ...]",
        description=DESCRIPTION,
        epilog=_describe_presets(),
        formatter_class=_HelpFormatter,
    )
    by_dest: dict[str, list[argparse.Action]] = {}
    for action in parser._optionals._group_actions:
        by_dest.setdefault(action.dest, []).append(action)
    by_dest["method"][0].help = f"The unlearning method: {', '.join(METHOD_CONFIGS)} (all but scrub are baselines)."
    by_dest["preset"][0].help = (
        f"A named SCRUB preset: {', '.join(PRESETS)} (their values are listed at the end); explicit arguments "
        f"override it. Without --preset and --schedule, --method scrub runs the goal-driven preset {DEFAULT_PRESET}; "
        "--schedule fixed (no preset) runs the paper's schedule with ScrubConfig's defaults."
    )
    for action in parser._optionals._group_actions:
        if action.option_strings[0].startswith("--no_"):  # HfArgumentParser gives it the help of the option itself
            action.help = f"Set {action.dest} to False."
    method_options = _method_options()
    groups = {title: description_and_names for title, description_and_names in HELP_GROUPS.items()}
    groups[BASELINES_GROUP] = (
        "Options of some methods only; the others refuse them.",
        tuple(name for name in method_options if not any(name in names for _, names in HELP_GROUPS.values())),
    )
    placed = {"help"}
    for title, (description, names) in groups.items():
        group = parser.add_argument_group(title, description)
        for name in names:
            if name in by_dest:
                actions = by_dest[name]
            elif name in method_options:  # shown, not parsed: the action is not in the parser's own list
                config = METHOD_CONFIGS[method_options[name][0]]
                actions = [copy.copy(a) for a in HfArgumentParser(config)._actions if a.dest == name]
                for action in actions:
                    action.help = f"{action.help} (only with --method {' or '.join(method_options[name])})"
            else:
                continue
            group._group_actions.extend(actions)
            placed.add(name)
    rest = parser.add_argument_group(OTHER_GROUP)
    rest._group_actions.extend(a for a in parser._optionals._group_actions if a.dest not in placed)
    parser._optionals._group_actions[:] = [a for a in parser._optionals._group_actions if a.dest == "help"]
    return parser


DEFAULT_PRESET = "auto"  # --method scrub with neither --preset nor --schedule
LLM_DEFAULT_PRESET = "llm_auto"  # the same for a causal LM (with LoRA)
LLM_PRESET = "llm"  # the paper-style fixed schedule for causal LMs, whose optimiser settings the LLM baselines take


def llm_baseline_defaults(method: str) -> dict[str, Any]:
    """A baseline's defaults on a causal LM: the `llm` preset's values of the fields its config has (optimiser,
    learning rate, clipping, epochs, batch sizes, activation checkpointing), none of SCRUB's own. Baselines then
    train the same LoRA adapters with the same optimiser settings as SCRUB, so a comparison measures the methods;
    TrainingArguments' lr 5e-5 is tuned for full fine-tuning, not for LoRA adapters."""
    fields = {field.name for field in dataclasses.fields(METHOD_CONFIGS[method])}
    return {name: value for name, value in preset_values(LLM_PRESET).items() if name in fields}


def _put_back(rest: list[str], known: argparse.Namespace, names: tuple[str, ...]) -> list[str]:
    """The options the pre-parser read only to choose defaults, returned to the argument list for the real parser."""
    for name in names:
        value = getattr(known, name)
        if value is not None:
            rest = [f"--{name}", value, *rest]
    return rest


def parse_args(argv: list[str]) -> tuple[ScriptArguments, Any]:
    """Parse `argv` (without the program name) into `(ScriptArguments, <the method's config>)`."""
    if argv and argv[0].endswith(CONFIG_SUFFIXES):  # `scrub.py run.yaml [--flag value ...]`
        argv = ["--config", *argv]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--preset")
    pre.add_argument("--method")
    pre.add_argument("--schedule")
    pre.add_argument("--task")
    pre.add_argument("--model_name_or_path")
    known, rest = pre.parse_known_args(argv)
    rest = _put_back(rest, known, ("task", "model_name_or_path"))
    file_values = _read_config_file(known.config) if known.config else {}
    if known.schedule is not None:
        file_values["schedule"] = known.schedule  # the command line wins over the file, as for every option
    preset = known.preset or file_values.get("preset")
    causal_lm = is_causal_lm_request(
        known.task or file_values.get("task"), known.model_name_or_path or file_values.get("model_name_or_path")
    )
    method = known.method or file_values.get("method", "scrub")
    if method == "scrub" and preset is None and "schedule" not in file_values:
        # A user without an oracle or a sweep gets the schedule that adapts to their model (docs/design.md §18);
        # the paper's fixed recipe is one flag away: --schedule fixed, or one of its presets.
        preset = LLM_DEFAULT_PRESET if causal_lm else DEFAULT_PRESET
    if method not in METHOD_CONFIGS:
        raise ValueError(f"Unknown --method {method!r}; choose one of {sorted(METHOD_CONFIGS)}.")
    if preset and method != "scrub":
        raise ValueError(f"--preset {preset} holds SCRUB settings; it applies to --method scrub, not {method}.")
    # A causal LM trains LoRA adapters unless told otherwise: the teacher is the same model with adapters disabled.
    defaults = {
        **({"use_peft": True} if causal_lm else {}),
        **(preset_values(preset) if preset else {}),
        **(llm_baseline_defaults(method) if causal_lm and method != "scrub" else {}),
        **file_values,
        "preset": preset,
        "method": method,
    }

    parser = build_parser(method)
    known_dests = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - known_dests)
    if unknown:
        raise ValueError(f"Unknown argument(s) {unknown} in {known.config or 'the preset'}.")
    parser.set_defaults(**defaults)
    script_args, config = parser.parse_args_into_dataclasses(args=rest)
    return script_args, config


# A user's mistake (bad argument, data, folder, request): one line, exit 2. A run that could not finish (diverged,
# Hub push failed): one line, exit 1. Anything else is a bug and keeps its traceback.
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)
RUN_FAILURES = (FloatingPointError, HubPushError, TargetNotMetError)


def _pop_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """`--debug` alone is ours (keep tracebacks); `--debug <option>` is TrainingArguments' and stays in argv."""
    if "--debug" not in argv:
        return argv, False
    index = argv.index("--debug")
    if index + 1 < len(argv) and not argv[index + 1].startswith("--"):
        return argv, True
    return argv[:index] + argv[index + 1 :], True


def run(argv: list[str]) -> dict[str, Any]:
    """Parse `argv` (no arguments: the embedded demo) and run the unlearning job; errors propagate."""
    if not argv:
        from .demo import demo_arguments

        argv = demo_arguments()
    elif argv[:2] == ["--demo", "llm"]:  # the LLM demo; later flags override its arguments
        from .llm_demo import llm_demo_arguments

        argv = [*llm_demo_arguments(), *argv[2:]]
    script_args, config = parse_args(argv)
    return run_unlearning(script_args, config)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `scripts/scrub.py`: the exit status (0 done, 1 run failed, 2 bad input)."""
    argv, debug = _pop_debug_flag(sys.argv[1:] if argv is None else list(argv))
    try:
        run(argv)
    except (*USER_ERRORS, *RUN_FAILURES) as error:
        if debug:
            raise
        status = 1 if isinstance(error, RUN_FAILURES) else 2
        message = " ".join(str(error).split())  # one line, whatever the exception's text holds
        print(f"error: {message} (run again with --debug for the traceback)", file=sys.stderr)
        return status
    leave_process_group()
    return 0


def leave_process_group() -> None:
    """End a launched run's process group once every output is written, as torch asks of a launched program (pending
    collectives finish, and no rank's exit leaves the group to the interpreter's teardown).

    It does not remove every abort at exit: on 2 CPU ranks under ZeRO-3, Gloo's threads still ended about 1 launch in
    3 with SIGABRT ("terminate called without an active exception") after the results were written, with or without
    this call (docs/design.md §7). Only after success: after an error another rank may still wait in a collective,
    and destroying would hang.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
