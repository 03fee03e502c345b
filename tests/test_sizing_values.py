"""Every setting that sizes memory or work is bounded before anything is allocated for it, and a value beyond the
bound is one line naming its key (a model's config.json, a recipe, an option), exit 2.

Each case runs the real command in a subprocess capped at 3 GiB of address space: the old code, which took these
values, ran out of memory there (a traceback, or a native library's abort) instead of refusing them.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import make_model
from train_runs import make_stems, stems_recipe

CAP = 3 << 30


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (CAP, CAP))


def run_capped(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_sep", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_capped)


def assert_one_line(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sizing") / "song.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.3, 0.3, (44100, 2)).astype(np.float32), 44100)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("sizing-model") / "tiny")


# key in config.json -> (absurd value, words the error line must hold)
MODEL_CASES = {
    "segment_frames": (1 << 20, ["segment_frames", "4096"]),
    "stft.n_fft": (1 << 26, ["stft.n_fft", "32768"]),
    "stft.hop_length": (1, ["stft.hop_length", "n_fft/16 (256)"]),
    "n_channels": (100_000, ["n_channels", "1 to 64"]),
    "stems": ([f"stem{i}" for i in range(5000)], ["stems", "1 to 16", "5000 names"]),
    "unet.filters": ([8192] * 6, ["unet.filters", "4096"]),
    "unet.kernel_size": (999, ["unet.kernel_size", "2 to 15"]),
    "unet.filters/weights": ([512, 1024, 2048, 4096, 4096, 4096], ["unet.filters", "million weights"]),
}


@pytest.mark.parametrize("key", list(MODEL_CASES))
def test_a_model_config_value_that_sizes_memory_is_bounded(tmp_path, tiny, song, key):
    value, words = MODEL_CASES[key]
    folder = tmp_path / "model"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    section, name = (["", *key.split("/")[0].split(".")])[-2:]
    (config[section] if section else config)[name] = value
    (folder / "config.json").write_text(json.dumps(config))
    result = run_capped("separate", str(song), "--out", str(tmp_path / "out"), "--model", str(folder), "--quiet")
    assert_one_line(result, str(folder / "config.json"), *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, words", [
    ("--batch-size", "100000", ["--batch-size", "1 to 256"]),
    ("--readers", "100000", ["--readers", "1 to 64"]),
    ("--threads", "100000", ["--threads", "less than or equal to 512"]),
])
def test_a_separation_option_that_sizes_memory_is_bounded(tmp_path, tiny, song, option, value, words):
    result = run_capped("separate", str(song), "--out", str(tmp_path / "out"), "--model", str(tiny), "--quiet",
                        option, value)
    assert result.returncode == 2, result.stderr[-3000:]
    assert all(word in result.stderr for word in words), result.stderr[-3000:]
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


@pytest.mark.parametrize("override, words", [
    ("train.batch_size=10000000", ["train.batch_size", "1 to 1024"]),
    ("train.excerpt_frames=1048576", ["train.excerpt_frames", "4096"]),
    ("train.prefetch=100000", ["train.prefetch", "0 to 64"]),
    ("train.steps=100000000000", ["train.steps", "1000000000"]),
    ("model.segment_frames=1048576", ["segment_frames", "4096"]),
])
def test_a_recipe_value_that_sizes_memory_or_time_is_bounded(tmp_path, override, words):
    root = make_stems(tmp_path / "stems")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(stems_recipe(root)))
    result = run_capped("train", str(recipe), "--out", str(tmp_path / "run"), "--set", override, "--quiet")
    assert_one_line(result, *words)
    assert not (tmp_path / "run").exists()
