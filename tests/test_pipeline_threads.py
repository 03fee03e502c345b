"""How many threads read and write a run of files (issue 30, item 5): defaults that follow the device and the cores
(a GPU leaves decoding and above all encoding to the CPU: benchmarks/pipeline_profile.py), several writers that each
write whole inputs and give the stems one writer gives, a full disk that still stops the run once, and the bounds."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import disk_full_for, music_like
from test_bad_inputs import (
    check_no_leftovers,
    check_stems,
    frames_of,
    run_while,
    wait_for_partial,
    wait_for_stems,
    write_wav,
)
from unet_sep import Separator
from unet_sep.audio.encode import OutputFolderError
from unet_sep.errors import SettingError
from unet_sep.separate.files import FileJob, FileOptions, NotSeparatedError
from unet_sep.separate.pipeline import FilePipeline, WriterRoutes, default_threads


def test_threads_follow_the_device_and_the_cores(tiny_model, monkeypatch):
    assert default_threads(torch.device("cpu"), cores=16) == (2, 1)  # the U-Nets need the cores
    assert default_threads(torch.device("cuda:0"), cores=16) == (15, 15)  # one core drives the GPU
    assert default_threads(torch.device("cuda:0"), cores=1) == (2, 2)
    assert default_threads(torch.device("mps"), cores=500) == (64, 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun's 4 processes on this machine share its 16 cores
    assert default_threads(torch.device("cuda:3")) == (3, 3)

    separator = Separator.from_pretrained(tiny_model, device="cpu")
    pipeline = FilePipeline(separator.runner, FileOptions(Path("out")))
    assert (pipeline.readers, pipeline.writers) == (2, 1)
    # what the pipeline sees of a runner on a GPU (the runner's device is its resolved settings')
    monkeypatch.setattr(type(separator.runner), "device", property(lambda runner: torch.device("cuda:0")))
    pipeline = FilePipeline(separator.runner, FileOptions(Path("out")))
    assert (pipeline.readers, pipeline.writers) == (3, 3)
    pipeline = FilePipeline(separator.runner, FileOptions(Path("out")), readers=5, writers=2)
    assert (pipeline.readers, pipeline.writers) == (5, 2)


def test_each_input_goes_to_one_writer_the_least_busy(tmp_path):
    queues = [queue.Queue(), queue.Queue(), queue.Queue()]
    routes = WriterRoutes(queues)
    jobs = [FileJob(index, tmp_path / f"song{index}.wav", {}) for index in range(5)]
    assert [queues.index(routes.queue_for(("start", job))) for job in jobs[:3]] == [0, 1, 2]
    assert queues.index(routes.queue_for(("output", jobs[1], None, None, False))) == 1  # not its last
    assert queues.index(routes.queue_for(("output", jobs[1], None, None, True))) == 1  # its last: writer 1 is free
    assert queues.index(routes.queue_for(("start", jobs[3]))) == 1
    assert queues.index(routes.queue_for(("abort", jobs[0], None))) == 0
    assert queues.index(routes.queue_for(("error", jobs[0], None))) == 0  # late news of an input: its own writer
    assert queues.index(routes.queue_for(("skip", jobs[4]))) == 0
    assert routes.open == [0, 1, 1]


SONGS = [(3.1, 44100, 2), (7.4, 44100, 2), (1.2, 44100, 1), (12.6, 48000, 2), (0.4, 22050, 2), (5.0, 44100, 2)]


def test_several_writers_write_the_stems_one_writer_writes(tmp_path, tiny_model):
    songs = []
    for index, (seconds, rate, channels) in enumerate(SONGS):
        songs.append(tmp_path / f"song{index}.wav")
        sf.write(songs[-1], music_like(seconds, rate, channels, seed=index).T, rate, subtype="FLOAT")
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=3)
    one = separator.separate_files(songs, tmp_path / "one", readers=1, writers=1, fmt="flac")
    many = separator.separate_files(songs, tmp_path / "many", readers=3, writers=3, fmt="flac")
    assert [event.kind for event in one] == [event.kind for event in many] == ["done"] * len(songs)
    for song, (seconds, rate, channels) in zip(songs, SONGS, strict=True):
        for stem in separator.stems:
            expected, _ = sf.read(tmp_path / "one" / song.stem / f"{stem}.flac", dtype="int32", always_2d=True)
            got, got_rate = sf.read(tmp_path / "many" / song.stem / f"{stem}.flac", dtype="int32", always_2d=True)
            assert got_rate == rate and got.shape == (int(seconds * rate), channels)
            assert np.abs(got.astype(np.int64) - expected).max() <= 256  # a 24-bit step: other batches, rounding
    check_no_leftovers(tmp_path / "many")


def test_a_full_disk_with_several_writers_stops_the_run_once(tmp_path, tiny_model, monkeypatch):
    inputs = [write_wav(tmp_path / "in" / f"song{i}.wav", 1.0, seed=i) for i in range(6)]
    out = tmp_path / "out"
    disk_full_for(monkeypatch, "song2")
    events = Separator.from_pretrained(tiny_model, device="cpu").separate_files(inputs, out, readers=3, writers=3)
    assert sorted(event.path for event in events) == sorted(inputs)  # one final event each
    full = [event for event in events if isinstance(event.error, OutputFolderError)]
    assert [str(event.error) for event in full] == [f"{inputs[2]}: no space left on device in {out / 'song2'}"]
    undone = [event for event in events if event.kind == "failed" and event is not full[0]]
    assert all(isinstance(event.error, NotSeparatedError) and event.error.cause is full[0].error for event in undone)
    done = [event.path.stem for event in events if event.kind == "done"]
    check_no_leftovers(out, [path.stem for path in inputs if path.stem not in done])
    assert sorted(p.name for p in out.iterdir()) == sorted(done)


def test_thread_counts_are_bounded_and_named(tmp_path, tiny_model):
    runner = Separator.from_pretrained(tiny_model, device="cpu").runner
    for setting, value in [("readers", 0), ("writers", 0), ("writers", 65), ("writers", True), ("writers", 2.0)]:
        with pytest.raises(SettingError, match=f"must be from 1 to 64 .* threads, got {value!r}") as caught:
            FilePipeline(runner, FileOptions(tmp_path), **{setting: value})
        assert caught.value.setting == setting
    song = write_wav(tmp_path / "song.wav", 0.5)
    result = subprocess.run([sys.executable, "-m", "unet_sep", "separate", str(song), "--out", str(tmp_path / "out"),
                             "--model", str(tiny_model), "--writers", "65"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr == "error: --writers: must be from 1 to 64 encoding threads, got 65\n"
    assert not (tmp_path / "out").exists()


def test_ctrl_c_with_several_writers_removes_what_is_unfinished(tmp_path, tiny_model):
    """Each writer has its own queue: an interrupt ends them all, the input one of them was writing is removed and the
    one another finished is kept (10 minutes of noise: still in progress when the short one is done)."""
    model_dir, stems = tiny_model, ["vocals", "accompaniment"]
    long_wav = write_wav(tmp_path / "in" / "long.wav", 600.0, seed=7)
    done_first = write_wav(tmp_path / "in" / "done_first.wav", 1.0, seed=5)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "unet_sep", "separate", str(done_first), str(long_wav), "--out", str(out), "--model",
            str(model_dir), "--quiet", "--readers", "2", "--writers", "2"]

    def interrupt(process: subprocess.Popen) -> None:
        wait_for_partial(process, out / "long")
        wait_for_stems(process, out / "done_first", stems)
        process.send_signal(signal.SIGINT)

    result = run_while(args, interrupt, timeout=60)
    assert result.returncode == 130, result.stderr
    assert result.stderr.splitlines()[0] == f"error: {long_wav}: interrupted; its partial outputs were removed"
    assert not (out / "long").exists()
    check_stems(out, "done_first", stems, frames_of(done_first))
    check_no_leftovers(out, ["long"])
