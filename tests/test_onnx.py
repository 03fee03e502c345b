"""ONNX export (``unet-sep models export``, :mod:`unet_sep.weights.onnx_export`) and the onnxruntime backend
(:mod:`unet_sep.separate.onnx_network`): a whole separation run by ONNX Runtime matches the torch backend at 80 dB
or more per stem, on the bundled model and on the Spleeter-format checkpoints of ../shared/data/spleeter-ref;
batch and time are dynamic; the settings the backend cannot honour are refused in one line naming the option; a
missing ``onnx`` extra is one line naming it."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import count_batches, music_like
from tf_bundle import require_ref
from unet_sep.cli import app
from unet_sep.dsp.measures import snr_db
from unet_sep.separate.separator import Separator
from unet_sep.weights import spleeter as sp
from unet_sep.weights.checkpoint import load_model

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'unet-sep[onnx]')")
pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'unet-sep[onnx]')")

from unet_sep.separate.onnx_network import OnnxNetwork  # noqa: E402
from unet_sep.weights.onnx_export import CONFIG_KEY, export_model_folder, read_onnx_config  # noqa: E402

PARITY_DB = 80.0


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def stem_snrs(reference: dict, estimate: dict) -> dict[str, float]:
    return {stem: round(snr_db(reference[stem], estimate[stem]), 1) for stem in reference}


@pytest.fixture(scope="module")
def bundled_onnx(bundled: Path, tmp_path_factory) -> Path:
    return export_model_folder(bundled, tmp_path_factory.mktemp("onnx") / "bundled.onnx")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A cache of its own for every test (exports made on first use go there)."""
    monkeypatch.setenv("UNET_SEP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# ---- the exported file ----------------------------------------------------------------------------------


def test_the_export_is_self_describing_with_dynamic_batch_and_time(bundled: Path, bundled_onnx: Path) -> None:
    import onnx

    config, net = load_model(bundled)
    model = onnx.load(str(bundled_onnx))
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    assert json.loads(metadata[CONFIG_KEY]) == config.to_dict()  # config.json, as the model folder holds it
    # ONNX Runtime's Sigmoid is not accurate for small masks (see test_spleeter_checkpoint_parity): exp is used
    assert "Sigmoid" not in {node.op_type for node in model.graph.node}
    assert read_onnx_config(bundled_onnx) == config
    network = OnnxNetwork(bundled_onnx, torch.device("cpu"))
    assert network.frames_multiple == 2 ** config.unet.depth == 64
    generator = torch.Generator().manual_seed(0)
    for batch, frames in [(1, 256), (3, 128), (2, 448)]:
        magnitude = torch.rand(batch, config.n_channels, frames, config.frequency_bins, generator=generator)
        with torch.inference_mode():
            expected = net(magnitude)
        estimates = network(magnitude)
        assert estimates.shape == expected.shape == (2, batch, config.n_channels, frames, config.frequency_bins)
        assert snr_db(expected.numpy(), estimates.numpy()) >= PARITY_DB, (batch, frames)
    with pytest.raises(ValueError, match="the exported U-Nets take T frames in multiples of 64, got 100"):
        network(torch.rand(1, config.n_channels, 100, config.frequency_bins))


# ---- parity with the torch backend, whole separations -----------------------------------------------------


def test_bundled_model_parity_batch_1_and_3_two_lengths(bundled: Path, bundled_onnx: Path) -> None:
    by_torch = Separator.from_pretrained(bundled, device="cpu", batch_size=3)
    by_onnx = Separator.from_pretrained(bundled_onnx, device="cpu", batch_size=3)  # an ONNX file: onnxruntime
    assert by_onnx.runner.settings.backend == "onnxruntime" and by_onnx.runner.net is None
    sizes = count_batches(by_onnx)
    for seconds, batch in [(2.5, 1), (6.3, 3)]:
        audio = np.stack([music_like(seconds, 44100, seed=seed) for seed in range(batch)])  # [batch, 2, n]
        reference, estimate = by_torch.separate(audio, 44100), by_onnx.separate(audio, 44100)
        snrs = stem_snrs(reference, estimate)
        print(f"bundled, {seconds} s x {batch}: SNR onnxruntime vs torch (dB) {snrs}")
        assert min(snrs.values()) >= PARITY_DB, snrs
    assert len(set(sizes)) > 1, sizes  # full and partial batches: the batch axis is dynamic


@pytest.mark.parametrize("model", ["2stems", "4stems", "5stems", "2stems-16kHz"])
def test_spleeter_checkpoint_parity(model: str) -> None:
    """With ONNX Runtime's own Sigmoid kernel (an approximation, inaccurate below about 1e-7) the sigmoid models
    gave about 48 dB here: the ratio masks amplify its error where every stem's mask is small."""
    ref = require_ref()
    info = json.loads((ref / "manifest.json").read_text())["models"][model]
    config, net = sp.load_spleeter(ref / info["checkpoint_dir"], ref / info["config"], name=f"spleeter:{model}")
    mixture = np.load(ref / "input.npy")[: 3 * 44100].T  # 3 s
    by_torch = Separator(copy.deepcopy(net), config, device="cpu")
    by_onnx = Separator(net, config, device="cpu", backend="onnxruntime")  # net exported in memory
    snrs = stem_snrs(by_torch.separate(mixture, 44100), by_onnx.separate(mixture, 44100))
    print(f"spleeter {model}: SNR onnxruntime vs torch (dB) {snrs}")
    assert list(snrs) == info["stems"] and min(snrs.values()) >= PARITY_DB, snrs


# ---- the command line ---------------------------------------------------------------------------------


def test_export_command_and_separate_with_either_backend(tmp_path: Path, tiny_model: Path, cache: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(3.0, 44100).T, 44100, subtype="FLOAT")
    code, output = run("models", "export", tiny_model, "--onnx", tmp_path / "tiny.onnx")
    assert code == 0, output
    assert output.startswith(f"wrote {tmp_path / 'tiny.onnx'}: stems vocals, accompaniment, magnitudes [N, 2, T, "
                             "1024] with T a multiple of 64"), output
    outputs = {}
    for label, options in [("torch", ["--model", tiny_model]),
                           ("file", ["--model", tmp_path / "tiny.onnx"]),
                           ("cached", ["--model", tiny_model, "--backend", "onnxruntime"])]:
        code, output = run("separate", song, "--out", tmp_path / label, "--device", "cpu", "--quiet", *options)
        assert code == 0, output
        outputs[label] = {stem: sf.read(tmp_path / label / "song" / f"{stem}.wav")[0]
                          for stem in ("vocals", "accompaniment")}
    for label in ("file", "cached"):
        assert min(stem_snrs(outputs["torch"], outputs[label]).values()) >= PARITY_DB, label
    (exported,) = (cache / "onnx").glob("*.onnx")  # made on first use, then reused
    made = exported.stat().st_mtime_ns
    code, output = run("separate", song, "--out", tmp_path / "again", "--device", "cpu", "--quiet", "--model",
                       tiny_model, "--backend", "onnxruntime")
    assert code == 0, output
    assert [p.name for p in (cache / "onnx").iterdir()] == [exported.name] and exported.stat().st_mtime_ns == made


def test_option_errors_are_one_line_exit_2(tmp_path: Path, tiny_model: Path, bundled_onnx: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(0.5, 44100).T, 44100)
    foreign = tmp_path / "foreign.onnx"
    foreign.write_bytes(b"not an onnx model")
    cases = [
        (["--model", tiny_model, "--backend", "tensorflow"],
         "error: --backend: 'tensorflow' is not a backend; choose from torch, onnxruntime"),
        (["--model", tiny_model, "--backend", "onnxruntime", "--precision", "bf16"],
         "error: --precision: 'bf16' is for the torch backend; onnxruntime runs the exported U-Nets in fp32"),
        (["--model", tiny_model, "--backend", "onnxruntime", "--compile"],
         "error: --compile: torch.compile is for the torch backend, not onnxruntime"),
        (["--model", bundled_onnx, "--backend", "torch"],
         f"error: --backend: {bundled_onnx} is an ONNX file, which only onnxruntime runs"),
        (["--model", bundled_onnx, "--precision", "fp16"],
         "error: --precision: 'fp16' is for the torch backend; onnxruntime runs the exported U-Nets in fp32"),
        (["--model", tmp_path / "absent.onnx"], f"error: {tmp_path / 'absent.onnx'}: no such ONNX file"),
    ]
    for options, message in cases:
        code, output = run("separate", song, "--out", tmp_path / "out", "--device", "cpu", "--quiet", *options)
        assert (code, output.strip()) == (2, message), options
    code, output = run("separate", song, "--out", tmp_path / "out", "--quiet", "--model", foreign)
    assert code == 2 and output.startswith(f"error: {foreign}: not a readable ONNX file (") and \
        len(output.strip().splitlines()) == 1, output
    assert not (tmp_path / "out").exists()

    export_cases = [
        ([tiny_model, "--onnx", tmp_path / "tiny.bin"],
         f"error: --onnx: {tmp_path / 'tiny.bin'}: the file name must end in .onnx (that is how --model recognises "
         "ONNX files)"),
        ([tmp_path / "nowhere", "--onnx", tmp_path / "x.onnx"],
         f"error: {tmp_path / 'nowhere'}: no such model folder and not a registered name"),
    ]
    for args, message in export_cases:
        code, output = run("models", "export", *args)
        assert code == 2 and output.strip().startswith(message), output
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["foreign.onnx"]  # the refused exports wrote nothing


def test_api_refuses_what_onnxruntime_cannot_honour(tiny_model: Path) -> None:
    from unet_sep.errors import SettingError

    config, net = load_model(tiny_model)
    for options, setting in [(dict(optimize=True), "optimize"), (dict(precision="bf16"), "precision"),
                             (dict(compile=True), "compile")]:
        with pytest.raises(SettingError) as caught:
            Separator(net, config, device="cpu", backend="onnxruntime", **options)
        assert caught.value.setting == setting
    with pytest.raises(SettingError, match="onnx_path: an ONNX file is run by the onnxruntime backend only"):
        Separator(net, config, device="cpu", onnx_path="model.onnx")
    with pytest.raises(SettingError, match="backend: the onnxruntime backend needs the network"):
        Separator(None, config, device="cpu", backend="onnxruntime")


# ---- without the extra --------------------------------------------------------------------------------

HIDE_ONNX = """
import importlib.abc
import sys


class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("onnx", "onnxruntime"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, NotInstalled())
sys.argv = ["unet-sep", *sys.argv[1:]]
from unet_sep.cli import main

main()
"""


def test_missing_extra_is_one_line_naming_it(tmp_path: Path, tiny_model: Path, bundled_onnx: Path) -> None:
    song = tmp_path / "song.wav"
    sf.write(song, music_like(0.5, 44100).T, 44100)
    env = dict(os.environ, UNET_SEP_CACHE=str(tmp_path / "cache"))
    cases = [
        (["separate", song, "--out", tmp_path / "out", "--model", tiny_model, "--backend", "onnxruntime"],
         "the onnxruntime backend needs onnxruntime"),
        (["separate", song, "--out", tmp_path / "out", "--model", bundled_onnx],
         "the onnxruntime backend needs onnxruntime"),
        (["models", "export", tiny_model, "--onnx", tmp_path / "tiny.onnx"], "ONNX export needs onnx"),
    ]
    for args, start in cases:
        result = subprocess.run([sys.executable, "-c", HIDE_ONNX, *map(str, args)], capture_output=True, text=True,
                                timeout=300, env=env)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip() == f"error: {start}, which is not installed: pip install 'unet-sep[onnx]'", \
            result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "tiny.onnx").exists()
    assert not (tmp_path / "cache").exists()
