"""Spleeter checkpoints without TensorFlow: the reader, the mapping (parity with Spleeter's own output), the
errors, and the download -> verify -> convert -> cache path of the ``spleeter:*`` registry names.

Fixtures: ../shared/data/spleeter-ref (Spleeter-format checkpoints with reduced filters and Spleeter 2.4.2's
own outputs); the tests skip with a reason when it is absent.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from unet_sep.dsp.measures import snr_db
from unet_sep.separate.separator import Separator
from unet_sep.weights import registry
from unet_sep.weights import spleeter as sp
from unet_sep.weights.checkpoint import load_model

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REF = SHARED / "data" / "spleeter-ref"
CHECKPOINT_FILES = ("checkpoint", "model.index", "model.data-00000-of-00001")


@pytest.fixture(scope="module")
def ref() -> Path:
    if not (REF / "manifest.json").is_file():
        pytest.skip(f"Spleeter reference fixtures not found at {REF} (shared data is absent)")
    return REF


@pytest.fixture(scope="module")
def manifest(ref: Path) -> dict:
    return json.loads((ref / "manifest.json").read_text())


# ---- a small, real TF bundle writer (LevelDB table + data file) for modified checkpoints ----------------

_DT = {np.dtype(np.float32): 1, np.dtype(np.float64): 2, np.dtype(np.int32): 3, np.dtype(np.int64): 9}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes | int) -> bytes:
    key = _varint(number << 3 | wire)
    if wire == 0:
        return key + _varint(payload)
    if wire == 5:
        return key + int(payload).to_bytes(4, "little")
    return key + _varint(len(payload)) + payload


def _block(pairs: list[tuple[bytes, bytes]], restart_interval: int = 4) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(pairs):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += _varint(shared) + _varint(len(key) - shared) + _varint(len(value)) + key[shared:] + value
        previous = key
    restarts = restarts or [0]
    for offset in restarts:
        out += offset.to_bytes(4, "little")
    return bytes(out + len(restarts).to_bytes(4, "little"))


def write_bundle(folder: Path, tensors: dict[str, np.ndarray], compression: int = 0) -> Path:
    """Write ``tensors`` as a TF V2 checkpoint ``folder/model`` (+ the ``checkpoint`` state file)."""
    folder.mkdir(parents=True, exist_ok=True)
    data, pairs = bytearray(), []
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
        shape = b"".join(_field(2, 2, _field(1, 0, d)) for d in array.shape)
        entry = _field(1, 0, _DT[array.dtype]) + _field(2, 2, shape) + _field(4, 0, len(data))
        entry += _field(5, 0, len(raw)) + _field(6, 5, sp.masked_crc32c(raw))
        pairs.append((name.encode(), entry))
        data += raw
    header = _field(1, 0, 1) + _field(3, 2, _field(1, 0, 1))
    pairs = [(b"", header)] + pairs
    table, index = bytearray(), []
    for start in range(0, len(pairs), 16):  # several data blocks, like a real (larger) index
        chunk = pairs[start : start + 16]
        contents = _block(chunk)
        index.append((chunk[-1][0], _varint(len(table)) + _varint(len(contents))))
        table += contents + bytes([compression]) + sp.masked_crc32c(contents + bytes([compression])).to_bytes(4, "little")
    handles = []
    for contents in (_block([]), _block(index, restart_interval=1)):
        handles.append(_varint(len(table)) + _varint(len(contents)))
        table += contents + b"\0" + sp.masked_crc32c(contents + b"\0").to_bytes(4, "little")
    footer = (handles[0] + handles[1]).ljust(40, b"\0") + (0xDB4775248B80FB57).to_bytes(8, "little")
    (folder / "model.index").write_bytes(bytes(table + footer))
    (folder / "model.data-00000-of-00001").write_bytes(bytes(data))
    (folder / "checkpoint").write_text('model_checkpoint_path: "model"\nall_model_checkpoint_paths: "model"\n')
    return folder


# ---- reader ------------------------------------------------------------------------------------------


def test_crc32c_known_values() -> None:
    assert sp.crc32c(b"") == 0
    assert sp.crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    data = np.random.default_rng(1).integers(0, 256, 300_001, dtype=np.uint8)
    chained = 0
    for start in range(0, data.size, 10_000):  # short pieces take the pure-Python path
        chained = sp.crc32c(data[start : start + 10_000].tobytes(), chained)
    assert sp.crc32c(data) == chained  # long inputs take the numpy path
    assert sp.masked_crc32c(b"123456789") == ((((0xE3069283 >> 15) | (0xE3069283 << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


@pytest.mark.parametrize("model", ["2stems", "4stems", "5stems"])
def test_reader_matches_variables_json(ref: Path, model: str) -> None:
    expected = json.loads((ref / model / "variables.json").read_text())
    variables = sp.read_tf_checkpoint(ref / model)
    assert {name: list(array.shape) for name, array in variables.items()} == expected
    assert variables["global_step"].dtype == np.int64
    assert all(a.dtype == np.float32 for n, a in variables.items() if n != "global_step")
    index_only = sp.checkpoint_variables(ref / model / "model.index")
    assert {name: list(shape) for name, (_, shape) in index_only.items()} == expected


def test_reader_rejects_corrupted_data_and_compressed_blocks(ref: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    shutil.copytree(ref / "2stems", bad, ignore=shutil.ignore_patterns("out_*"))
    data = bytearray((bad / "model.data-00000-of-00001").read_bytes())
    data[len(data) // 2] ^= 0x40
    (bad / "model.data-00000-of-00001").chmod(0o644)
    (bad / "model.data-00000-of-00001").write_bytes(bytes(data))
    with pytest.raises(sp.TFCheckpointError, match="CRC32C mismatch"):
        sp.read_tf_checkpoint(bad)
    assert len(sp.read_tf_checkpoint(bad, verify=False)) == 149

    snappy = write_bundle(tmp_path / "snappy", {"global_step": np.array(1, np.int64)}, compression=1)
    with pytest.raises(sp.TFCheckpointError, match="snappy-compressed"):
        sp.read_tf_checkpoint(snappy)


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
    assert (two.unet.conv_activation, two.unet.deconv_activation, two.mask_activation) == ("leaky_relu", "relu", "sigmoid")
    assert (five.unet.conv_activation, five.unet.deconv_activation, five.mask_activation) == ("elu", "elu", "softmax")
    assert two.unet.filters == [16, 32, 64, 128, 256, 512] and two.unet.batchnorm_eps == 1e-3
    assert (five.frequency_bins, five.stft.n_fft, five.stft.hop_length) == (1536, 4096, 1024)
    # unet-sep's full-band default; Spleeter's "zeros" is kept in the provenance for exact mode.
    assert five.mask_extension == "last" and five.provenance["spleeter_mask_extension"] == "zeros"
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
    variables = sp.read_tf_checkpoint(ref / "2stems")
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

    missing = {k: v for k, v in variables.items() if k not in ("batch_normalization_17/gamma", "conv2d_transpose_7/bias")}
    with pytest.raises(sp.SpleeterCheckpointError, match="missing variable") as caught:
        sp.load_spleeter(write_bundle(tmp_path / "missing", missing), config)
    assert "batch_normalization_17/gamma" in str(caught.value) and "conv2d_transpose_7/bias" in str(caught.value)

    wrong = dict(variables, **{"conv2d_3/bias": np.zeros(17, np.float32)})
    with pytest.raises(sp.SpleeterCheckpointError, match=r"conv2d_3/bias \[17\] \(expected \[16\]\)"):
        sp.load_spleeter(write_bundle(tmp_path / "wrong", wrong), config)

    # Default filters (no conv_n_filters) against the reduced-filter checkpoint: a clear shape error.
    with pytest.raises(sp.SpleeterCheckpointError, match=r"conv_n_filters = \[2, 4, 8, 16, 32, 64\]: conv2d/kernel \[5, 5, 2, 2\] \(expected \[5, 5, 2, 16\]\)"):
        sp.load_spleeter(ref / "2stems", "spleeter:2stems")
    # A 4-stem config on a 2-stem checkpoint: the missing U-Nets are named.
    with pytest.raises(sp.SpleeterCheckpointError, match=r"2 U-Net\(s\) worth\): 148 missing variable\(s\): batch_normalization_24/beta"):
        sp.load_spleeter(ref / "2stems", ref / "4stems" / "config.json")


# ---- download -> verify -> convert -> cache ------------------------------------------------------------


def _archive(ref: Path, folder: Path, subfolder: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / "2stems.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name in CHECKPOINT_FILES:
            tar.add(ref / "2stems" / name, arcname=f"{subfolder}{name}")
    return archive


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


def _serve(folder: Path) -> tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def test_registry_entries_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sp.URL_ENV, raising=False)
    monkeypatch.delenv("UNET_SEP_SPLEETER_SHA256_4STEMS", raising=False)
    entries = {entry.name: entry for entry in sp.registry_entries()}
    assert entries["spleeter:4stems-16kHz"].url == "https://github.com/deezer/spleeter/releases/download/v1.4.0/4stems.tar.gz"
    assert entries["spleeter:4stems"].sha256 == "3adb4a50ad4eb18c7c4d65fcf4cf2367a07d48408a5eb7d03cd20067429dfaa8"
    assert entries["spleeter:5stems"].stems == ("vocals", "piano", "drums", "bass", "other")
    assert set(entries) <= set(registry.registered_models())


def test_download_verify_convert_cache(ref: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _archive(ref, tmp_path / "www")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    server, thread = _serve(tmp_path / "www")
    try:
        monkeypatch.setenv(sp.URL_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
        monkeypatch.setenv("UNET_SEP_CACHE", str(cache))

        # A wrong checksum is rejected and nothing is kept.
        monkeypatch.setenv("UNET_SEP_SPLEETER_SHA256_2STEMS", "0" * 64)
        with pytest.raises(registry.ModelNotFoundError, match="checksum mismatch"):
            registry.resolve_model("spleeter:2stems")
        assert _files(cache) == []

        monkeypatch.setenv("UNET_SEP_SPLEETER_SHA256_2STEMS", digest)
        folder = registry.resolve_model("spleeter:2stems")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert folder == cache / "models" / "spleeter_2stems"
    assert (cache / "downloads" / "2stems.tar.gz").is_file()
    config, net = load_model(folder)
    assert config.name == "spleeter:2stems" and config.stems == ["vocals", "accompaniment"]
    assert config.unet.filters == [2, 4, 8, 16, 32, 64] and config.mask_extension == "last"
    _, direct = sp.load_spleeter(ref / "2stems", ref / "2stems" / "config.json")
    for name, tensor in direct.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name

    # The server is gone: the cached model and the cached archive (for the -16kHz name) work offline.
    assert registry.resolve_model("spleeter:2stems", offline=True) == folder
    wide = registry.resolve_model("spleeter:2stems-16kHz", offline=True)
    wide_config, _ = load_model(wide)
    assert wide_config.frequency_bins == 1536 and wide_config.unet.filters == [2, 4, 8, 16, 32, 64]
    with pytest.raises(registry.ModelNotFoundError):
        registry.resolve_model("spleeter:4stems", offline=True)


def test_convert_finds_checkpoint_in_subfolder(ref: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _archive(ref, tmp_path / "www", subfolder="2stems/")
    entry = {e.name: e for e in sp.registry_entries()}["spleeter:2stems"]
    (tmp_path / "out").mkdir()
    entry.convert(archive, tmp_path / "out" / "model")
    config, _ = load_model(tmp_path / "out" / "model")
    assert config.stems == ["vocals", "accompaniment"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]  # the extraction is cleaned up


# ---- unet-sep's defaults on Spleeter models, and the import command -------------------------------------


def test_default_mode_is_full_band_and_seamless_where_exact_mode_is_not(ref: Path) -> None:
    from unet_sep.dsp.stft import istft, stft

    config, net = sp.load_spleeter(ref / "2stems", ref / "2stems" / "config.json")
    mixture = np.load(ref / "input.npy").T  # 12.3 s, 534 frames: two Spleeter segments
    exact = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros").separate(mixture, 44100)
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
    result = runner.invoke(app, ["models", "import-spleeter", str(ref / "4stems"), "--config", str(ref / "4stems" / "config.json"),
                                 "--out", str(tmp_path / "four")])
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
