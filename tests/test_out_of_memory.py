"""Running out of memory while one input is separated (issue 30, item 4): that input fails with one line naming the
settings that need less, what it held is let go, and the other inputs are separated as if it had not been there;
through the file pipeline and the command line. The device's error is injected where it would be raised: the
Wiener filter over a whole long track, a U-Net batch, the spectrogram of one input."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading
import weakref
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import music_like
from unet_sep import Separator
from unet_sep.dsp.measures import snr_db
from unet_sep.separate import reader as reader_module
from unet_sep.separate import stream as stream_module
from unet_sep.separate import wiener_window
from unet_sep.separate.out_of_memory import SeparationMemoryError, is_out_of_memory, out_of_memory
from unet_sep.separate.runner import NetworkRunner
from unet_sep.separate.wiener_window import WienerSettings

# What PyTorch says when a CUDA allocation fails.
CUDA_MESSAGE = ("CUDA out of memory. Tried to allocate 3.20 GiB. GPU 0 has a total capacity of 79.19 GiB of which "
                "1.05 GiB is free.")
FILTER_FRAMES = 600  # the injected device holds the whole-track filter of about 14 s at 44.1 kHz (hop 1024), no more


def _song(folder: Path, name: str, seconds: float, channels: int = 2, seed: int = 0, silent: bool = False) -> Path:
    audio = music_like(seconds, 44100, channels, seed=seed)
    sf.write(folder / name, (audio * 0 if silent else audio).T, 44100, subtype="FLOAT")
    return folder / name


def _stems(out: Path, song: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(p, always_2d=True)[0] for p in sorted((out / song.stem).glob("*.wav"))}


def _limited_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Wiener filter on a device that holds at most FILTER_FRAMES frames of a track's spectra."""
    real = wiener_window.wiener

    def wiener(stems, mixture, *args, **kwargs):
        if mixture.shape[-1] > FILTER_FRAMES:
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return real(stems, mixture, *args, **kwargs)

    monkeypatch.setattr(wiener_window, "wiener", wiener)


def test_a_long_track_the_whole_track_filter_cannot_hold_fails_alone(tmp_path, tiny_model, monkeypatch):
    songs = [_song(tmp_path, "short.wav", 4.0, seed=1), _song(tmp_path, "long.wav", 30.0, seed=2),
             _song(tmp_path, "other.wav", 6.0, seed=3)]
    exact = dict(device="cpu", segmentation="spleeter", wiener_iterations=1, batch_size=1)
    expected = Separator.from_pretrained(tiny_model, **exact)
    expected.separate_files([songs[0], songs[2]], tmp_path / "expected")

    _limited_filter(monkeypatch)
    separator = Separator.from_pretrained(tiny_model, **exact)
    engines: dict[int, weakref.ref] = {}
    make_engine = separator.runner.engine

    def recorded(groups, length=None, sample_rate=None):
        engine = make_engine(groups, length, sample_rate)
        engines[int(length or 0)] = weakref.ref(engine)
        return engine

    separator.runner.engine = recorded  # type: ignore[method-assign]
    # One reader and batches of one: the long input is alone in flight when its filter runs (see the next test for
    # the advice with several).
    events = separator.separate_files(songs, tmp_path / "out", readers=1)
    assert [event.kind for event in events] == ["done", "failed", "done"]
    error = events[1].error
    assert isinstance(error, SeparationMemoryError) and not isinstance(error, torch.OutOfMemoryError)
    assert str(error) == (f"{songs[1]}: the CPU ran out of memory synthesising its stems, with the Wiener filter's "
                          "statistics over the whole track (0.5 min); use wiener_window=1024")
    assert error.__cause__ is None and error.__context__ is None and error.__traceback__ is None
    gc.collect()
    assert engines[30 * 44100]() is None  # the failed input's spectra and masks are let go while its event lives on
    assert not (tmp_path / "out" / "long").exists()
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == sorted(
        p.name for p in (tmp_path / "expected").rglob("*"))  # no temporary file left behind
    for song in (songs[0], songs[2]):
        got, want = _stems(tmp_path / "out", song), _stems(tmp_path / "expected", song)
        assert got.keys() == want.keys() == {"vocals", "accompaniment"}
        for stem in want:
            assert snr_db(want[stem], got[stem]) > 100.0

    with pytest.raises(SeparationMemoryError, match="use wiener_window=1024") as caught:  # one file, the same way
        separator.separate_file(songs[1], tmp_path / "single")
    assert caught.value.path == songs[1] and not (tmp_path / "single" / "long").exists()


def _read_in_order(monkeypatch, held: Path, waiting: Path, held_fed: threading.Event,
                   release: threading.Event) -> None:
    """Order two inputs' readers: ``waiting`` is opened once ``held_fed`` is set (``held``'s first block is in its
    engine, see :func:`_set_when_fed`), and ``held``'s reader waits after its first block until ``release``."""
    open_audio = reader_module.open_audio

    def ordered(path):
        if Path(path) == waiting:
            held_fed.wait(60)
        audio = open_audio(path)
        if Path(path) == held:
            blocks = audio.blocks

            def holding(*args, **kwargs):
                for index, block in enumerate(blocks(*args, **kwargs)):
                    yield block
                    if index == 0:
                        release.wait(60)

            audio.blocks = holding  # type: ignore[method-assign]
        return audio

    monkeypatch.setattr(reader_module, "open_audio", ordered)


def _set_when_fed(separator: Separator, length: int, fed: threading.Event) -> None:
    """Set ``fed`` once the engine of the input of ``length`` samples has been fed a block."""
    make_engine = separator.runner.engine

    def engine(groups, length_=None, sample_rate=None):
        made = make_engine(groups, length_, sample_rate)
        if length_ == length:
            feed = made.feed

            def feeding(block):
                feed(block)
                fed.set()

            made.feed = feeding  # type: ignore[method-assign]
        return made

    separator.runner.engine = engine  # type: ignore[method-assign]


def test_with_another_input_in_flight_the_advice_names_fewer_readers(tmp_path, tiny_model, monkeypatch):
    """Each input in flight holds its whole track for the filter: with the short one held in flight (its reader
    waits after its only block until the long one has failed, and the long one's reader starts once that block is
    in its engine), the long one's error also names --readers."""
    short, long = _song(tmp_path, "short.wav", 4.0, seed=1), _song(tmp_path, "long.wav", 30.0, seed=2)
    short_fed, failed = threading.Event(), threading.Event()
    real = wiener_window.wiener

    def wiener(stems, mixture, *args, **kwargs):
        if mixture.shape[-1] > FILTER_FRAMES:
            failed.set()
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return real(stems, mixture, *args, **kwargs)

    monkeypatch.setattr(wiener_window, "wiener", wiener)
    _read_in_order(monkeypatch, held=short, waiting=long, held_fed=short_fed, release=failed)
    separator = Separator.from_pretrained(tiny_model, device="cpu", segmentation="spleeter", wiener_iterations=1,
                                          batch_size=1)
    _set_when_fed(separator, 4 * 44100, short_fed)
    events = separator.separate_files([short, long], tmp_path / "out", readers=2)
    assert [event.kind for event in events] == ["done", "failed"]
    assert str(events[1].error) == (f"{long}: the CPU ran out of memory synthesising its stems, with the Wiener "
                                    "filter's statistics over the whole track (0.5 min); use wiener_window=1024 or "
                                    "readers=1")


def test_a_batch_out_of_memory_fails_the_inputs_in_it_and_no_other(tmp_path, tiny_model, monkeypatch):
    """The silent input's segment runs alone (batches of 1) while the long one is in flight: the long one's reader
    holds its second block until the batch has failed, and the silent one's waits for the long one's first block to
    be in its engine. Only the silent one fails (every input in flight used to)."""
    long, silent = _song(tmp_path, "long.wav", 20.0, seed=4), _song(tmp_path, "silent.wav", 2.0, silent=True)
    long_fed, failed = threading.Event(), threading.Event()
    forward = NetworkRunner.forward

    def limited(self, batch):
        if float(batch.abs().amax()) == 0.0:
            failed.set()
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return forward(self, batch)

    monkeypatch.setattr(NetworkRunner, "forward", limited)
    _read_in_order(monkeypatch, held=long, waiting=silent, held_fed=long_fed, release=failed)
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=1)
    _set_when_fed(separator, 20 * 44100, long_fed)
    events = separator.separate_files([long, silent], tmp_path / "out", readers=2)
    assert failed.is_set() and [event.kind for event in events] == ["done", "failed"], events
    assert str(events[1].error) == f"{silent}: the CPU ran out of memory running the U-Nets on a batch of 1 segments"
    assert _stems(tmp_path / "out", long)["vocals"].shape == (20 * 44100, 2)
    assert not (tmp_path / "out" / "silent").exists()


def test_the_spectrogram_of_one_input_out_of_memory(tmp_path, tiny_model, monkeypatch):
    """A 4-channel input is two stereo groups for a stereo model: its spectrogram alone is injected to fail."""
    songs = [_song(tmp_path, "stereo.wav", 3.0, seed=5), _song(tmp_path, "quad.wav", 3.0, channels=4, seed=6)]
    analyze = stream_module.analyze_frames

    def limited(signal, *args, **kwargs):
        if signal.shape[0] > 1:
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return analyze(signal, *args, **kwargs)

    monkeypatch.setattr(stream_module, "analyze_frames", limited)
    events = Separator.from_pretrained(tiny_model, device="cpu", batch_size=4).separate_files(songs, tmp_path / "out")
    assert [event.kind for event in events] == ["done", "failed"]
    assert str(events[1].error) == (f"{songs[1]}: the CPU ran out of memory computing its spectrogram; use "
                                    "batch_size=2")


def test_an_input_whose_engine_cannot_be_made(tmp_path, tiny_model):
    """The engine's buffers are allocated on the device as an input starts: failing there fails that input."""
    songs = [_song(tmp_path, "first.wav", 2.0, seed=1), _song(tmp_path, "second.wav", 3.0, seed=2)]
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=4)
    make_engine = separator.runner.engine

    def engine(groups, length=None, sample_rate=None):
        if length == 3 * 44100:
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return make_engine(groups, length, sample_rate)

    separator.runner.engine = engine  # type: ignore[method-assign]
    events = separator.separate_files(songs, tmp_path / "out")
    assert [event.kind for event in events] == ["done", "failed"]
    assert str(events[1].error) == f"{songs[1]}: the CPU ran out of memory preparing to separate it; use batch_size=2"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["first"]


def test_the_advice_names_what_needs_less_on_a_gpu(tiny_model):
    """The wording where the device is a GPU (this machine may have none): the device, then --device cpu."""
    runner = Separator.from_pretrained(tiny_model, device="cpu", batch_size=8).runner
    whole = WienerSettings(1, 0, softmask=True)  # exact mode's filter: statistics over the whole track
    on_gpu = SimpleNamespace(device=torch.device("cuda:1"), sample_rate=44100,
                             settings=SimpleNamespace(batch_size=8, wiener=whole))
    engine = SimpleNamespace(received=44100 * 60 * 12)
    filtering = out_of_memory(on_gpu, "synthesis", engine)  # type: ignore[arg-type]
    assert filtering.spelled(lambda setting, value: f"--{setting.replace('_', '-')} {value}") == (
        "the GPU (cuda:1) ran out of memory synthesising its stems, with the Wiener filter's statistics over the "
        "whole track (12.0 min); use --wiener-window 1024 or --device cpu")
    crowded = out_of_memory(on_gpu, "synthesis", engine, in_flight=6)  # type: ignore[arg-type]
    assert str(crowded).endswith("use wiener_window=1024 or readers=3 or device='cpu'")  # each holds its whole track
    batch = out_of_memory(on_gpu, "batch", in_flight=6)  # type: ignore[arg-type]
    assert str(batch) == ("the GPU (cuda:1) ran out of memory running the U-Nets on a batch of 8 segments; use "
                          "batch_size=4 or device='cpu'")
    windowed = SimpleNamespace(device=torch.device("cuda:0"), sample_rate=44100,
                               settings=SimpleNamespace(batch_size=1, wiener=runner.settings.wiener))
    assert str(out_of_memory(windowed, "synthesis")) == (  # type: ignore[arg-type]
        "the GPU (cuda:0) ran out of memory synthesising its stems; use device='cpu'")
    assert is_out_of_memory(torch.cuda.OutOfMemoryError(CUDA_MESSAGE)) and is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate "
                                         "memory: you tried to allocate 1099511627776 bytes."))
    assert not is_out_of_memory(RuntimeError("shape mismatch")) and not is_out_of_memory(filtering)


# The command line, with the device's error injected before it starts: argv[1] says where.
SHIM = textwrap.dedent(f"""
    import sys
    import torch
    from unet_sep.separate import runner, wiener_window

    where = sys.argv.pop(1)
    if where == "filter":
        real_wiener = wiener_window.wiener

        def wiener(stems, mixture, *args, **kwargs):
            if mixture.shape[-1] > {FILTER_FRAMES}:
                raise torch.OutOfMemoryError({CUDA_MESSAGE!r})
            return real_wiener(stems, mixture, *args, **kwargs)

        wiener_window.wiener = wiener
    else:  # the first U-Net batch
        forward, calls = runner.NetworkRunner.forward, []

        def first_fails(self, batch):
            calls.append(len(batch))
            if len(calls) == 1:
                raise torch.OutOfMemoryError({CUDA_MESSAGE!r})
            return forward(self, batch)

        runner.NetworkRunner.forward = first_fails
    sys.argv[0] = "unet-sep"
    from unet_sep.cli import main
    main()
""")


def _cli(where: str, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SHIM, where, "separate", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


def test_the_command_line_fails_the_long_track_with_one_line(tmp_path, tiny_model):
    songs = [_song(tmp_path, "long.wav", 30.0, seed=7), _song(tmp_path, "short.wav", 3.0, seed=8)]
    result = _cli("filter", *songs, "--out", tmp_path / "out", "--model", tiny_model, "--segmentation", "spleeter",
                  "--wiener-iterations", "1", "--readers", "1", "--batch-size", "1", "--quiet")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == (f"error: {songs[0]}: the CPU ran out of memory synthesising its stems, with the Wiener "
                        "filter's statistics over the whole track (0.5 min); use --wiener-window 1024")
    assert len(lines) == 2 and lines[1].startswith("separated 1 file(s) (3.0 s of audio)") and "; 1 failed" in lines[1]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["accompaniment.wav", "short", "vocals.wav"]


def test_the_command_line_fails_the_inputs_of_the_batch_with_one_line_each(tmp_path, tiny_model):
    """One reader gives the inputs in order: the first batch of two segments holds the first two inputs' only ones,
    the third input runs after it."""
    songs = [_song(tmp_path, f"song{i}.wav", 3.0, seed=10 + i) for i in range(3)]
    result = _cli("batch", *songs, "--out", tmp_path / "out", "--model", tiny_model, "--batch-size", "2", "--readers",
                  "1", "--quiet")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[:2] == [f"error: {song}: the CPU ran out of memory running the U-Nets on a batch of 2 segments; use "
                         "--batch-size 1" for song in songs[:2]]
    assert len(lines) == 3 and lines[2].startswith("separated 1 file(s)") and "; 2 failed" in lines[2]
    assert sorted(p.name for p in (tmp_path / "out").rglob("*")) == ["accompaniment.wav", "song2", "vocals.wav"]
