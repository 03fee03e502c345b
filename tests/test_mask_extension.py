"""The mask extension above the U-Nets' F bins: the "capped_average" mode (each stem's mean mask over the band,
capped by its share of the energy of the band's top octave, renormalised) keeps an instrumental passage's vocals
silent above F on a real song, its masks still sum to one, the stems still sum to the mixture, and it is the default
of new configs and of converted Spleeter models while saved configs keep the mode they name. Measurements behind the
choice: benchmarks/mask_extension.py.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import music_like
from unet_sep import ModelConfig, Separator
from unet_sep.audio import read_audio
from unet_sep.config import CONFIG_FILE, FORMAT_KEY, FORMAT_VERSION, MASK_EXTENSIONS
from unet_sep.dsp.masks import extend_masks, extension_mask, ratio_masks, top_octave_share
from unet_sep.dsp.measures import snr_db
from unet_sep.dsp.stft import stft
from unet_sep.weights.registry import default_model_name

# audio_example.mp3 opens with percussion hits and no voice; a noise riser (which the bundled model's own band gives
# partly to the vocals) starts at about 1.5 s.
INTRO_SECONDS = 1.4


def energy_above(audio: np.ndarray, rate: int, hz: float, seconds: float) -> float:
    """Energy of ``audio [channels, samples]`` above ``hz`` over the STFT frames centred in the first ``seconds``."""
    power = stft(torch.from_numpy(np.ascontiguousarray(audio)), 2048, 512).abs().square().sum(0).double().numpy()
    centres = (np.arange(power.shape[-1]) * 512 - 1024) / rate
    high = np.fft.rfftfreq(2048, 1.0 / rate) >= hz
    return float(power[high][:, (centres >= 0) & (centres < seconds)].sum())


@pytest.fixture(scope="module")
def song(example_mp3) -> tuple[np.ndarray, int]:
    return read_audio(example_mp3)


@pytest.fixture(scope="module")
def bundled() -> str:
    name = default_model_name()
    if name is None:
        pytest.skip("no bundled model in this installation")
    return name


def test_instrumental_intro_leaves_the_vocals_silent_above_the_band(song, bundled):
    """The bundled model with its default extension: the vocals stem of the song's instrumental intro stays more
    than 40 dB below the mixture above the model's band (8 kHz); the bin-F-1 copy ("last") and the band average
    hand it the hi-hats and cymbals there."""
    audio, rate = song
    levels = {}
    for mode in (None, "average", "last"):  # None: the model's own, the default
        separator = Separator.from_pretrained(bundled, device="cpu", mask_extension=mode)
        band = separator.config.band_hz
        stems = separator.separate(audio, rate)
        assert snr_db(audio, stems["vocals"] + stems["accompaniment"]) > 100
        mixture = energy_above(audio, rate, band, INTRO_SECONDS)
        vocals = energy_above(stems["vocals"], rate, band, INTRO_SECONDS)
        levels[mode or separator.config.mask_extension] = round(float(10 * np.log10(vocals / mixture)), 1)
    print(f"vocals above {band:g} Hz over the first {INTRO_SECONDS} s, against the mixture (dB): {levels}")
    assert list(levels)[0] == "capped_average" == ModelConfig().mask_extension
    assert levels["capped_average"] < -40
    assert levels["average"] > -35 and levels["last"] > -20  # what the old extensions leaked


def spectrum_of(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    tilt = torch.logspace(0, -3, shape[-2]).unsqueeze(-1)  # a falling spectrum, as music has
    return torch.complex(torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)) * tilt


@pytest.mark.parametrize("stems", [2, 4, 5])
def test_capped_average_masks_sum_to_one_and_follow_their_definition(stems):
    generator = torch.Generator().manual_seed(stems)
    masks = ratio_masks(torch.rand(stems, 3, 2, 64, 40, generator=generator) ** 3)  # [S, G, C, F, frames]
    spectrum = spectrum_of((3, 2, 129, 40), stems)  # the mixture's full STFT [G, C, bins, frames]
    spectrum[1, :, :, :5] = 0  # silent frames: the top octave's plain mean stands in for its energy share
    extended = extend_masks(masks, 129, "capped_average", spectrum)
    assert extended.shape == (stems, 3, 2, 129, 40) and torch.equal(extended[..., :64, :], masks)
    assert torch.allclose(extended.sum(0), torch.ones(3, 2, 129, 40), atol=1e-6)
    assert extended.min() >= 0 and extended.max() <= 1
    # By hand, in float64: the band's mean mask capped by the power-weighted mean over bins 32..63, renormalised.
    power = spectrum[2, 1, 32:64, 7].abs().double() ** 2
    share = (masks[:, 2, 1, 32:64, 7].double() * power).sum(-1) / power.sum()
    capped = torch.minimum(masks[:, 2, 1, :, 7].double().mean(-1), share)
    assert torch.allclose(extended[:, 2, 1, 100, 7].double(), capped / capped.sum(), atol=1e-6)
    assert torch.allclose(top_octave_share(masks, spectrum)[:, 2, 1, 7].double(), share, atol=1e-6)
    silent = torch.minimum(masks[:, 1, 0, :, :5].mean(-2), masks[:, 1, 0, 32:, :5].mean(-2))
    assert torch.allclose(extended[:, 1, 0, 64, :5], silent / silent.sum(0), atol=1e-6)
    assert torch.equal(extension_mask(masks, "capped_average", spectrum), extended[..., -1, :])
    with pytest.raises(ValueError, match="needs the mixture's spectrum"):
        extension_mask(masks, "capped_average")


def test_capped_average_with_masks_that_are_not_ratio_masks():
    """Masks with exact zeros: the stem that owns the top octave gets everything above F; masks that are zero for
    every stem (which ratio masks never are) give zeros, not 0/0."""
    masks = torch.zeros(2, 1, 1, 8, 3)
    masks[0, ..., :4, :] = 1.0
    masks[1, ..., 4:, :] = 1.0
    spectrum = torch.ones(1, 1, 9, 3)
    assert torch.equal(extension_mask(masks, "capped_average", spectrum)[:, 0, 0, 0], torch.tensor([0.0, 1.0]))
    silent = extension_mask(torch.zeros(2, 1, 1, 8, 3), "capped_average", spectrum)
    assert torch.equal(silent, torch.zeros(2, 1, 1, 3))


def test_a_raised_top_bin_is_not_copied_and_a_voiced_top_octave_is():
    """Spleeter's case: the vocals mask is 0 over the band but raised at its last bins. "last" copies that across
    everything above F; "capped_average" caps the band's mean mask by the little energy those bins hold. Where the top
    octave's loud bins are the voice's (sibilants), the voice keeps them above F."""
    bins, frames = 1024, 6
    vocals = torch.zeros(bins, frames)
    vocals[-4:] = 0.02  # raised at the band edge
    vocals[560:700, 3:] = 0.95  # a sibilant in the loud part of the top octave, frames 3 to 5
    masks = torch.stack([vocals, 1 - vocals])[:, None, None]  # [S, G, C, F, frames]
    spectrum = spectrum_of((1, 1, 2049, frames), 0)
    spectrum[..., 560:700, 3:] *= 30
    last = extension_mask(masks, "last", spectrum)[0, 0, 0]
    average = extension_mask(masks, "average", spectrum)[0, 0, 0]
    capped = extension_mask(masks, "capped_average", spectrum)[0, 0, 0]
    assert torch.allclose(last, torch.full((frames,), 0.02))  # -34 dB
    assert capped[:3].max() < 1e-4  # no voice in the band: nothing above it (below -80 dB)
    assert capped[3:].min() > 0.5 and average[3:].max() < 0.15  # the sibilant carries on above F


@pytest.mark.parametrize("rate", [44100, 22050])
def test_stems_sum_to_the_mixture_with_capped_average(tiny_model, rate):
    """A 44.1 kHz model (bins above F) and, at 22.05 kHz, content above half the model's rate (shared out by the
    same extension): the stems add back up to the input."""
    from unet_sep.weights.checkpoint import load_model

    config, net = load_model(tiny_model)
    mixture = music_like(4.0, rate) + 0.05 * np.random.default_rng(1).standard_normal((2, int(4.0 * rate)))
    mixture = mixture.astype(np.float32)
    for model_rate in (44100, 16000):  # 16 kHz: the part above 8 kHz goes by the extension weights
        model_config = dataclasses.replace(config, sample_rate=model_rate)
        stems = Separator(net, model_config, device="cpu", mask_extension="capped_average").separate(mixture, rate)
        assert snr_db(mixture, sum(stems.values())) > 60, (rate, model_rate)


def test_the_residual_is_shared_out_only_where_the_stems_miss_some_of_the_mixture(tiny_model):
    """At the model's rate the masks sum to one, so the engine keeps no extension weights and the output stage
    shares nothing out (that work cost the default mode 20 % of its time on 3 min songs); at another rate, or
    with the Wiener filter (whose regularisation keeps a little of quiet bins), it does."""
    from unet_sep.weights.checkpoint import load_model

    config, net = load_model(tiny_model)
    rate = config.sample_rate
    for options, other_rate, wiener, shares in [({}, rate, 0, False), ({}, 22050, 0, True), ({}, rate, 1, True),
                                                 ({"mask_extension": "zeros"}, 22050, 1, False)]:
        runner = Separator(net, config, device="cpu", wiener_iterations=wiener, **options).runner
        engine = runner.engine(1, 10 * other_rate, other_rate)
        stage = runner.output_stage(1, config.n_channels, other_rate)
        assert runner.shares_residual(other_rate) is engine.has_weights is stage.share is shares, (options, other_rate)
    mixture = music_like(3.0, rate).astype(np.float32)
    stems = Separator(net, config, device="cpu").separate(mixture, rate)
    assert snr_db(mixture, sum(stems.values())) > 100  # nothing to share: the stems add up to rounding


def test_configs_default_to_capped_average_and_keep_a_named_mode(tmp_path):
    assert "capped_average" in MASK_EXTENSIONS and ModelConfig().mask_extension == "capped_average"
    fields = {key: value for key, value in ModelConfig().to_dict().items() if key != FORMAT_KEY}
    for mode in MASK_EXTENSIONS:
        path = tmp_path / f"{mode}.json"
        ModelConfig(mask_extension=mode).save(path)
        assert ModelConfig.load(path).mask_extension == mode
    without = {key: value for key, value in fields.items() if key != "mask_extension"}
    # Format 1 left the mode to the default of its day, "last"; a config of today's format without it gets today's.
    assert ModelConfig.from_dict({FORMAT_KEY: 1, **without}).mask_extension == "last"
    assert ModelConfig.from_dict(without).mask_extension == "last"  # format 0
    assert ModelConfig.from_dict({FORMAT_KEY: FORMAT_VERSION, **without}).mask_extension == "capped_average"


def test_converted_spleeter_models_store_capped_average(tmp_path):
    from tf_bundle import require_ref
    from unet_sep.weights import spleeter as sp

    ref = require_ref()
    folder = sp.convert_spleeter(ref / "2stems", ref / "2stems" / "config.json", tmp_path / "2stems")
    written = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    assert written["mask_extension"] == "capped_average"
    assert written["provenance"]["spleeter_mask_extension"] == "zeros"  # Spleeter's own, for exact mode


def test_cli_help_lists_the_modes():
    from typer.testing import CliRunner

    from unet_sep.cli import app

    result = CliRunner().invoke(app, ["separate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert all(mode in result.output for mode in MASK_EXTENSIONS) and "capped_average" in result.output
