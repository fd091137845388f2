"""The output folder: checked before any work, then written completely or not at all (docs/design.md §15).

- `check_output_location`: before the model is loaded, the folder must not be (inside) the input model folder, must
  be writable, and, when it already holds files, must be one that hf_scrub wrote (or `overwrite=True`).
- `RequestStamp`: every checkpoint records the forget request it was made for (`hf_scrub_request.json`), so that
  `resolve_resume_checkpoint` refuses to resume a different request, and the original model's report, so that a
  resumed run reports the original and not the half-unlearned model it resumes from.
- `replace_folder_contents`: the finished run, assembled in a staging folder, replaces the folder's previous content
  as a whole (rename by rename, rolled back on failure); `unlearning_results.json` moves in last and marks the
  folder complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

logger = logging.getLogger(__name__)

RESULTS_FILE = "unlearning_results.json"
REQUEST_FILE = "hf_scrub_request.json"
STAGING_DIR = ".staging-hf_scrub"
PREVIOUS_DIR = ".staging-previous"
# Left in place when a finished run replaces the folder's content: training logs of any run.
KEPT_ALWAYS = ("runs",)


def written_by_hf_scrub(folder: Path) -> bool:
    """A finished run (its results file), an interrupted one (stamped checkpoints) or a crashed finish (staging)."""
    return (
        (folder / RESULTS_FILE).is_file()
        or (folder / STAGING_DIR).exists()
        or any((checkpoint / REQUEST_FILE).is_file() for checkpoint in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*"))
    )


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_location(output_dir: str, model_name_or_path: str | None, overwrite: bool = False) -> None:
    """Refuse, before any work, an output folder the run could not (or must not) write its result into."""
    out = Path(output_dir).expanduser().resolve()
    if model_name_or_path and Path(model_name_or_path).expanduser().is_dir():
        source = Path(model_name_or_path).expanduser().resolve()
        if out == source or source in out.parents:
            raise ValueError(
                f"output_dir {output_dir!r} is the input model folder or inside it; the original model is never "
                "modified. Choose another --output_dir."
            )
    existing = _nearest_existing(out)
    if not existing.is_dir():
        raise ValueError(f"output_dir {output_dir!r} cannot be created: {existing} is a file, not a folder.")
    try:  # a real write, not os.access: read-only mounts and root's permission bypass both answer truthfully
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".hf_scrub-write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise ValueError(
            f"output_dir {output_dir!r} is not writable ({existing}: {error.strerror or error}). Choose a folder you "
            "can write to; nothing was loaded or trained."
        ) from None
    if out.is_dir() and any(out.iterdir()) and not overwrite and not written_by_hf_scrub(out):
        raise ValueError(
            f"output_dir {output_dir!r} already holds files that hf_scrub did not write ({len(list(out.iterdir()))} "
            "entries). A run replaces the folder's content as a whole; pass --overwrite_output_dir true to allow "
            "that, or choose an empty or new folder."
        )


class RequestStamp(TrainerCallback):
    """Writes the request (and the original model's report, once known) into every checkpoint the Trainer saves."""

    def __init__(self, request: dict[str, Any]) -> None:
        self.request = dict(request)
        self.saved: list[str] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        name = f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        self.saved.append(name)
        folder = Path(args.output_dir) / name
        if state.is_world_process_zero and folder.is_dir():
            (folder / REQUEST_FILE).write_text(json.dumps(self.request, indent=2, allow_nan=False) + "\n")


def resolve_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str, request: dict[str, Any]) -> dict:
    """The checkpoint folder to resume from and its stamp; refuses one made for another forget request.

    `resume_from_checkpoint` is a checkpoint folder, or "true" for the last checkpoint in `output_dir`.
    """
    if resume_from_checkpoint in (None, "", "false", "False"):
        return {}
    if resume_from_checkpoint in ("true", "True"):
        last = get_last_checkpoint(output_dir) if Path(output_dir).is_dir() else None
        if last is None:
            raise ValueError(f"--resume_from_checkpoint true, but {output_dir!r} holds no checkpoint to resume from.")
        checkpoint = Path(last)
    else:
        checkpoint = Path(resume_from_checkpoint)
    if not checkpoint.is_dir():
        raise ValueError(f"--resume_from_checkpoint {str(checkpoint)!r} is not a checkpoint folder.")
    stamp_file = checkpoint / REQUEST_FILE
    if not stamp_file.is_file():
        raise ValueError(
            f"Checkpoint {str(checkpoint)!r} was not written by an hf_scrub run (no {REQUEST_FILE}), so it cannot be "
            "checked against this forget request. Start without --resume_from_checkpoint."
        )
    stamp = json.loads(stamp_file.read_text())
    differing = [key for key in request if stamp.get(key) != request[key]]
    if differing:
        raise ValueError(
            f"Checkpoint {str(checkpoint)!r} was made for a different unlearning request ({', '.join(differing)} "
            f"differ: checkpoint {[stamp.get(k) for k in differing]} vs now {[request[k] for k in differing]}). "
            "Resume with the same request, or start without --resume_from_checkpoint."
        )
    return {"path": str(checkpoint), **stamp}


def replace_folder_contents(folder: Path, staging: Path, keep: set[str]) -> None:
    """Make `folder` hold exactly `staging`'s entries (plus `keep`), `RESULTS_FILE` last; roll back on failure.

    Every move is a rename inside one folder, so it neither copies data nor runs out of space midway.
    """
    previous = folder / PREVIOUS_DIR
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir()
    keep = set(keep) | set(KEPT_ALWAYS) | {STAGING_DIR, PREVIOUS_DIR}
    moved_out: list[str] = []
    moved_in: list[str] = []
    try:
        for entry in sorted(folder.iterdir()):
            if entry.name not in keep:
                os.replace(entry, previous / entry.name)
                moved_out.append(entry.name)
        for item in sorted(staging.iterdir(), key=lambda p: (p.name == RESULTS_FILE, p.name)):
            os.replace(item, folder / item.name)
            moved_in.append(item.name)
    except BaseException:
        for name in reversed(moved_in):
            os.replace(folder / name, staging / name)
        for name in reversed(moved_out):
            os.replace(previous / name, folder / name)
        previous.rmdir()  # empty again; if the roll-back itself failed, the old content stays in `previous`
        raise
    shutil.rmtree(previous)
