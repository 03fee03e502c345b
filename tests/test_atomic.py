"""Whole-or-nothing writes (unet_sep.atomic): the destination is either the old file or the complete new one."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from unet_sep.atomic import (
    atomic_folder,
    atomic_path,
    is_stale_temporary,
    remove_stale_temporaries,
    remove_stale_temporary_folders,
    temporary_path,
    write_bytes_atomic,
    write_text_atomic,
)


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


def test_model_folders_and_checkpoints_are_readable_by_the_group(tmp_path):
    """safetensors' save_file makes 0600 files; models and checkpoints get the umask's permissions like any file."""
    import torch

    from unet_sep import ModelConfig, UNetConfig, load_model, save_model
    from unet_sep.model.stems import StemsNet
    from unet_sep.train.checkpoints import save_checkpoint

    config = ModelConfig(stems=["vocals", "accompaniment"], frequency_bins=64, segment_frames=32,
                         unet=UNetConfig(filters=[4, 8], dropout_layers=1))
    net = StemsNet(config).eval()
    previous = os.umask(0o022)
    try:
        save_model(tmp_path / "model", net, config, dtype=torch.float16)
        optimizer = torch.optim.Adam(net.parameters())
        save_checkpoint(tmp_path / "checkpoints", 3, net, optimizer, {"best_score": None})
    finally:
        os.umask(previous)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"model.safetensors", "config.json", "optimizer.safetensors", "state.json"}
    assert {p: oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {p: oct(0o644) for p in written}
    _, loaded = load_model(tmp_path / "model")
    for name, value in net.state_dict().items():
        assert torch.allclose(loaded.state_dict()[name].float(), value.float().half().float()), name


def test_a_folder_is_filled_under_a_temporary_name_and_renamed_whole(tmp_path):
    target = tmp_path / "step-00000002"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_folder(target) as temporary:
        assert temporary.parent == tmp_path and temporary.is_dir() and temporary.name.endswith(".partial")
        (temporary / "model.safetensors").write_bytes(b"new")
        assert (target / "old.txt").is_file()  # the old folder stays until the new one is complete
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002"]
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_folder(target) as temporary:
            (temporary / "half").write_bytes(b"x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002"]
    assert sorted(p.name for p in target.iterdir()) == ["model.safetensors"]


def test_temporary_folders_of_killed_writers_are_removed(tmp_path):
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    live = temporary_path(tmp_path / "step-00000004")  # this test's own pid: a live writer
    host = live.name.split("@")[1].split(".partial")[0]
    dead = tmp_path / f".step-00000002.0a1b2c3d.{process.pid}@{host}.partial"
    other_host = tmp_path / f".step-00000003.0a1b2c3d.{process.pid}@some-other-machine.partial"
    for folder in (dead, live, other_host):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "model.safetensors").write_bytes(b"\0" * 64)
    (tmp_path / "step-00000001").mkdir()
    assert remove_stale_temporary_folders(tmp_path) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other_host.name, "step-00000001"])
    assert remove_stale_temporary_folders(tmp_path / "absent") == []


NAMES = {  # final names whose temporary names are hard to make: long in bytes, not UTF-8, with a newline
    "255 bytes of 4-byte characters": "\U0001f3b5" * 62 + "xyz.wav",
    "255 bytes of 2-byte characters": "\u00e9" * 125 + "x.wav",
    "255 bytes, not UTF-8": os.fsdecode(b"\xff" * 251 + b".wav"),
    "255 bytes of ASCII": "a" * 251 + ".wav",
    "a newline": "new\nline.wav",
}


@pytest.mark.parametrize("name", list(NAMES))
@pytest.mark.parametrize("suffix", [".partial", ".partial.png"])
def test_temporary_names_fit_name_max_and_are_recognised(tmp_path, name, suffix):
    """The temporary name kept 80 characters of the final one: 320 bytes of 4-byte characters, over the 255 bytes
    a file name may hold, so a stem whose final name fitted could not be written. A newline in the name hid a
    killed writer's file from the clean-up (the pattern's "." does not match a newline)."""
    final = os.path.join(os.fsencode(tmp_path), os.fsencode(NAMES[name]))
    temporary = temporary_path(os.fsdecode(final), suffix)
    size = len(os.fsencode(temporary.name))
    assert size <= 255, size
    open(os.fsencode(temporary), "xb").close()  # the file system takes it
    if "not UTF-8" not in name:
        temporary.name.encode("utf-8")  # cut between characters: no UTF-8 sequence split into stray bytes
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    stale = temporary.with_name(temporary.name.replace(f".{os.getpid()}@", f".{process.pid}@"))
    os.rename(os.fsencode(temporary), os.fsencode(stale))
    assert is_stale_temporary(stale.name)
    assert remove_stale_temporaries(tmp_path) == [stale] and not os.listdir(tmp_path)
