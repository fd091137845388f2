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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Entry point of `scripts/scrub.py` (and the `hf-scrub` command)."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        from .demo import demo_arguments

        argv = demo_arguments()
    script_args, config = parse_args(argv)
    return run_unlearning(script_args, config)
