"""Without the ffmpeg/ffprobe programs: the tests collect, evaluation and training on stem folders, MIR-1K and
MUSDB18-HQ work, the MUSDB18 ``.stem.mp4`` tests skip with the reason, and reading a ``.stem.mp4`` fails in one
line naming the file (issue 16, items 4 and 5).

CI installs ffmpeg, so every check runs ``python -m ...`` in a subprocess whose PATH is an empty folder.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import SHARED, make_model
from musdb_tree import make_musdb_tree, musdb_validation_names, synthetic_sources
from unet_sep import STFTConfig, UNetConfig
from unet_sep.data.musdb_support import ffmpeg_missing_message

REPO = Path(__file__).resolve().parents[1]
MIR1K = SHARED / "data" / "mir1k"
RATE = 16000


@pytest.fixture
def no_ffmpeg(tmp_path) -> dict[str, str]:
    """The environment of a subprocess that finds no program at all on PATH (so no ffmpeg, no ffprobe), with one
    thread for OpenMP/BLAS (the subprocesses share the test machine's cores)."""
    empty = tmp_path / "empty-path"
    empty.mkdir()
    return {**os.environ, "PATH": str(empty), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def run(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def summary(out: Path) -> dict[tuple[str, str], dict[str, float]]:
    """``summary.csv`` of an evaluation: ``{(method, stem): {metric: value}}``."""
    with (out / "summary.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {(r["method"], r["stem"]): {k: float(v) for k, v in r.items() if k not in ("method", "stem") and v}
            for r in rows}


def small_model(folder: Path) -> Path:
    """A random 16 kHz vocals/accompaniment U-Net (the evaluation checks lean on its baselines)."""
    return make_model(folder, sample_rate=RATE, stft=STFTConfig(n_fft=1024, hop_length=256), frequency_bins=256,
                      segment_frames=64, unet=UNetConfig(filters=[4, 8, 16, 32]))


def write_stem_mp4(path: Path, sources: dict[str, np.ndarray], rate: int) -> None:
    """A MUSDB18 ``.stem.mp4`` (AAC streams mixture, drums, bass, other, vocals) written with PyAV's own
    libraries, so no ffmpeg program is needed to make one."""
    streams = [sum(sources.values()), sources["drums"], sources["bass"], sources["other"], sources["vocals"]]
    with av.open(str(path), "w", format="mp4") as container:
        encoders = [container.add_stream("aac", rate=rate, layout="stereo") for _ in streams]
        for encoder, audio in zip(encoders, streams, strict=True):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio, dtype=np.float32), format="fltp",
                                               layout="stereo")
            frame.sample_rate = rate
            for packet in [*encoder.encode(frame), *encoder.encode(None)]:
                container.mux(packet)


def test_tests_collect_and_stem_mp4_tests_skip_without_ffmpeg(no_ffmpeg):
    result = run(["-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests", "-k", "test_musdb_stem_mp4"],
                 no_ffmpeg)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "error" not in output.lower(), output
    tail = output.strip().splitlines()[-1]
    assert "1 skipped" in tail and "deselected" in tail and "failed" not in tail, tail
    assert "ffmpeg/ffprobe not found: ffmpeg and ffprobe not on PATH" in output, output


@pytest.mark.skipif(not (MIR1K / "splits.json").is_file(), reason=f"MIR-1K not found at {MIR1K} (../shared is absent)")
def test_mir1k_evaluation_without_ffmpeg(no_ffmpeg, tmp_path):
    out = tmp_path / "eval"
    result = run(["-m", "unet_sep", "evaluate", "--model", "mir1k-vocals-accompaniment", "--stems-dir", str(MIR1K),
                  "--split-file", str(MIR1K / "splits.json"), "--split-group", "singers", "--mir1k-mixing",
                  "--tracks", "1", "--threads", "1", "--out", str(out), "--quiet"], no_ffmpeg)
    assert result.returncode == 0, result.stderr
    assert "ffmpeg" not in result.stderr, result.stderr
    assert len(list((out / "mir1k-vocals-accompaniment").glob("*.json"))) == 1
    table = summary(out)
    for stem in ("vocals", "accompaniment"):
        model, mixture = table["mir1k-vocals-accompaniment", stem], table["mixture", stem]
        assert model["tracks"] == 1 and all(math.isfinite(model[m]) for m in ("SDR", "SIR", "SAR", "GNSDR"))
        # the bundled model separates: well above the mixture (its model card: about 9.8 dB GNSDR on the test set)
        assert model["GNSDR"] > 5.0 and model["SDR"] > mixture["SDR"] + 5.0, table


def test_musdb18_hq_evaluation_and_training_without_ffmpeg(no_ffmpeg, tmp_path):
    root = make_musdb_tree(tmp_path / "musdb18hq", n_train=1, n_valid=1, n_test=1, seconds=2.0, rate=RATE)
    model = small_model(tmp_path / "model")

    out = tmp_path / "eval"
    result = run(["-m", "unet_sep", "evaluate", "--model", str(model), "--musdb-root", str(root), "--is-wav",
                  "--threads", "1", "--out", str(out), "--quiet"], no_ffmpeg)
    assert result.returncode == 0, result.stderr
    assert [p.stem for p in (out / "oracle-irm").glob("*.json")] == [p.name for p in (root / "test").iterdir()]
    table = summary(out)
    for stem in ("vocals", "accompaniment"):
        oracle, mixture = table["oracle-irm", stem], table["mixture", stem]
        assert oracle["tracks"] == 1 and math.isfinite(mixture["SDR"])
        assert oracle["SDR"] > mixture["SDR"] + 3.0, table  # the oracle mask separates the synthetic sources

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({
        "model": {"stems": ["vocals", "accompaniment"], "sample_rate": RATE, "n_channels": 2, "frequency_bins": 256,
                  "segment_frames": 64, "stft": {"n_fft": 1024, "hop_length": 256},
                  "unet": {"filters": [4, 8, 16, 32]}},
        "data": {"kind": "musdb", "root": str(root), "is_wav": True, "targets": ["vocals", "accompaniment"]},
        "train": {"seed": 1, "steps": 2, "batch_size": 2, "valid_every": 2, "checkpoint_every": 2, "log_every": 1},
    }))
    run_folder = tmp_path / "run"
    result = run(["-m", "unet_sep", "train", str(recipe), "--out", str(run_folder), "--device", "cpu",
                  "--threads", "1", "--quiet"], no_ffmpeg)
    assert result.returncode == 0, result.stderr
    with (run_folder / "metrics.csv").open(newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 2 and all(math.isfinite(loss) and loss > 0 for loss in losses), losses
    with (run_folder / "validation.csv").open(newline="") as handle:
        (validation,) = list(csv.DictReader(handle))  # one validation, on musdb's validation track
    scores = [float(validation[f"{kind}sdr_{stem}"]) for kind in ("", "mixture_")
              for stem in ("vocals", "accompaniment")]
    assert all(math.isfinite(score) for score in scores), validation
    assert (run_folder / "model.safetensors").is_file()


def test_reading_a_stem_mp4_without_ffmpeg_fails_in_one_line(no_ffmpeg, tmp_path):
    name = musdb_validation_names()[0]
    root = tmp_path / "musdb18"
    (root / "train").mkdir(parents=True)
    path = root / "train" / f"{name}.stem.mp4"
    write_stem_mp4(path, synthetic_sources(1.0, 44100, seed=3), 44100)
    expected = f"{path}: {ffmpeg_missing_message(['ffmpeg', 'ffprobe'])}"

    # evaluation: the track fails with that line, the run goes on and exits 1 (some track failed)
    result = run(["-m", "unet_sep", "evaluate", "--model", str(small_model(tmp_path / "model")), "--musdb-root",
                  str(root), "--subset", "valid", "--out", str(tmp_path / "eval"), "--quiet"], no_ffmpeg)
    assert result.returncode == 1, result.stderr
    assert f"error: {name}: {expected}" in result.stderr.splitlines(), result.stderr

    # training data: DatasetError with the same line
    script = ("from unet_sep.data import DataConfig, DatasetError, load_tracks\n"
              f"config = DataConfig(kind='musdb', root={str(root)!r}, is_wav=False)\n"
              "try:\n    load_tracks(config, 'valid', 44100, 2)\n"
              "except DatasetError as error:\n    print(error)\n")
    result = run(["-c", script], no_ffmpeg)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected
