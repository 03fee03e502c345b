"""Scoring separations the way the field does: museval's BSSEval v4, SiSEC18 medians, MIR-1K's GNSDR.

Everything here is a function of arrays (or of stored scores); nothing reads audio or runs a model.

- :func:`bss_eval` runs ``museval.evaluate`` (BSSEval v4, ``mode="v4"``: distortion filters estimated once on
  the whole track, the metrics then measured per window) on ``{stem: [channels, samples]}`` references and
  estimates, grouping the stems exactly as ``museval.eval_mus_track`` does (vocals and accompaniment are scored
  as their own two-source scenario).
- :func:`score_track` scores one method on one track in 1 s windows (window = hop = one second at the data's
  rate, the SiSEC18 setting), optionally also over the whole clip (one window: MIR-1K's BSS Eval SDR), and
  returns a :class:`TrackScores` that round-trips through museval's per-track JSON format.
- :func:`sisec_medians`: per track, the median over windows ignoring NaN windows (silent references or
  estimates), then the median over tracks: the SiSEC18 protocol, as ``museval.EvalStore`` aggregates.
- :func:`global_scores`: NSDR = SDR(estimate) - SDR(mixture) per clip, and GNSDR, GSIR, GSAR as means over
  clips weighted by their length.
- :func:`mixture_estimates` and :func:`oracle_irm_estimates`: the two baselines (the mixture as every stem's
  estimate; the ideal power ratio mask applied to the mixture's STFT).
- :func:`mix_at_0db`: MIR-1K's mixing, the accompaniment scaled to the voice's energy.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from unet_sep.atomic import write_text_atomic
from unet_sep.data.musdb_support import import_museval
from unet_sep.data.tracks import ACCOMPANIMENT, mix

logger = logging.getLogger(__name__)

METRICS = ("SDR", "SIR", "SAR", "ISR")
GLOBAL_METRICS = ("GNSDR", "GSIR", "GSAR")
WINDOW_SECONDS = 1.0
MUSEVAL_MODE = "v4"
IRM_EXPONENT = 2.0
VOICE = "vocals"  # the stem MIR-1K mixes at 0 dB against the others, and museval scores with the accompaniment
EXTRA_KEY = "unet_sep"  # our own block in museval's per-track JSON (museval's schema allows extra keys)


# ------------------------------------------------------------------------------------------------ museval


def museval_groups(stems: Sequence[str]) -> list[list[str]]:
    """The sets of stems ``museval.eval_mus_track`` scores together, in its order.

    With both vocals and accompaniment, the other stems (vocals included, if at least two) are scored together
    and vocals plus accompaniment again as their own scenario, whose vocals scores are the ones kept. Without
    that pair, all stems are scored together.
    """
    stems = list(stems)
    if VOICE in stems and ACCOMPANIMENT in stems:
        rest = [s for s in stems if s != ACCOMPANIMENT]
        groups = [rest] if len(rest) >= 2 else []
        return groups + [[VOICE, ACCOMPANIMENT]]
    return [stems]


def _as_museval(audio: np.ndarray) -> np.ndarray:
    """``[channels, samples]`` (or ``[samples]``) -> museval's ``(samples, channels)`` float64."""
    array = np.asarray(audio, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise ValueError(f"expected [channels, samples] audio, got shape {array.shape}")
    return np.ascontiguousarray(array.T)


def bss_eval(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    win: int,
    hop: int,
) -> dict[str, dict[str, np.ndarray]]:
    """BSSEval v4 metrics per window: ``{stem: {"SDR"|"SIR"|"SAR"|"ISR": [n_windows]}}``.

    Args:
        references, estimates: ``{stem: [channels, samples]}``; every stem of ``estimates`` needs a reference.
        win, hop: window and hop in samples (``museval.evaluate``'s ``win`` and ``hop``); a window at least as
            long as the audio gives one value over the whole signal.

    Calls ``museval.evaluate(refs, ests, win=win, hop=hop, mode="v4")`` once per group of
    :func:`museval_groups`. Windows where a reference or an estimate is all zeros are NaN (museval's rule);
    infinite values (a perfect estimate) are kept here and stored as NaN in JSON, as museval does.
    """
    museval = import_museval()

    stems = list(estimates)
    missing = [s for s in stems if s not in references]
    if missing:
        raise ValueError(f"no reference for stem(s) {', '.join(missing)}")
    if not stems:
        raise ValueError("no estimates to score")
    if int(win) < 1 or int(hop) < 1:
        raise ValueError(f"window and hop must be positive sample counts, got {win}, {hop}")
    result: dict[str, dict[str, np.ndarray]] = {}
    for group in museval_groups(stems):
        refs = [_as_museval(references[s]) for s in group]
        ests = [_as_museval(estimates[s]) for s in group]
        shapes = {r.shape for r in refs}
        if len(shapes) != 1:
            raise ValueError(f"references of {', '.join(group)} differ in shape: {sorted(shapes)}")
        sdr, isr, sir, sar = museval.evaluate(refs, ests, win=int(win), hop=int(hop), mode=MUSEVAL_MODE)
        for i, stem in enumerate(group):
            result[stem] = {
                "SDR": np.asarray(sdr[i], dtype=np.float64),
                "SIR": np.asarray(sir[i], dtype=np.float64),
                "SAR": np.asarray(sar[i], dtype=np.float64),
                "ISR": np.asarray(isr[i], dtype=np.float64),
            }
    return {stem: result[stem] for stem in stems}


def _quantize(value: float) -> float:
    """museval's storage rule: five decimals, infinities become NaN."""
    value = float(value)
    if not math.isfinite(value):
        return math.nan
    return round(value, 5)


# ------------------------------------------------------------------------------------------- track scores


@dataclass
class TrackScores:
    """One method's scores on one track, as stored in museval's per-track JSON.

    Attributes:
        track: the track's name.
        frames: ``{stem: {metric: per-window values}}`` (NaN for windows museval could not score).
        win, hop: window and hop in seconds (museval's JSON fields ``duration`` and ``time`` step).
        whole: ``{stem: {metric: value}}`` over the whole clip (one window), when computed (MIR-1K style).
        mixture_sdr: ``{stem: whole-clip SDR of the mixture used as the estimate}``: the reference for NSDR.
        n_samples, sample_rate: the clip's length at the rate it was scored at (NSDR's length weights).
        settings: how the scores were made (method, rate, mixing, ...): resuming checks them.
    """

    track: str
    frames: dict[str, dict[str, np.ndarray]]
    win: float = WINDOW_SECONDS
    hop: float = WINDOW_SECONDS
    whole: dict[str, dict[str, float]] = field(default_factory=dict)
    mixture_sdr: dict[str, float] = field(default_factory=dict)
    n_samples: int | None = None
    sample_rate: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def stems(self) -> list[str]:
        return list(self.frames)

    def median(self, stem: str, metric: str) -> float:
        """Median over the windows, ignoring NaN windows; NaN if every window is NaN (or the stem is absent)."""
        values = self.frames.get(stem, {}).get(metric)
        return _nanmedian(values if values is not None else [])

    def medians(self) -> dict[str, dict[str, float]]:
        """``{stem: {metric: median over windows}}``."""
        return {stem: {m: self.median(stem, m) for m in METRICS} for stem in self.frames}

    def nsdr(self, stem: str) -> float:
        """Whole-clip SDR of the estimate minus that of the mixture; NaN when either is unknown."""
        sdr = self.whole.get(stem, {}).get("SDR", math.nan)
        base = self.mixture_sdr.get(stem, math.nan)
        return float(sdr) - float(base)

    def to_museval(self) -> Any:
        """A ``museval.TrackStore`` with these scores (our extra block under ``"unet_sep"``)."""
        museval = import_museval()

        store = museval.TrackStore(track_name=self.track, win=self.win, hop=self.hop)
        for stem, metrics in self.frames.items():
            store.add_target(target_name=stem, values={m: [float(v) for v in metrics[m]] for m in METRICS})
        extra: dict[str, Any] = {"settings": self.settings}
        if self.n_samples is not None:
            extra["n_samples"] = int(self.n_samples)
        if self.sample_rate is not None:
            extra["sample_rate"] = int(self.sample_rate)
        if self.whole:
            extra["whole_clip"] = {s: {m: _quantize(v) for m, v in ms.items()} for s, ms in self.whole.items()}
        if self.mixture_sdr:
            extra["mixture_whole_clip_SDR"] = {s: _quantize(v) for s, v in self.mixture_sdr.items()}
        store.scores[EXTRA_KEY] = extra
        return store

    def to_json(self) -> str:
        """museval's per-track JSON (``TrackStore.json``): ``{"targets": [{"name", "frames": [...]}], ...}``."""
        return self.to_museval().json

    @classmethod
    def from_json(cls, data: Mapping[str, Any], track: str) -> "TrackScores":
        """Read museval's per-track JSON (already parsed); raises ``ValueError`` if it is not that format."""
        targets = data.get("targets") if isinstance(data, Mapping) else None
        if not isinstance(targets, list):
            raise ValueError("not museval's per-track format (no 'targets' list)")
        frames: dict[str, dict[str, np.ndarray]] = {}
        win = hop = WINDOW_SECONDS
        for target in targets:
            if not isinstance(target, Mapping) or not isinstance(target.get("name"), str):
                raise ValueError("not museval's per-track format (a target without a name)")
            rows = target.get("frames")
            if not isinstance(rows, list):
                raise ValueError(f"not museval's per-track format (target {target['name']!r} has no frames)")
            values: dict[str, list[float]] = {m: [] for m in METRICS}
            for row in rows:
                metrics = row.get("metrics") if isinstance(row, Mapping) else None
                if not isinstance(metrics, Mapping):
                    raise ValueError(f"not museval's per-track format (a frame of {target['name']!r} has no metrics)")
                for m in METRICS:
                    values[m].append(_as_float(metrics.get(m)))
            if rows:
                win = float(rows[0].get("duration", win) or win)
                if len(rows) > 1:
                    hop = float(rows[1].get("time", hop)) - float(rows[0].get("time", 0.0))
            frames[target["name"]] = {m: np.asarray(v, dtype=np.float64) for m, v in values.items()}
        extra = data.get(EXTRA_KEY)
        extra = extra if isinstance(extra, Mapping) else {}
        whole = {
            str(s): {str(m): _as_float(v) for m, v in ms.items()}
            for s, ms in (extra.get("whole_clip") or {}).items()
            if isinstance(ms, Mapping)
        }
        mixture_sdr = {str(s): _as_float(v) for s, v in (extra.get("mixture_whole_clip_SDR") or {}).items()}
        n_samples = extra.get("n_samples")
        rate = extra.get("sample_rate")
        return cls(
            track=track,
            frames=frames,
            win=win,
            hop=hop,
            whole=whole,
            mixture_sdr=mixture_sdr,
            n_samples=int(n_samples) if isinstance(n_samples, (int, float)) else None,
            sample_rate=int(rate) if isinstance(rate, (int, float)) else None,
            settings=dict(extra.get("settings") or {}),
        )


def _as_float(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _nanmedian(values: Iterable[float]) -> float:
    array = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=np.float64)
    array = array[~np.isnan(array)]
    return float(np.median(array)) if array.size else math.nan


def score_track(
    track: str,
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    sample_rate: int,
    whole_clip: bool = False,
    mixture_sdr: Mapping[str, float] | None = None,
    settings: Mapping[str, Any] | None = None,
    window_seconds: float = WINDOW_SECONDS,
) -> TrackScores:
    """Score one method's ``estimates`` of one track with museval (BSSEval v4).

    Per window: ``museval.evaluate(..., win=hop=round(window_seconds * sample_rate), mode="v4")``. With
    ``whole_clip``, again with ``win = hop = n_samples`` (one window over the whole clip, as MIR-1K papers
    compute BSS Eval SDR). The returned scores are exactly what :func:`load_track_json` reads back from
    :func:`save_track_json` (five decimals, infinities as NaN), so a resumed run aggregates the same numbers.
    """
    stems = list(estimates)
    lengths = {np.asarray(references[s]).shape[-1] for s in stems if s in references}
    if len(lengths) > 1:
        raise ValueError(f"track {track!r}: references differ in length ({sorted(lengths)})")
    n_samples = lengths.pop() if lengths else 0
    if n_samples == 0:
        raise ValueError(f"track {track!r}: no audio to score")
    window = max(1, int(round(window_seconds * sample_rate)))
    framewise = bss_eval(references, estimates, win=window, hop=window)
    whole: dict[str, dict[str, float]] = {}
    if whole_clip:
        entire = bss_eval(references, estimates, win=n_samples, hop=n_samples)
        whole = {s: {m: float(v[0]) for m, v in ms.items()} for s, ms in entire.items()}
    scores = TrackScores(
        track=track,
        frames=framewise,
        win=float(window_seconds),
        hop=float(window_seconds),
        whole=whole,
        mixture_sdr=dict(mixture_sdr or {}),
        n_samples=int(n_samples),
        sample_rate=int(sample_rate),
        settings=dict(settings or {}),
    )
    return TrackScores.from_json(json.loads(scores.to_json()), track)


def save_track_json(path: Path, scores: TrackScores) -> Path:
    """Write ``scores`` in museval's per-track JSON format, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    store = scores.to_museval()
    store.validate()  # museval's own schema check
    write_text_atomic(path, store.json)
    return path


def load_track_json(path: Path, track: str | None = None) -> TrackScores:
    """Read a per-track JSON in museval's format (ours or another method's); ``ValueError`` if unreadable."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from error
    try:
        return TrackScores.from_json(data, track or path.stem)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error


def find_result_files(folder: Path) -> dict[str, Path]:
    """``{track: json path}`` for every per-track JSON under ``folder`` (searched recursively, as museval's
    ``EvalStore.add_eval_dir`` finds ``test/**/*.json``); the first file wins when a name repeats."""
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).rglob("*.json")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(folder).parts):
            continue
        if path.stem in found:
            logger.warning("%s: two results for track %r; using %s", folder, path.stem, found[path.stem])
            continue
        found[path.stem] = path
    return found


# ------------------------------------------------------------------------------------------------ baselines


def mixture_estimates(references: Mapping[str, np.ndarray], mixture: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The "mixture" baseline: the mixture (default: the sum of the references) as every stem's estimate."""
    if mixture is None:
        mixture = mix(references)
    return {stem: mixture for stem in references}


def oracle_irm_estimates(
    references: Mapping[str, np.ndarray],
    n_fft: int,
    hop_length: int,
    exponent: float = IRM_EXPONENT,
    mixture: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The "oracle-irm" baseline: ideal ratio masks from the true sources applied to the mixture's STFT.

    ``mask_i = |S_i|^p / sum_j |S_j|^p`` (``p = 2``: the power IRM, Spleeter's separation exponent) at the
    given STFT (:func:`unet_sep.dsp.stft.stft`, Spleeter's framing), times the mixture's STFT, inverted with
    :func:`unet_sep.dsp.stft.istft`. The ceiling of any mask-based model with that STFT. Computed one channel
    at a time in float32 to bound memory on full-length songs.
    """
    import torch

    from unet_sep.dsp.stft import istft, stft

    stems = list(references)
    if mixture is None:
        mixture = mix(references)
    mixture = np.asarray(mixture, dtype=np.float32)
    if mixture.ndim == 1:
        mixture = mixture[None]
    channels, length = mixture.shape
    out = {stem: np.empty((channels, length), dtype=np.float32) for stem in stems}
    with torch.no_grad():
        for c in range(channels):
            powers = []
            for stem in stems:
                reference = np.asarray(references[stem], dtype=np.float32).reshape(channels, length)[c]
                spectrum = stft(torch.from_numpy(np.ascontiguousarray(reference)), n_fft, hop_length)
                powers.append(spectrum.abs() ** exponent)
            total = torch.stack(powers).sum(dim=0)
            spec = stft(torch.from_numpy(np.ascontiguousarray(mixture[c])), n_fft, hop_length)
            denominator = total + torch.finfo(total.dtype).tiny
            for stem, power in zip(stems, powers, strict=True):
                estimate = istft(spec * (power / denominator), length, n_fft, hop_length)
                out[stem][c] = estimate.numpy()
    return out


def mix_at_0db(sources: Mapping[str, np.ndarray], voice: str = VOICE) -> tuple[dict[str, np.ndarray], float]:
    """MIR-1K's mixing: the accompaniment scaled to the voice's energy (0 dB voice-to-accompaniment ratio).

    Every stem but ``voice`` is multiplied by one gain ``sqrt(E_voice / E_accompaniment)``, where the
    accompaniment is the sum of those stems, so the references stay consistent with the new mixture (their
    sum). Returns the scaled sources and the gain (1.0, with a warning, when either part is silent).
    """
    if voice not in sources:
        raise ValueError(f"0 dB mixing needs a {voice!r} stem; the stems are {', '.join(sources)}")
    others = [s for s in sources if s != voice]
    if not others:
        raise ValueError("0 dB mixing needs an accompaniment besides the voice")
    voice_energy = float(np.sum(np.asarray(sources[voice], dtype=np.float64) ** 2))
    rest = np.sum([np.asarray(sources[s], dtype=np.float64) for s in others], axis=0)
    rest_energy = float(np.sum(rest**2))
    if voice_energy <= 0 or rest_energy <= 0:
        logger.warning("0 dB mixing: the %s is silent; mixing as is", "voice" if voice_energy <= 0 else "accompaniment")
        return {s: np.asarray(a, dtype=np.float32) for s, a in sources.items()}, 1.0
    gain = math.sqrt(voice_energy / rest_energy)
    scaled = {
        s: (
            np.asarray(a, dtype=np.float32) if s == voice
            else (np.asarray(a, dtype=np.float64) * gain).astype(np.float32)
        )
        for s, a in sources.items()
    }
    return scaled, gain


# ---------------------------------------------------------------------------------------------- aggregates


def sisec_medians(tracks: Iterable[TrackScores]) -> dict[str, dict[str, float]]:
    """SiSEC18: per track the median over windows (NaN windows ignored), then the median over tracks.

    Returns ``{stem: {metric: value}}`` for every stem any track has; tracks whose windows are all NaN for a
    stem are left out of that stem's median (as pandas' median in ``museval.EvalStore`` does).
    """
    per_stem: dict[str, dict[str, list[float]]] = {}
    for scores in tracks:
        for stem in scores.frames:
            bucket = per_stem.setdefault(stem, {m: [] for m in METRICS})
            for metric in METRICS:
                bucket[metric].append(scores.median(stem, metric))
    return {stem: {m: _nanmedian(v) for m, v in metrics.items()} for stem, metrics in per_stem.items()}


def global_scores(tracks: Iterable[TrackScores]) -> dict[str, dict[str, float]]:
    """MIR-1K's global figures per stem, means over clips weighted by clip length (samples).

    ``GNSDR``: of NSDR = whole-clip SDR(estimate) - whole-clip SDR(mixture); ``GSIR``, ``GSAR``: of the
    whole-clip SIR and SAR. Clips without whole-clip scores (or with NaN ones) are left out of that figure;
    a figure with no clip is NaN.
    """
    sums: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for scores in tracks:
        weight = float(scores.n_samples or 0)
        for stem in scores.frames:
            bucket = sums.setdefault(stem, {m: [] for m in GLOBAL_METRICS})
            if weight <= 0 or stem not in scores.whole:
                continue
            values = {
                "GNSDR": scores.nsdr(stem),
                "GSIR": scores.whole[stem].get("SIR", math.nan),
                "GSAR": scores.whole[stem].get("SAR", math.nan),
            }
            for metric, value in values.items():
                if not math.isnan(value):
                    bucket[metric].append((value, weight))
    result: dict[str, dict[str, float]] = {}
    for stem, metrics in sums.items():
        result[stem] = {}
        for metric, pairs in metrics.items():
            total = sum(w for _, w in pairs)
            result[stem][metric] = sum(v * w for v, w in pairs) / total if total > 0 else math.nan
    return result


def track_medians(tracks: Iterable[TrackScores], stem: str, metric: str = "SDR") -> list[float]:
    """Each track's median over windows for one stem and metric (the values a SiSEC box plot shows)."""
    return [scores.median(stem, metric) for scores in tracks if stem in scores.frames]
