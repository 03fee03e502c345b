"""Training excerpts: an endless, deterministic stream of augmented excerpts of the decoded tracks.

``ExcerptSampler.excerpt(i)`` depends only on ``(seed, i)`` (and the track list), never on global random state,
so a resumed run sees the data an uninterrupted one would. The augmentations are :mod:`unet_sep.train.augment`'s.
"""

from __future__ import annotations

import logging
import math
import operator
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from unet_sep.data.load import load_tracks
from unet_sep.data.stem_sources import StemSourceConfig
from unet_sep.data.tracks import Track
from unet_sep.dsp.measures import db_to_gain, rms_db
from unet_sep.train.augment import AugmentConfig, lowpass, lowpass_cutoff_range, synthetic_hihats
from unet_sep.train.vocal_effects import apply_vocal_effects

__all__ = ["MAX_SILENCE_ATTEMPTS", "ExcerptSampler", "StemPool", "load_stem_pool"]

logger = logging.getLogger(__name__)

MAX_SILENCE_ATTEMPTS = 10


@dataclass(frozen=True)
class StemPool:
    """Tracks of another data set that lend the target ``stem`` with probability ``probability`` per excerpt
    (:class:`~unet_sep.data.stem_sources.StemSourceConfig`, loaded): ``tracks[i].sources[source_stem]``."""

    stem: str
    source_stem: str
    probability: float
    tracks: list[Track]
    gain_db: tuple[float, float] | None = None


class _Catalogue:
    """Tracks with the length-proportional draw: every second of audio is equally likely."""

    def __init__(self, tracks: list[Track]) -> None:
        lengths = np.array([track.length for track in tracks], dtype=np.float64)
        if not tracks or lengths.sum() <= 0:
            raise ValueError("all tracks are empty")
        self.tracks = tracks
        self.cumulative = np.cumsum(lengths / lengths.sum())
        self.cumulative[-1] = 1.0

    def pick(self, rng: np.random.Generator, length: int) -> tuple[int, int]:
        """(track number, offset) of a random excerpt of ``length`` samples."""
        number = min(int(np.searchsorted(self.cumulative, rng.random(), side="right")), len(self.tracks) - 1)
        span = max(self.tracks[number].length - length, 0)
        return number, int(rng.integers(0, span + 1))


# one target's draw: (catalogue: MAIN or a pool's number, track number, offset)
_Pick = tuple[int, int, int]
MAIN = -1


class ExcerptSampler:
    """Deterministic random training excerpts.

    ``excerpt(index)`` is a pure function of ``(seed, index)`` (given the same tracks, in the same order, and
    settings): every random number comes from ``np.random.default_rng([seed, index, attempt])``. A run resumed at
    step k therefore sees exactly the data an uninterrupted run would, and DDP ranks can take disjoint index
    ranges. The sampler holds no mutable state, so it can be used from several threads at once.

    One excerpt: a track is drawn with probability proportional to its length (every second of audio is equally
    likely to be picked, and short clips are not over-represented), and an offset uniform in
    ``[0, track.length - length]`` (a track shorter than ``length`` is zero-padded at the end). With remix (with
    probability ``remix_probability``) every target draws its own track and offset. Then each target that has
    stem pools (``pools``: other data sets lending that stem) takes its excerpt from pool i with that pool's
    probability (one uniform number per such target, so a sampler without pools draws exactly what it did before
    pools existed), and its gain from the pool's range when it has one. While ``skip_silent`` is on
    and any target of the draw is near-silent (RMS before gain below ``silence_db``), the excerpt is drawn again
    with the next ``attempt``, at most 10 attempts; the last draw is kept. Then per stem: channel swap
    (stereo, p=0.5) and a random gain; then the vocal effects of ``augment.vocal_effects`` (EQ, compression,
    saturation, doubling, reverb, each with its probability) on its ``stem``; then, with
    ``percussion_probability``, synthetic hi-hats added to ``percussion_stem``; then, with
    ``lowpass_probability``, one random low-pass of all stems. No random number is drawn for an augmentation
    whose probability is 0, so recipes that leave one off keep the exact data they had before it existed.
    """

    def __init__(
        self,
        tracks: list[Track],
        length: int,
        targets: list[str],
        augment: AugmentConfig,
        seed: int,
        sample_rate: int,
        pools: Sequence[StemPool] = (),
    ) -> None:
        if not tracks:
            raise ValueError("ExcerptSampler needs at least one track")
        if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
            raise ValueError(f"excerpt length must be a positive number of samples, got {length!r}")
        if not targets or len(set(targets)) != len(targets):
            raise ValueError(f"targets must be a non-empty list of distinct stems, got {targets!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        augment.validate()
        if augment.percussion_probability > 0 and augment.percussion_stem not in targets:
            raise ValueError(f"augment.percussion_stem {augment.percussion_stem!r} is not one of the targets {targets}")
        if augment.vocal_effects.enabled and augment.vocal_effects.stem not in targets:
            raise ValueError(f"augment.vocal_effects.stem {augment.vocal_effects.stem!r} is not one of the targets "
                             f"{targets}")
        channels = None
        for track in tracks:
            missing = [t for t in targets if t not in track.sources]
            if missing:
                raise ValueError(f"track {track.name!r} has no {', '.join(missing)} stem")
            for target in targets:
                shape = track.sources[target].shape
                if len(shape) != 2 or shape[1] != track.length:
                    raise ValueError(f"track {track.name!r}: stems must be [channels, samples] of equal length")
                if channels is None:
                    channels = shape[0]
                elif shape[0] != channels:
                    raise ValueError(f"track {track.name!r} has {shape[0]} channels, other tracks {channels}")
        self._main = _Catalogue(list(tracks))
        assert channels is not None  # tracks and targets are non-empty (checked above)
        self._pools = [_check_pool(pool, targets, channels) for pool in pools]
        self._pool_catalogues = [_Catalogue(list(pool.tracks)) for pool in self._pools]
        # per target row: the (pool number, cumulative probability) of its pools, in the order given
        self._row_pools: list[list[tuple[int, float]]] = [[] for _ in targets]
        totals = [0.0] * len(targets)
        for number, pool in enumerate(self._pools):
            row = list(targets).index(pool.stem)
            totals[row] += pool.probability
            self._row_pools[row].append((number, totals[row]))
        if max(totals) > 1.0 + 1e-9:
            raise ValueError("the probabilities of the pools of one stem add up to more than 1")
        self.tracks = list(tracks)
        self.length = int(length)
        self.targets = list(targets)
        self.augment = augment
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self._lowpass_range = lowpass_cutoff_range(self.sample_rate)

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of one excerpt: ``(n_targets, channels, length)``."""
        return len(self.targets), self.channels, self.length

    def excerpt(self, index: int) -> np.ndarray:
        """float32 ``[n_targets, channels, length]``: the augmented target stems of excerpt ``index``.

        The mixture is their sum (``excerpt(i).sum(axis=0)``).
        """
        out = np.empty(self.shape, dtype=np.float32)
        self._fill(out, index)
        return out

    def batch(self, indices: Sequence[int]) -> np.ndarray:
        """float32 ``[batch, n_targets, channels, length]``: ``excerpt(i)`` for each index."""
        indices = list(indices)
        out = np.empty((len(indices), *self.shape), dtype=np.float32)
        for row, index in enumerate(indices):
            self._fill(out[row], index)
        return out

    # one draw: per target, (catalogue, track number, offset)
    def _draw(self, rng: np.random.Generator) -> list[_Pick]:
        augment, length = self.augment, self.length
        if augment.remix and rng.random() < augment.remix_probability:
            picks = [(MAIN, *self._main.pick(rng, length)) for _ in self.targets]
        else:
            picks = [(MAIN, *self._main.pick(rng, length))] * len(self.targets)
        for row, row_pools in enumerate(self._row_pools):
            if not row_pools:
                continue
            draw = rng.random()
            for number, threshold in row_pools:
                if draw < threshold:
                    picks[row] = (number, *self._pool_catalogues[number].pick(rng, length))
                    break
        return picks

    def _segment(self, target: str, pick: _Pick) -> np.ndarray:
        catalogue, number, offset = pick
        if catalogue == MAIN:
            source = self.tracks[number].sources[target]
        else:
            pool = self._pools[catalogue]
            source = pool.tracks[number].sources[pool.source_stem]
        return source[:, offset : offset + self.length]

    def _gain_range(self, pick: _Pick) -> tuple[float, float]:
        gain_db = self.augment.gain_db
        if pick[0] != MAIN and self._pools[pick[0]].gain_db is not None:
            gain_db = self._pools[pick[0]].gain_db  # type: ignore[assignment]
        return float(gain_db[0]), float(gain_db[1])

    def _silent(self, picks: list[_Pick]) -> bool:
        threshold = self.augment.silence_db
        return any(
            rms_db(self._segment(target, pick), length=self.length) < threshold
            for target, pick in zip(self.targets, picks, strict=True)
        )

    def _fill(self, out: np.ndarray, index: int) -> None:
        index = operator.index(index)
        if index < 0:
            raise ValueError(f"excerpt index must be >= 0, got {index}")
        augment = self.augment
        attempts = MAX_SILENCE_ATTEMPTS if augment.skip_silent else 1
        for attempt in range(attempts):
            rng = np.random.default_rng([self.seed, index, attempt])
            picks = self._draw(rng)
            if not augment.skip_silent or not self._silent(picks):
                break
        swap_ok = augment.channel_swap and self.channels == 2
        gain_on = augment.gain_enabled or bool(self._pools)
        for row, (target, pick) in enumerate(zip(self.targets, picks, strict=True)):
            segment = self._segment(target, pick)
            if swap_ok and rng.random() < 0.5:
                segment = segment[::-1]
            n = segment.shape[1]
            out[row, :, :n] = segment
            if n < self.length:
                out[row, :, n:] = 0.0
            if gain_on:
                low, high = self._gain_range(pick)
                out[row] *= np.float32(db_to_gain(rng.uniform(low, high)))
        effects = augment.vocal_effects
        if effects.enabled:
            row = self.targets.index(effects.stem)
            out[row] = apply_vocal_effects(rng, out[row], self.sample_rate, effects)
        if augment.percussion_probability > 0 and rng.random() < augment.percussion_probability:
            row = self.targets.index(augment.percussion_stem)
            level = rms_db(out[row])
            if math.isfinite(level):
                level += rng.uniform(float(augment.percussion_db[0]), float(augment.percussion_db[1]))
                hats = synthetic_hihats(rng, self.length, self.sample_rate, self.channels)
                out[row] += np.float32(db_to_gain(level)) * hats
        if augment.lowpass_probability > 0 and self._lowpass_range is not None:
            if rng.random() < augment.lowpass_probability:
                cutoff = rng.uniform(*self._lowpass_range)
                out[...] = lowpass(out, self.sample_rate, cutoff)


def _check_pool(pool: StemPool, targets: list[str], channels: int) -> StemPool:
    """``pool`` if it lends one of ``targets`` with a probability in (0, 1] from tracks of ``channels`` channels."""
    if pool.stem not in targets:
        raise ValueError(f"stem pool {pool.stem!r} is not one of the targets {targets}")
    if not 0.0 < pool.probability <= 1.0:
        raise ValueError(f"stem pool probability must be in (0, 1], got {pool.probability!r}")
    if not pool.tracks:
        raise ValueError(f"the stem pool of {pool.stem!r} has no tracks")
    for track in pool.tracks:
        array = track.sources.get(pool.source_stem)
        if array is None:
            raise ValueError(f"track {track.name!r} has no {pool.source_stem} stem")
        if array.ndim != 2 or array.shape[0] != channels:
            raise ValueError(f"track {track.name!r} of the {pool.stem} pool is not [{channels}, samples]")
    return pool


def load_stem_pool(source: StemSourceConfig, cache_dir: str | None, sample_rate: int, channels: int) -> StemPool:
    """Decode (or map from the cache ``cache_dir``) the tracks of ``source``'s split into a :class:`StemPool`."""
    logger.info("loading %s stems from %s (split %s)", source.stem, source.root, source.split)
    tracks = load_tracks(source.data_config(cache_dir), "train", sample_rate, channels)
    return StemPool(source.stem, source.stem_in_source, float(source.probability), tracks,
                    None if source.gain_db is None else (float(source.gain_db[0]), float(source.gain_db[1])))
