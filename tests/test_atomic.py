"""Whole-or-nothing writes (unet_sep.atomic): the destination is either the old file or the complete new one."""

from __future__ import annotations

import os
import stat

import pytest

from unet_sep.atomic import atomic_path, write_bytes_atomic, write_text_atomic


def test_a_finished_write_replaces_the_file_with_ordinary_permissions(tmp_path):
    previous = os.umask(0o022)
    try:
        target = tmp_path / "deep" / "summary.csv"
        write_text_atomic(target, "old\n")
        write_bytes_atomic(target, b"new\n", fsync=True)
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"new\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # as a plain open() would make it, not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["summary.csv"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "model.safetensors"
    target.write_bytes(b"complete")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, ".partial.bin") as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".partial.bin") and temporary != target
            temporary.write_bytes(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    with pytest.raises(RuntimeError):  # the block never wrote: nothing to clean, nothing created
        with atomic_path(tmp_path / "never.json"):
            raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
