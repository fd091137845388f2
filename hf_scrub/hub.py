"""Push a finished unlearning output folder (model, processor, evaluation card, plot, results) to the Hub.

`push_folder_to_hub(folder, repo_id)` creates the repo if needed and uploads the folder in one `upload_folder` call.
It checks the folder before any network call, never modifies the local folder, and turns any Hub failure into a
`HubPushError` that says the local copy is complete and how to retry, with the token scrubbed from the message.

What is uploaded: everything in the folder except the patterns in `IGNORE_PATTERNS`: Trainer checkpoints
(`checkpoint-*`), staging folders (`.staging-*`), SCRUB+R candidate folders (`rewind/`), TensorBoard logs (`runs/`),
optimizer / scheduler / RNG states, and `training_args.bin`. The latter is excluded on purpose: it is a pickle (loading
it runs code, so the Hub flags it) and it pickles the whole `TrainingArguments`, `hub_token` included; every
hyperparameter that matters is in `unlearning_results.json` and on the card.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects, validate_repo_id

__all__ = ["IGNORE_PATTERNS", "HubPushError", "files_to_upload", "push_folder_to_hub", "retry_command"]

logger = logging.getLogger(__name__)

RESULTS_FILE = "unlearning_results.json"
CARD_FILE = "README.md"
DEFAULT_COMMIT_MESSAGE = "Upload SCRUB-unlearned model with its evaluation card (hf_scrub)"

# fnmatch patterns on paths relative to the folder (`*` also matches `/`), as `upload_folder` applies them.
IGNORE_PATTERNS = [
    "checkpoint-*",
    "*/checkpoint-*",
    ".staging-*",
    "*/.staging-*",
    "rewind/*",
    "runs/*",
    "training_args.bin",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "*.tmp",
    ".DS_Store",
]

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_TOKEN_RE = re.compile(r"\b(?:hf_|api_org_)[A-Za-z0-9]{8,}")


class HubPushError(RuntimeError):
    """A push to the Hub failed (or was refused before starting); the local folder is untouched."""


def files_to_upload(folder: str | Path) -> list[str]:
    """Paths (relative, POSIX) that `push_folder_to_hub` would upload from `folder`, in the order the Hub client uses.

    Computed exactly as `HfApi.upload_folder` does: every file under the folder, filtered with `IGNORE_PATTERNS` and
    huggingface_hub's own default ignores (`.git`, `.cache/huggingface`).
    """
    folder = Path(folder).expanduser().resolve()
    relpaths = [p.relative_to(folder).as_posix() for p in sorted(folder.glob("**/*")) if p.is_file()]
    return list(filter_repo_objects(relpaths, ignore_patterns=IGNORE_PATTERNS + DEFAULT_IGNORE_PATTERNS))


def retry_command(folder: str | Path, repo_id: str, private: bool | None = None) -> str:
    """The `hf upload` command line that uploads the same files as `push_folder_to_hub` (the token is not in it)."""
    visibility = {True: " --private", False: " --no-private", None: ""}[private]
    excludes = " ".join(f"--exclude {shlex.quote(pattern)}" for pattern in IGNORE_PATTERNS)
    return f"hf upload {shlex.quote(repo_id)} {shlex.quote(str(folder))} . --repo-type model{visibility} {excludes}"


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return _TOKEN_RE.sub("***", text)


def _check_folder(folder: Path, repo_id: str) -> list[str]:
    if not folder.is_dir():
        raise HubPushError(f"Cannot push to {repo_id!r}: {folder} is not a folder.")
    files = files_to_upload(folder)
    missing = [name for name in (RESULTS_FILE, CARD_FILE) if name not in files]
    if missing:
        raise HubPushError(
            f"Refusing to push {folder} to {repo_id!r}: the folder is incomplete (missing {', '.join(missing)}). "
            f"{RESULTS_FILE} is written last by a finished unlearning run and README.md by hf_scrub.card.write_card; "
            "finish (or rerun) the run, then push again. Nothing was sent to the Hub."
        )
    if not any(name.endswith(_WEIGHT_SUFFIXES) for name in files):
        raise HubPushError(
            f"Refusing to push {folder} to {repo_id!r}: no model weights (*.safetensors / *.bin) in the folder. "
            "Nothing was sent to the Hub."
        )
    return files


def push_folder_to_hub(
    folder: str | Path,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    api: HfApi | None = None,
) -> str:
    """Upload a finished output folder to the model repo `repo_id` (created if missing); return the commit URL.

    Args:
        folder: the run's output folder; it must hold `unlearning_results.json`, `README.md` and model weights.
        repo_id: `namespace/name` on the Hub.
        private: visibility of a repo created by this call (`None`: the Hub's default); an existing repo is unchanged.
        token: a Hugging Face token (default: the logged-in one). It never appears in messages or logs.
        commit_message: message of the upload commit.
        api: the `HfApi` to use (tests inject a fake one).

    Raises:
        HubPushError: the folder is incomplete or `repo_id` invalid (before any network call), or the Hub refused or
            failed. The message names the repo, the local folder (complete and unchanged) and how to retry.
    """
    folder = Path(folder).expanduser().resolve()
    try:
        validate_repo_id(repo_id)
    except Exception as error:
        raise HubPushError(f"Cannot push {folder}: invalid repo id {repo_id!r} ({error}).") from None
    files = _check_folder(folder, repo_id)
    api = api if api is not None else HfApi()
    secrets = [s for s in (token, getattr(api, "token", None)) if isinstance(s, str) and s]

    logger.info("Pushing %d files from %s to the Hub model repo %s.", len(files), folder, repo_id)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model", token=token)
        commit = api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            repo_type="model",
            token=token,
            commit_message=commit_message,
            ignore_patterns=list(IGNORE_PATTERNS),  # a fresh list: upload_folder appends its defaults to it in place
        )
    except Exception as error:
        detail = _scrub(f"{type(error).__name__}: {error}", secrets)
        message = (
            f"Pushing to the Hub repo {repo_id!r} failed ({detail}). The local folder is intact and complete at "
            f"{folder}; nothing in it was changed. Retry with `{retry_command(folder, repo_id, private)}`, or call "
            f"hf_scrub.hub.push_folder_to_hub({str(folder)!r}, {repo_id!r}) again."
        )
        # `from None`: the original exception (whose text or request may carry the token) is not chained.
        raise HubPushError(message) from None

    url = getattr(commit, "commit_url", None) or getattr(repo_url, "url", None) or str(repo_url)
    logger.info("Pushed %s to %s", folder, url)
    return url
