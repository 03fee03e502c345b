"""The Spleeter mapping: Spleeter's configs, its checkpoint variables onto StemsNet (parity with Spleeter's own
output), the mapping's errors, unet-sep's defaults on Spleeter models, and the import command.

Fixtures: ../shared/data/spleeter-ref (Spleeter-format checkpoints with reduced filters and Spleeter 2.4.2's
own outputs); the tests skip with a reason when it is absent. The checkpoint reader itself is tested in
tests/test_tf_checkpoint.py, the ``spleeter:*`` registry names in tests/test_registry.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tf_bundle import require_ref, write_bundle
from unet_sep.dsp.measures import snr_db
from unet_sep.separate.separator import Separator
from unet_sep.weights import spleeter as sp
from unet_sep.weights.checkpoint import load_model
from unet_sep.weights.tf_checkpoint import read_tf_checkpoint


@pytest.fixture(scope="module")
def ref() -> Path:
    return require_ref()


@pytest.fixture(scope="module")
def manifest(ref: Path) -> dict:
    return json.loads((ref / "manifest.json").read_text())


# ---- configs -----------------------------------------------------------------------------------------


def test_embedded_configs_match_spleeter(manifest: dict, ref: Path) -> None:
    for model, info in manifest["models"].items():
        fixture = json.loads((ref / info["config"]).read_text())
        assert fixture["model"]["params"].pop("conv_n_filters") == manifest["conv_n_filters"]
        assert sp.embedded_config(info["embedded_config"]) == fixture, model
    assert sp.embedded_names() == [
        "spleeter:2stems", "spleeter:4stems", "spleeter:5stems",
        "spleeter:2stems-16kHz", "spleeter:4stems-16kHz", "spleeter:5stems-16kHz",
    ]
    two, five = sp.spleeter_model_config("spleeter:2stems"), sp.spleeter_model_config("spleeter:5stems-16kHz")
    activations = ("leaky_relu", "relu", "sigmoid")
    assert (two.unet.conv_activation, two.unet.deconv_activation, two.mask_activation) == activations
    assert (five.unet.conv_activation, five.unet.deconv_activation, five.mask_activation) == ("elu", "elu", "softmax")
    assert two.unet.filters == [16, 32, 64, 128, 256, 512] and two.unet.batchnorm_eps == 1e-3
    assert (five.frequency_bins, five.stft.n_fft, five.stft.hop_length) == (1536, 4096, 1024)
    # unet-sep's full-band default; Spleeter's "zeros" is kept in the provenance for exact mode.
    assert five.mask_extension == "capped_average" and five.provenance["spleeter_mask_extension"] == "zeros"
    # Spleeter compares the activation strings literally.
    odd = sp.embedded_config("spleeter:2stems")
    odd["model"]["params"] = {"conv_activation": "elu", "deconv_activation": "LeakyReLU"}
    config = sp.spleeter_model_config(odd)
    assert (config.unet.conv_activation, config.unet.deconv_activation) == ("leaky_relu", "leaky_relu")


# ---- parity with Spleeter ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["2stems", "4stems", "5stems", "2stems-16kHz"])
def test_parity_with_spleeter(ref: Path, manifest: dict, model: str) -> None:
    info = manifest["models"][model]
    config, net = sp.load_spleeter(ref / info["checkpoint_dir"], ref / info["config"], name=f"spleeter:{model}")
    assert config.frequency_bins == info["F"] and config.stems == info["stems"]
    start, stop = info["input_slice"]
    mixture = np.load(ref / "input.npy")[start:stop]
    separator = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros")
    stems = separator.separate(mixture.T, 44100)
    snrs = {}
    for stem in info["stems"]:
        reference = np.load(ref / model / f"out_{stem}.npy").T
        assert stems[stem].shape == reference.shape
        snrs[stem] = round(snr_db(reference, stems[stem]), 1)
    print(f"{model}: SNR vs Spleeter (dB) {snrs}")
    assert min(snrs.values()) >= 70.0, f"{model}: SNR vs Spleeter below 70 dB: {snrs}"


# ---- mapping errors ------------------------------------------------------------------------------------


def test_mapping_errors_name_the_variables(ref: Path, tmp_path: Path) -> None:
    variables = read_tf_checkpoint(ref / "2stems")
    config = ref / "2stems" / "config.json"
    # The test writer makes a checkpoint the reader and the mapping accept as the original.
    same = write_bundle(tmp_path / "same", variables)
    _, net = sp.load_spleeter(same, config)
    _, original = sp.load_spleeter(ref / "2stems", config)
    for name, tensor in original.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name

    extra = dict(variables, **{"conv2d_14/kernel": np.zeros((5, 5, 2, 2), np.float32)})
    with pytest.raises(sp.SpleeterCheckpointError, match=r"1 unknown variable\(s\): conv2d_14/kernel"):
        sp.load_spleeter(write_bundle(tmp_path / "extra", extra), config)

    dropped = ("batch_normalization_17/gamma", "conv2d_transpose_7/bias")
    missing = {k: v for k, v in variables.items() if k not in dropped}
    with pytest.raises(sp.SpleeterCheckpointError, match="missing variable") as caught:
        sp.load_spleeter(write_bundle(tmp_path / "missing", missing), config)
    assert "batch_normalization_17/gamma" in str(caught.value) and "conv2d_transpose_7/bias" in str(caught.value)

    wrong = dict(variables, **{"conv2d_3/bias": np.zeros(17, np.float32)})
    with pytest.raises(sp.SpleeterCheckpointError, match=r"conv2d_3/bias \[17\] \(expected \[16\]\)"):
        sp.load_spleeter(write_bundle(tmp_path / "wrong", wrong), config)

    # Default filters (no conv_n_filters) against the reduced-filter checkpoint: a clear shape error.
    with pytest.raises(sp.SpleeterCheckpointError, match=r"conv_n_filters = \[2, 4, 8, 16, 32, 64\]: "
                       r"conv2d/kernel \[5, 5, 2, 2\] \(expected \[5, 5, 2, 16\]\)"):
        sp.load_spleeter(ref / "2stems", "spleeter:2stems")
    # A 4-stem config on a 2-stem checkpoint: the missing U-Nets are named.
    with pytest.raises(sp.SpleeterCheckpointError,
                       match=r"2 U-Net\(s\) worth\): 148 missing variable\(s\): batch_normalization_24/beta"):
        sp.load_spleeter(ref / "2stems", ref / "4stems" / "config.json")


# ---- unet-sep's defaults on Spleeter models, and the import command -------------------------------------


def test_default_mode_is_full_band_and_seamless_where_exact_mode_is_not(ref: Path) -> None:
    from unet_sep.dsp.stft import istft, stft

    config, net = sp.load_spleeter(ref / "2stems", ref / "2stems" / "config.json")
    mixture = np.load(ref / "input.npy").T  # 12.3 s, 534 frames: two Spleeter segments
    exact_mode = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros")
    exact = exact_mode.separate(mixture, 44100)
    default = Separator(net, config, device="cpu").separate(mixture, 44100)
    assert snr_db(mixture, sum(default.values())) > 60  # the stems add up to the mixture
    spec = stft(torch.from_numpy(mixture))
    spec[:, config.frequency_bins :] = 0
    lowpassed = istft(spec, mixture.shape[-1]).numpy()
    assert snr_db(lowpassed, sum(exact.values())) > 60  # Spleeter: the mixture less everything above 11 kHz
    assert snr_db(mixture, sum(exact.values())) < 40
    # Both modes agree away from the seam at frame 512 and the band edge, and differ around the seam.
    low_default = {k: istft(_lowpass(v, config.frequency_bins), v.shape[-1]).numpy() for k, v in default.items()}
    seam = 512 * 1024 - 4096
    before = slice(44100, seam - 44100 * 3)
    for stem in exact:
        assert snr_db(exact[stem][:, before], low_default[stem][:, before]) > 30


def _lowpass(x: np.ndarray, bins: int) -> torch.Tensor:
    from unet_sep.dsp.stft import stft

    spec = stft(torch.from_numpy(x))
    spec[:, bins:] = 0
    return spec


def test_import_spleeter_command(ref: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from unet_sep.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["models", "import-spleeter", str(ref / "4stems"),
                                 "--config", str(ref / "4stems" / "config.json"), "--out", str(tmp_path / "four")])
    assert result.exit_code == 0, result.output
    config, net = load_model(tmp_path / "four")
    assert config.stems == ["vocals", "drums", "bass", "other"] and config.unet.conv_activation == "elu"
    _, direct = sp.load_spleeter(ref / "4stems", ref / "4stems" / "config.json")
    for name, tensor in direct.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name
    result = runner.invoke(app, ["models", "import-spleeter", str(ref / "2stems"), "--config", "spleeter:4stems",
                                 "--out", str(tmp_path / "wrong")])
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "wrong" / "model.safetensors").exists()
