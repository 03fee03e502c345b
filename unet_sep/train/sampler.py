"""Training excerpts: an endless, deterministic stream of augmented excerpts of the decoded tracks.

``ExcerptSampler.excerpt(i)`` depends only on ``(seed, i)`` (and the track list), never on global random state,
so a resumed run sees the data an uninterrupted one would. The augmentations are :mod:`unet_sep.train.augment`'s.
"""

from __future__ import annotations

import math
import operator
from typing import Sequence

import numpy as np

from unet_sep.data.tracks import Track
from unet_sep.train.augment import AugmentConfig, db_to_gain, lowpass, lowpass_cutoff_range, rms_db, synthetic_hihats

__all__ = ["MAX_SILENCE_ATTEMPTS", "ExcerptSampler"]

MAX_SILENCE_ATTEMPTS = 10


class ExcerptSampler:
    """Deterministic random training excerpts.

    ``excerpt(index)`` is a pure function of ``(seed, index)`` (given the same tracks, in the same order, and
    settings): every random number comes from ``np.random.default_rng([seed, index, attempt])``. A run resumed at
    step k therefore sees exactly the data an uninterrupted run would, and DDP ranks can take disjoint index
    ranges. The sampler holds no mutable state, so it can be used from several threads at once.

    One excerpt: a track is drawn with probability proportional to its length (every second of audio is equally
    likely to be picked, and short clips are not over-represented), and an offset uniform in
    ``[0, track.length - length]`` (a track shorter than ``length`` is zero-padded at the end). With remix (with
    probability ``remix_probability``) every target draws its own track and offset. While ``skip_silent`` is on
    and any target of the draw is near-silent (RMS before gain below ``silence_db``), the excerpt is drawn again
    with the next ``attempt``, at most 10 attempts; the last draw is kept. Then per stem: channel swap
    (stereo, p=0.5) and a random gain; then, with ``percussion_probability``, synthetic hi-hats added to
    ``percussion_stem``; then, with ``lowpass_probability``, one random low-pass of all stems. No random
    number is drawn for an augmentation whose probability is 0, so recipes that leave one off keep the exact
    data they had before it existed.
    """

    def __init__(
        self,
        tracks: list[Track],
        length: int,
        targets: list[str],
        augment: AugmentConfig,
        seed: int,
        sample_rate: int,
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
        lengths = np.array([track.length for track in tracks], dtype=np.float64)
        if lengths.sum() <= 0:
            raise ValueError("all tracks are empty")
        self.tracks = list(tracks)
        self.length = int(length)
        self.targets = list(targets)
        self.augment = augment
        self.seed = int(seed)
        self.sample_rate = int(sample_rate)
        assert channels is not None  # tracks and targets are non-empty (checked above)
        self.channels = int(channels)
        self._cumulative = np.cumsum(lengths / lengths.sum())
        self._cumulative[-1] = 1.0
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

    # one draw: per target, (track number, offset)
    def _pick(self, rng: np.random.Generator) -> tuple[int, int]:
        number = min(int(np.searchsorted(self._cumulative, rng.random(), side="right")), len(self.tracks) - 1)
        span = max(self.tracks[number].length - self.length, 0)
        return number, int(rng.integers(0, span + 1))

    def _draw(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        augment = self.augment
        if augment.remix and rng.random() < augment.remix_probability:
            return [self._pick(rng) for _ in self.targets]
        return [self._pick(rng)] * len(self.targets)

    def _segment(self, target: str, pick: tuple[int, int]) -> np.ndarray:
        number, offset = pick
        return self.tracks[number].sources[target][:, offset : offset + self.length]

    def _silent(self, picks: list[tuple[int, int]]) -> bool:
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
        gain_on = augment.gain_enabled
        low, high = float(augment.gain_db[0]), float(augment.gain_db[1])
        for row, (target, pick) in enumerate(zip(self.targets, picks, strict=True)):
            segment = self._segment(target, pick)
            if swap_ok and rng.random() < 0.5:
                segment = segment[::-1]
            n = segment.shape[1]
            out[row, :, :n] = segment
            if n < self.length:
                out[row, :, n:] = 0.0
            if gain_on:
                out[row] *= np.float32(db_to_gain(rng.uniform(low, high)))
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
