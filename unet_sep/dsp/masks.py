"""Soft masks: ratio masks across stems (Spleeter's formula), the cross-fade of segments' masks, their extension
above the model's F bins and their application to the mixture's spectrum.

Every mode of extension gives all bins above F one mask per stem, frame and channel (:func:`extension_mask`).
The same value serves twice: as the mask of the STFT bins above F (:func:`extend_masks`, :func:`masked_spectra`),
and as the weight by which content above the model's own sample rate is shared out between the stems
(:func:`~unet_sep.separate.stages.share_residual`), so both follow one definition.
"""

from __future__ import annotations

import torch

# Spleeter's EPSILON: keeps masks defined (and summing to one) where every stem is silent.
RATIO_EPSILON = 1e-10
# Added to the mixture's power in the top octave's weighting: where the top octave is silent the weighted mean
# becomes the plain mean over the octave. Far below any audible bin's power (about 1e-6 at -120 dBFS).
POWER_FLOOR = 1e-20
# "capped_average": below this sum over stems of the capped masks, which ratio masks never reach but masks that are
# zero for every stem can, the extension falls back to the mean mask instead of dividing 0 by 0.
CAPPED_FLOOR = 1e-30


def ratio_masks(estimates: torch.Tensor, exponent: float = 2.0, eps: float = RATIO_EPSILON) -> torch.Tensor:
    """Ratio masks from per-stem magnitude estimates ``[stems, ...]``.

    ``mask_i = (o_i**p + eps / n) / (sum_j o_j**p + eps)``, so the masks lie in [0, 1] and sum to one
    over stems at every bin (Spleeter's ``_build_masks``).
    """
    n_stems = estimates.shape[0]
    powered = estimates.abs() ** exponent if exponent != 2.0 else estimates * estimates
    denominator = powered.sum(dim=0, keepdim=True) + eps
    return (powered + eps / n_stems) / denominator


def add_segments(mask_sum: torch.Tensor, weight_sum: torch.Tensor, masks: torch.Tensor, offsets: list[int],
                 weights: torch.Tensor) -> None:
    """The cross-fade of overlapping segments, in place: segment ``i``'s masks ``masks[:, i]`` (``masks``:
    ``[S, N, ..., F, T]``) times the cross-fade ``weights [T]`` are added into the running sums
    ``mask_sum [S, ..., F, frames]`` from frame ``offsets[i]`` on, and the weights into ``weight_sum [frames]``
    (a segment reaching past the sums' end is cut there). The cross-faded masks are ``mask_sum / weight_sum``."""
    frames = weight_sum.shape[-1]
    for i, offset in enumerate(offsets):
        length = min(masks.shape[-1], frames - offset)
        weight = weights[:length]
        mask_sum[..., offset : offset + length] += masks[:, i, ..., :length] * weight
        weight_sum[offset : offset + length] += weight


def masked_spectra(masks: torch.Tensor, spectrum: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The stems' spectra: ``masks [S, ..., F, frames]`` extended to all the bins of the mixture's complex
    ``spectrum [..., bins, frames]`` by ``mode`` (:func:`extension_mask`), times it; and the extension masks
    ``[S, ..., frames]`` (the weights of the band above the model's rate)."""
    extension = extension_mask(masks, mode, spectrum)
    return append_extension(masks, extension, spectrum.shape[-2]) * spectrum.unsqueeze(0), extension


def extension_mask(masks: torch.Tensor, mode: str, spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """The mask every bin above F gets: masks ``[stems, ..., F, frames]`` -> ``[stems, ..., frames]``.

    Modes:
        "zeros": 0 (Spleeter: nothing above F survives).
        "average": the mean of the mask over the F bins.
        "last": the mask of bin F-1.
        "capped_average": the mean of the mask over the F bins, capped by the stem's share of the energy of the
            band's top octave, bins F/2 to F-1 (:func:`top_octave_share`), and renormalised over stems. A stem
            gets content above F only as far as both the whole band and the top of it give it to that stem: an
            instrumental frame's vocals get nothing there, a sibilant that fills the top octave carries on above
            it. Needs ``spectrum``: the mixture's STFT (complex or magnitude) ``[..., >= F, frames]``,
            broadcastable against ``masks`` without the stem axis.

    Every mode but "zeros" keeps masks that sum to one across stems wherever ``masks`` do, so the stems still
    add up to the mixture.
    """
    if mode == "zeros":
        return masks.new_zeros(masks.shape[:-2] + masks.shape[-1:])
    if mode == "average":
        return masks.mean(dim=-2)
    if mode == "last":
        return masks[..., -1, :]
    if mode == "capped_average":
        if spectrum is None:
            raise ValueError("the 'capped_average' mask extension needs the mixture's spectrum")
        average = masks.mean(dim=-2)
        capped = torch.minimum(average, top_octave_share(masks, spectrum))
        total = capped.sum(dim=0, keepdim=True)
        return torch.where(total > CAPPED_FLOOR, capped / total.clamp_min(CAPPED_FLOOR), average)
    raise ValueError(f"unknown mask extension {mode!r}")


def top_octave_share(masks: torch.Tensor, spectrum: torch.Tensor) -> torch.Tensor:
    """Each stem's share of the energy of the band's top octave: masks ``[stems, ..., F, frames]`` averaged over
    bins F/2 to F-1, each weighted by the power of the mixture's ``spectrum [..., >= F, frames]`` there.

    Quiet bins, where ratio masks drift towards 1/stems, count for nothing; a silent octave gives the plain mean.
    """
    n_model_bins = masks.shape[-2]
    low = n_model_bins // 2
    power = spectrum[..., low:n_model_bins, :].abs().square().to(masks.dtype) + POWER_FLOOR
    return (masks[..., low:, :] * power).sum(dim=-2) / power.sum(dim=-2)


def append_extension(masks: torch.Tensor, extension: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Masks ``[..., F, frames]`` with ``extension [..., frames]`` repeated on bins F to ``n_bins`` - 1."""
    n_model_bins = masks.shape[-2]
    missing = n_bins - n_model_bins
    if missing < 0:
        raise ValueError(f"masks have {n_model_bins} bins, more than the STFT's {n_bins}")
    if missing == 0:
        return masks
    shape = list(masks.shape)
    shape[-2] = missing
    return torch.cat([masks, extension.unsqueeze(-2).expand(shape)], dim=-2)


def extend_masks(masks: torch.Tensor, n_bins: int, mode: str, spectrum: torch.Tensor | None = None) -> torch.Tensor:
    """Extend masks ``[stems, ..., F, frames]`` to ``[stems, ..., n_bins, frames]`` along the frequency axis.

    Each bin above F gets :func:`extension_mask` (``mode`` and ``spectrum`` as there).
    """
    if n_bins == masks.shape[-2]:
        return masks
    return append_extension(masks, extension_mask(masks, mode, spectrum), n_bins)
