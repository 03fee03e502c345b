"""Shared fixtures: a small randomly initialised model saved through the real checkpoint code, and paths
into ../shared (tests that need it skip with a reason when it is absent)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from unet_sep import ModelConfig, UNetConfig, save_model
from unet_sep.model import StemsNet

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
EXAMPLE_MP3 = SHARED / "data" / "mixtures" / "audio_example.mp3"


@pytest.fixture(scope="session", autouse=True)
def _own_model_cache(tmp_path_factory):
    """Tests never write into the user's model cache (downloads, conversions, remembered weight digests): the session
    gets one of its own, inherited by the commands it runs; a test that needs an empty one sets UNET_SEP_CACHE
    itself."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("UNET_SEP_CACHE", str(tmp_path_factory.mktemp("unet-sep-cache")))
        yield


# A Python expression for the peak resident memory (MB) of the process that evaluates it, for scripts the tests run
# in a subprocess: the high-water mark of its own address space (VmHWM). Not ru_maxrss, which Linux carries over
# exec from the parent (pytest, a gigabyte late in a run), so a child would report the parent's peak.
PEAK_MB = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1]) / 1024"


def disk_full_for(monkeypatch, marker: str) -> None:
    """Every write to a sound file whose name holds ``marker`` fails as on a full disk (ENOSPC), where the writer
    writes (``soundfile.SoundFile.write``)."""
    write = sf.SoundFile.write

    def full(handle, data):
        if marker in str(handle.name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), handle.name)
        return write(handle, data)

    monkeypatch.setattr(sf.SoundFile, "write", full)


def make_model(folder: Path, seed: int = 0, **overrides) -> Path:
    torch.manual_seed(seed)
    unet = overrides.pop("unet", UNetConfig(filters=[4, 8, 16, 32, 64, 128]))
    config = ModelConfig(unet=unet, name="tiny-random", **overrides)
    net = StemsNet(config).eval()
    # Give BatchNorm non-trivial statistics so a loader that drops them would be noticed.
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    save_model(folder, net, config)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-stem (vocals/accompaniment) 44.1 kHz stereo model with small filters, saved on disk."""
    return make_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def bundled() -> Path:
    """The folder of the bundled default model."""
    from unet_sep.weights.registry import default_model_name, resolve_model

    name = default_model_name()
    if name is None:
        pytest.skip("no bundled model in this installation")
    return resolve_model(name)


@pytest.fixture(scope="session")
def example_mp3() -> Path:
    if not EXAMPLE_MP3.is_file():
        pytest.skip(f"real song excerpt not found at {EXAMPLE_MP3} (../shared is absent)")
    return EXAMPLE_MP3


def music_like(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """Harmonic tones plus noise bursts, float32 [channels, samples], peak below 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (k + 1) for k, f in enumerate([220, 440, 660, 1320]))
    bursts = rng.standard_normal((channels, t.size)) * (np.sin(2 * np.pi * 2 * t) > 0.6)
    audio = 0.15 * tone[None] * rng.uniform(0.6, 1.0, (channels, 1)) + 0.1 * bursts
    return audio.astype(np.float32)


def record_starts(engine) -> list[int]:
    """Record the start frames of the segments ``engine`` takes from now on (the list fills as it runs)."""
    starts_seen: list[int] = []
    take = engine.take

    def recording(count):
        batch, starts = take(count)
        starts_seen.extend(starts)
        return batch, starts

    engine.take = recording
    return starts_seen


def count_batches(separator) -> list[int]:
    """Record the size of every batch the separator's U-Nets run from now on (the list fills as they run)."""
    runner = separator.runner
    sizes: list[int] = []
    forward = runner.forward

    def counting(batch):
        sizes.append(batch.shape[0])
        return forward(batch)

    runner.forward = counting
    return sizes


def write_m4a(path: Path, audio: np.ndarray, rate: int) -> Path:
    """AAC in an MP4 container (``.m4a``) of float32 ``[channels, samples]`` stereo audio, written with PyAV: a
    file only the PyAV (FFmpeg) decoder reads."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=rate, layout="stereo")
        for start in range(0, audio.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio[:, start : start + 1024]), format="fltp",
                                               layout="stereo")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
