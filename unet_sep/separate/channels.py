"""The channel policy: how inputs with any number of channels meet a model with ``C`` channels.

- Same count as the model: used as is.
- Fewer (mono into a stereo model): the channels are repeated cyclically to fill the model's channels, and
  each stem channel is returned as the mean over its copies, so mono in gives mono out.
- More (e.g. 5.1 into a stereo model): channels are taken ``C`` at a time (1-2, 3-4, 5-6, ...), each group is
  separated on its own, and the stems keep every input channel; a last incomplete group is filled by
  repeating its last channel, and the repeats are dropped again.

So every stem has the input's channel count and the input's layout, and the stems still add up to the input.
"""

from __future__ import annotations

import numpy as np


def groups_per_item(in_channels: int, model_channels: int) -> int:
    """How many groups of ``model_channels`` one item with ``in_channels`` channels becomes."""
    return max(1, -(-in_channels // model_channels))


def _channel_index(in_channels: int, model_channels: int) -> np.ndarray:
    """For every slot of the grouped layout, the input channel it holds."""
    width = groups_per_item(in_channels, model_channels) * model_channels
    slots = np.arange(width)
    if in_channels < model_channels:
        return slots % in_channels
    return np.minimum(slots, in_channels - 1)


def to_groups(audio: np.ndarray, model_channels: int) -> np.ndarray:
    """``[B, C_in, n]`` -> ``[B * G, model_channels, n]``."""
    batch, in_channels, n = audio.shape
    index = _channel_index(in_channels, model_channels)
    grouped = audio[:, index, :]
    return np.ascontiguousarray(grouped).reshape(batch * (len(index) // model_channels), model_channels, n)


def from_groups(stems: np.ndarray, batch: int, in_channels: int) -> np.ndarray:
    """``[S, B * G, model_channels, n]`` -> ``[S, B, C_in, n]``, undoing :func:`to_groups`."""
    n_stems, _, model_channels, n = stems.shape
    index = _channel_index(in_channels, model_channels)
    flat = stems.reshape(n_stems, batch, len(index), n)
    if in_channels >= model_channels:
        return np.ascontiguousarray(flat[:, :, :in_channels, :])
    out = np.zeros((n_stems, batch, in_channels, n), dtype=stems.dtype)
    for slot, channel in enumerate(index):
        out[:, :, channel] += flat[:, :, slot]
    copies = np.bincount(index, minlength=in_channels).astype(stems.dtype)
    return out / copies[None, None, :, None]
