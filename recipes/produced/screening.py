"""Screening out singing: the bundled model's vocals stem on a few windows of each track.

Up to :data:`SCREEN_WINDOWS` evenly spaced windows of :data:`SCREEN_WINDOW_SECONDS` per track, mixed to mono at
:data:`SCREEN_RATE` (the bundled model's rate), are separated; a window's level is the vocals stem's energy against
the window's, in dB. A track is flagged when its 2nd highest window is above the threshold (one loud window alone
is often a lead instrument). The levels are cached by the file's sha256 in ``<out>/.state/screen.json``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

SCREEN_WINDOWS = 8
SCREEN_WINDOW_SECONDS = 8.0
SCREEN_RATE = 16000

LevelFunction = Callable[[Path, float], "list[float | None]"]


def window_starts(seconds: float, windows: int = SCREEN_WINDOWS, length: float = SCREEN_WINDOW_SECONDS) -> list[float]:
    """Start times of up to ``windows`` evenly spaced windows of ``length`` seconds inside ``seconds``."""
    count = min(windows, int(seconds // length))
    if count <= 0:
        return []
    if count == 1:
        return [max(0.0, (seconds - length) / 2)]
    step = (seconds - length) / (count - 1)
    return [round(index * step, 3) for index in range(count)]


class ModelLevels:
    """The vocals level of a model (the bundled one by default) per window of a file (a :data:`LevelFunction`)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.separator: Any = None  # loaded on first use: a run whose levels are all cached needs no model

    def __call__(self, path: Path, seconds: float) -> list[float | None]:
        from unet_sep import Separator
        from unet_sep.audio import read_audio, resample

        if self.separator is None:
            self.separator = Separator.from_pretrained(self.model, device="cpu")

        windows = []
        for start in window_starts(seconds):
            audio, rate = read_audio(path, offset=start, duration=SCREEN_WINDOW_SECONDS)
            mono = resample(audio.mean(axis=0, keepdims=True).astype(np.float32), rate, SCREEN_RATE)
            windows.append(mono[:, : int(SCREEN_WINDOW_SECONDS * SCREEN_RATE)])
        length = min((w.shape[1] for w in windows), default=0)
        if length == 0:
            return []
        batch = np.stack([w[:, :length] for w in windows])
        vocals = np.asarray(self.separator.separate(batch, SCREEN_RATE)["vocals"])
        return [vocals_level_db(v, m) for v, m in zip(vocals, batch, strict=True)]


def vocals_level_db(vocals: np.ndarray, mixture: np.ndarray) -> float | None:
    """The vocals stem's energy against the mixture's in dB; None for a silent window."""
    mix = float(np.sum(np.square(mixture, dtype=np.float64)))
    if mix <= 1e-8 * mixture.size:
        return None
    return 10 * math.log10(max(float(np.sum(np.square(vocals, dtype=np.float64))), 1e-20) / mix)


def screen_score(levels: list[float | None]) -> float | None:
    """The 2nd highest window level (the highest when only one window has sound)."""
    measured = sorted((v for v in levels if v is not None), reverse=True)
    if not measured:
        return None
    return measured[1] if len(measured) > 1 else measured[0]


def screen(records: list[dict[str, Any]], file_of: Callable[[dict[str, Any]], Path | None], cache_path: Path,
           levels_of: LevelFunction,
           model_name: str, flag_db: float) -> None:
    """Give every candidate record its window levels (``vocals_db``) and score (``vocals_score_db``), measured on
    its file (``file_of``) or taken from the cache, and exclude those scoring above ``flag_db``."""
    from tqdm import tqdm

    from unet_sep.atomic import write_text_atomic
    from unet_sep.errors import FileError

    settings = {"model": model_name, "windows": SCREEN_WINDOWS, "seconds": SCREEN_WINDOW_SECONDS,
                "rate": SCREEN_RATE}
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict) or cache.get("settings") != settings:
        cache = {"settings": settings, "levels": {}}
    todo = [r for r in records if r["decision"] == "candidate"]
    with tqdm(todo, desc="screening", unit="track", file=sys.stderr) as bar:
        for record in bar:
            if record["sha256"] not in cache["levels"]:
                path = file_of(record)
                try:
                    if path is None:
                        raise FileError("its file is gone from the data set folder")
                    levels = levels_of(path, record["seconds"])
                except FileError as error:
                    record.update(decision="excluded", reason=f"screening could not read it: {error.reason}")
                    continue
                cache["levels"][record["sha256"]] = [None if v is None else round(v, 2) for v in levels]
                cache_path.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(cache_path, json.dumps(cache, indent=1) + "\n")
            levels = cache["levels"][record["sha256"]]
            score = screen_score(levels)
            record.update(vocals_db=levels, vocals_score_db=score)
            if score is not None and score > flag_db:
                record.update(decision="excluded",
                              reason=f"vocals screen: 2nd highest window {score:.2f} dB > {flag_db:g} dB")
