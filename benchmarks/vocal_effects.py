"""Cost of the vocal-stem training effects (unet_sep.train.vocal_effects): milliseconds per excerpt per effect.

    python benchmarks/vocal_effects.py [--seconds 2] [--repeats 40] [--tries 3] [--wall]
                                       [--formats 16000x1,16000x2,44100x2]

Each effect runs alone, through ``apply_vocal_effects`` with its probability at 1 and the default parameter ranges,
on a voice-like excerpt (a harmonic tone with vibrato, syllables and breath noise) of ``--seconds`` seconds, once per
repeat with the parameters of a new seed (the reverb's response is drawn each time, as in training), each draw run
``--tries`` times and its fastest run kept; then all five in their order; then the reverb at its longest default
RT60 (1.5 s), the slowest case. Prints one table: the median and the slowest draw in ms for each format (rate x
channels). The time is the calling thread's CPU time (numpy runs these single-threaded), which other processes on a
shared machine do not inflate as they do wall-clock time (``--wall`` for that), and is what the sampler's thread
takes from the cores the training step runs on. The sampler draws excerpts in a background
thread while a training step runs (about 0.5 s for a batch of 8 on 2 cores), so the sum over a batch is what may show.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep.train.vocal_effects import VocalEffectsConfig, apply_vocal_effects  # noqa: E402

EFFECTS = ("eq", "compression", "saturation", "doubling", "reverb")


def voice_like(rate: int, channels: int, seconds: float) -> np.ndarray:
    """float32 ``[channels, samples]``: a sung-vowel stand-in with the dynamics of a voice (0.1 RMS)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    pitch = 220.0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 16) if k * 220 * 1.02 < rate / 2)
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t), 0, None) ** 0.5
    voice = tone * syllables + 0.05 * rng.standard_normal(t.size)
    voice *= 0.1 / np.sqrt(np.mean(voice**2))
    return np.stack([voice] * channels).astype(np.float32)


def configs() -> dict[str, VocalEffectsConfig]:
    """One configuration per row: each effect alone, all five, the longest reverb."""
    rows = {name: VocalEffectsConfig(**{f"{name}_probability": 1.0}) for name in EFFECTS}
    rows["all five"] = VocalEffectsConfig(**{f"{name}_probability": 1.0 for name in EFFECTS})
    rows["reverb, RT60 1.5 s"] = replace(rows["reverb"], reverb_rt60_s=(1.5, 1.5))
    return rows


def time_config(config: VocalEffectsConfig, signal: np.ndarray, rate: int, repeats: int, tries: int,
                clock: Callable[[], float]) -> tuple[float, float]:
    """Median and slowest ms of ``apply_vocal_effects`` by ``clock`` over ``repeats`` seeds, each the best of
    ``tries`` runs of the same draw (one warm-up call first)."""
    apply_vocal_effects(np.random.default_rng(10_000), signal, rate, config)
    times = []
    for seed in range(repeats):
        best = math.inf
        for _ in range(tries):
            rng = np.random.default_rng(seed)
            start = clock()
            out = apply_vocal_effects(rng, signal, rate, config)
            best = min(best, 1000.0 * (clock() - start))
        times.append(best)
        if out.shape != signal.shape or out.dtype != np.float32 or not np.isfinite(out).all():
            raise SystemExit(f"error: {config} gave a wrong or non-finite output")
    return float(np.median(times)), float(max(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=2.0, help="excerpt length (default 2, MIR-1K recipes')")
    parser.add_argument("--repeats", type=int, default=40, help="parameter draws (seeds) per effect")
    parser.add_argument("--tries", type=int, default=3, help="runs of each draw, the fastest kept")
    parser.add_argument("--wall", action="store_true", help="wall-clock time instead of the thread's CPU time")
    parser.add_argument("--formats", default="16000x1,16000x2,44100x2", help="rate x channels, comma-separated")
    args = parser.parse_args()
    try:
        formats = [tuple(int(part) for part in item.split("x")) for item in args.formats.split(",")]
        if any(len(item) != 2 or item[0] < 8000 or item[1] not in (1, 2) for item in formats):
            raise ValueError
    except ValueError:
        parser.error(f"--formats: expected RATExCHANNELS items such as 16000x1,44100x2, got {args.formats!r}")
    if args.seconds <= 0 or args.repeats < 1 or args.tries < 1:
        parser.error("--seconds must be > 0, --repeats and --tries >= 1")

    rows = configs()
    clock = time.perf_counter if args.wall else time.thread_time
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in rows}
    for rate, channels in formats:
        signal = voice_like(rate, channels, args.seconds)
        for name, config in rows.items():
            results[name].append(time_config(config, signal, rate, args.repeats, args.tries, clock))

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"hardware: {cpu_name()}, {os.cpu_count()} cores, load average {load:.1f}; numpy {np.__version__}")
    what = "wall-clock" if args.wall else "CPU"
    print(f"{what} ms per {args.seconds:g} s excerpt, median (slowest) of {args.repeats} draws from the default "
          f"ranges, each the best of {args.tries} runs")
    heads = [f"{rate / 1000:g} kHz {'mono' if channels == 1 else 'stereo'}" for rate, channels in formats]
    print(f"{'effect':<22}" + "".join(f"{head:>20}" for head in heads))
    for name, cells in results.items():
        print(f"{name:<22}" + "".join(f"{f'{median:.2f} ({worst:.2f})':>20}" for median, worst in cells))


if __name__ == "__main__":
    main()
