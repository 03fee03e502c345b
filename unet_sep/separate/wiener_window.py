"""Wiener filtering inside the streaming engine: the EM filter of :mod:`unet_sep.dsp.wiener` over a bounded window.

The filter's spatial statistics are sums over frames. Spleeter takes them over the whole track (the engine's
Spleeter-exact mode does the same: nothing is synthesised before the input ends). To keep memory bounded on
songs of any length, the default takes them over a window of ``window`` frames around each block of frames it
synthesises: the block (half the window) with a quarter of the window of context on each side. The context
before a block is kept here (the stems' spectra before filtering and the mixture); the context after it is
what the engine waits for before synthesising the block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from unet_sep.dsp.wiener import wiener


@dataclass(frozen=True)
class WienerSettings:
    """How stems are Wiener-filtered: ``iterations`` EM steps (0: the ratio masks alone), statistics over
    ``window`` frames (0: the whole track, as Spleeter), from softmask estimates (``softmask``: Spleeter's
    ``MWF=True``) or from the engine's ratio masks. Made by
    :meth:`SeparationSettings.resolve <unet_sep.separate.settings.SeparationSettings.resolve>`, which checks and
    defaults the values."""

    iterations: int
    window: int
    softmask: bool

    @property
    def active(self) -> bool:
        return self.iterations > 0

    @property
    def block(self) -> int | None:
        """Frames synthesised per filter call; None: all at once, at the end (whole-track statistics)."""
        return self.window // 2 if self.window else None

    @property
    def context(self) -> int:
        """Frames of context on each side of a block."""
        return self.window // 4


class WienerWindow:
    """Filters the stem spectra of consecutive blocks of frames, each with its context (see the module)."""

    def __init__(self, settings: WienerSettings) -> None:
        self.settings = settings
        self._past_stems: torch.Tensor | None = None  # [S, G, C, F, h] before filtering
        self._past_mixture: torch.Tensor | None = None  # [G, C, F, h]

    @property
    def lookahead(self) -> int:
        """Frames after a block that must be final before the block is filtered."""
        return self.settings.context

    def filter(self, stems: torch.Tensor, mixture: torch.Tensor, block: int) -> torch.Tensor:
        """The filtered spectra of the first ``block`` frames of ``stems`` ``[S, G, C, F, n]`` (the rest is look-ahead
        context) of ``mixture`` ``[G, C, F, n]``; remembers the context the next block needs."""
        if self._past_stems is not None and self._past_mixture is not None:
            stems = torch.cat([self._past_stems, stems], dim=-1)
            mixture = torch.cat([self._past_mixture, mixture], dim=-1)
        past = 0 if self._past_stems is None else self._past_stems.shape[-1]
        filtered = wiener(stems, mixture, self.settings.iterations, keep=slice(past, past + block))
        keep = self.settings.context
        if keep:
            end = past + block
            self._past_stems = stems[..., max(0, end - keep) : end].clone()
            self._past_mixture = mixture[..., max(0, end - keep) : end].clone()
        return filtered
