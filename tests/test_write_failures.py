"""Writing stems that cannot be written, through the real command line (issue 25 items 4 and 7, the streams the
program writes to): a full disk (a small tmpfs), a read-only file system, a file size limit, the output folder
removed mid-run; formats that cannot hold an input's stems (found before any work, saying what to use instead);
and, in every one of them, no message naming a temporary file and nothing partial left behind."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import soundfile as sf

from conftest import count_batches, disk_full_for, music_like
from test_bad_inputs import (
    check_no_leftovers,
    check_stderr,
    check_stems,
    cli,
    frames_of,
    run_while,
    snapshot,
    wait_for_partial,
    write_wav,
)
from unet_sep import Separator
from unet_sep.audio.encode import EncoderLimitError, OutputFolderError
from unet_sep.separate.files import NotSeparatedError

STEMS = ["vocals", "accompaniment"]  # conftest's tiny_model
STOPPED = "error: the run stopped ("


def no_temporary_names(text: str) -> None:
    """The rule for every message: a temporary file (``.<name>.<token>.<pid>@<host>.partial``) is never named."""
    assert ".partial" not in text and ".spool" not in text, text


@contextlib.contextmanager
def tmpfs(folder: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs mounted on ``folder`` (skips the test, saying why, where this machine cannot mount one)."""
    folder.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root and mount(8); this runs unprivileged")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=2m",) + options), "tmpfs",
                              str(folder)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def stopped_line(result: subprocess.CompletedProcess, cause: str) -> list[Path]:
    """The one line for the inputs a stopped run left undone; returns them."""
    lines = [line for line in result.stderr.splitlines() if line.startswith(STOPPED)]
    assert len(lines) == 1, result.stderr
    head, _, names = lines[0].partition(" input(s) not separated: ")
    assert head.startswith(f"{STOPPED}{cause}); "), lines[0]
    names, _, hint = names.rpartition("; ")
    assert hint == "run the same command again once that is fixed (finished inputs are skipped)", lines[0]
    return [Path(name) for name in names.split(", ")]


# ---- a full disk, a read-only file system: one line, then the run stops ---------------------------------


@pytest.mark.parametrize("fmt, seconds, count", [("wav", 1.0, 5), ("flac", 3.0, 3)])
def test_a_full_disk_is_said_in_words_and_stops_the_run(tmp_path, tiny_model, fmt, seconds, count):
    """wav: float stems of 1 s are 353 kB each, so two or three inputs fit in 2 MB; flac spools 3 s of float stems
    (2.1 MB) before encoding (--clip-mode rescale), so the first input already fills the disk."""
    inputs = [write_wav(tmp_path / "in" / f"song{i}.wav", seconds, seed=i) for i in range(count)]
    before = snapshot(tmp_path / "in")
    with tmpfs(tmp_path / "disk") as disk:
        out = disk / "out"
        result = cli(tiny_model, inputs, out, "--format", fmt)
        done = sorted(p.name for p in out.iterdir()) if out.exists() else []
        for track in done:
            check_stems_of(out, track, fmt, frames_of(tmp_path / "in" / f"{track}.wav"))
        check_no_leftovers(out)

    assert result.returncode == 1, result.stderr
    no_temporary_names(result.stderr)
    full = [line for line in result.stderr.splitlines() if "no space left on device" in line]
    failed = [line for line in full if not line.startswith(STOPPED)]
    assert len(failed) == 1, result.stderr  # said once, not once per input
    first = next(p for p in inputs if failed[0].startswith(f"error: {p}: "))
    assert failed[0] == f"error: {first}: no space left on device in {out / first.stem}", result.stderr
    undone = stopped_line(result, f"no space left on device in {out / first.stem}")
    assert sorted(undone + [first] + [tmp_path / "in" / f"{t}.wav" for t in done]) == sorted(inputs)
    assert first.stem not in done
    if fmt == "wav":
        assert len(done) >= 1  # what fitted was kept
    assert snapshot(tmp_path / "in") == before


def check_stems_of(out: Path, track: str, fmt: str, frames: int) -> None:
    for stem in STEMS:
        data, rate = sf.read(out / track / f"{stem}.{fmt}", dtype="float32", always_2d=True)
        assert rate == 44100 and data.shape == (frames, 2) and np.isfinite(data).all()


def test_a_read_only_file_system_stops_the_run_before_any_work(tmp_path, tiny_model):
    inputs = [write_wav(tmp_path / "in" / f"song{i}.wav", 1.0, seed=i) for i in range(3)]
    with tmpfs(tmp_path / "ro", "ro") as disk:
        result = cli(tiny_model, inputs, disk / "out")
        assert list(disk.iterdir()) == []
    assert result.returncode == 1, result.stderr
    no_temporary_names(result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 2, result.stderr
    first = next(p for p in inputs if lines[0].startswith(f"error: {p}: "))
    assert lines[0] == f"error: {first}: {disk / 'out' / first.stem} is on a read-only file system"
    assert sorted(stopped_line(result, f"{disk / 'out' / first.stem} is on a read-only file system") + [first]) \
        == sorted(inputs)


# ---- a file size limit, a folder removed mid-run: that input fails, the others go on ------------------------


def test_a_file_size_limit_fails_the_file_that_outgrows_it_and_no_signal_kills_the_run(tmp_path, tiny_model):
    """RLIMIT_FSIZE sends SIGXFSZ (whose default action kills the process) on a write past the limit: even when the
    parent left that signal at its default, the write fails with EFBIG, in words, and the batch goes on."""
    big = write_wav(tmp_path / "in" / "big.wav", 3.0, seed=1)  # float stems of 1.06 MB
    small = write_wav(tmp_path / "in" / "small.wav", 1.0, seed=2)  # 353 kB
    out = tmp_path / "out"
    limit = 400_000

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = cli(tiny_model, [big, small], out, preexec_fn=limit_file_size)
    assert result.returncode == 1, result.stderr
    check_stderr(result, [big])
    no_temporary_names(result.stderr)
    assert (f"error: {big}: {out / 'big' / 'vocals.wav'} grew past the largest file allowed here (the file size "
            "limit, ulimit -f, or the file system's)") in result.stderr.splitlines()
    check_stems(out, "small", STEMS, frames_of(small))
    check_no_leftovers(out, ["big"])


def test_the_output_folder_removed_mid_run(tmp_path, tiny_model):
    song = write_wav(tmp_path / "in" / "long.wav", 200.0, seed=3)  # about 3 s of work
    out = tmp_path / "out"
    args = [sys.executable, "-m", "unet_sep", "separate", str(song), "--out", str(out), "--model", str(tiny_model),
            "--quiet"]

    def remove(process: subprocess.Popen) -> None:
        wait_for_partial(process, out / "long")
        while len(list((out / "long").glob(".*.partial"))) < len(STEMS):  # both stems are being written
            time.sleep(0.01)
        shutil.rmtree(out / "long")

    result = run_while(args, remove, timeout=120)
    assert result.returncode == 1, result.stderr
    check_stderr(result, [song])
    no_temporary_names(result.stderr)
    assert f"error: {song}: the output folder {out / 'long'} was removed while vocals.wav was written" \
        in result.stderr.splitlines()
    check_no_leftovers(out, ["long"])


# ---- formats that cannot hold an input's stems: before any work, saying what to use instead ----------------


def test_what_the_format_cannot_hold_fails_each_input_at_once_with_what_to_use(tmp_path, tiny_model):
    folder = tmp_path / "in"
    folder.mkdir()
    high = folder / "high.wav"
    sf.write(high, music_like(1.0, 96000).T, 96000, subtype="PCM_24")
    surround = folder / "surround.wav"
    sf.write(surround, np.tile(music_like(1.0, 44100), (3, 1)).T, 44100, subtype="PCM_16")
    low = folder / "low.wav"
    sf.write(low, music_like(1.0, 11025).T, 11025, subtype="PCM_16")
    fine = write_wav(folder / "fine.wav", 1.0)
    out = tmp_path / "out"

    result = cli(tiny_model, [high, surround, low, fine], out, "--format", "mp3", "--bitrate", "320")
    assert result.returncode == 1, result.stderr
    check_stderr(result, [high, surround, low])
    no_temporary_names(result.stderr)
    lines = result.stderr.splitlines()
    assert (f"error: {high}: mp3 cannot be written at 96000 Hz (it takes 8000, 11025, 12000, 16000, 22050, 24000, "
            "32000, 44100, 48000 Hz); use --sample-rate 48000 or --format flac") in lines
    assert f"error: {surround}: mp3 holds at most 2 channels; these stems have 6; use --format flac" in lines
    assert (f"error: {low}: mp3 at 11025 Hz offers 8, 16, 24, 32, 40, 48, 56, 64 kbit/s, not 320; use --bitrate 64 "
            "or --sample-rate 44100") in lines
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        "fine", "fine/accompaniment.mp3", "fine/vocals.mp3"]

    advised = cli(tiny_model, [high, low], tmp_path / "advised", "--format", "mp3", "--bitrate", "320",
                  "--sample-rate", "48000")  # the advice works
    assert advised.returncode == 0, advised.stderr
    assert sf.info(tmp_path / "advised" / "low" / "vocals.mp3").samplerate == 48000


def test_a_limit_no_input_can_meet_is_an_option_error_before_any_work(tmp_path, tiny_model):
    source = write_wav(tmp_path / "in" / "song.wav", 1.0)
    for args, message in [
        (["--format", "mp3", "--sample-rate", "96000"],
         "error: --sample-rate: mp3 cannot be written at 96000 Hz (it takes 8000, 11025, 12000, 16000, 22050, 24000, "
         "32000, 44100, 48000 Hz); choose 48000 Hz, or a format without this limit (flac, wav or ogg)"),
        (["--format", "mp3", "--sample-rate", "11025", "--bitrate", "320"],
         "error: --bitrate: mp3 at 11025 Hz offers 8, 16, 24, 32, 40, 48, 56, 64 kbit/s, not 320; choose 64 kbit/s, "
         "or a sample rate of 44100 Hz"),
        (["--format", "mp3", "--bitrate", "1000"], "error: --bitrate: 1000 kbit/s is not offered; choose from 8, 16,"),
        (["--format", "ogg", "--bitrate", "8"], "error: --bitrate: ogg takes 64 to 500 kbit/s, not 8"),
        (["--format", "mp3", "--bit-depth", "16"],
         "error: --bit-depth: mp3 has no bit depth to choose (it applies to wav and flac)"),
    ]:
        result = cli(tiny_model, [source], tmp_path / "out", *args)
        assert result.returncode == 2 and result.stderr.startswith(message), (args, result.stderr)
        assert len(result.stderr.splitlines()) == 1, result.stderr
        assert not (tmp_path / "out").exists()


def test_the_format_check_comes_before_the_u_nets_run(tmp_path, tiny_model):
    """Through the Python API: the refused input reaches no U-Net batch, its error names it and the settings."""
    high = tmp_path / "high.wav"
    sf.write(high, music_like(30.0, 96000).T, 96000, subtype="PCM_16")
    separator = Separator.from_pretrained(tiny_model, device="cpu")
    batches = count_batches(separator)
    with pytest.raises(EncoderLimitError) as caught:
        separator.separate_file(high, tmp_path / "out", fmt="mp3")
    assert batches == [] and not (tmp_path / "out" / "high").exists()
    assert str(caught.value) == (f"{high}: mp3 cannot be written at 96000 Hz (it takes 8000, 11025, 12000, 16000, "
                                 "22050, 24000, 32000, 44100, 48000 Hz); use sample_rate=48000 or fmt='flac'")


# ---- ENOSPC injected where the writer writes: the pipeline's early stop, in events ---------------------------


def test_enospc_in_the_writer_stops_the_pipeline_and_reports_the_rest_once(tmp_path, tiny_model, monkeypatch):
    inputs = [write_wav(tmp_path / "in" / f"song{i}.wav", 1.0, seed=i) for i in range(5)]
    out = tmp_path / "out"
    disk_full_for(monkeypatch, "song2")
    separator = Separator.from_pretrained(tiny_model, device="cpu")
    events = separator.separate_files(inputs, out, readers=1)

    kinds = {event.path.name: (event.kind, type(event.error).__name__) for event in events}
    failed = next(event for event in events if isinstance(event.error, OutputFolderError))
    assert failed.path.name == "song2.wav" and str(failed.error) == (
        f"{inputs[2]}: no space left on device in {out / 'song2'}")
    undone = [event for event in events if isinstance(event.error, NotSeparatedError)]
    assert all(event.error.cause is failed.error for event in undone)
    assert all(str(event.error) == f"{event.path}: not separated: the run stopped (no space left on device in "
                                   f"{out / 'song2'})" for event in undone)
    assert {name for name, (kind, _) in kinds.items() if kind == "done"} | {failed.path.name} | {
        event.path.name for event in undone} == {p.name for p in inputs}
    assert "song3.wav" in {event.path.name for event in undone} and "song4.wav" in {e.path.name for e in undone}
    check_no_leftovers(out, ["song2", "song3", "song4"])
