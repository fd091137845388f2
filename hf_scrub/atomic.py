"""Files and folders that appear complete or not at all: written beside their place, then moved there with one
:func:`os.replace` (a rename on one file system), so an interrupted run never leaves half of one behind.

Used for the model card and its plot (`hf_scrub.card`) and for the cached demo assets (`hf_scrub.demo`,
`hf_scrub.lm_models`). The output folder itself swaps many entries with a roll-back
(`hf_scrub.output.replace_folder_contents`), which one rename cannot do.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_file(path: Path, write: Callable[[str], Any]) -> None:
    """Call `write(tmp_path)` for a temporary file next to `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_complete(folder: Path, required: tuple[str, ...]) -> bool:
    """Whether `folder` holds every file in `required` (what a finished `build_folder` leaves)."""
    return folder.is_dir() and all((folder / name).is_file() for name in required)


def build_folder(target: Path, required: tuple[str, ...], build: Callable[[Path], Any]) -> Path:
    """Return `target`, first running `build(staging)` in a fresh folder beside it and moving that into place
    unless `target` is already complete (holds every file in `required`).

    A folder at `target` without those files is stale or hand-edited, not one of ours, and is replaced. When another
    process publishes a complete folder first, theirs is kept and ours dropped.
    """
    if is_complete(target, required):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(staging)
        if target.exists() and not is_complete(target, required):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError:
            if not is_complete(target, required):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
