"""Multichannel Wiener filtering of stem estimates (the EM post-filter of Spleeter's ``MWF=True`` and Open-Unmix).

Each stem ``j`` is modelled, per STFT bin, as a zero-mean complex Gaussian with covariance ``v_j(t, f) R_j(f)``:
a power spectral density ``v_j`` (the mean over channels of the stem's power) and a spatial covariance matrix
``R_j`` shared by the frames of a window. One iteration re-estimates ``v_j`` and ``R_j`` from the current stem
spectra, then separates the mixture again with the Wiener gains ``v_j R_j (sum_k v_k R_k + reg I)^-1``.
The update rules and regularisation are those of sigsep's ``norbert`` (which Spleeter and Open-Unmix call), so
the results agree with it to rounding; here they run in torch on the model's device, over any leading batch axes.

Layout: mixture spectra ``x`` are complex ``[..., C, F, T]`` (channels, bins, frames, as the STFT in
:mod:`unet_sep.dsp.stft` gives them), stem spectra ``y`` are ``[S, ..., C, F, T]``.
"""

from __future__ import annotations

from functools import partial

import torch

# Frames filtered at once: bounds the temporaries (a few [S, ..., F, frames] tensors).
_FILTER_FRAMES = 256


def epsilon(x: torch.Tensor) -> float:
    """The machine epsilon of ``x``'s real dtype: norbert's default regularisation."""
    return float(torch.finfo(x.real.dtype).eps)


def softmask(estimates: torch.Tensor, eps: float | None = None) -> torch.Tensor:
    """Masks ``v_j / (eps + sum_k v_k)`` from magnitude estimates ``[S, ...]`` (norbert's ``softmask`` without the
    product with the mixture: the first step of Spleeter's ``MWF=True``)."""
    eps = epsilon(estimates) if eps is None else eps
    return estimates / (eps + estimates.sum(dim=0, keepdim=True))


def wiener(y: torch.Tensor, x: torch.Tensor, iterations: int, eps: float | None = None,
           keep: slice | None = None) -> torch.Tensor:
    """Refine stem spectra ``y`` ``[S, ..., C, F, T]`` of the mixture ``x`` ``[..., C, F, T]`` by ``iterations``
    EM steps, with statistics over all ``T`` frames (norbert's ``wiener`` after its initial estimate).

    ``keep``: the frames to return (default all); the statistics still use all ``T``, but the last iteration
    filters only these. As norbert does, the spectra are scaled down by ``max(1, max|x| / 10)`` while filtering,
    so that the regularisation ``eps`` means the same for loud and quiet signals; the result is scaled back.
    """
    keep = slice(None) if keep is None else keep
    if iterations <= 0:
        return y[..., keep]
    eps = epsilon(x) if eps is None else eps
    scale = max(1.0, float(x.abs().max()) / 10.0)
    x = x / scale
    y = y / scale
    for step in range(iterations):
        y = em_step(y, x, eps, keep if step == iterations - 1 else slice(None))
    return y * scale


def em_step(y: torch.Tensor, x: torch.Tensor, eps: float, frames: slice = slice(None)) -> torch.Tensor:
    """One EM iteration: the stems' Gaussian models from all frames of ``y``, then the mixture's ``frames``
    filtered again with them (``[S, ..., C, F, frames]``)."""
    if x.shape[-3] > 2:
        return _em_step_matrices(y, x, eps, frames)
    lo, hi, _ = frames.indices(x.shape[-1])
    stems = (y.real, y.imag)
    psd = (stems[0].square() + stems[1].square()).mean(dim=-3)  # v_j: [S, ..., F, T]
    weight = eps + psd.sum(dim=-1, keepdim=True)
    if x.shape[-3] == 1:  # one channel: sum_t |y_j|^2 is sum_t v_j
        filter_frames = partial(_filter_one_channel, spatial=psd.sum(dim=-1, keepdim=True) / weight, eps=eps)
    else:
        filter_frames = partial(_filter_two_channels, spatial=_spatial_two(stems, weight), eps=eps)
    out = y.new_empty((*y.shape[:-1], max(0, hi - lo)))
    for start in range(lo, hi, _FILTER_FRAMES):
        chunk = slice(start, min(start + _FILTER_FRAMES, hi))
        filtered = filter_frames(psd[..., chunk], mixture=(x.real[..., chunk], x.imag[..., chunk]))
        out[..., chunk.start - lo : chunk.stop - lo] = torch.complex(*filtered)
    return out


Pair = tuple[torch.Tensor, torch.Tensor]  # the real and imaginary parts of a complex tensor
Spatial = tuple[torch.Tensor, torch.Tensor, Pair]  # R_j's entries r00, r11 (real) and r01 (complex): [S, ..., F, 1]


def _filter_one_channel(v: torch.Tensor, spatial: torch.Tensor, mixture: Pair, eps: float) -> Pair:
    """Mono: ``R_j = sum_t v_j / (eps + sum_t v_j)`` (``spatial``), and the filter is a real gain per stem and bin."""
    gains = v * spatial / ((v * spatial).sum(dim=0) + eps**0.5 + eps)  # [S, ..., F, t]
    return gains.unsqueeze(-3) * mixture[0], gains.unsqueeze(-3) * mixture[1]


def _spatial_two(stems: Pair, weight: torch.Tensor) -> Spatial:
    """Stereo ``R_j = sum_t y_j y_j^H / (eps + sum_t v_j)``, as its three distinct entries."""
    (re0, re1), (im0, im1) = stems[0].unbind(-3), stems[1].unbind(-3)
    r00 = (re0.square() + im0.square()).sum(dim=-1, keepdim=True) / weight
    r11 = (re1.square() + im1.square()).sum(dim=-1, keepdim=True) / weight
    r01 = ((re0 * re1 + im0 * im1).sum(dim=-1, keepdim=True) / weight,
           (im0 * re1 - re0 * im1).sum(dim=-1, keepdim=True) / weight)
    return r00, r11, r01


def _filter_two_channels(v: torch.Tensor, spatial: Spatial, mixture: Pair, eps: float) -> Pair:
    """Stereo, in real arithmetic on the entries of the 2 x 2 Hermitian matrices (tiny batched matrix products and
    complex tensors would cost several times as much): ``y_j = v_j R_j (C_xx^-1 x)``, with the inverse times the
    mixture shared by all stems."""
    r00, r11, r01 = spatial
    c00 = (v * r00).sum(dim=0) + eps**0.5  # C_xx = sum_j v_j R_j + sqrt(eps) I: [..., F, t]
    c11 = (v * r11).sum(dim=0) + eps**0.5
    c01 = ((v * r01[0]).sum(dim=0), (v * r01[1]).sum(dim=0))
    det = c00 * c11 - (c01[0].square() + c01[1].square())
    (x0r, x1r), (x0i, x1i) = mixture[0].unbind(-3), mixture[1].unbind(-3)
    b_x1, cb_x0 = _mul(c01, (x1r, x1i)), _mul((c01[0], -c01[1]), (x0r, x0i))
    z0 = ((c11 * x0r - b_x1[0]) / det, (c11 * x0i - b_x1[1]) / det)  # C_xx^-1 x
    z1 = ((c00 * x1r - cb_x0[0]) / det, (c00 * x1i - cb_x0[1]) / det)
    r01_z1, r10_z0 = _mul(r01, z1), _mul((r01[0], -r01[1]), z0)
    y0 = (v * (r00 * z0[0] + r01_z1[0]), v * (r00 * z0[1] + r01_z1[1]))
    y1 = (v * (r10_z0[0] + r11 * z1[0]), v * (r10_z0[1] + r11 * z1[1]))
    return torch.stack([y0[0], y1[0]], dim=-3), torch.stack([y0[1], y1[1]], dim=-3)


def _mul(p: Pair, q: Pair) -> Pair:
    return p[0] * q[0] - p[1] * q[1], p[0] * q[1] + p[1] * q[0]


def _em_step_matrices(y: torch.Tensor, x: torch.Tensor, eps: float, frames: slice) -> torch.Tensor:
    """The same iteration for more than two channels, with complex matrices and a pseudo-inverse (cut-off ``eps``,
    as norbert)."""
    lo, hi, _ = frames.indices(x.shape[-1])
    psd = (y.real.square() + y.imag.square()).mean(dim=-3)  # [S, ..., F, T]
    frames_last = y.movedim(-3, -2)  # [S, ..., F, C, T]
    spatial = frames_last @ frames_last.conj().transpose(-1, -2) / (eps + psd.sum(dim=-1))[..., None, None]
    eye = torch.eye(x.shape[-3], dtype=y.dtype, device=y.device)
    out = y.new_empty((*y.shape[:-1], max(0, hi - lo)))
    for start in range(lo, hi, _FILTER_FRAMES):
        stop = min(start + _FILTER_FRAMES, hi)
        models = psd[..., start:stop].to(y.dtype)[..., None, None] * spatial.unsqueeze(-3)  # [S, ..., F, t, C, C]
        inverse = torch.linalg.pinv(models.sum(dim=0) + eps**0.5 * eye, rtol=eps)
        whitened = inverse @ x[..., start:stop].movedim(-3, -1).unsqueeze(-1)  # [..., F, t, C, 1]
        out[..., start - lo : stop - lo] = (models @ whitened.unsqueeze(0)).squeeze(-1).movedim(-1, -3)
    return out
