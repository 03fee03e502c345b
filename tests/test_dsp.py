import pytest
import torch

from unet_sep.dsp.masks import add_segments, extend_masks, masked_spectra, ratio_masks
from unet_sep.dsp.measures import snr_db
from unet_sep.dsp.stft import (
    divide_by_envelope,
    hann_window,
    istft,
    num_frames,
    overlap_add_weights,
    stft,
    synthesize_frames,
    window_envelope,
)


@pytest.mark.parametrize("length", [1, 1000, 4096, 44100, 100003])
def test_stft_istft_reconstruction_float64(length):
    x = torch.randn(2, length, dtype=torch.float64, generator=torch.Generator().manual_seed(length))
    spec = stft(x)
    assert spec.shape == (2, 2049, num_frames(length, 4096, 1024))
    assert snr_db(x.numpy(), istft(spec, length).numpy()) > 250


@pytest.mark.parametrize("n_fft,hop", [(4096, 1024), (2048, 512), (1024, 256), (512, 128)])
def test_stft_istft_reconstruction_float32_above_100db(n_fft, hop):
    x = torch.randn(3, 2, 50001, generator=torch.Generator().manual_seed(1))
    y = istft(stft(x, n_fft, hop), x.shape[-1], n_fft, hop)
    assert y.shape == x.shape
    assert snr_db(x.numpy(), y.numpy()) > 100


def test_spleeter_framing_and_window():
    # Spleeter: periodic Hann, summed squared window 1.5 at hop n/4, frames = ceil((n + 4096) / 1024).
    window = hann_window(4096, dtype=torch.float64)
    assert window[0] == 0 and abs(window[2048] - 1) < 1e-15
    assert torch.allclose(window_envelope(4096, 1024, window), torch.full((1024,), 1.5, dtype=torch.float64))
    assert num_frames(542430, 4096, 1024) == 534
    # Frame 4 covers samples [0, 4096) with no leading padding: its spectrum is the windowed rfft.
    x = torch.randn(10000, dtype=torch.float64)
    expected = torch.fft.rfft(x[:4096] * window)
    assert torch.allclose(stft(x)[:, 4], expected, atol=1e-9)


def test_ratio_masks_in_unit_interval_and_sum_to_one():
    estimates = torch.rand(4, 2, 2, 64, 128) * torch.tensor([0, 1, 10, 1e-3]).view(4, 1, 1, 1, 1)
    estimates[:, 0, :, :5] = 0  # all stems silent at some bins
    masks = ratio_masks(estimates, exponent=2.0)
    assert masks.min() >= 0 and masks.max() <= 1
    assert torch.allclose(masks.sum(0), torch.ones_like(masks[0]), atol=1e-6)
    assert torch.allclose(masks[:, 0, :, :5], torch.full_like(masks[:, 0, :, :5], 0.25))
    # Spleeter's formula: (o_i^2 + eps/n) / (sum o_j^2 + eps)
    o = estimates[:, 1, 0, 10, 10].double()
    manual = (o**2 + 1e-10 / 4) / ((o**2).sum() + 1e-10)
    assert torch.allclose(masks[:, 1, 0, 10, 10].double(), manual, rtol=1e-5)
    assert torch.allclose(ratio_masks(estimates, exponent=1.0).sum(0), torch.ones_like(masks[0]), atol=1e-6)


def test_mask_extension_modes():
    masks = ratio_masks(torch.rand(2, 1, 2, 8, 5))
    zeros = extend_masks(masks, 20, "zeros")
    average = extend_masks(masks, 20, "average")
    last = extend_masks(masks, 20, "last")
    spectrum = torch.randn(1, 2, 20, 5, dtype=torch.complex64)
    joint = extend_masks(masks, 20, "capped_average", spectrum)
    for extended in (zeros, average, last, joint):
        assert extended.shape == (2, 1, 2, 20, 5)
        assert torch.equal(extended[..., :8, :], masks)
    assert torch.all(zeros[..., 8:, :] == 0)
    assert torch.allclose(average[..., 12, :], masks.mean(-2))
    assert torch.equal(last[..., 19, :], masks[..., 7, :])
    assert torch.allclose(average.sum(0), torch.ones(1, 2, 20, 5), atol=1e-6)
    assert torch.allclose(last.sum(0), torch.ones(1, 2, 20, 5), atol=1e-6)
    power = spectrum[..., 4:8, :].abs() ** 2  # the top octave of the 8 bins, weighted by the mixture's power
    capped = torch.minimum(masks.mean(-2), (masks[..., 4:, :] * power).sum(-2) / power.sum(-2))
    assert torch.allclose(joint[..., 15, :], capped / capped.sum(0), atol=1e-6)
    assert torch.allclose(joint.sum(0), torch.ones(1, 2, 20, 5), atol=1e-6)
    with pytest.raises(ValueError):
        extend_masks(masks, 20, "mirror")


def test_the_cross_fade_weighs_overlapping_segments():
    # Two stems, one channel, 3 bins; segments of T=4 frames at frames 0 and 2 (and a third cut at the sums' end).
    masks = torch.stack([torch.full((2, 1, 3, 4), value) for value in (0.2, 0.6, 1.0)], dim=1)  # [S, N, C, F, T]
    masks[1] = 1 - masks[0]
    weights = torch.tensor([0.5, 1.0, 1.0, 0.5])
    mask_sum, weight_sum = torch.zeros(2, 1, 3, 7), torch.zeros(7)
    add_segments(mask_sum, weight_sum, masks, [0, 2, 5], weights)
    assert weight_sum.tolist() == [0.5, 1.0, 1.5, 1.5, 1.0, 1.0, 1.0]  # the third segment gave its first 2 frames
    crossfaded = mask_sum / weight_sum
    expected = [0.2, 0.2, (0.2 + 0.6 * 0.5) / 1.5, (0.2 * 0.5 + 0.6) / 1.5, 0.6, (0.6 * 0.5 + 1.0 * 0.5) / 1.0, 1.0]
    assert torch.allclose(crossfaded[0, 0, 1], torch.tensor(expected))
    assert torch.allclose(crossfaded.sum(0), torch.ones(1, 3, 7))  # masks that sum to one still do


def test_masked_spectra_extend_the_masks_over_the_mixture():
    masks = ratio_masks(torch.rand(2, 1, 2, 8, 5, generator=torch.Generator().manual_seed(3)))
    mixture = torch.randn(1, 2, 20, 5, dtype=torch.complex64, generator=torch.Generator().manual_seed(4))
    spectra, extension = masked_spectra(masks, mixture, "average")
    assert spectra.shape == (2, 1, 2, 20, 5) and extension.shape == (2, 1, 2, 5)
    assert torch.equal(spectra, extend_masks(masks, 20, "average") * mixture)
    assert torch.allclose(spectra.sum(0), mixture, atol=1e-6)  # the stems add up to the mixture, above F too
    zeros, none = masked_spectra(masks, mixture, "zeros")
    assert torch.all(zeros[..., 8:, :] == 0) and torch.all(none == 0)


def test_the_envelope_and_the_weights_follow_the_inverse_stft():
    n_fft, hop, frames = 1024, 256, 12
    window = hann_window(n_fft, dtype=torch.float64)
    envelope = window_envelope(n_fft, hop, window)
    # Per-frame weights of 1 overlap-add to the envelope: divided by it, 1 wherever all frames covering a sample are.
    ones = overlap_add_weights(torch.ones(3, frames, dtype=torch.float64), window**2, hop)
    assert ones.shape == (3, (frames - 1) * hop + n_fft)
    inside = divide_by_envelope(ones[..., n_fft:-n_fft], envelope, n_fft, hop)
    assert torch.allclose(inside, torch.ones_like(inside))
    # Normalised in two pieces, from where each starts, as the stream hands samples out: as in one.
    spec = stft(torch.randn(2, 5000, dtype=torch.float64, generator=torch.Generator().manual_seed(5)), n_fft, hop)
    signal = synthesize_frames(spec, n_fft, hop, window)
    whole = divide_by_envelope(signal, envelope, 0, hop)
    pieces = [divide_by_envelope(signal[..., :777], envelope, 0, hop),
              divide_by_envelope(signal[..., 777:], envelope, 777, hop)]
    assert torch.equal(torch.cat(pieces, dim=-1), whole)
