"""The versioned model folder format: config.json carries its format version; a folder of an older format (the
ones written before there was a version) is migrated in memory and separates exactly as before; a newer one is
refused with both versions named, before any of its keys is read."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import music_like
from unet_sep import ModelConfig, Separator, STFTConfig, UNetConfig, __version__, load_model, save_model
from unet_sep import config as config_module
from unet_sep.config import CONFIG_FILE, FORMAT_KEY, FORMAT_VERSION, WEIGHTS_FILE, ConfigError, migrate_config
from unet_sep.model import StemsNet
from unet_sep.train.recipe import Recipe
from unet_sep.weights.checkpoint import CheckpointError, save_tensors
from unet_sep.weights.native import remote_models

# config.json as unet-sep wrote it before the format had a version (format 0), for a model unlike the defaults
FORMAT_0_CONFIG = Path(__file__).with_name("data") / "model-format-0" / CONFIG_FILE
FORMAT_0_MODEL = ModelConfig(
    stems=["vocals", "drums", "other"], sample_rate=22050, n_channels=1, frequency_bins=256, segment_frames=64,
    mask_activation="softmax", separation_exponent=1.5, mask_extension="average",
    stft=STFTConfig(n_fft=1024, hop_length=256),
    unet=UNetConfig(filters=[4, 8, 16, 32], kernel_size=5, conv_activation="elu", dropout=0.25, dropout_layers=2,
                    batchnorm_eps=1e-5, batchnorm_momentum=0.1),
    name="format-0-fixture",
    provenance={"written_by": "unet-sep 0.1.0 (commit f7c15b1), before config.json had a format version",
                "scores": {"sdr_db": [1.5, 2.25]}},
)


def _random_net(config: ModelConfig, seed: int = 0) -> StemsNet:
    torch.manual_seed(seed)
    net = StemsNet(config).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that dropping them would show
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return net


def _format_0_folder(folder: Path, net: StemsNet) -> Path:
    """A model folder as unet-sep wrote it before format versions: the fixture's config.json, weights by
    ``save_tensors`` (whose file format has not changed)."""
    folder.mkdir(parents=True)
    shutil.copyfile(FORMAT_0_CONFIG, folder / CONFIG_FILE)
    save_tensors(folder / WEIGHTS_FILE, net.state_dict())
    return folder


def test_the_fixture_is_a_format_0_config_of_every_field_of_its_day():
    written = json.loads(FORMAT_0_CONFIG.read_text(encoding="utf-8"))
    assert FORMAT_KEY not in written and "wiener_iterations" not in written  # format 2 added it
    assert "weights_sha256" not in written  # format 3 added it
    today = {key: value for key, value in FORMAT_0_MODEL.to_dict().items() if key != FORMAT_KEY}
    assert {**written, "wiener_iterations": 0, "weights_sha256": ""} == today


def test_a_folder_of_format_0_loads_migrated_and_separates_as_one_saved_today(tmp_path):
    net = _random_net(FORMAT_0_MODEL)
    old = _format_0_folder(tmp_path / "old", net)
    config, loaded = load_model(old)
    assert config == FORMAT_0_MODEL
    state, expected = loaded.state_dict(), net.state_dict()
    assert state.keys() == expected.keys() and all(torch.equal(state[k], expected[k]) for k in state)
    assert json.loads((old / CONFIG_FILE).read_text()) == json.loads(FORMAT_0_CONFIG.read_text())  # read only

    new = save_model(tmp_path / "new", loaded, config)
    written = json.loads((new / CONFIG_FILE).read_text(encoding="utf-8"))
    assert list(written)[0] == FORMAT_KEY and written.pop(FORMAT_KEY) == FORMAT_VERSION
    # Besides the version, only the fields formats 2 and 3 added are new: the value that means "as before", and
    # the digest of the weights written beside it.
    digest = hashlib.sha256((new / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert written == {**json.loads(FORMAT_0_CONFIG.read_text(encoding="utf-8")), "wiener_iterations": 0,
                       "weights_sha256": digest}

    mixture = music_like(3.0, 22050, channels=1)
    stems_old = Separator.from_pretrained(old, device="cpu").separate(mixture, 22050)
    stems_new = Separator.from_pretrained(new, device="cpu").separate(mixture, 22050)
    assert list(stems_old) == ["vocals", "drums", "other"]
    for stem in stems_old:
        assert np.array_equal(stems_old[stem], stems_new[stem]), stem
        assert stems_old[stem].shape == mixture.shape and np.abs(stems_old[stem]).max() > 0


def test_saved_configs_carry_the_format_version_and_round_trip(tmp_path):
    assert FORMAT_VERSION == 3 == len(config_module.MIGRATIONS)
    path = tmp_path / CONFIG_FILE
    FORMAT_0_MODEL.save(path)
    assert json.loads(path.read_text(encoding="utf-8"))[FORMAT_KEY] == FORMAT_VERSION
    assert ModelConfig.load(path) == FORMAT_0_MODEL
    assert ModelConfig.from_dict(FORMAT_0_MODEL.to_dict()) == FORMAT_0_MODEL
    # A recipe's model section is a model's settings, not a file: runs' recipe.json stay as they were, so runs
    # started before format versions resume without a recipe change.
    assert FORMAT_KEY not in Recipe().to_dict()["model"]


def test_a_newer_format_is_refused_naming_both_versions_before_its_keys_are_read(tmp_path):
    newer = FORMAT_VERSION + 2
    folder = _format_0_folder(tmp_path / "future", _random_net(FORMAT_0_MODEL))
    data = json.loads(FORMAT_0_CONFIG.read_text(encoding="utf-8"))
    data.update({FORMAT_KEY: newer, "stems": {"a": "layout", "this": "code cannot read"}, "hop_size": 512})
    (folder / CONFIG_FILE).write_text(json.dumps(data), encoding="utf-8")
    expected = (f"model format version {newer} is newer than unet-sep {__version__} reads "
                f"(format version {FORMAT_VERSION}): upgrade unet-sep")
    with pytest.raises(CheckpointError) as caught:
        load_model(folder)
    assert str(caught.value) == f"{folder / CONFIG_FILE}: {expected}"
    with pytest.raises(ConfigError) as caught:
        ModelConfig.load(folder / CONFIG_FILE)
    assert str(caught.value) == f"{folder / CONFIG_FILE}: {expected}"
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict(data)
    assert str(caught.value) == expected


@pytest.mark.parametrize("version", ["1", 1.0, True, -1, None, [1]])
def test_a_format_version_that_is_not_one_is_refused(version):
    data = {**FORMAT_0_MODEL.to_dict(), FORMAT_KEY: version}
    with pytest.raises(ConfigError) as caught:
        ModelConfig.from_dict(data)
    assert str(caught.value) == f"{FORMAT_KEY} must be an integer >= 0, got {json.dumps(version)}"


def test_errors_of_a_current_config_keep_their_words_and_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"^unknown key stemz \(did you mean stems\?\)"):
        ModelConfig.from_dict({FORMAT_KEY: FORMAT_VERSION, "stemz": ["a"]})
    folder = save_model(tmp_path / "m", _random_net(FORMAT_0_MODEL), FORMAT_0_MODEL)
    data = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    data["unet"]["kernel_size"] = "five"
    (folder / CONFIG_FILE).write_text(json.dumps(data), encoding="utf-8")
    message = f"{folder / CONFIG_FILE}: unet.kernel_size must be an integer, got \"five\""
    with pytest.raises(CheckpointError) as caught:
        load_model(folder)
    assert str(caught.value) == message
    with pytest.raises(ConfigError) as caught:
        ModelConfig.load(folder / CONFIG_FILE)
    assert str(caught.value) == message


def test_migrations_run_in_order_from_the_folder_s_version(monkeypatch):
    """A format 2 that renamed a key: configs of format 0 and 1 take every step after their own version, and
    the object read is never changed."""
    def rename_band(fields):
        fields = dict(fields)
        fields["frequency_bins"] = fields.pop("band_bins")
        return fields

    def to_format_1(fields):
        # format 1 as if it had called the key band_bins, so that the step to format 2 has work to do
        fields = dict(fields)
        fields["band_bins"] = fields.pop("frequency_bins")
        return fields

    monkeypatch.setattr(config_module, "MIGRATIONS", (to_format_1, rename_band))
    monkeypatch.setattr(config_module, "FORMAT_VERSION", 2)
    current = {key: value for key, value in FORMAT_0_MODEL.to_dict().items() if key != FORMAT_KEY}
    format_0 = dict(current)
    format_1 = {FORMAT_KEY: 1, **{("band_bins" if k == "frequency_bins" else k): v for k, v in current.items()}}
    format_2 = {FORMAT_KEY: 2, **current}
    for data in (format_0, format_1, format_2):
        before = json.loads(json.dumps(data))
        assert migrate_config(data) == current
        assert ModelConfig.from_dict(data) == FORMAT_0_MODEL
        assert data == before
    with pytest.raises(ConfigError, match=r"^model format version 3 is newer .* \(format version 2\)"):
        migrate_config({FORMAT_KEY: 3})


def test_format_1_keeps_its_mask_extension_and_gets_no_wiener_filter():
    fields = {key: value for key, value in FORMAT_0_MODEL.to_dict().items() if key != FORMAT_KEY}
    fields.pop("wiener_iterations")
    fields.pop("mask_extension")  # format 1 left it to the default of the day, which was "last"
    config = ModelConfig.from_dict({FORMAT_KEY: 1, **fields})
    assert config.mask_extension == "last" and config.wiener_iterations == 0
    assert ModelConfig.from_dict({FORMAT_KEY: 1, **fields, "mask_extension": "zeros"}).mask_extension == "zeros"
    with pytest.raises(ConfigError, match=r"^wiener_iterations must be in 0\.\.10, got 11$"):
        ModelConfig.from_dict({**FORMAT_0_MODEL.to_dict(), "wiener_iterations": 11})


def test_remote_model_configs_are_migrated_and_refused_alike(tmp_path):
    item = {"name": "remote-old", "url": "https://example.org/remote-old.safetensors", "sha256": "0" * 64,
            "config": json.loads(FORMAT_0_CONFIG.read_text(encoding="utf-8"))}
    listing = tmp_path / "models.json"
    listing.write_text(json.dumps([item]), encoding="utf-8")
    (entry,) = remote_models(listing)
    assert entry.stems == ("vocals", "drums", "other") and entry.sample_rate == 22050
    item["config"][FORMAT_KEY] = FORMAT_VERSION + 1
    listing.write_text(json.dumps([item]), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        remote_models(listing)
    assert str(caught.value) == (f"{listing}: models[0]: model format version {FORMAT_VERSION + 1} is newer than "
                                 f"unet-sep {__version__} reads (format version {FORMAT_VERSION}): upgrade unet-sep")


def test_the_docs_state_the_format_version_this_code_writes():
    """The README said 1 while the code wrote 2 (issue 25): the statement, now in docs/models.md, and its refusal
    example follow the code."""
    readme = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text(encoding="utf-8")
    stated = re.findall(r'carries `"format_version"` \((\d+) today\)', readme)
    assert stated == [str(FORMAT_VERSION)]
    newer = re.findall(r"model format version (\d+) is newer than unet-sep \S+ reads \(format version (\d+)\)", readme)
    assert newer == [(str(FORMAT_VERSION + 1), str(FORMAT_VERSION))]
