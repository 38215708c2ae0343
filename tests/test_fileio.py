"""Outputs appear whole, with the user's umask, and folders are replaced as a set."""

import os

import pytest

from grape_instances.fileio import replacing_folder, write_json_atomic


def test_atomic_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_replacing_folder_keeps_the_old_one_when_the_block_fails(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.png").write_text("old")
    with pytest.raises(RuntimeError), replacing_folder(out) as tmp:
        (tmp / "new.png").write_text("new")
        raise RuntimeError("crash half way")
    assert [p.name for p in out.iterdir()] == ["old.png"]
    with replacing_folder(out) as tmp:
        (tmp / "new.png").write_text("new")
    assert [p.name for p in out.iterdir()] == ["new.png"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
