import pytest
import torch

from unet_sep.dsp.masks import extend_masks, ratio_masks
from unet_sep.dsp.measures import snr_db
from unet_sep.dsp.stft import hann_window, istft, num_frames, stft, window_envelope


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
