"""Pushing an output folder to the Hub: what is uploaded where, refusals, failures, token hygiene. No network."""

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from huggingface_hub import HfApi
from huggingface_hub.hf_api import RepoUrl
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

from hf_scrub import hub
from hf_scrub.card import write_card
from hf_scrub.hub import HubPushError, files_to_upload, push_folder_to_hub

TOKEN = "hf_SeCrEtToKeN0123456789abcdefghij"
REPO = "alice/mnist-without-3"

UPLOADED = {
    "README.md",
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "unlearning_history.png",
    "unlearning_results.json",
}
EXCLUDED = {
    "checkpoint-10/model.safetensors",
    "checkpoint-10/optimizer.pt",
    "checkpoint-10/trainer_state.json",
    ".staging-4242/model.safetensors",
    "rewind/epoch-1.safetensors",
    "runs/Nov27_09-00-00/events.out.tfevents.1.host",
    "training_args.bin",
    ".git/config",
}

RESULTS = {
    "method": "scrub",
    "task": "image-classification",
    "model": "acme/mnist-cnn",
    "forget": {"type": "class", "classes": [3], "num_examples": 4, "forget_ids_sha256": "ab" * 32},
    "original": {"forget_accuracy": 1.0, "retain_accuracy": 1.0, "mia": 60.0},
    "unlearned": {"forget_accuracy": 0.0, "retain_accuracy": 0.99, "mia": 52.0},
    "unlearning_seconds": 1.0,
    "history": [
        {"epoch": 0, "forget_error": 0.0, "retain_error": 0.0},
        {"epoch": 1, "forget_error": 1.0, "retain_error": 0.01},
    ],
}


class FakeApi:
    """Records create_repo / upload_folder calls; optionally fails like the Hub would."""

    def __init__(self, fail_on=None, error=None):
        self.calls = []
        self.fail_on = fail_on
        self.error = error

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, dict(kwargs)))
        if self.fail_on == "create_repo":
            raise self.error
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs["repo_id"], {k: v for k, v in kwargs.items() if k != "repo_id"}))
        if self.fail_on == "upload_folder":
            raise self.error
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")


@pytest.fixture
def output_dir(tmp_path):
    """A finished output folder, with the debris a real run can leave next to the final files."""
    folder = tmp_path / "unlearned"
    folder.mkdir()
    write_card(RESULTS, folder, library_versions={"hf_scrub": "0.1.0"})
    (folder / "unlearning_results.json").write_text(json.dumps(RESULTS))
    (folder / "config.json").write_text('{"model_type": "resnet"}')
    (folder / "preprocessor_config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"\x00weights" * 10)
    for rel in EXCLUDED:
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(b"debris")
    return folder


def snapshot(folder):
    return {
        p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def effective_upload(folder, call_kwargs):
    """The files `upload_folder` would commit given the recorded patterns, computed as huggingface_hub does."""
    ignore = list(call_kwargs.get("ignore_patterns") or []) + DEFAULT_IGNORE_PATTERNS
    relpaths = [p.relative_to(folder).as_posix() for p in sorted(Path(folder).glob("**/*")) if p.is_file()]
    return set(filter_repo_objects(relpaths, allow_patterns=call_kwargs.get("allow_patterns"), ignore_patterns=ignore))


@pytest.mark.parametrize("private", [True, False, None])
def test_push_creates_repo_and_uploads_the_right_files(output_dir, private):
    api = FakeApi()
    url = push_folder_to_hub(output_dir, REPO, private=private, token=TOKEN, api=api)
    assert url == f"https://huggingface.co/{REPO}/commit/abc123"

    assert [(name, repo) for name, repo, _ in api.calls] == [("create_repo", REPO), ("upload_folder", REPO)]
    create_kwargs, upload_kwargs = api.calls[0][2], api.calls[1][2]
    assert create_kwargs == {"private": private, "exist_ok": True, "repo_type": "model", "token": TOKEN}
    assert Path(upload_kwargs["folder_path"]) == output_dir.resolve()
    assert upload_kwargs["repo_type"] == "model" and upload_kwargs["token"] == TOKEN
    assert upload_kwargs.get("path_in_repo") in (None, "", ".")
    assert upload_kwargs.get("delete_patterns") is None  # never deletes anything remote

    uploaded = effective_upload(output_dir, upload_kwargs)
    assert uploaded == UPLOADED
    assert uploaded == set(files_to_upload(output_dir))  # the helper agrees with the client's own filtering


def test_push_through_real_hfapi_upload_folder(output_dir):
    """The real `HfApi.upload_folder` with only its network edges patched: the commit holds exactly our files."""
    commits = []
    patterns_before = list(hub.IGNORE_PATTERNS)

    def fake_create_commit(self, *, repo_id, operations, **kwargs):
        commits.append((repo_id, [op.path_in_repo for op in operations], kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/def456")

    with (
        mock.patch.object(HfApi, "create_repo", return_value=RepoUrl(f"https://huggingface.co/{REPO}")) as create,
        mock.patch.object(HfApi, "_validate_yaml", return_value=None),
        mock.patch("huggingface_hub.hf_api.is_xet_available", return_value=False),
        mock.patch.object(HfApi, "create_commit", fake_create_commit),
    ):
        url = push_folder_to_hub(output_dir, REPO, private=True, token=TOKEN, api=HfApi())
    assert url.endswith("/commit/def456")
    create.assert_called_once_with(REPO, private=True, exist_ok=True, repo_type="model", token=TOKEN)
    (repo_id, paths, kwargs), *rest = commits
    assert not rest and repo_id == REPO and kwargs["token"] == TOKEN
    assert set(paths) == UPLOADED
    assert patterns_before == hub.IGNORE_PATTERNS  # upload_folder extends the list it gets in place: not ours


@pytest.mark.parametrize(
    "remove, match",
    [
        ("unlearning_results.json", "incomplete .*unlearning_results.json"),
        ("README.md", "incomplete .*README.md"),
        ("model.safetensors", "no model weights"),
    ],
)
def test_incomplete_folder_refused_before_any_api_call(output_dir, remove, match):
    (output_dir / remove).unlink()
    before = snapshot(output_dir)
    api = FakeApi()
    with pytest.raises(HubPushError, match=match) as info:
        push_folder_to_hub(output_dir, REPO, token=TOKEN, api=api)
    assert api.calls == []
    assert REPO in str(info.value) and str(output_dir.resolve()) in str(info.value)
    assert snapshot(output_dir) == before


def test_weights_only_in_excluded_folders_do_not_count(output_dir):
    (output_dir / "model.safetensors").unlink()  # rewind/ and checkpoint-*/ still hold .safetensors files
    with pytest.raises(HubPushError, match="no model weights"):
        push_folder_to_hub(output_dir, REPO, api=FakeApi())


def test_missing_folder_and_bad_repo_id_refused(tmp_path, output_dir):
    api = FakeApi()
    with pytest.raises(HubPushError, match="not a folder"):
        push_folder_to_hub(tmp_path / "nope", REPO, api=api)
    with pytest.raises(HubPushError, match="invalid repo id"):
        push_folder_to_hub(output_dir, "not a/valid//repo", api=api)
    assert api.calls == []


@pytest.mark.parametrize("fail_on", ["create_repo", "upload_folder"])
def test_hub_failure_gives_clear_error_without_token_and_keeps_folder(output_dir, caplog, fail_on):
    before = snapshot(output_dir)
    error = RuntimeError(f"401 Client Error: Unauthorized (Authorization: Bearer {TOKEN})")
    api = FakeApi(fail_on=fail_on, error=error)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubPushError) as info:
        push_folder_to_hub(output_dir, REPO, private=True, token=TOKEN, api=api)

    message = str(info.value)
    assert REPO in message
    assert f"intact and complete at {output_dir.resolve()}" in message
    # The retry command keeps the requested visibility (a failed create_repo must not turn into a public repo).
    assert f"hf upload {REPO} {output_dir.resolve()} . --repo-type model --private --exclude" in message
    assert "--exclude 'checkpoint-*'" in message and "--exclude 'rewind/*'" in message
    assert "401 Client Error" in message  # the cause is reported ...
    assert TOKEN not in message  # ... without the token
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the raw exception is not chained
    assert isinstance(info.value, RuntimeError)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert snapshot(output_dir) == before
    assert [c[0] for c in api.calls] == (
        ["create_repo"] if fail_on == "create_repo" else ["create_repo", "upload_folder"]
    )


def test_offline_real_hfapi_fails_cleanly(output_dir, caplog):
    """HF_HUB_OFFLINE=1 (conftest): the real client refuses to connect; the push says so and leaves the folder."""
    before = snapshot(output_dir)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(HubPushError, match="intact and complete"):
        push_folder_to_hub(output_dir, REPO, token=TOKEN, api=HfApi(token=TOKEN))
    assert all(TOKEN not in r.getMessage() for r in caplog.records)
    assert snapshot(output_dir) == before


def test_successful_push_keeps_folder_and_logs_no_token(output_dir, caplog):
    before = snapshot(output_dir)
    caplog.set_level(logging.DEBUG)
    api = FakeApi()
    push_folder_to_hub(output_dir, REPO, token=TOKEN, commit_message="my message", api=api)
    assert api.calls[1][2]["commit_message"] == "my message"
    assert api.calls[1][2]["token"] == TOKEN  # passed through to the client ...
    assert any(REPO in r.getMessage() for r in caplog.records)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)  # ... never logged
    assert snapshot(output_dir) == before


def test_training_args_bin_excluded_by_design(output_dir):
    # A pickle of the whole TrainingArguments (hub_token included), and code execution on load: never published.
    assert "training_args.bin" not in files_to_upload(output_dir)
    assert (output_dir / "training_args.bin").exists()
