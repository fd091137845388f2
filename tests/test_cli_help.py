"""`scripts/scrub.py --help`: SCRUB's own options first, in named groups, the rest of TrainingArguments last; the
grouping changes the display only, never how arguments parse."""

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import HfArgumentParser, TrainingArguments

from hf_scrub.cli import BASELINES_GROUP, HELP_GROUPS, METHOD_CONFIGS, OTHER_GROUP, build_parser, parse_args
from hf_scrub.config import PRESETS
from hf_scrub.pipeline import ScriptArguments

ROOT = Path(__file__).resolve().parents[1]
TITLES = [
    "What to forget",
    "Data",
    "Model and method",
    "SCRUB",
    "Evaluation and Hub",
    "LoRA",
    "Baseline methods",
    "Everything else from TrainingArguments",
]
# From the issue (13): which options a reader must find in which group.
EXPECTED = {
    "What to forget": ["forget_classes", "num_forget_examples", "forget_indices_file", "id_column", "forget_column"],
    "Data": ["dataset_name", "dataset_config_name", "task", "image_column", "text_column", "label_column"]
    + ["train_split", "test_split", "test_size", "max_length"],
    "Model and method": ["model_name_or_path", "method", "preset", "retrain_init_from"],
    "SCRUB": ["alpha", "gamma", "kd_temperature", "forget_epochs", "per_device_forget_batch_size", "rewind"]
    + ["retain_fraction", "cache_teacher_outputs", "lr_decay_epochs", "lr_decay_factor", "history_retain_examples"]
    + ["check_forget_retain_overlap", "per_device_train_batch_size", "num_train_epochs"],
    "Evaluation and Hub": ["retrain_model_name_or_path", "relearn_time", "relearn_max_epochs", "output_dir"]
    + ["overwrite_output_dir", "push_to_hub", "hub_model_id", "hub_private_repo", "hub_token"],
    "LoRA": ["use_peft", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "save_merged_model"],
    "Baseline methods": ["beta"],
    "Everything else from TrainingArguments": [
        "learning_rate",
        "optim",
        "seed",
        "bf16",
        "gradient_accumulation_steps",
    ],
}


def script_help(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    return subprocess.run(
        [sys.executable, "scripts/scrub.py", *args, "--help"], cwd=ROOT, env=env, capture_output=True, text=True
    )


def sections(text: str) -> dict[str, list[str]]:
    """Group title -> the option names (first spelling, without `--`) listed under it."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if re.match(r"^\S.*:$", line):
            current = found.setdefault(line[:-1], [])
        elif current is not None and (match := re.match(r"^  --([\w]+)", line)):
            current.append(match.group(1))
    return found


@pytest.fixture(scope="module")
def scrub_help() -> str:
    result = script_help()
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow  # runs the script's --help in a subprocess
def test_groups_in_order_with_their_options(scrub_help):
    found = sections(scrub_help)
    titles = [title for title in found if title in TITLES]
    assert titles == TITLES
    assert list(found)[list(found).index(TITLES[-1]) - 1] == TITLES[-2]  # nothing between the last two
    for title, names in EXPECTED.items():
        assert set(names) <= set(found[title]), (title, set(names) - set(found[title]))
    assert found["options"] == []  # only -h, --help
    listed = [name for title in TITLES for name in found[title]]
    assert len(listed) == len(set(listed))  # every option once
    assert "(only with --method neggrad_plus)" in scrub_help
    assert re.search(r"--beta BETA.*default: 0\.999", scrub_help, re.S)


@pytest.mark.slow  # runs the script's --help in a subprocess
def test_everything_of_unlearning_is_in_a_named_group(scrub_help):
    """A new field of ScriptArguments or of a method's config must be placed in a group, not left among
    TrainingArguments' options."""
    training = {field.name for field in dataclasses.fields(TrainingArguments)}
    rest = {name.removeprefix("no_") for name in sections(scrub_help)[OTHER_GROUP]}
    assert rest <= training
    assert rest.isdisjoint(name for _, names in HELP_GROUPS.values() for name in names)


@pytest.mark.slow  # runs the script's --help in a subprocess
def test_every_preset_and_method_is_listed(scrub_help):
    presets = re.search(r"--preset PRESET\s+(.*?)\(default", scrub_help, re.S).group(1)
    for name in PRESETS:
        assert re.search(rf"\b{name}\b", presets), name
        assert re.search(rf"^  {name}: ", scrub_help, re.M), name  # its values, at the end
    methods = re.search(r"--method METHOD\s+(.*?)\(default", scrub_help, re.S).group(1)
    for name in METHOD_CONFIGS:
        assert name in methods


@pytest.mark.slow  # runs the script's --help in a subprocess
def test_help_of_a_baseline_method():
    result = script_help("--method", "neggrad_plus")
    assert result.returncode == 0, result.stderr[-3000:]
    found = sections(result.stdout)
    assert [title for title in found if title in TITLES] == TITLES
    assert "beta" in found[BASELINES_GROUP]
    assert re.search(r"--alpha ALPHA.*?\(only with --method scrub\)", result.stdout, re.S)
    assert "(only with --method neggrad_plus)" not in result.stdout


@pytest.mark.parametrize(
    "argv",
    [
        ["--model_name_or_path", "m", "--forget_classes", "3", "--preset", "class", "--learning_rate", "0.1"],
        ["--method", "neggrad_plus", "--beta", "0.5", "--no_check_forget_retain_overlap", "--rewind", "true"],
        ["--method", "bad_teacher", "--output_dir", "o", "--use_peft", "--lora_r", "4"],
    ],
)
def test_parsing_is_hf_argument_parser_s(argv, tmp_path, monkeypatch):
    """Same values as the plain `HfArgumentParser((ScriptArguments, config))` the grouping decorates."""
    monkeypatch.chdir(tmp_path)
    script_args, config = parse_args(argv)
    method = script_args.method
    plain = HfArgumentParser((ScriptArguments, METHOD_CONFIGS[method]))
    preset = dict(PRESETS["class"]) if "--preset" in argv else {}
    plain.set_defaults(**preset, preset="class" if preset else None, method=method)
    expected_args, expected_config = plain.parse_args_into_dataclasses(args=argv)
    assert script_args == expected_args
    assert config.to_dict() == expected_config.to_dict()


def test_options_shown_for_other_methods_are_not_accepted():
    with pytest.raises(ValueError, match="not used"):
        parse_args(["--beta", "0.5"])
    assert "beta" not in {action.dest for action in build_parser("scrub")._actions}
