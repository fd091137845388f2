"""`hf_scrub.atomic`: a file or folder is in place complete or not at all, whatever fails on the way."""

import os
from pathlib import Path

import pytest

from hf_scrub.atomic import build_folder, is_complete, write_file


def test_a_written_file_replaces_the_old_one_with_the_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "README.md"
    write_file(path, lambda tmp: Path(tmp).write_text("first"))
    write_file(path, lambda tmp: Path(tmp).write_text("second"))
    assert path.read_text() == "second" and oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in path.parent.iterdir()) == ["README.md"]  # no temporary file left


def test_a_writer_that_fails_halfway_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = tmp_path / "README.md"
    path.write_text("old card")

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("half a ca")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_file(path, half_then_fail)
    assert path.read_text() == "old card" and sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]


def build_two_files(staging: Path) -> None:
    (staging / "config.json").write_text("{}")
    (staging / "model.safetensors").write_text("weights")


REQUIRED = ("config.json", "model.safetensors")


def test_a_folder_is_built_once_and_a_complete_one_is_not_rebuilt(tmp_path):
    target = tmp_path / "cache" / "model"
    assert build_folder(target, REQUIRED, build_two_files) == target and is_complete(target, REQUIRED)
    builds = []
    build_folder(target, REQUIRED, builds.append)
    assert builds == [] and sorted(p.name for p in target.parent.iterdir()) == ["model"]


def test_a_build_that_fails_leaves_neither_the_folder_nor_its_staging(tmp_path):
    def fail_after_one_file(staging: Path) -> None:
        (staging / "config.json").write_text("{}")
        raise KeyboardInterrupt  # an interrupted run, too

    with pytest.raises(KeyboardInterrupt):
        build_folder(tmp_path / "model", REQUIRED, fail_after_one_file)
    assert list(tmp_path.iterdir()) == []


def test_a_stale_folder_is_replaced_and_a_complete_one_published_meanwhile_is_kept(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("hand-edited, no weights")
    build_folder(target, REQUIRED, build_two_files)
    assert (target / "model.safetensors").read_text() == "weights" and (target / "config.json").read_text() == "{}"

    other = tmp_path / "raced"

    def another_process_publishes_first(staging: Path) -> None:
        build_two_files(staging)
        other.mkdir()
        (other / "config.json").write_text("theirs")
        (other / "model.safetensors").write_text("theirs")

    build_folder(other, REQUIRED, another_process_publishes_first)  # os.replace onto a non-empty folder fails
    assert (other / "config.json").read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "raced"]  # our staging folder is gone


def test_a_failed_move_onto_an_incomplete_folder_is_raised(tmp_path, monkeypatch):
    def refuse(src, dst):
        raise OSError("cross-device link")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="cross-device link"):
        build_folder(tmp_path / "model", REQUIRED, build_two_files)
    assert list(tmp_path.iterdir()) == []
