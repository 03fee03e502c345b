"""A planned evaluation and its run: :class:`Evaluation` goes through the tracks one at a time.

For each track: decode the references at the data set's own rate (:func:`unet_sep.data.load.load_track`),
separate the mixture with every model, build the two baselines ("mixture" and "oracle-irm"), score each method
with museval (:mod:`unet_sep.evaluate.score`) and write ``OUT/<method>/<track>.json`` in museval's per-track
format. A track whose JSON already exists (with the same settings) is read back instead of being separated and
scored again, so an interrupted evaluation resumes where it stopped. :func:`unet_sep.evaluate.plan.plan_evaluation`
makes the :class:`Evaluation`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from unet_sep.data.config import DataConfig
from unet_sep.data.load import load_track
from unet_sep.data.tracks import TrackSpec, mix
from unet_sep.errors import one_line
from unet_sep.evaluate.score import (
    IRM_EXPONENT,
    MUSEVAL_MODE,
    VOICE,
    WINDOW_SECONDS,
    TrackScores,
    load_track_json,
    mix_at_0db,
    mixture_estimates,
    oracle_irm_estimates,
    save_track_json,
    score_track,
)

__all__ = ["BASELINES", "MIXTURE", "ORACLE", "Evaluation", "EvaluationError", "EvaluationResult", "Method"]

logger = logging.getLogger(__name__)

MIXTURE = "mixture"
ORACLE = "oracle-irm"
BASELINES = (MIXTURE, ORACLE)
# settings that must match for a stored per-track JSON to be reused
RESUME_KEYS = ("sample_rate", "channels", "mir1k_mixing", "window_seconds", "museval_mode", "n_fft", "hop_length",
               "exponent", "model_sha256")


class EvaluationError(ValueError):
    """Arguments or data that cannot be evaluated as asked; the message is one line meant for the user."""


@dataclass
class Method:
    """One column of the comparison.

    ``kind``: "model" (separated here with ``separator``), "mixture" or "oracle-irm" (baselines computed here),
    or "stored" (per-track museval JSON read from ``files``, scored elsewhere).
    """

    name: str
    kind: str
    stems: list[str]
    source: str = ""
    separator: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    fingerprint: str = ""  # models: a hash of the config and weights files, so a retrained model is scored again

    @property
    def computed(self) -> bool:
        return self.kind != "stored"


@dataclass
class EvaluationResult:
    """What :meth:`Evaluation.run` did.

    ``scores``: method -> its :class:`TrackScores`, one per evaluated track (stored methods: those of the
    evaluated tracks they have). ``scored``/``resumed``: (method, track) pairs scored now / read back from
    earlier runs. ``failed``: (track, one-line reason) for tracks that could not be evaluated.
    """

    methods: list[str]
    stems: list[str]
    tracks: list[str]
    scores: dict[str, list[TrackScores]]
    scored: int = 0
    resumed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    mir1k_mixing: bool = False
    title: str = ""


@dataclass
class Evaluation:
    """A planned evaluation (see :func:`unet_sep.evaluate.plan.plan_evaluation`); :meth:`run` does it."""

    data: DataConfig
    specs: list[TrackSpec]  # the split's tracks, as :func:`unet_sep.data.load.list_tracks` lists them
    sample_rate: int
    channels: int
    out: Path
    methods: list[Method]
    stems: list[str]
    n_fft: int
    hop_length: int
    mir1k_mixing: bool = False
    description: str = ""

    @property
    def track_names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def settings(self, method: Method) -> dict[str, Any]:
        """What a method's per-track JSON records about how it was scored (resuming compares these)."""
        settings: dict[str, Any] = {
            "method": method.name,
            "kind": method.kind,
            "source": method.source,
            "stems": list(method.stems),
            "data": self.description,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "mir1k_mixing": self.mir1k_mixing,
            "window_seconds": WINDOW_SECONDS,
            "museval_mode": MUSEVAL_MODE,
        }
        if method.kind == ORACLE:
            settings.update(n_fft=self.n_fft, hop_length=self.hop_length, exponent=IRM_EXPONENT)
        if method.kind == "model" and method.fingerprint:
            settings["model_sha256"] = method.fingerprint
        return settings

    def result_path(self, method: Method, track: str) -> Path:
        return self.out / method.name / f"{track}.json"

    def run(self, progress: bool = False, notify: Callable[[str], None] | None = None) -> EvaluationResult:
        """Evaluate every track; ``progress`` shows a tqdm bar over tracks (stderr, with ETA).

        ``notify(message)`` receives one line per failed track (default: logged as a warning). A failing track
        is reported and skipped; KeyboardInterrupt propagates (what was scored so far is on disk).
        """
        from tqdm import tqdm

        notify = notify or (lambda message: logger.warning("%s", message))
        started = time.perf_counter()
        computed = [m for m in self.methods if m.computed]
        order = sorted(computed, key=lambda m: m.kind != MIXTURE)  # the mixture first: NSDR needs its SDR
        per_track: dict[str, dict[str, TrackScores]] = {}
        result = EvaluationResult(
            methods=[m.name for m in self.methods], stems=list(self.stems), tracks=[], scores={},
            mir1k_mixing=self.mir1k_mixing,
            title=f"{self.description} ({len(self.specs)} tracks, {self.sample_rate} Hz)",
        )
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(self.specs), unit="track", desc="evaluate", file=sys.stderr, disable=not progress,
                   dynamic_ncols=True)
        try:
            for spec in self.specs:
                bar.set_postfix_str(spec.name if len(spec.name) <= 40 else spec.name[:37] + "...", refresh=True)
                try:
                    scores, scored, resumed = self._track(spec, order)
                except KeyboardInterrupt:
                    raise
                except Exception as error:  # one track's problem: report it in one line and go on
                    logger.info("%s: evaluation failed", spec.name, exc_info=True)
                    message = one_line(error)
                    result.failed.append((spec.name, message))
                    notify(f"error: {spec.name}: {message}")
                else:
                    per_track[spec.name] = scores
                    result.scored += scored
                    result.resumed += resumed
                    logger.info("%s: %d method(s) scored, %d read back", spec.name, scored, resumed)
                bar.update(1)
        finally:
            bar.close()

        result.tracks = [name for name in self.track_names if name in per_track]
        for method in self.methods:
            if method.computed:
                result.scores[method.name] = [per_track[t][method.name] for t in result.tracks]
            else:
                result.scores[method.name] = self._stored(method, result)
        result.seconds = time.perf_counter() - started
        return result

    # ---- one track -------------------------------------------------------------------------------------
    def _track(self, spec: TrackSpec, order: list[Method]) -> tuple[dict[str, TrackScores], int, int]:
        name = spec.name
        scores: dict[str, TrackScores] = {}
        todo: list[Method] = []
        for method in order:
            stored = self._reusable(method, name)
            if stored is None:
                todo.append(method)
            else:
                scores[method.name] = stored
        if not todo:
            return scores, 0, len(scores)

        track = load_track(spec, self.sample_rate, self.channels)
        references = {stem: np.asarray(track.sources[stem], dtype=np.float32) for stem in self.stems}
        if self.mir1k_mixing:
            references, gain = mix_at_0db(references, VOICE)
            logger.info("%s: accompaniment scaled by %.3f for a 0 dB mixture", name, gain)
        mixture = mix(references)
        mixture_sdr: dict[str, float] = {}
        if self.mir1k_mixing and MIXTURE in scores:
            mixture_sdr = {s: v["SDR"] for s, v in scores[MIXTURE].whole.items()}

        for method in todo:
            estimates = self._estimates(method, references, mixture)
            refs = {stem: references[stem] for stem in method.stems}
            result = score_track(
                name, refs, estimates, self.sample_rate, whole_clip=self.mir1k_mixing,
                mixture_sdr={s: mixture_sdr[s] for s in method.stems if s in mixture_sdr},
                settings=self.settings(method),
            )
            if method.kind == MIXTURE and self.mir1k_mixing:
                mixture_sdr = {s: v["SDR"] for s, v in result.whole.items()}
                result.mixture_sdr = dict(mixture_sdr)
            save_track_json(self.result_path(method, name), result)
            scores[method.name] = result
        return scores, len(todo), len(order) - len(todo)

    def _estimates(
        self, method: Method, references: dict[str, np.ndarray], mixture: np.ndarray
    ) -> dict[str, np.ndarray]:
        if method.kind == MIXTURE:
            return mixture_estimates(references, mixture)
        if method.kind == ORACLE:
            return oracle_irm_estimates(references, self.n_fft, self.hop_length, IRM_EXPONENT, mixture=mixture)
        separated = method.separator.separate(mixture, self.sample_rate)
        return {stem: np.asarray(separated[stem], dtype=np.float32) for stem in method.stems}

    def _reusable(self, method: Method, track: str) -> TrackScores | None:
        """The stored scores of ``method`` on ``track`` if they exist and were made the way this run would."""
        path = self.result_path(method, track)
        if not path.is_file():
            return None
        try:
            scores = load_track_json(path, track)
        except ValueError as error:
            logger.warning("%s; scoring again", error)
            return None
        missing = [s for s in method.stems if s not in scores.frames]
        if missing:
            logger.warning("%s lacks stem(s) %s; scoring again", path, ", ".join(missing))
            return None
        wanted = self.settings(method)
        changed = [k for k in RESUME_KEYS if k in scores.settings and k in wanted and scores.settings[k] != wanted[k]]
        if changed:
            logger.warning("%s was made with other settings (%s); scoring again", path,
                           ", ".join(f"{k} {scores.settings[k]!r} -> {wanted[k]!r}" for k in changed))
            return None
        if self.mir1k_mixing and any(s not in scores.whole for s in method.stems):
            logger.warning("%s has no whole-clip scores (needed for NSDR); scoring again", path)
            return None
        return scores

    def _stored(self, method: Method, result: EvaluationResult) -> list[TrackScores]:
        scores = []
        missing = []
        for track in result.tracks:
            path = method.files.get(track)
            if path is None:
                missing.append(track)
                continue
            try:
                stored = load_track_json(path, track)
            except ValueError as error:
                logger.warning("%s", error)
                missing.append(track)
                continue
            stored.frames = {s: v for s, v in stored.frames.items() if s in self.stems}
            if not stored.frames:
                logger.warning("%s scores none of the stems %s", path, ", ".join(self.stems))
                missing.append(track)
                continue
            scores.append(stored)
        if missing:
            result.missing[method.name] = missing
        return scores
