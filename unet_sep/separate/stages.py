"""The two ends of a separation around the engine: into the model's rate and channels, and back out.

:class:`InputStage` checks blocks ``[B, C_in, n]`` at the input's rate, groups their channels for the model
(see :mod:`unet_sep.separate.channels`) and resamples them to the model's rate. :class:`OutputStage` takes the
engine's stems (and extension weights) at the model's rate, resamples them back, restores the input's channel
layout, shares out what the model's band cannot carry (see :func:`share_residual`) and releases exactly as
many samples as came in. Both are plain per-signal state machines, so the same code runs in one thread
(:meth:`Separator.stream <unet_sep.separate.separator.Separator.stream>`) or in the reader and writer threads
of the batched file pipeline (:mod:`unet_sep.separate.reader`, :mod:`unet_sep.separate.writer`).
"""

from __future__ import annotations

import numpy as np

from unet_sep.audio.resample import StreamResampler, check_sample_rate
from unet_sep.config import MAX_CHANNELS
from unet_sep.errors import FileError, SettingError
from unet_sep.separate.channels import from_groups, groups_per_item, to_groups

# Input samples per block fed to a separation (about 6 s at 44.1 kHz): files are decoded, and arrays passed, in
# blocks of this size, so every step works on arrays of a few MB.
BLOCK_SAMPLES = 262144
# Output samples held back until the end, so the resampled output can be cut to the input's exact length.
HOLDBACK = 512


class InvalidAudioError(FileError, ValueError):
    """Audio that cannot be separated (NaN or infinite samples, wrong shape); names its file when there is one."""


def check_layout(shape: tuple[int, ...], samples: int | None = None) -> None:
    """Raise :class:`InvalidAudioError` unless ``shape`` is ``[..., channels, samples]`` audio, before anything is
    allocated for it (a stream's first block gives ``[batch, channels, n]``; ``samples`` is a whole signal's length).

    A channel count above :data:`MAX_CHANNELS` is refused, and so is, for a whole signal, more than two channels
    with fewer samples than channels: both are what a ``[samples, channels]`` array looks like.
    """
    channels = int(shape[-2])
    if channels < 1:
        raise InvalidAudioError(f"audio has no channels (shape {tuple(shape)})")
    if channels > MAX_CHANNELS or (samples is not None and channels > 2 and samples < channels):
        layout = "[batch, channels, samples]" if len(shape) == 3 else "[channels, samples]"
        raise InvalidAudioError(
            f"expected {layout}; got {tuple(shape)}, which reads as {channels} channels of {shape[-1]} samples: "
            f"transpose a soundfile [samples, channels] array (x.T); audio has at most {MAX_CHANNELS} channels here"
        )


def check_array(value: object, setting: str, types: tuple[type, ...]) -> None:
    """A :class:`~unet_sep.errors.SettingError` naming ``setting`` unless ``value`` is one of ``types`` (numpy arrays,
    and torch tensors where they are accepted); the message names the accepted types."""
    if not isinstance(value, types):
        accepted = " or ".join(_ARRAY_TYPE_NAMES.get(t.__name__, t.__name__) for t in types)
        raise SettingError(setting, f"must be {accepted} of samples, got {type(value).__name__}")


_ARRAY_TYPE_NAMES = {"ndarray": "a numpy array", "Tensor": "a torch tensor"}


class InputStage:
    """Blocks ``[B, C_in, n]`` at ``in_rate`` -> model blocks ``[G, C, m]`` at ``model_rate``."""

    def __init__(self, batch: int, in_channels: int, in_rate: int, model_rate: int, model_channels: int) -> None:
        in_rate = check_sample_rate(in_rate)  # the rate of every array, stream and file enters here
        if not 1 <= in_channels <= MAX_CHANNELS:  # arrays got check_layout's hint already; files get this
            raise InvalidAudioError(f"{in_channels} channels: unet-sep separates 1 to {MAX_CHANNELS} channels")
        self.batch = batch
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.groups = batch * groups_per_item(in_channels, model_channels)
        self.consumed = 0
        self._resampler = StreamResampler(in_rate, model_rate, self.groups * model_channels)

    def check(self, block: np.ndarray) -> np.ndarray:
        """The block as float32, or :class:`InvalidAudioError` for a wrong shape or NaN/inf samples (a
        :class:`~unet_sep.errors.SettingError` for a block that is not a numpy array)."""
        check_array(block, "blocks", (np.ndarray,))
        if block.ndim != 3 or block.shape[:2] != (self.batch, self.in_channels):
            raise InvalidAudioError(f"block of shape {block.shape} does not match "
                                    f"[{self.batch}, {self.in_channels}, n]")
        finite = np.isfinite(block)
        if not finite.all():
            bad = int(np.flatnonzero(~finite.all(axis=(0, 1)))[0])
            raise InvalidAudioError(f"audio contains NaN or infinite samples (first at sample {self.consumed + bad})")
        return block.astype(np.float32, copy=False)

    def process(self, block: np.ndarray) -> np.ndarray:
        """A checked float32 block -> its samples at the model's rate, ``[G, C, m]``."""
        self.consumed += block.shape[-1]
        grouped = to_groups(block, self.model_channels)
        out = self._resampler.process(grouped.reshape(self.groups * self.model_channels, -1))
        return out.reshape(self.groups, self.model_channels, -1)

    def flush(self) -> np.ndarray:
        """The resampler's last samples, ``[G, C, m]``."""
        return self._resampler.flush().reshape(self.groups, self.model_channels, -1)


class OutputStage:
    """Engine output at the model's rate -> stems ``[S, B, C_in, n]`` at the input's rate, as long as the input.

    Feed every input block with :meth:`add_input` (before or after the matching output) and the engine's
    output with :meth:`push`; the last call passes ``final=True``. ``holdback`` output samples are kept until then
    (:data:`HOLDBACK`; a live session, which never ends that way, keeps none).
    """

    def __init__(
        self, batch: int, in_channels: int, in_rate: int, model_rate: int, model_channels: int, n_stems: int,
        share: bool, holdback: int = HOLDBACK,
    ) -> None:
        self.holdback = holdback
        self.batch = batch
        self.in_channels = in_channels
        self.model_channels = model_channels
        self.groups = batch * groups_per_item(in_channels, model_channels)
        self.n_stems = n_stems
        self.share = share
        self.layers = 2 if share else 1  # stems, and their extension weights when the residual is shared out
        self._resampler = StreamResampler(model_rate, in_rate, self.layers * n_stems * self.groups * model_channels)
        self._pending: list[np.ndarray] = []  # [layers, S, B, C_in, n]
        self._pending_count = 0
        self._inputs: list[np.ndarray] = []  # [B, C_in, n], not yet matched by output
        self.received = 0
        self.emitted = 0

    def add_input(self, block: np.ndarray) -> None:
        self._inputs.append(block)
        self.received += block.shape[-1]

    def push(self, stems: np.ndarray, weights: np.ndarray | None, final: bool = False) -> list[np.ndarray]:
        """Engine output ``[S, G, C, m]`` (and weights) -> the stem blocks that are now complete."""
        parts = [stems] if weights is None else [stems, weights]
        both = np.stack(parts[: self.layers])
        both = both.reshape(self.layers * self.n_stems * self.groups * self.model_channels, -1)
        out = self._resampler.process(both)
        if final:
            out = np.concatenate([out, self._resampler.flush()], axis=-1)
        if out.shape[-1]:
            out = out.reshape(self.layers * self.n_stems, self.groups, self.model_channels, -1)
            restored = from_groups(out, self.batch, self.in_channels)
            self._pending.append(restored.reshape(self.layers, self.n_stems, self.batch, self.in_channels, -1))
            self._pending_count += out.shape[-1]
        count = self.received - self.emitted if final else self._pending_count - self.holdback
        return self._release(count)

    def _release(self, count: int) -> list[np.ndarray]:
        if count <= 0:
            return []
        shape = (self.layers, self.n_stems, self.batch, self.in_channels, 0)
        both = np.concatenate(self._pending, axis=-1) if self._pending else np.zeros(shape, np.float32)
        short = count - both.shape[-1]
        if short > 0:  # the resampler came up a few samples short at the very end: pad with silence
            both = np.concatenate([both, np.zeros(both.shape[:-1] + (short,), np.float32)], axis=-1)
        mixture = np.concatenate(self._inputs, axis=-1)
        stems = both[0, ..., :count]
        self._pending = [both[..., count:]]
        self._pending_count = self._pending[0].shape[-1]
        self._inputs = [mixture[..., count:]]
        self.emitted += count
        if self.share:
            return [share_residual(stems, both[1, ..., :count], mixture[..., :count])]
        return [stems]


def share_residual(stems: np.ndarray, weights: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Add to each stem its share of what the stems miss of the mixture (content above the model's rate).

    ``weights`` are the stems' extension masks (summing to about one); they are renormalised, and an even
    split is used where they vanish (the few padded samples at the very end).
    """
    residual = mixture - stems.sum(axis=0)
    weights = np.clip(weights, 0.0, None)
    total = weights.sum(axis=0)
    vanishing = total <= 1e-3
    if vanishing.any():
        weights[:, vanishing] = 1.0 / weights.shape[0]
        total[vanishing] = 1.0
    residual /= total
    weights *= residual[None]
    return stems + weights
