"""The data settings (unet_sep.data.config) and the registry of formats (unet_sep.data.formats): the checks and
their messages, the JSON round trip, what each format recognises, and that the data package needs neither the
training code nor the optional extras."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from musdb_tree import SOURCES, make_musdb_tree
from unet_sep.data.config import DataConfig
from unet_sep.data.formats import FORMATS, KINDS, data_format, recognise_format
from unet_sep.data.source import DataFormat
from unet_sep.errors import ConfigError
from unet_sep.train.recipe import TrainingDataConfig

REPO = Path(__file__).resolve().parents[1]

CONFIG_ERRORS = [
    (dict(kind="zip"), "data.kind must be one of musdb, folder, got 'zip'"),
    (dict(root=""), "data.root"),
    (dict(targets=[]), "non-empty"),
    (dict(targets=["vocals", "vocals"]), "distinct"),
    (dict(targets=["vocals", "../x"]), "usable stem name"),
    (dict(targets=["mixture"]), "mixture"),
    (dict(max_tracks=0), "max_tracks"),
    (dict(split_group="singers"), "split_file is not"),
    (dict(valid_split=""), "valid_split"),
    (dict(kind="musdb", targets=["vocals", "piano"]), "not MUSDB stems"),
    (dict(kind="musdb", targets=[*SOURCES, "accompaniment"]), "every source is a target"),
    (dict(kind="musdb", train_split="training"), "train_split for MUSDB"),
    (dict(kind="musdb", split_file="s.json"), "folder data sets"),
]


@pytest.mark.parametrize("overrides, message", CONFIG_ERRORS)
def test_config_errors(overrides, message):
    for cls in (DataConfig, TrainingDataConfig):  # a recipe's data section checks the same first
        config = cls(**{"root": "/data", **overrides})
        with pytest.raises(ConfigError, match=message):
            config.validate()


def test_config_dict_round_trip():
    config = DataConfig(kind="musdb", root="/m", is_wav=True, targets=list(SOURCES), cache_dir="/c", max_tracks=3)
    data = config.to_dict()
    assert list(data) == ["kind", "root", "is_wav", "targets", "train_split", "valid_split", "test_split",
                          "split_file", "split_group", "cache_dir", "max_tracks"]
    again = DataConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config
    with pytest.raises(ConfigError, match=r"unknown key data\.colour\b.*section data has kind, root"):
        DataConfig.from_dict({"root": "/x", "colour": 1})
    with pytest.raises(ConfigError, match=r'data\.max_tracks must be an integer or null, got "3"'):
        DataConfig.from_dict({"root": "/x", "max_tracks": "3"})
    with pytest.raises(ConfigError, match="data.kind must be one of musdb, folder"):
        DataConfig.from_dict({"root": "/x", "kind": "zip"})


def test_registry():
    assert KINDS == ("musdb", "folder") and all(isinstance(f, DataFormat) and f.name == k for k, f in FORMATS.items())
    assert data_format("musdb") is FORMATS["musdb"] and DataConfig(kind="folder").format is FORMATS["folder"]
    with pytest.raises(TypeError):
        FORMATS["other"] = FORMATS["folder"]  # read-only: formats are registered in unet_sep/data/formats.py
    with pytest.raises(ConfigError, match="data.kind must be one of musdb, folder, got 'zip'"):
        data_format("zip")


def test_formats_recognise_their_folders(tmp_path):
    hq = make_musdb_tree(tmp_path / "hq", n_train=1, n_valid=0, n_test=1, seconds=0.2)
    assert recognise_format(hq) == (FORMATS["musdb"], {"is_wav": True})
    (tmp_path / "mp4" / "test").mkdir(parents=True)
    (tmp_path / "mp4" / "test" / "A - B.stem.mp4").write_bytes(b"")
    assert recognise_format(tmp_path / "mp4") == (FORMATS["musdb"], {"is_wav": False})
    (tmp_path / "stems" / "song").mkdir(parents=True)
    sf.write(tmp_path / "stems" / "song" / "vocals.flac", [[0.0]] * 100, 8000)
    assert recognise_format(tmp_path / "stems") == (FORMATS["folder"], {})
    (tmp_path / "empty" / "song").mkdir(parents=True)
    (tmp_path / "empty" / "song" / "notes.txt").write_text("not audio")
    assert recognise_format(tmp_path / "empty") is None


def test_data_package_needs_no_training_code_and_no_extras():
    """``import unet_sep.data`` and the evaluation modules import none of training, musdb, museval, matplotlib."""
    script = ("import sys\n"
              "import unet_sep.data, unet_sep.evaluate.plan, unet_sep.evaluate.report\n"
              "optional = ('unet_sep.train', 'musdb', 'museval', 'matplotlib', 'stempeg')\n"
              "loaded = [m for m in optional if m in sys.modules]\n"
              "print(loaded)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


BLOCK_EXTRAS = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('musdb', 'museval', 'matplotlib', 'stempeg'):
            raise ModuleNotFoundError(f'No module named {name!r}', name=name)
sys.meta_path.insert(0, Absent())
"""


def test_without_the_extras_folders_load_and_musdb_names_its_extra(tmp_path):
    """With musdb, museval and matplotlib absent: stem folders load; MUSDB says in one line what to install, and
    ``unet-sep evaluate`` prints that line and exits 1."""
    (tmp_path / "stems" / "song").mkdir(parents=True)
    for stem in ("vocals", "accompaniment"):
        sf.write(tmp_path / "stems" / "song" / f"{stem}.wav", [[0.1]] * 800, 8000)
    musdb_root = make_musdb_tree(tmp_path / "musdb", n_train=0, n_valid=0, n_test=1, seconds=0.2)
    script = BLOCK_EXTRAS + f"""
from unet_sep.data import DataConfig, load_tracks
from unet_sep.extras import MissingExtraError
(track,) = load_tracks(DataConfig(root={str(tmp_path / 'stems')!r}), 'test', 8000, 1)
print(track.name, track.length)
try:
    load_tracks(DataConfig(kind='musdb', root={str(musdb_root)!r}, is_wav=True), 'test', 8000, 1)
except MissingExtraError as error:
    print(error)
sys.argv = ['unet-sep', 'evaluate', '--model', 'mir1k-vocals-accompaniment', '--musdb-root', {str(musdb_root)!r},
            '--is-wav', '--out', {str(tmp_path / 'eval')!r}, '--device', 'cpu']
from unet_sep.cli import main
main()
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.stdout.splitlines() == [
        "song 800",
        "reading MUSDB18 needs musdb, which is not installed: pip install 'unet-sep[train]' or 'unet-sep[eval]'",
    ], result.stdout + result.stderr
    assert result.returncode == 1
    assert result.stderr.strip() == ("error: scoring with BSS Eval (museval) needs museval, which is not installed: "
                                     "pip install 'unet-sep[eval]'"), result.stderr
