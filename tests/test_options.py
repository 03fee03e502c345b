"""Option errors name the option and the allowed values, in one line with exit status 2, before any work; the
help and the model list say what the user gets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch

from conftest import music_like
from unet_sep.device import resolve_device
from unet_sep.errors import SettingError
from unet_sep.weights.spleeter import CONVERSION_REVISION


def run(*args, timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_sep", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("options") / "song.wav"
    sf.write(path, music_like(1.0, 44100).T, 44100)
    return path


CASES = {
    "sample-rate-negative": (["--sample-rate", "-5"],
                             "error: --sample-rate: must be a whole number of Hz from 8000 to 192000, got -5"),
    "sample-rate-zero": (["--sample-rate", "0"],
                         "error: --sample-rate: must be a whole number of Hz from 8000 to 192000, got 0"),
    "sample-rate-huge": (["--sample-rate", "10000000"],
                         "error: --sample-rate: must be a whole number of Hz from 8000 to 192000, got 10000000"),
    "device-banana": (["--device", "banana"],
                      "error: --device: 'banana' is not a device; choose from auto, cpu, cuda, cuda:N or mps"),
    "device-meta": (["--device", "meta"], "error: --device: 'meta': unet-sep runs on auto, cpu, cuda, cuda:N or mps"),
    "mask-extension": (["--mask-extension", "foo"],
                       "error: --mask-extension: 'foo' is not a mask extension; choose from zeros, average, last, "
                       "capped_average"),
    "segmentation": (["--segmentation", "chunks"],
                     "error: --segmentation: 'chunks' is not a segmentation; choose from overlap, spleeter"),
    "overlap": (["--overlap", "0.9"], "error: --overlap: must be a fraction of the segment from 0 to 0.75, got 0.9"),
    "precision": (["--precision", "fp8"], "error: --precision: 'fp8' is not a precision; choose from fp32, bf16, fp16"),
    "format": (["--format", "aiff"], "error: --format: unknown output format 'aiff'; choose from wav, flac, ogg, mp3"),
    "bit-depth": (["--format", "flac", "--bit-depth", "float"],
                  "error: --bit-depth: flac cannot store bit depth float; choose from 16, 24"),
    "batch-size": (["--batch-size", "0"], "error: --batch-size: must be from 1 to 256 segments, got 0"),
    "offset": (["--offset", "-1"], "error: --offset: must be a number of seconds >= 0, got -1.0"),
    "template-field": (["--template", "{album}/{stem}.{ext}"],
                       "error: --template: '{album}/{stem}.{ext}' has unknown field(s) {album}; fields: {dir}, "
                       "{track}, {trackext}, {stem}, {ext}, {model}"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_option_errors_name_the_option(tmp_path, tiny_model, source, case):
    args, message = CASES[case]
    result = run("separate", source, "--out", tmp_path / "out", "--model", tiny_model, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message
    assert not (tmp_path / "out").exists()


def test_cuda_index_errors_name_what_the_machine_has():
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        with pytest.raises(SettingError, match=f"cuda:{count}: no such CUDA device; this machine has {count}"):
            resolve_device(f"cuda:{count}")
    else:
        with pytest.raises(SettingError, match="cuda:7: no CUDA device is available on this machine") as caught:
            resolve_device("cuda:7")
        assert caught.value.setting == "device"
    assert resolve_device("cpu") == torch.device("cpu")


def test_usage_line_is_plain(tmp_path):
    result = run("separate", "--help")
    assert result.returncode == 0
    assert result.stdout.splitlines()[0] == "Usage: unet-sep separate [OPTIONS] INPUT..."
    assert run("train", "--help").stdout.splitlines()[0] == "Usage: unet-sep train [OPTIONS] RECIPE"


def test_models_list_says_rate_band_and_where(tmp_path):
    import os

    env = dict(os.environ, UNET_SEP_CACHE=str(tmp_path / "cache"))
    result = run("models", env=env)
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(("mir1k", "spleeter:"))}
    assert "16000 Hz" in rows["mir1k-vocals-accompaniment"] and "0-8.0 kHz" in rows["mir1k-vocals-accompaniment"]
    assert "bundled" in rows["mir1k-vocals-accompaniment"]
    assert "44100 Hz" in rows["spleeter:2stems-16kHz"] and "0-16.5 kHz" in rows["spleeter:2stems-16kHz"]
    assert "0-11.0 kHz" in rows["spleeter:2stems"] and "download" in rows["spleeter:2stems"]
    assert "not a sample rate" in result.stdout  # the -16kHz note
    # A converted model in the cache is listed as on disk.
    cached = tmp_path / "cache" / "models" / f"spleeter_4stems.r{CONVERSION_REVISION}"
    cached.mkdir(parents=True)
    (cached / "config.json").write_text("{}")
    (cached / "model.safetensors").write_bytes(b"")
    rows = {line.split()[0]: line for line in run("models", env=env).stdout.splitlines()
            if line.startswith("spleeter:")}
    assert "on disk" in rows["spleeter:4stems"] and "download" in rows["spleeter:5stems"]


RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_device_errors_of_train_and_evaluate(tmp_path, tiny_model, command):
    if command == "train":
        args = ["train", RECIPES / "mir1k" / "vocals-accompaniment.json", "--out", tmp_path / "run"]
    else:
        (tmp_path / "stems" / "a").mkdir(parents=True)
        args = ["evaluate", "--model", tiny_model, "--stems-dir", tmp_path / "stems", "--out", tmp_path / "eval"]
    result = run(*args, "--device", "banana")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == ("error: --device: 'banana' is not a device; choose from auto, cpu, cuda, cuda:N "
                                     "or mps")
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()


def test_cli_rejects_an_unknown_precision_in_one_line(tmp_path, tiny_model, source):
    command = [sys.executable, "-m", "unet_sep", "separate", str(source), "--out", str(tmp_path),
               "--model", str(tiny_model), "--precision", "fp8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "precision" in lines[0] and "Traceback" not in result.stderr
