"""The batched file pipeline: results independent of batching, segments of several songs in one U-Net batch,
no padded segments thrown away, and torchrun sharding of `unet-sep separate` over 2 gloo processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from tests.conftest import music_like
from unet_sep.dsp.measures import snr_db
from unet_sep import Separator
from unet_sep.separate.segments import SegmentPlan

# Lengths (s), rates and channel counts of the songs: different lengths end segments at different places.
SONGS = [(3.1, 44100, 2), (7.4, 44100, 2), (1.2, 44100, 1), (12.6, 48000, 2), (0.4, 22050, 2), (5.0, 44100, 2),
         (9.3, 32000, 1), (2.2, 44100, 2)]


@pytest.fixture(scope="module")
def songs(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("songs")
    paths = []
    for i, (seconds, rate, channels) in enumerate(SONGS):
        path = folder / f"song{i}.wav"
        sf.write(path, music_like(seconds, rate, channels, seed=i).T, rate, subtype="FLOAT")
        paths.append(path)
    return paths


def _read(folder: Path, song: Path, stem: str) -> np.ndarray:
    audio, _ = sf.read(folder / song.stem / f"{stem}.wav", dtype="float64", always_2d=True)
    return audio


class _CountingNet:
    """Wraps the U-Nets and records the batch size of every call."""

    def __init__(self, net) -> None:
        self.net = net
        self.batches: list[int] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(batch.shape[0])
        return self.net(batch)


def test_a_song_alone_and_in_a_batch_of_8_gives_the_same_stems(tmp_path, tiny_model, songs):
    together = Separator.from_pretrained(tiny_model, device="cpu", batch_size=8)
    counting = _CountingNet(together._network())
    together._runner = counting
    events = together.separate_files(songs, tmp_path / "together", fmt="wav", bit_depth="float")
    assert [e.kind for e in events] == ["done"] * len(songs), [str(e.error) for e in events]

    # Segments of several songs share U-Net calls: far fewer calls than songs' segments run one song at a time.
    alone_calls = 0
    for song in songs:
        alone = Separator.from_pretrained(tiny_model, device="cpu", batch_size=1)
        counter = _CountingNet(alone._network())
        alone._runner = counter
        result = alone.separate_file(song, tmp_path / "alone", fmt="wav", bit_depth="float")
        assert not result.skipped
        alone_calls += len(counter.batches)
    assert sum(counting.batches) == alone_calls  # the same segments ...
    assert max(counting.batches) == 8 and len(counting.batches) <= -(-alone_calls // 8) + 2  # ... in full batches

    for song in songs:
        for stem in together.stems:
            reference = _read(tmp_path / "alone", song, stem)
            batched = _read(tmp_path / "together", song, stem)
            assert batched.shape == reference.shape
            assert batched.shape[0] == sf.info(song).frames
            assert snr_db(reference, batched) > 90.0, (song.name, stem, snr_db(reference, batched))


def test_stems_of_the_pipeline_sum_to_the_input(tmp_path, tiny_model, songs):
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=4)
    events = separator.separate_files(songs[:4], tmp_path, fmt="wav", bit_depth="float", readers=3)
    assert [e.kind for e in events] == ["done"] * 4
    for song in songs[:4]:
        mixture, _ = sf.read(song, dtype="float64", always_2d=True)
        total = sum(_read(tmp_path, song, stem) for stem in separator.stems)
        assert snr_db(mixture, total) > 60.0


def test_one_bad_file_in_the_batch_fails_alone(tmp_path, tiny_model, songs):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    nan = tmp_path / "nan.wav"
    audio = music_like(2.0, 44100, 2, seed=9)
    audio[:, 30000] = np.nan
    sf.write(nan, audio.T, 44100, subtype="FLOAT")
    order = [songs[0], broken, songs[1], nan, songs[2]]
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=4)
    events = separator.separate_files(order, tmp_path / "out", fmt="wav", bit_depth="float")
    assert [e.kind for e in events] == ["done", "failed", "done", "failed", "done"]
    assert "NaN" in str(events[3].error)
    assert not (tmp_path / "out" / "broken").exists() and not (tmp_path / "out" / "nan").exists()
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]
    assert not leftovers


@pytest.mark.parametrize("total", [1, 37, 511, 512, 513, 900, 1291, 1300, 5000, 12345])
def test_overlapped_segments_waste_less_than_one_stride_of_padding(total):
    plan = SegmentPlan.create(512, 0.25, 64)
    starts = plan.starts(total)
    assert starts[0] == 0 and all(s % 64 == 0 for s in starts)
    assert all(b > a for a, b in zip(starts, starts[1:]))
    assert all(b - a <= plan.hop for a, b in zip(starts, starts[1:]))  # overlap never below the nominal one
    assert starts[-1] + 512 >= total  # every frame covered
    if total >= 512:
        assert plan.padded_frames(total) < 64
    old_count = 1 + max(0, -(-(total - 512) // plan.hop))  # back-to-back hops with a padded last segment
    assert plan.count(total) == old_count
    spleeter = SegmentPlan.create(512, 0.25, 64, "spleeter")
    assert spleeter.starts(total) == list(range(0, total, 512))  # Spleeter pads its last segment, as it does


def test_engine_runs_the_planned_segments(tiny_model):
    """The streaming engine runs exactly the planned starts, whatever the block sizes."""
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=3)
    audio = music_like(20.0, 44100, 2, seed=4)
    starts_seen: list[int] = []
    engine = separator.engine(1)
    original_take = engine.take

    def take(count):
        batch, starts = original_take(count)
        starts_seen.extend(starts)
        return batch, starts

    engine.take = take
    for lo in range(0, audio.shape[1], 70001):
        engine.feed(audio[None, :, lo : lo + 70001])
        while engine.ready() >= 3:
            separator.run_batch([engine], 3)
        engine.drain()
    engine.close()
    while engine.ready():
        separator.run_batch([engine], 3)
    engine.drain()
    assert engine.done
    assert starts_seen == separator.plan.starts(engine.total_frames)


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "unet_sep", "separate", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_torchrun_two_ranks_share_the_inputs_and_rerun_skips(tmp_path, tiny_model, songs):
    out = tmp_path / "out"
    args = [str(p) for p in songs[:5]] + ["--out", str(out), "--model", str(tiny_model), "--quiet", "--device", "cpu"]
    first = _torchrun(args, tmp_path)
    assert first.returncode == 0, first.stderr
    summaries = [line for line in first.stderr.splitlines() if line.startswith("separated ")]
    assert len(summaries) == 1, first.stderr
    assert summaries[0].startswith("separated 5 file(s)") and "on 2 ranks" in summaries[0], summaries
    single = Separator.from_pretrained(tiny_model, device="cpu")
    for song in songs[:5]:
        for stem in single.stems:
            written, rate = sf.read(out / song.stem / f"{stem}.wav", always_2d=True)
            assert written.shape[0] == sf.info(song).frames and rate == sf.info(song).samplerate
    assert "Traceback" not in first.stderr

    # A finished output stays; a missing one (as if its rank had died on it) is made again.
    (out / songs[3].stem / f"{single.stems[0]}.wav").unlink()
    second = _torchrun(args, tmp_path)
    assert second.returncode == 0, second.stderr
    summaries = [line for line in second.stderr.splitlines() if line.startswith("separated ")]
    assert len(summaries) == 1 and summaries[0].startswith("separated 1 file(s)"), second.stderr
    assert "skipped 4 already done" in summaries[0], summaries


def test_reduced_precision_stays_close_to_fp32(tiny_model):
    audio = music_like(6.0, 44100, 2, seed=11)
    reference = Separator.from_pretrained(tiny_model, device="cpu").separate(audio, 44100)
    reduced = Separator.from_pretrained(tiny_model, device="cpu", precision="bf16").separate(audio, 44100)
    for stem, expected in reference.items():
        assert reduced[stem].dtype == np.float32 and reduced[stem].shape == expected.shape
        assert 25.0 < snr_db(expected, reduced[stem]) < 90.0  # close, and really computed in bf16
    with pytest.raises(ValueError, match="precision"):
        Separator.from_pretrained(tiny_model, device="cpu", precision="fp8")


def test_cli_rejects_an_unknown_precision_in_one_line(tmp_path, tiny_model, songs):
    command = [sys.executable, "-m", "unet_sep", "separate", str(songs[0]), "--out", str(tmp_path),
               "--model", str(tiny_model), "--precision", "fp8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "precision" in lines[0] and "Traceback" not in result.stderr
