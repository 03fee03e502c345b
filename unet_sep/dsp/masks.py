"""Soft masks: ratio masks across stems (Spleeter's formula) and their extension above the model's F bins."""

from __future__ import annotations

import torch

# Spleeter's EPSILON: keeps masks defined (and summing to one) where every stem is silent.
RATIO_EPSILON = 1e-10


def ratio_masks(estimates: torch.Tensor, exponent: float = 2.0, eps: float = RATIO_EPSILON) -> torch.Tensor:
    """Ratio masks from per-stem magnitude estimates ``[stems, ...]``.

    ``mask_i = (o_i**p + eps / n) / (sum_j o_j**p + eps)``, so the masks lie in [0, 1] and sum to one
    over stems at every bin (Spleeter's ``_build_masks``).
    """
    n_stems = estimates.shape[0]
    powered = estimates.abs() ** exponent if exponent != 2.0 else estimates * estimates
    denominator = powered.sum(dim=0, keepdim=True) + eps
    return (powered + eps / n_stems) / denominator


def extend_masks(masks: torch.Tensor, n_bins: int, mode: str) -> torch.Tensor:
    """Extend masks ``[..., F, frames]`` to ``[..., n_bins, frames]`` along the frequency axis.

    Modes: "zeros" (Spleeter: nothing above F survives), "average" (each new bin gets the mean mask over
    the F bins, per frame and channel), "last" (each new bin repeats the mask of bin F-1). "average" and
    "last" keep masks that sum to one across stems, so the stems still add up to the mixture.
    """
    n_model_bins = masks.shape[-2]
    missing = n_bins - n_model_bins
    if missing < 0:
        raise ValueError(f"masks have {n_model_bins} bins, more than the STFT's {n_bins}")
    if missing == 0:
        return masks
    shape = list(masks.shape)
    shape[-2] = missing
    if mode == "zeros":
        extension = masks.new_zeros(shape)
    elif mode == "average":
        extension = masks.mean(dim=-2, keepdim=True).expand(shape)
    elif mode == "last":
        extension = masks[..., -1:, :].expand(shape)
    else:
        raise ValueError(f"unknown mask extension {mode!r}")
    return torch.cat([masks, extension], dim=-2)
