"""Helpers of the training tests: tiny recipes that train in seconds (on a generated MUSDB18-HQ tree or a folder
of generated stems) and the ``unet-sep train`` command line run in a subprocess."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def musdb_recipe(root: Path, **train) -> dict:
    """A small 16 kHz U-Net (depth 4) on 1 s excerpts of a MUSDB18-HQ tree: fast enough to train in seconds on
    2 cores."""
    return {
        "model": {
            "stems": ["vocals", "accompaniment"], "sample_rate": RATE, "n_channels": 2,
            "frequency_bins": 256, "segment_frames": 64,
            "stft": {"n_fft": 1024, "hop_length": 256},
            "unet": {"filters": [8, 16, 32, 64], "dropout_layers": 1},
        },
        "data": {"kind": "musdb", "root": str(root), "is_wav": True, "targets": ["vocals", "accompaniment"],
                 "augment": {"remix": True, "gain_db": [-3, 3], "channel_swap": True}},
        "train": {"seed": 1, "steps": 40, "batch_size": 4, "learning_rate": 2e-3, "valid_every": 20,
                  "checkpoint_every": 10, "log_every": 5, **train},
    }


def stems_recipe(root: Path, **train) -> dict:
    """A 16 kHz mono U-Net with 4..128 filters on 0.5 s excerpts of :func:`make_stems`: a step takes
    milliseconds."""
    return {
        "model": {"stems": ["vocals", "accompaniment"], "sample_rate": RATE, "n_channels": 1, "frequency_bins": 128,
                  "segment_frames": 64, "stft": {"n_fft": 512, "hop_length": 128},
                  "unet": {"filters": [4, 8, 16, 32, 64, 128]}},
        "data": {"kind": "folder", "root": str(root), "split_file": str(root / "splits.json")},
        "train": {"steps": 2, "batch_size": 2, "valid_every": 0, "checkpoint_every": 2, "log_every": 1, **train},
    }


def make_stems(root: Path) -> Path:
    """<track>/vocals.wav + accompaniment.wav for three 2 s tracks (two to train on, one to validate) in
    ``root``, with their ``splits.json``."""
    rng = np.random.default_rng(0)
    t = np.arange(2 * RATE) / RATE
    for index, name in enumerate(["a", "b", "c"]):
        (root / name).mkdir(parents=True)
        vocals = 0.2 * np.sin(2 * np.pi * (300 + 60 * index) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
        sf.write(root / name / "vocals.wav", vocals.astype(np.float32), RATE)
        sf.write(root / name / "accompaniment.wav", (0.1 * rng.standard_normal(t.size)).astype(np.float32), RATE)
    (root / "splits.json").write_text(json.dumps({"train": ["a", "b"], "valid": ["c"]}))
    return root


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(json.dumps(recipe))
    return path


def train_command(recipe: Path, out: Path, *extra: str) -> list[str]:
    """``unet-sep train`` on the CPU with one thread and no progress bar."""
    return [sys.executable, "-m", "unet_sep", "train", str(recipe), "--out", str(out), "--device", "cpu",
            "--threads", "1", "--quiet", *extra]


def train(recipe: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """:func:`train_command` run to its end, its output captured."""
    return subprocess.run(train_command(recipe, out, *extra), capture_output=True, text=True, timeout=300)


def logged_steps(run: Path) -> list[int]:
    """The steps of a run's metrics.csv rows."""
    return [int(row["step"]) for row in csv.DictReader((run / "metrics.csv").open())]


def whole_and_resumed(recipe: Path, tmp_path: Path, kill_after: str = "step-00000006") -> tuple[Path, Path]:
    """The run folders of ``recipe`` trained uninterrupted (``tmp_path/whole``) and killed with SIGKILL once its
    checkpoint ``kill_after`` is written, then resumed to its end (``tmp_path/killed``)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    whole = subprocess.run(train_command(recipe, tmp_path / "whole"), capture_output=True, text=True, env=env,
                           timeout=300)
    assert whole.returncode == 0, whole.stderr

    killed = subprocess.Popen(train_command(recipe, tmp_path / "killed"), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env)
    pointer = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and killed.poll() is None:
        if pointer.is_file() and pointer.read_text().strip() >= kill_after:
            break
        time.sleep(0.01)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed; make it longer"
    resumed = subprocess.run(train_command(recipe, tmp_path / "killed", "--resume"), capture_output=True, text=True,
                             env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    return tmp_path / "whole", tmp_path / "killed"
