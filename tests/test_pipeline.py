"""The batched file pipeline: results independent of batching, segments of several songs in one U-Net batch, each
input opened once (its length reported when it is), a bad file failing alone, and torchrun sharding of
`unet-sep separate` over 2 gloo processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import count_batches, music_like
from unet_sep import Separator
from unet_sep.dsp.measures import snr_db
from unet_sep.errors import SettingError
from unet_sep.separate import reader
from unet_sep.separate.files import FileOptions

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


def test_a_song_alone_and_in_a_batch_of_8_gives_the_same_stems(tmp_path, tiny_model, songs):
    together = Separator.from_pretrained(tiny_model, device="cpu", batch_size=8)
    batches = count_batches(together)
    events = together.separate_files(songs, tmp_path / "together", fmt="wav", bit_depth="float")
    assert [e.kind for e in events] == ["done"] * len(songs), [str(e.error) for e in events]

    # Segments of several songs share U-Net calls: far fewer calls than songs' segments run one song at a time.
    alone_calls = 0
    for song in songs:
        alone = Separator.from_pretrained(tiny_model, device="cpu", batch_size=1)
        counted = count_batches(alone)
        result = alone.separate_file(song, tmp_path / "alone", fmt="wav", bit_depth="float")
        assert not result.skipped
        alone_calls += len(counted)
    assert sum(batches) == alone_calls  # the same segments ...
    assert max(batches) == 8 and len(batches) <= -(-alone_calls // 8) + 2  # ... in full batches

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


def test_each_input_is_opened_once_and_reports_its_length_then(tmp_path, tiny_model, songs, monkeypatch):
    opened: list[Path] = []
    real_open = reader.open_audio

    def counting_open(path):
        opened.append(Path(path))
        return real_open(path)

    monkeypatch.setattr(reader, "open_audio", counting_open)
    separator = Separator.from_pretrained(tiny_model, device="cpu")
    (tmp_path / "out" / songs[1].stem).mkdir(parents=True)
    for stem in separator.stems:  # songs[1] is done already: skipped, never opened
        (tmp_path / "out" / songs[1].stem / f"{stem}.wav").write_bytes(b"")
    seen = []
    events = separator.separate_files(songs[:4], tmp_path / "out", on_event=seen.append, offset=0.5, duration=2.0)
    assert [e.kind for e in events] == ["done", "skipped", "done", "done"]
    assert sorted(opened) == sorted([songs[0], songs[2], songs[3]])
    for index in (0, 2, 3):
        mine = [e for e in seen if e.index == index]
        assert mine[0].kind == "started" and mine[-1].kind == "done"
        assert [e.kind for e in mine].count("started") == 1
        info = sf.info(songs[index])
        assert mine[0].sample_rate == info.samplerate
        assert mine[0].total == min(info.frames - round(0.5 * info.samplerate), round(2.0 * info.samplerate))
        assert mine[-1].done == mine[0].total
    assert not any(e.kind == "started" for e in seen if e.index == 1)


def test_file_options_are_checked_when_made(tmp_path):
    assert FileOptions(tmp_path, fmt=".FLAC").fmt == "flac"
    for values, name in [(dict(offset=-1.0), "offset"), (dict(duration=0.0), "duration"),
                         (dict(sample_rate=5), "sample_rate"), (dict(fmt="aiff"), "fmt"),
                         (dict(template="/abs/{stem}.{ext}"), "template")]:
        with pytest.raises(SettingError) as caught:
            FileOptions(tmp_path, **values)
        assert caught.value.setting == name


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


def test_the_samples_hook_sees_every_block_the_stems_are_written_from(tmp_path, tiny_model, songs):
    """``on_samples`` gets each input's blocks in order, on the writer threads: together they are the stems written
    (float WAV: bit for bit); with --clip-mode rescale (16-bit FLAC), the scaled samples the encoder got."""
    from unet_sep.separate.pipeline import FilePipeline

    runner = Separator.from_pretrained(tiny_model, device="cpu", batch_size=4).runner
    chosen = songs[:3]
    for fmt, depth, clip in (("wav", "float", None), ("flac", "16", "rescale")):
        seen: dict[int, dict[str, list[np.ndarray]]] = {}

        def on_samples(index, blocks, seen=seen):
            for stem, block in blocks.items():
                seen.setdefault(index, {}).setdefault(stem, []).append(block.copy())

        options = FileOptions(tmp_path / fmt, fmt=fmt, bit_depth=depth, clip_mode=clip)
        events = FilePipeline(runner, options, readers=2, writers=2).run(chosen, on_samples=on_samples)
        assert [event.kind for event in events] == ["done"] * 3
        for index, song in enumerate(chosen):
            assert sorted(seen[index]) == sorted(runner.stems)
            for stem in runner.stems:
                hooked = np.concatenate(seen[index][stem], axis=1).T
                written, _ = sf.read(tmp_path / fmt / song.stem / f"{stem}.{fmt}", dtype="float32", always_2d=True)
                assert hooked.shape == written.shape == (sf.info(song).frames, sf.info(song).channels)
                if fmt == "wav":
                    assert np.array_equal(hooked, written)
                else:
                    assert np.abs(hooked - written).max() <= 1 / 32768 + 1e-7  # the 16-bit step, rounded
