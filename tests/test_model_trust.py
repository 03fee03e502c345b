"""A damaged model never gives stems (issue 25, item 1): every writer of a model folder records the sha256 of its
weights in ``config.json`` and loading checks it (once per file identity); weights that are not finite are
refused; stems that come out NaN or infinite are an error for that input, never written (``--precision`` named
when fp16/bf16 overflows); an exported ONNX file carries a digest of its tensors and its config is checked against
its graph. The damage is real: bytes flipped in the files, weights that overflow."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from conftest import PEAK_MB, make_model, music_like
from tf_bundle import require_ref
from unet_sep import load_model, save_model
from unet_sep.cli import app
from unet_sep.config import CONFIG_FILE, FORMAT_KEY, WEIGHTS_FILE, ConfigError, ModelConfig
from unet_sep.dsp.measures import snr_db
from unet_sep.separate.separator import Separator
from unet_sep.separate.stream import NonFiniteStemsError
from unet_sep.weights import checkpoint
from unet_sep.weights.checkpoint import CheckpointError

RATE = 44100


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch) -> Path:
    """The remembered digests (and ONNX exports) of this test in a folder of its own."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNET_SEP_CACHE", str(cache))
    return cache


def flip_middle(path: Path, count: int = 4096, at: int | None = None) -> None:
    """Invert ``count`` bytes of ``path`` in place, centred on byte ``at`` (default: the middle of the file)."""
    size = path.stat().st_size
    start = (size // 2 if at is None else at) - count // 2
    with path.open("r+b") as handle:
        handle.seek(start)
        data = handle.read(count)
        handle.seek(start)
        handle.write(bytes(byte ^ 0xFF for byte in data))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def unet_sep(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "unet_sep", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ), cwd=cwd)


def settle(path: Path) -> None:
    """Date ``path`` 10 s back, as a file written earlier (a file modified in the last seconds is not remembered)."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns - 10 * 10**9))


# ---- the weights' digest -------------------------------------------------------------------------------------


def test_every_writer_records_the_weights_digest_and_the_bundled_model_carries_it(bundled, tmp_path, caplog):
    folder = make_model(tmp_path / "saved")
    assert ModelConfig.load(folder / CONFIG_FILE).weights_sha256 == sha256(folder / WEIGHTS_FILE)
    config = ModelConfig.load(bundled / CONFIG_FILE)
    assert config.weights_sha256 == sha256(bundled / WEIGHTS_FILE)
    with caplog.at_level(logging.INFO, logger="unet_sep"):
        load_model(bundled)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the default model is silent


def test_converted_spleeter_folders_record_the_digest(tmp_path):
    ref = require_ref()
    result = CliRunner().invoke(app, ["models", "import-spleeter", str(ref / "5stems"), "--config",
                                      str(ref / "5stems" / "config.json"), "--out", str(tmp_path / "5stems")])
    assert result.exit_code == 0, result.output
    config, _ = load_model(tmp_path / "5stems")
    assert config.weights_sha256 == sha256(tmp_path / "5stems" / WEIGHTS_FILE)
    assert config.stems == ["vocals", "piano", "drums", "bass", "other"]


def test_a_downloadable_model_installs_with_the_digest(tmp_path):
    from unet_sep.weights.native import install_weights

    source = make_model(tmp_path / "source")
    config = dataclasses.replace(ModelConfig.load(source / CONFIG_FILE), weights_sha256="")
    install_weights(config, source / WEIGHTS_FILE, tmp_path / "installed")
    assert ModelConfig.load(tmp_path / "installed" / CONFIG_FILE).weights_sha256 == sha256(source / WEIGHTS_FILE)


def test_flipped_bytes_in_the_weights_exit_2_naming_the_file_and_both_digests(bundled, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundled, copy)
    recorded = sha256(copy / WEIGHTS_FILE)
    flip_middle(copy / WEIGHTS_FILE)
    actual = sha256(copy / WEIGHTS_FILE)
    sf.write(tmp_path / "song.wav", music_like(2.0, 16000, channels=1).T, 16000)

    result = unet_sep("separate", "song.wav", "--model", "copy/", "--out", "o", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: copy/{WEIGHTS_FILE}: corrupted or changed: its sha256 is {actual}, but {CONFIG_FILE} records "
        f"{recorded}"], result.stderr
    assert not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError, match=f"its sha256 is {actual}, but {CONFIG_FILE} records {recorded}$"):
        Separator.from_pretrained(copy, device="cpu")


def test_the_digest_is_computed_once_per_file_identity(tmp_path, monkeypatch, own_cache):
    folder = make_model(tmp_path / "m")
    hashed: list[Path] = []
    monkeypatch.setattr(checkpoint, "sha256_of", lambda path: hashed.append(path) or sha256(path))

    load_model(folder)
    load_model(folder)
    assert len(hashed) == 2  # just written: not remembered (a write in the same clock tick would go unseen)
    settle(folder / WEIGHTS_FILE)
    load_model(folder)
    load_model(folder)
    assert len(hashed) == 3 and len(list((own_cache / "verified").iterdir())) == 1

    # Bytes changed in place: a new modification time, hashed again and refused. Setting the time back does not
    # hide it: the change time moved.
    times = (folder / WEIGHTS_FILE).stat()
    flip_middle(folder / WEIGHTS_FILE, 16)
    os.utime(folder / WEIGHTS_FILE, ns=(times.st_atime_ns, times.st_mtime_ns))
    with pytest.raises(CheckpointError, match="corrupted or changed"):
        load_model(folder)
    assert len(hashed) == 4


def test_a_folder_written_before_digests_loads_with_a_warning(tmp_path, caplog):
    folder = make_model(tmp_path / "current")
    old = tmp_path / "format-2"
    shutil.copytree(folder, old)
    data = json.loads((old / CONFIG_FILE).read_text())
    del data["weights_sha256"]
    data[FORMAT_KEY] = 2  # as unet-sep wrote it before format 3
    (old / CONFIG_FILE).write_text(json.dumps(data, indent=2))

    with caplog.at_level(logging.WARNING, logger="unet_sep"):
        old_stems = Separator.from_pretrained(old, device="cpu").separate(music_like(1.0, RATE), RATE)
    assert [r.getMessage() for r in caplog.records] == [
        f"{old / CONFIG_FILE} records no weights digest (written before unet-sep checked them): {WEIGHTS_FILE} is "
        "loaded unverified; save the model again to add one"]
    new_stems = Separator.from_pretrained(folder, device="cpu").separate(music_like(1.0, RATE), RATE)
    assert all(np.array_equal(old_stems[stem], new_stems[stem]) for stem in new_stems)
    # Saving it again adds the digest.
    config, net = load_model(old)
    resaved = save_model(tmp_path / "resaved", net, config)
    assert ModelConfig.load(resaved / CONFIG_FILE).weights_sha256 == sha256(resaved / WEIGHTS_FILE)


def test_a_digest_that_is_not_one_is_a_config_error(tmp_path):
    data = ModelConfig().to_dict()
    data["weights_sha256"] = "ABC"
    with pytest.raises(ConfigError, match=r'^weights_sha256 must be 64 lowercase hex digits \(or absent\), got "ABC"'):
        ModelConfig.from_dict(data)


def _edited(folder: Path, target: Path, **changes) -> Path:
    """A copy of the model folder ``folder`` at ``target`` whose config.json has ``changes`` (dotted keys as
    ``unet__filters``): its weights and their digest untouched."""
    shutil.copytree(folder, target)
    data = json.loads((target / CONFIG_FILE).read_text())
    for key, value in changes.items():
        *sections, name = key.split("__")
        entry = data
        for section in sections:
            entry = entry[section]
        entry[name] = value
    (target / CONFIG_FILE).write_text(json.dumps(data))
    return target


def test_a_config_whose_sizes_do_not_fit_its_weights_allocates_nothing_for_them(tiny_model, tmp_path):
    """Filters of 768 in every level (a valid config: 1.2 GB of float32 for two stems) beside the tiny model's
    weights: refused from the shapes alone, before the network is built."""
    folder = _edited(tiny_model, tmp_path / "wide", unet__filters=[768] * 6)
    script = ("import sys\nfrom unet_sep import load_model\ntry:\n    load_model(sys.argv[1])\n"
              "except Exception as error:\n    print(type(error).__name__, error)\n"
              f"print(int({PEAK_MB}))")
    result = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True, timeout=300)
    *said, peak_mb = result.stdout.split("\n")[:-1]
    assert said == [f"CheckpointError {folder / WEIGHTS_FILE}: tensor unets.0.encoder.0.conv.weight has shape "
                    "(4, 2, 5, 5), the config needs (768, 2, 5, 5)"], result.stdout + result.stderr
    assert int(peak_mb) < 1000, peak_mb  # torch itself takes about 400 MB


def test_weights_that_change_while_they_are_read_are_refused(tiny_model, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    read = checkpoint.load_file

    def read_then_rewritten(path: str):
        tensors = read(path)
        Path(path).write_bytes(Path(path).read_bytes())  # a writer replacing it in place meanwhile
        return tensors

    monkeypatch.setattr(checkpoint, "load_file", read_then_rewritten)
    with pytest.raises(CheckpointError) as caught:
        load_model(folder)
    assert str(caught.value) == f"{folder / WEIGHTS_FILE}: changed while it was read; load it again once it is written"


# ---- weights that are not finite -------------------------------------------------------------------------------


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    config, net = load_model(make_model(tmp_path / "m"))
    with torch.no_grad():
        net.unets[1].decoder[2].bn.weight[3] = float("inf")
        net.unets[1].decoder[2].bn.bias[:2] = float("nan")
    folder = save_model(tmp_path / "diverged", net, config)  # as written: its digest matches
    with pytest.raises(CheckpointError) as caught:
        load_model(folder)
    assert str(caught.value) == (f"{folder / WEIGHTS_FILE}: tensor unets.1.decoder.2.bn.bias holds 2 NaN or "
                                 "infinite value(s): the weights are corrupted, or the training that wrote them "
                                 "diverged")  # the first in the file's (alphabetical) order


def test_flipped_bytes_in_a_folder_without_digest_are_caught_as_non_finite_weights(bundled, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(bundled, copy)
    data = json.loads((copy / CONFIG_FILE).read_text())
    del data["weights_sha256"]
    (copy / CONFIG_FILE).write_text(json.dumps(data))
    flip_middle(copy / WEIGHTS_FILE)  # the bundled weights are float16: inverted exponents give NaN and inf
    with pytest.raises(CheckpointError, match=r"model.safetensors: tensor unets\.\S+ holds \d+ NaN or infinite"):
        load_model(copy)


# ---- stems that are not finite ---------------------------------------------------------------------------------


def overflowing_model(folder: Path, scale: float | None = None) -> Path:
    """A model whose weights are finite but overflow float32 on any sound (the first convolution's weights
    +-1e38; silence still gives finite stems), or with ``scale``, the first convolution's weights scaled by it."""
    config, net = load_model(make_model(folder.with_name(folder.name + "-source")))
    with torch.no_grad():
        for unet in net.unets:
            weight = unet.encoder[0].conv.weight
            weight.copy_(weight * scale if scale is not None else torch.sign(weight) * 1e38)
    return save_model(folder, net, config)


def test_stems_that_are_not_finite_fail_that_file_alone_in_a_shared_batch(tiny_model, tmp_path):
    good, bad = tmp_path / "good.wav", tmp_path / "bad.wav"
    sf.write(good, music_like(3.0, RATE, seed=1).T, RATE, subtype="FLOAT")
    one_sided = music_like(3.0, RATE, seed=2)
    one_sided[1] = 0.0  # its segments are the ones whose second channel is silent
    sf.write(bad, one_sided.T, RATE, subtype="FLOAT")
    separator = Separator.from_pretrained(tiny_model, device="cpu", batch_size=2)
    alone = separator.separate(sf.read(good, dtype="float32")[0].T, RATE)
    forward, mixed = separator.runner.forward, []

    def nan_for_bad(batch: torch.Tensor) -> torch.Tensor:
        estimates = forward(batch)
        silent_right = batch[:, 1].flatten(1).abs().amax(dim=1) == 0
        mixed.append(0 < int(silent_right.sum()) < batch.shape[0])
        estimates[:, silent_right] = float("nan")
        return estimates

    separator.runner.forward = nan_for_bad
    events = separator.separate_files([good, bad], tmp_path / "out")

    assert any(mixed)  # a batch held segments of both files
    assert [event.kind for event in events] == ["done", "failed"]
    assert isinstance(events[1].error, NonFiniteStemsError)
    assert str(events[1].error) == (f"{bad}: the model gave non-finite values (NaN or inf) from 0.0 s on, so no "
                                    "stems are given: its weights may be damaged, or overflow float32 on this input")
    for stem in ("vocals", "accompaniment"):
        written = sf.read(tmp_path / "out" / "good" / f"{stem}.wav", dtype="float32")[0].T
        assert snr_db(alone[stem], written) > 100, stem
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good"]  # nothing of bad, no temporaries


def test_overflowing_weights_fail_each_sounding_file_with_one_line(tmp_path):
    model = overflowing_model(tmp_path / "huge")
    sf.write(tmp_path / "silence.wav", np.zeros((RATE, 2), np.float32), RATE)
    sf.write(tmp_path / "song.wav", music_like(2.0, RATE).T, RATE)

    result = unet_sep("separate", "silence.wav", "song.wav", "--model", model, "--out", "o", "--device", "cpu",
                      "--quiet", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: song.wav: the model gave non-finite values (NaN or inf) from 0.0 s on, so no stems "
                      "are given: its weights may be damaged, or overflow float32 on this input"], result.stderr
    assert "Traceback" not in result.stderr and "1 failed" in result.stderr
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["silence"]  # song: nothing, no temporaries
    for stem in ("vocals", "accompaniment"):
        assert not sf.read(tmp_path / "o" / "silence" / f"{stem}.wav")[0].any()
    separator = Separator.from_pretrained(model, device="cpu")
    with pytest.raises(NonFiniteStemsError, match=r"^the model gave non-finite values"):
        separator.separate(music_like(1.0, RATE), RATE)
    with pytest.raises(NonFiniteStemsError):
        list(separator.stream([music_like(1.0, RATE)[None]], RATE))


def test_fp16_overflow_is_an_error_that_names_precision(tmp_path):
    model = overflowing_model(tmp_path / "loud", scale=1e3)  # fine in float32 and bfloat16; beyond float16's range
    song = music_like(2.0, RATE)
    sf.write(tmp_path / "song.wav", song.T, RATE)
    for precision in ("fp32", "bf16"):
        stems = Separator.from_pretrained(model, device="cpu", precision=precision).separate(song, RATE)
        assert all(np.isfinite(stems[stem]).all() and np.abs(stems[stem]).max() > 0 for stem in stems), precision

    result = unet_sep("separate", "song.wav", "--model", model, "--out", "o", "--device", "cpu", "--precision",
                      "fp16", "--quiet", cwd=tmp_path)

    assert result.returncode == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: song.wav: the model gave non-finite values (NaN or inf) from 0.0 s on, so no stems are given: fp16 "
        "arithmetic overflows on this input; try --precision fp32"], result.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*"))


# ---- ONNX ----------------------------------------------------------------------------------------------------


@pytest.fixture
def onnx_export(tiny_model, tmp_path) -> Path:
    pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'unet-sep[onnx]')")
    pytest.importorskip("onnx", reason="the onnx extra is not installed (pip install 'unet-sep[onnx]')")
    result = CliRunner().invoke(app, ["models", "export", str(tiny_model), "--onnx", str(tmp_path / "tiny.onnx")])
    assert result.exit_code == 0, result.output
    return tmp_path / "tiny.onnx"


def _rewrite_onnx(path: Path, metadata: dict[str, str | None]) -> None:
    """Set (None: remove) metadata entries of the ONNX file ``path``, its graph untouched."""
    import onnx

    model = onnx.load_model(str(path))
    entries = {entry.key: entry.value for entry in model.metadata_props}
    entries.update(metadata)
    del model.metadata_props[:]
    for key, value in entries.items():
        if value is not None:
            model.metadata_props.add(key=key, value=value)
    path.write_bytes(model.SerializeToString())


def test_flipped_bytes_in_an_onnx_file_exit_2_naming_the_file_and_both_digests(onnx_export, tmp_path):
    import onnx

    from unet_sep.weights.onnx_export import GRAPH_DIGEST_KEY

    model = onnx.load_model(str(onnx_export))
    recorded = {entry.key: entry.value for entry in model.metadata_props}[GRAPH_DIGEST_KEY]
    largest = max(model.graph.initializer, key=lambda tensor: len(tensor.raw_data))
    data = onnx_export.read_bytes()
    start = data.find(largest.raw_data)
    assert start > 0 and data.count(largest.raw_data) == 1
    flip_middle(onnx_export, at=start + len(largest.raw_data) // 2)
    sf.write(tmp_path / "song.wav", music_like(1.0, RATE).T, RATE)

    result = unet_sep("separate", "song.wav", "--model", "tiny.onnx", "--out", "o", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    prefix = "error: tiny.onnx: corrupted or changed: the digest of its weights is "
    assert line.startswith(prefix) and line.endswith(f", but its metadata records {recorded}"), line
    assert len(line[len(prefix):].split(",")[0]) == 64 and line[len(prefix):].split(",")[0] != recorded
    assert not (tmp_path / "o").exists()
    with pytest.raises(CheckpointError, match="corrupted or changed"):
        Separator.from_pretrained(onnx_export, device="cpu")


def test_an_onnx_config_that_does_not_fit_its_graph_is_one_model_error(onnx_export, tiny_model, tmp_path):
    from unet_sep.weights.onnx_export import CONFIG_KEY

    config = ModelConfig.load(tiny_model / CONFIG_FILE)
    three = dataclasses.replace(config, stems=["vocals", "drums", "other"])
    _rewrite_onnx(onnx_export, {CONFIG_KEY: json.dumps(three.to_dict())})
    sf.write(tmp_path / "song.wav", music_like(1.0, RATE).T, RATE)

    result = unet_sep("separate", "song.wav", "--model", "tiny.onnx", "--out", "o", cwd=tmp_path)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == ["error: tiny.onnx: does not fit its embedded config: its config says 3 "
                                          "stems, its U-Nets have 2"], result.stderr
    assert not (tmp_path / "o").exists()
    # The API with a config of its own: the session's shapes are checked when it is made.
    mono = dataclasses.replace(config, n_channels=1)
    with pytest.raises(CheckpointError, match=r"tiny\.onnx: does not fit the model's config: its config says 1 "
                                              r"channels, its U-Nets have 2$"):
        Separator(None, mono, device="cpu", backend="onnxruntime", onnx_path=onnx_export)


def test_an_onnx_file_exported_before_the_digest_loads_with_a_warning(onnx_export, tiny_model, caplog):
    from unet_sep.weights.onnx_export import GRAPH_DIGEST_KEY

    _rewrite_onnx(onnx_export, {GRAPH_DIGEST_KEY: None})
    song = music_like(1.0, RATE)
    with caplog.at_level(logging.WARNING, logger="unet_sep"):
        stems = Separator.from_pretrained(onnx_export, device="cpu").separate(song, RATE)
    assert [r.getMessage() for r in caplog.records] == [
        f"{onnx_export} records no digest of its weights (exported before unet-sep recorded one): loaded "
        "unverified; export it again to add one"]
    reference = Separator.from_pretrained(tiny_model, device="cpu").separate(song, RATE)
    assert all(snr_db(reference[stem], stems[stem]) > 80 for stem in stems)


def test_a_damaged_cached_onnx_export_is_exported_again(onnx_export, tiny_model, own_cache, caplog):
    from unet_sep.weights.onnx_export import cached_onnx_export

    first = cached_onnx_export(tiny_model)
    flip_middle(first, 64)
    with caplog.at_level(logging.WARNING, logger="unet_sep"):
        again = cached_onnx_export(tiny_model)
    assert again == first
    (message,) = [record.getMessage() for record in caplog.records]
    assert message.startswith(f"{first}: corrupted or changed: the digest of its weights is ") and message.endswith(
        "; exporting it again"), message
    song = music_like(1.0, RATE)
    stems = Separator.from_pretrained(tiny_model, device="cpu", backend="onnxruntime").separate(song, RATE)
    reference = Separator.from_pretrained(tiny_model, device="cpu").separate(song, RATE)
    assert all(snr_db(reference[stem], stems[stem]) > 80 for stem in stems)
