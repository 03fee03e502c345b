"""Segments planned per song: arrays and files (length known or estimated) run the fewest segments that keep the
least overlap, agree with one U-Net pass over the whole song away from the ends, stream to the same result in any
block size, and stay complete and correct when the announced length is wrong; streams of unknown length keep the
stream plan."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import count_batches, music_like, record_starts
from unet_sep import Separator
from unet_sep.dsp.measures import snr_db
from unet_sep.dsp.stft import num_frames
from unet_sep.separate import reader
from unet_sep.weights.checkpoint import load_model

RATE = 44100


@pytest.fixture(scope="module")
def loaded(tiny_model):
    return load_model(tiny_model)


@pytest.fixture(scope="module")
def whole_40s(loaded) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    audio = music_like(40, RATE, seed=5)
    return audio, _whole_pass(loaded, audio)


def _frames(samples: int) -> int:
    return num_frames(samples, 4096, 1024)


def _starts_taken(separator: Separator) -> list[list[int]]:
    """Record the start frames of the segments each engine of ``separator`` takes, one list per engine."""
    runner = separator.runner
    engine_of = runner.engine
    taken: list[list[int]] = []

    def engine(*args, **kwargs):
        made = engine_of(*args, **kwargs)
        taken.append(record_starts(made))
        return made

    runner.engine = engine
    return taken


def _whole_pass(loaded, audio: np.ndarray) -> dict[str, np.ndarray]:
    """The U-Nets run once over the whole song (T = the song, rounded up to the stride grid)."""
    config, net = loaded
    frames = -(-_frames(audio.shape[-1]) // 64) * 64
    whole = Separator(net, dataclasses.replace(config, segment_frames=frames), device="cpu", segmentation="spleeter")
    return whole.separate(audio, RATE)


def _agreement(reference: dict[str, np.ndarray], stems: dict[str, np.ndarray], n: int) -> float:
    inner = slice(3 * RATE, n - 3 * RATE)
    return min(snr_db(reference[stem][..., inner], stems[stem][..., inner]) for stem in reference)


def test_arrays_run_the_song_plan_and_agree_with_a_whole_pass(loaded):
    """40 s (1727 frames): 4 segments overlapping by 64 frames or more, where streams run 5 (hop 384) and Spleeter
    4 back to back; away from the ends the stems agree with a whole-song pass to over 60 dB."""
    config, net = loaded
    audio = music_like(40, RATE)
    separator = Separator(net, config, device="cpu")
    taken = _starts_taken(separator)
    sizes = count_batches(separator)
    stems = separator.separate(audio, RATE)
    assert taken == [[0, 448, 896, 1216]] and sum(sizes) == 4
    assert separator.runner.settings.plan.count(_frames(audio.shape[-1])) == 5  # the plan of streams of unknown length
    whole = _whole_pass(loaded, audio)
    hard_cuts = Separator(net, config, device="cpu", segmentation="spleeter").separate(audio, RATE)
    agree = _agreement(whole, stems, audio.shape[-1])
    assert agree > 60.0, agree
    assert agree > _agreement(whole, hard_cuts, audio.shape[-1]) + 20.0


def test_a_stream_with_its_length_equals_separate_and_one_without_keeps_the_stream_plan(loaded):
    config, net = loaded
    audio = music_like(31, RATE, seed=3)  # 1340 frames: 3 segments planned for the song, 4 streamed
    separator = Separator(net, config, device="cpu")
    whole = separator.separate(audio, RATE)
    taken = _starts_taken(separator)
    for size in (10007, RATE * 7 + 13):
        blocks = [audio[None, :, i : i + size] for i in range(0, audio.shape[1], size)]
        known = np.concatenate(list(separator.stream(blocks, RATE, length=audio.shape[1])), axis=-1)
        # The same segments; only float rounding differs where the inverse STFT's overlap-add is cut into other
        # pieces (the stream plan does the same at this length: 169-171 dB).
        assert snr_db(whole["vocals"], known[0, 0]) > 150.0 and snr_db(whole["accompaniment"], known[1, 0]) > 150.0
        unknown = np.concatenate(list(separator.stream(blocks, RATE)), axis=-1)
        assert unknown.shape == known.shape
        assert 40.0 < snr_db(whole["vocals"], unknown[0, 0]) < 120.0  # close, and really another plan
    total = _frames(audio.shape[1])
    assert taken == [[0, 448, 832], separator.runner.settings.plan.starts(total)] * 2
    assert separator.runner.settings.plan.starts(total) == [0, 384, 768, 832]


@pytest.mark.parametrize("announced", [1, 0.6, 0.97, 1.03, 10.0])
def test_a_wrong_announced_length_still_gives_complete_correct_stems(loaded, whole_40s, announced):
    """The hop follows the announced length, the real one decides the last segment: the stems have the input's
    length, sum to it, agree with a whole pass away from the ends, and every overlap is at least 64 frames."""
    config, net = loaded
    audio, whole = whole_40s
    n = audio.shape[1]
    separator = Separator(net, config, device="cpu")
    taken = _starts_taken(separator)
    length = 1 if announced == 1 else int(n * announced)
    out = np.concatenate(list(separator.stream([audio[None, :, i : i + 50000] for i in range(0, n, 50000)], RATE,
                                               length=length)), axis=-1)
    assert out.shape == (2, 1, 2, n)
    stems = {stem: out[i, 0] for i, stem in enumerate(separator.stems)}
    assert snr_db(audio, sum(stems.values())) > 60.0
    assert _agreement(whole, stems, n) > 55.0
    starts = taken[0]
    total = _frames(n)
    assert starts == separator.runner.plan_for(length).starts(total)
    assert starts[0] == 0 and starts[-1] + 512 >= total and all(s % 64 == 0 for s in starts)
    assert all(512 - (b - a) >= 64 for a, b in zip(starts, starts[1:], strict=False)), starts
    if 0.9 < announced < 1.1:
        assert len(starts) <= 5  # the right length runs 4
    if announced == 0.6:  # planned for 24 s (1038 frames): hop 320, so 5 segments over the real 40 s
        assert starts == [0, 320, 640, 960, 1216]


class _Announcing:
    """An opened file whose announced length is ``scale`` times the real one, as a decoder's estimate may be."""

    def __init__(self, opened, scale: float) -> None:
        self.opened = opened
        self.info = dataclasses.replace(opened.info, frames=int(opened.info.frames * scale), frames_exact=False)

    def blocks(self, **options):
        return self.opened.blocks(**options)


def test_files_are_planned_from_the_length_the_reader_announces(tmp_path, tiny_model, monkeypatch):
    """A file's plan comes from its announced length; when the announcement is wrong (a decoder's estimate), the
    stems still have the file's real length and sum to it, and the right announcement runs the song plan."""
    song = tmp_path / "song.wav"
    audio = music_like(40, RATE, seed=7)
    sf.write(song, audio.T, RATE, subtype="FLOAT")
    runs: dict[str, tuple[list[list[int]], Path]] = {}
    real_open = reader.open_audio
    for label, scale in (("right", 1.0), ("short", 0.6), ("long", 1.7)):

        def announcing(path, scale=scale):
            return _Announcing(real_open(path), scale)

        monkeypatch.setattr(reader, "open_audio", announcing)
        separator = Separator.from_pretrained(tiny_model, device="cpu")
        taken = _starts_taken(separator)
        (event,) = separator.separate_files([song], tmp_path / label, fmt="wav", bit_depth="float")
        assert event.kind == "done", event.error
        runs[label] = (taken, tmp_path / label / "song")
    assert runs["right"][0] == [[0, 448, 896, 1216]]
    assert runs["short"][0] == [[0, 320, 640, 960, 1216]]  # planned for 24 s (1038 frames): hop 320
    assert runs["long"][0] == runs["right"][0]  # planned for 68 s: hop 448, as for the right length
    right = {stem: sf.read(runs["right"][1] / f"{stem}.wav", always_2d=True)[0].T for stem in ("vocals",
                                                                                          "accompaniment")}
    for label in ("short", "long"):
        stems = {stem: sf.read(runs[label][1] / f"{stem}.wav", always_2d=True)[0].T for stem in right}
        assert all(stem.shape == audio.shape for stem in stems.values())
        assert snr_db(audio, sum(stems.values())) > 60.0
        assert snr_db(right["vocals"], stems["vocals"]) > 50.0


def test_the_cli_plans_songs_as_the_api_does(tmp_path, tiny_model, monkeypatch):
    """``unet-sep separate`` without ``--overlap`` runs the song plan (it used to pass 25 %, so every file kept
    128 frames of overlap: 5 segments here instead of 4); ``--overlap 0.25`` still asks for that."""
    from typer.testing import CliRunner

    from unet_sep.cli import app
    from unet_sep.separate.runner import NetworkRunner

    song = tmp_path / "song.wav"
    sf.write(song, music_like(40, RATE, seed=7).T, RATE, subtype="FLOAT")
    taken: list[list[int]] = []
    engine_of = NetworkRunner.engine

    def engine(self, *args, **kwargs):
        made = engine_of(self, *args, **kwargs)
        taken.append(made.plan.starts(_frames(40 * RATE)))
        return made

    monkeypatch.setattr(NetworkRunner, "engine", engine)
    for options, starts in (([], [0, 448, 896, 1216]), (["--overlap", "0.25"], [0, 320, 640, 960, 1216])):
        taken.clear()
        result = CliRunner().invoke(app, ["separate", str(song), "--model", str(tiny_model), "--out",
                                          str(tmp_path / "out"), "--overwrite", "--quiet", *options])
        assert result.exit_code == 0, result.output
        assert taken == [starts], options
