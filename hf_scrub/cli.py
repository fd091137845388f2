"""Command line of `scripts/scrub.py`: `HfArgumentParser` over `ScriptArguments` + `ScrubConfig`.

Three ways in, with one precedence rule (command line > config file > preset > defaults):
- flags: `scrub.py --model_name_or_path ... --forget_classes 3 --preset class --learning_rate 1e-3`;
- one YAML/JSON file, alone (`scrub.py run.yaml`) or with overriding flags (`scrub.py run.yaml --seed 1`);
- no arguments at all: the embedded offline demo (`hf_scrub.demo`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser

from .baselines import METHODS
from .config import ScrubConfig, preset_values
from .hub import HubPushError
from .pipeline import ScriptArguments, run_unlearning

CONFIG_SUFFIXES = (".yaml", ".yml", ".json")
METHOD_CONFIGS = {"scrub": ScrubConfig, **{name: config for name, (_, config) in METHODS.items()}}


def _read_config_file(path: str) -> dict[str, Any]:
    text = Path(path).read_text()
    values = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of argument names to values.")
    return values


def parse_args(argv: list[str]) -> tuple[ScriptArguments, Any]:
    """Parse `argv` (without the program name) into `(ScriptArguments, <the method's config>)`."""
    if argv and argv[0].endswith(CONFIG_SUFFIXES):  # `scrub.py run.yaml [--flag value ...]`
        argv = ["--config", *argv]
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    pre.add_argument("--preset")
    pre.add_argument("--method")
    known, rest = pre.parse_known_args(argv)
    file_values = _read_config_file(known.config) if known.config else {}
    preset = known.preset or file_values.get("preset")
    method = known.method or file_values.get("method", "scrub")
    if method not in METHOD_CONFIGS:
        raise ValueError(f"Unknown --method {method!r}; choose one of {sorted(METHOD_CONFIGS)}.")
    if preset and method != "scrub":
        raise ValueError(f"--preset {preset} holds SCRUB settings; it applies to --method scrub, not {method}.")
    defaults = {**(preset_values(preset) if preset else {}), **file_values, "preset": preset, "method": method}

    parser = HfArgumentParser((ScriptArguments, METHOD_CONFIGS[method]))
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
RUN_FAILURES = (FloatingPointError, HubPushError)


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
    return 0
