"""The model registry: providers (bundled, the remote list, Spleeter), download -> verify -> convert -> cache,
offline use, and the cleanup of what killed downloads and conversions leave in the cache.

The Spleeter tests use ../shared/data/spleeter-ref (they skip with a reason when it is absent); the remote
list is tested with a made-up model served from a file:// URL.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest
import torch

from conftest import make_model
from tf_bundle import CHECKPOINT_FILES, require_ref
from unet_sep.atomic import temporary_path
from unet_sep.config import ConfigError
from unet_sep.weights import registry
from unet_sep.weights import spleeter as sp
from unet_sep.weights.checkpoint import CheckpointError, load_model
from unet_sep.weights.entries import ModelEntry, ModelNotFoundError
from unet_sep.weights.native import bundled_models, remote_models
from unet_sep.weights.providers import PROVIDERS


@pytest.fixture(scope="module")
def ref() -> Path:
    return require_ref()


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
    entries = {entry.name: entry for entry in sp.spleeter_models()}
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
        with pytest.raises(ModelNotFoundError, match="checksum mismatch"):
            registry.resolve_model("spleeter:2stems")
        assert _files(cache) == []

        monkeypatch.setenv("UNET_SEP_SPLEETER_SHA256_2STEMS", digest)
        folder = registry.resolve_model("spleeter:2stems")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert folder == cache / "models" / f"spleeter_2stems.r{sp.CONVERSION_REVISION}"
    assert (cache / "downloads" / "2stems.tar.gz").is_file()
    config, net = load_model(folder)
    assert config.name == "spleeter:2stems" and config.stems == ["vocals", "accompaniment"]
    assert config.unet.filters == [2, 4, 8, 16, 32, 64] and config.mask_extension == "capped_average"
    _, direct = sp.load_spleeter(ref / "2stems", ref / "2stems" / "config.json")
    for name, tensor in direct.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name

    # The server is gone: the cached model and the cached archive (for the -16kHz name) work offline.
    assert registry.resolve_model("spleeter:2stems", offline=True) == folder
    # A conversion cached by the first revision (mask extension "last", the hi-hat leak) is converted again from
    # the kept archive, and the old folder goes.
    old = cache / "models" / "spleeter_2stems"
    shutil.copytree(folder, old)
    shutil.rmtree(folder)
    old_config = json.loads((old / "config.json").read_text())
    old_config["mask_extension"] = "last"
    (old / "config.json").write_text(json.dumps(old_config))
    assert registry.resolve_model("spleeter:2stems", offline=True) == folder
    assert load_model(folder)[0].mask_extension == "capped_average" and not old.exists()
    wide = registry.resolve_model("spleeter:2stems-16kHz", offline=True)
    wide_config, _ = load_model(wide)
    assert wide_config.frequency_bins == 1536 and wide_config.unet.filters == [2, 4, 8, 16, 32, 64]
    with pytest.raises(ModelNotFoundError):
        registry.resolve_model("spleeter:4stems", offline=True)


def test_convert_finds_checkpoint_in_subfolder(ref: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _archive(ref, tmp_path / "www", subfolder="2stems/")
    entry = {e.name: e for e in sp.spleeter_models()}["spleeter:2stems"]
    (tmp_path / "out").mkdir()
    entry.convert(archive, tmp_path / "out" / "model")
    config, _ = load_model(tmp_path / "out" / "model")
    assert config.stems == ["vocals", "accompaniment"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]  # the extraction is cleaned up
    assert sorted(p.name for p in (tmp_path / "out" / "model").iterdir()) == ["config.json", "model.safetensors"]


# ---- providers and the remote list of unet-sep models ----------------------------------------------------


def test_providers_in_display_order() -> None:
    names = list(registry.registered_models())
    bundled = [entry.name for entry in bundled_models()]
    spleeter_names = [entry.name for entry in sp.spleeter_models()]
    remote = [entry.name for entry in remote_models()]  # the shipped list parses (it may be empty)
    assert names == bundled + remote + spleeter_names
    assert [provider.__name__ for provider in PROVIDERS] == ["bundled_models", "remote_models", "spleeter_models"]
    made_up = ModelEntry(name="made-up", description="", stems=("a", "b"), sample_rate=8000, url="file:///x")
    assert registry.registered_models([lambda: [made_up]]) == {"made-up": made_up}
    with pytest.raises(ModelNotFoundError, match=r"registered: made-up\)"):
        registry.resolve_model("no-such-model", providers=[lambda: [made_up]])


def _remote_listing(folder: Path, source: Path, **changes) -> Path:
    """A remote model list with one model whose weights are ``source``'s, served from a file:// URL."""
    weights = source / "model.safetensors"
    item = {"name": "tiny:remote", "url": weights.as_uri(), "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "config": json.loads((source / "config.json").read_text())}
    item.update(changes)
    listing = folder / "remote_models.json"
    listing.write_text(json.dumps([item]))
    return listing


def test_a_remote_model_is_data_downloaded_verified_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_model(tmp_path / "www" / "tiny", provenance={"description": "a tiny test model"})
    listing = _remote_listing(tmp_path, source)
    (entry,) = remote_models(listing)
    assert (entry.name, entry.stems, entry.sample_rate, entry.description) == (
        "tiny:remote", ("vocals", "accompaniment"), 44100, "a tiny test model")
    assert entry.band_hz == 1024 * 44100 / 4096 and entry.bundled is None
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNET_SEP_CACHE", str(cache))
    providers = [functools.partial(remote_models, listing)]
    with pytest.raises(ModelNotFoundError, match="not in the cache .* and downloads are off"):
        registry.resolve_model("tiny:remote", offline=True, providers=providers)

    folder = registry.resolve_model("tiny:remote", providers=providers)
    assert folder == cache / "models" / "tiny_remote" and entry.local_folder() == folder
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["tiny_remote"]
    config, net = load_model(folder)
    original_config, original = load_model(source)
    assert config.name == "tiny:remote" and config.stems == original_config.stems
    assert dataclasses.replace(config, name="") == dataclasses.replace(original_config, name="")
    for name, tensor in original.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name
    (source / "model.safetensors").unlink()  # the source is gone: the cached model still resolves
    assert registry.resolve_model("tiny:remote", offline=True, providers=providers) == folder


def test_a_remote_model_that_fails_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_model(tmp_path / "www" / "tiny")
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNET_SEP_CACHE", str(cache))
    wrong_sum = _remote_listing(tmp_path, source, sha256="0" * 64)
    with pytest.raises(ModelNotFoundError, match="checksum mismatch"):
        registry.resolve_model("tiny:remote", providers=[functools.partial(remote_models, wrong_sum)])
    assert _files(cache) == []

    config = json.loads((source / "config.json").read_text())
    config["unet"]["filters"] = [8, 16, 32, 64, 128, 256]  # weights that do not fit this config
    misfit = _remote_listing(tmp_path, source, config=config)
    with pytest.raises(CheckpointError, match="does not match its config|has shape"):
        registry.resolve_model("tiny:remote", providers=[functools.partial(remote_models, misfit)])
    assert list((cache / "models").iterdir()) == []  # no staging folder, no half model
    assert [p.name for p in (cache / "downloads").iterdir()] == ["model.safetensors"]  # the verified download stays


@pytest.mark.parametrize(("items", "message"), [
    ({"name": "x"}, r"expected a JSON list of models"),
    ([{"name": "x", "url": "file:///x.safetensors", "sha256": "0" * 64, "config": {}, "sha": 1}],
     r"unknown key models\[0\]\.sha \(did you mean models\[0\]\.sha256\?\)"),
    ([{"name": "x", "url": "file:///x.safetensors"}], r"models\[0\] needs the keys name, url, sha256, config"),
    ([{"name": "x", "url": "file:///x.safetensors", "sha256": "abc", "config": {}}],
     r"models\[0\]\.sha256 must be 64 hex digits, got 'abc'"),
    ([{"name": "x", "url": "file:///x.safetensors", "sha256": "0" * 64, "config": {"stems": []}}],
     r"models\[0\]: stems must be a list of 1 to 16 distinct names"),
    ([{"name": "x", "url": "file:///x.safetensors", "sha256": "0" * 64, "config": "config.json"}],
     r"models\[0\]\.config must be an object"),
    ([{"name": "x", "url": f"file:///{i}/x.safetensors", "sha256": "0" * 64, "config": {}} for i in range(2)],
     r"the name 'x' appears more than once"),
    ([{"name": f"x{i}", "url": f"file:///{i}/x.safetensors", "sha256": "0" * 64, "config": {}} for i in range(2)],
     r"the file name 'x.safetensors' appears more than once"),
])
def test_remote_list_errors_name_the_file_and_the_item(tmp_path: Path, items: object, message: str) -> None:
    listing = tmp_path / "remote_models.json"
    listing.write_text(json.dumps(items))
    with pytest.raises(ConfigError, match=message) as caught:
        remote_models(listing)
    assert str(caught.value).startswith(f"{listing}: ")


def test_leftovers_of_killed_downloads_and_conversions_are_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("UNET_SEP_CACHE", str(cache))
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    live_staging = temporary_path(cache / "models" / "other")  # this process: a live conversion elsewhere
    host = live_staging.name.split("@")[1].split(".partial")[0]
    dead_staging = cache / "models" / f".tiny_remote.0a1b2c3d.{process.pid}@{host}.partial"
    dead_download = cache / "downloads" / f".model.safetensors.0a1b2c3d.{process.pid}@{host}.partial"
    for folder in (live_staging, dead_staging):
        (folder / ".extracted").mkdir(parents=True)
    dead_download.parent.mkdir(parents=True)
    dead_download.write_bytes(b"half")
    source = make_model(tmp_path / "www" / "tiny")
    listing = _remote_listing(tmp_path, source)
    registry.resolve_model("tiny:remote", providers=[functools.partial(remote_models, listing)])
    assert sorted(p.name for p in (cache / "models").iterdir()) == sorted([live_staging.name, "tiny_remote"])
    assert [p.name for p in (cache / "downloads").iterdir()] == ["model.safetensors"]

