"""STFT and inverse STFT with Spleeter's framing.

Framing: ``n_fft`` zeros are put in front of the signal, a frame of ``n_fft`` samples starts every
``hop_length`` samples, and the end is zero-padded so the last frame is full (TensorFlow's ``pad_end``).
Frame ``i`` therefore covers input samples ``[i * hop - n_fft, i * hop)``, and every input sample is covered
by the same number of frames, which makes the inverse exact everywhere with a constant-per-phase window
envelope. Analysis and synthesis use the same periodic Hann window; for ``hop = n_fft / 4`` the summed
squared window is 1.5, exactly Spleeter's ``2/3`` compensation.

Spectrograms are complex tensors ``[..., bins, frames]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def hann_window(
    n_fft: int, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Periodic Hann window ``0.5 - 0.5 cos(2 pi n / n_fft)``, computed in float64."""
    n = torch.arange(n_fft, dtype=torch.float64)
    window = 0.5 - 0.5 * torch.cos(2.0 * math.pi * n / n_fft)
    return window.to(device=device, dtype=dtype)


def num_frames(n_samples: int, n_fft: int, hop_length: int) -> int:
    """Number of frames of an ``n_samples`` signal: ``ceil((n_samples + n_fft) / hop)``."""
    return -(-(n_samples + n_fft) // hop_length)


def analyze_frames(padded: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """STFT of an already padded signal ``[..., L]``, frames starting at 0, hop, ... while they fit.

    Returns complex ``[..., n_fft // 2 + 1, (L - n_fft) // hop + 1]``. This is the building block of
    :func:`stft` and of the streaming separator, which feeds it overlapping pieces of a long signal.
    """
    lead = padded.shape[:-1]
    flat = padded.reshape(-1, padded.shape[-1])
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        window=window,
        center=False,
        return_complex=True,
    )
    return spec.reshape(*lead, spec.shape[-2], spec.shape[-1])


def synthesize_frames(spec: torch.Tensor, n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Windowed inverse FFT of every frame, overlap-added: ``[..., bins, frames]`` -> ``[..., (frames-1)*hop + n_fft]``.

    No normalisation: divide by :func:`window_envelope` where every sample is fully covered.
    """
    lead = spec.shape[:-2]
    n_frames = spec.shape[-1]
    frames = torch.fft.irfft(spec.reshape(-1, spec.shape[-2], n_frames), n=n_fft, dim=-2)
    frames = frames * window.to(frames.dtype)[:, None]
    return overlap_add(frames, hop_length).reshape(*lead, -1)


def overlap_add(frames: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Sum frames ``[B, frame_length, n]`` placed every ``hop_length`` samples: ``[B, (n-1)*hop + frame_length]``.

    When the frame length is a multiple of the hop (the usual case) this is a few strided additions, several
    times faster than ``F.fold`` on the CPU; otherwise ``F.fold`` does it.
    """
    batch, frame_length, n = frames.shape
    length = (n - 1) * hop_length + frame_length
    if frame_length % hop_length:
        out = F.fold(frames, output_size=(1, length), kernel_size=(1, frame_length), stride=(1, hop_length))
        return out.reshape(batch, length)
    overlap = frame_length // hop_length
    # [B, overlap, hop, n] -> [B, overlap, n, hop]: piece k of frame i lands in output block i + k.
    pieces = frames.reshape(batch, overlap, hop_length, n).transpose(2, 3)
    out = frames.new_zeros(batch, n + overlap - 1, hop_length)
    for k in range(overlap):
        out[:, k : k + n] += pieces[:, k]
    return out.reshape(batch, length)


def overlap_add_weights(per_frame: torch.Tensor, window_squared: torch.Tensor, hop_length: int) -> torch.Tensor:
    """Per-frame values ``[..., n]`` overlap-added with the squared window (``window_squared``, ``[n_fft]``), as
    :func:`synthesize_frames` places frames: ``[..., (n-1)*hop + n_fft]``, as smooth as the audio synthesised with
    them (divide by :func:`window_envelope` as the audio)."""
    lead = per_frame.shape[:-1]
    frames = per_frame.reshape(-1, 1, per_frame.shape[-1]) * window_squared[None, :, None]
    return overlap_add(frames, hop_length).reshape(*lead, -1)


def divide_by_envelope(samples: torch.Tensor, envelope: torch.Tensor, first: int, hop_length: int) -> torch.Tensor:
    """The inverse STFT's normalisation: overlap-added ``samples [..., n]``, the first at position ``first`` of the
    padded signal (``n_fft`` leading zeros), divided by the window envelope at each one's phase
    (:func:`window_envelope`)."""
    phase = torch.arange(first, first + samples.shape[-1], device=samples.device) % hop_length
    return samples / envelope[phase]


def window_envelope(n_fft: int, hop_length: int, window: torch.Tensor) -> torch.Tensor:
    """Steady-state sum of the squared window over overlapping frames, one value per phase ``0..hop-1``."""
    squared = window.to(torch.float64) ** 2
    pad = (-n_fft) % hop_length
    squared = F.pad(squared, (0, pad))
    return squared.reshape(-1, hop_length).sum(dim=0).to(window.dtype)


def stft(signal: torch.Tensor, n_fft: int = 4096, hop_length: int = 1024) -> torch.Tensor:
    """STFT of ``[..., samples]`` with Spleeter's framing: complex ``[..., n_fft//2+1, frames]``."""
    n_samples = signal.shape[-1]
    frames = num_frames(n_samples, n_fft, hop_length)
    total = (frames - 1) * hop_length + n_fft
    padded = F.pad(signal, (n_fft, total - n_fft - n_samples))
    window = hann_window(n_fft, signal.device, signal.dtype)
    return analyze_frames(padded, n_fft, hop_length, window)


def istft(spec: torch.Tensor, length: int, n_fft: int = 4096, hop_length: int = 1024) -> torch.Tensor:
    """Inverse of :func:`stft`: ``[..., bins, frames]`` -> ``[..., length]`` real samples."""
    real_dtype = torch.float64 if spec.dtype == torch.complex128 else torch.float32
    window = hann_window(n_fft, spec.device, real_dtype)
    signal = synthesize_frames(spec, n_fft, hop_length, window)
    envelope = window_envelope(n_fft, hop_length, window)
    signal = signal[..., n_fft : n_fft + length]
    if signal.shape[-1] < length:
        raise ValueError(f"spectrogram has too few frames for {length} samples")
    return divide_by_envelope(signal, envelope, n_fft, hop_length)
