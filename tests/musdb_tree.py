"""A small synthetic MUSDB18-HQ tree for tests: ``make_musdb_tree(root)``.

The layout is what ``musdb.DB(root, is_wav=True)`` reads::

    root/train/<track>/{mixture,vocals,drums,bass,other}.wav
    root/test/<track>/{mixture,vocals,drums,bass,other}.wav

The sources are synthetic with clearly different spectra, so a separator (or an oracle mask) has something to
separate: vocals are harmonic tones with vibrato and on/off phrasing (fundamentals 200-1000 Hz), drums are
short decaying noise bursts on a beat, bass is a low sine (40-120 Hz), other is a chord of high tones plus
band-passed noise (1.5-6 kHz). The mixture is their sum; amplitudes keep it well below clipping.

musdb's validation split is a fixed list of track names in the package's ``configs/mus.yaml``
(``validation_tracks``), so ``n_valid`` of the train tracks are named after entries of that list (read from
the installed package) and the others get names that are not on it.

:func:`musdb_config` is the data settings that read such a tree, :func:`read_file` a file's samples as the data
package decodes them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from unet_sep.audio import read_audio
from unet_sep.data.config import DataConfig

SOURCES = ("vocals", "drums", "bass", "other")


def musdb_config(root: Path, **overrides) -> DataConfig:
    """The data settings of the MUSDB18-HQ tree at ``root`` (``overrides``: other fields)."""
    return DataConfig(kind="musdb", root=str(root), is_wav=True, **overrides)


def read_file(path: Path) -> np.ndarray:
    """The samples of an audio file, float32 ``[channels, samples]`` at its own rate."""
    audio, _ = read_audio(path)
    return audio


def musdb_validation_names() -> list[str]:
    """The validation track names of the installed musdb package (``validation_tracks`` of ``mus.yaml``)."""
    from unet_sep.data.musdb_support import musdb_setup

    return list(musdb_setup()["validation_tracks"])


def synthetic_sources(seconds: float, rate: int, seed: int, channels: int = 2) -> dict[str, np.ndarray]:
    """One synthetic song: ``{source: float32 [channels, samples]}`` with peaks well below 1."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    pan = rng.uniform(0.6, 1.0, (4, channels))  # per source and channel: a little stereo width

    # vocals: notes of 200-1000 Hz with 5 harmonics, 5-6 Hz vibrato, phrases separated by rests
    vocals = np.zeros(n)
    note = int(0.4 * rate)
    for start in range(0, n, note):
        stop = min(n, start + note)
        if rng.random() < 0.3:  # a rest
            continue
        f0 = rng.uniform(200.0, 1000.0)
        tt = t[start:stop] - t[start]
        vibrato = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(5, 6) * tt)
        phase = 2 * np.pi * f0 * np.cumsum(vibrato) / rate
        tone = sum(np.sin(k * phase) / k**1.5 for k in range(1, 6))
        envelope = np.minimum(1.0, np.minimum(tt, tt[-1] - tt) / 0.03)  # 30 ms fades
        vocals[start:stop] = 0.15 * tone * envelope

    # drums: decaying noise bursts on every beat (120 bpm), accents on 1 and 3
    drums = np.zeros(n)
    beat = int(0.5 * rate)
    burst = int(0.12 * rate)
    decay = np.exp(-np.arange(burst) / (0.025 * rate))
    for k, start in enumerate(range(int(0.05 * rate), n, beat)):
        stop = min(n, start + burst)
        accent = 0.3 if k % 2 == 0 else 0.18
        drums[start:stop] = accent * rng.uniform(-1.0, 1.0, stop - start) * decay[: stop - start]

    # bass: a low sine walking between 40 and 120 Hz, one note per beat
    bass = np.zeros(n)
    phase = 0.0
    for start in range(0, n, beat):
        stop = min(n, start + beat)
        f = rng.uniform(40.0, 120.0)
        steps = 2 * np.pi * f * np.arange(1, stop - start + 1) / rate
        bass[start:stop] = 0.25 * np.sin(phase + steps)
        phase = float(phase + steps[-1])

    # other: a sustained chord of high tones and band-passed noise (1.5-6 kHz)
    chord = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(1500.0, 4000.0, 3)) / 3
    noise = rng.standard_normal(n)
    spectrum = np.fft.rfft(noise)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 1500) | (freqs > 6000)] = 0
    band = np.fft.irfft(spectrum, n)
    band /= max(np.abs(band).max(), 1e-9)
    other = 0.1 * chord + 0.04 * band

    out = {}
    for i, (name, signal) in enumerate(zip(SOURCES, (vocals, drums, bass, other), strict=True)):
        out[name] = (pan[i][:, None] * signal[None, :]).astype(np.float32)
    return out


def _write_track(folder: Path, sources: dict[str, np.ndarray], rate: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    mixture = sum(sources[name] for name in SOURCES)
    assert np.abs(mixture).max() < 1.0, "synthetic mixture would clip"
    for name, audio in {**sources, "mixture": mixture}.items():
        sf.write(str(folder / f"{name}.wav"), audio.T, rate, subtype="PCM_16")


def make_musdb_tree(
    root: Path,
    n_train: int = 4,
    n_valid: int = 2,
    n_test: int = 2,
    seconds: float = 6.0,
    rate: int = 44100,
    seed: int = 0,
) -> Path:
    """Write a MUSDB18-HQ-format tree of synthetic songs under ``root`` and return ``root``.

    ``root/train`` holds ``n_train`` tracks of musdb's training split plus ``n_valid`` tracks named after
    musdb's validation list (so ``split="valid"`` is not empty); ``root/test`` holds ``n_test`` tracks.
    Every track is ``seconds`` long, stereo, 16-bit WAV at ``rate``.
    """
    root = Path(root)
    valid_names = musdb_validation_names()
    if n_valid > len(valid_names):
        raise ValueError(f"musdb only names {len(valid_names)} validation tracks, asked for {n_valid}")
    names = {
        "train": [f"Synthetic Artist {i:02d} - Train Song" for i in range(n_train)] + valid_names[:n_valid],
        "test": [f"Synthetic Artist {i:02d} - Test Song" for i in range(n_test)],
    }
    song = 0
    for subset, tracks in names.items():
        for name in tracks:
            _write_track(root / subset / name, synthetic_sources(seconds, rate, seed=seed * 1000 + song), rate)
            song += 1
    return root
