"""Folders of stem files read by unet_sep.data.folders: mixed formats, rates and channel counts, split files
(flat, grouped, unions), the errors they give, and MIR-1K as shipped in ../shared."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musdb_tree import read_file, synthetic_sources
from unet_sep.audio import resample
from unet_sep.data.config import DataConfig
from unet_sep.data.load import list_tracks, load_tracks
from unet_sep.data.tracks import DatasetError
from unet_sep.errors import ConfigError

RATE = 44100
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MIR1K = SHARED / "data" / "mir1k"


def write_folder_dataset(root: Path) -> Path:
    """songA: mixed formats (vocals.wav, drums.flac 3 samples short, bass.ogg mono, other.wav, mixture.wav);
    songB: vocals.flac at 48 kHz with an accompaniment.wav; songC: wav + flac. Returns the split file."""
    a = synthetic_sources(2.0, RATE, seed=1)
    song = root / "songA"
    song.mkdir(parents=True)
    sf.write(song / "vocals.wav", a["vocals"].T, RATE, subtype="FLOAT")
    sf.write(song / "drums.flac", a["drums"][:, :-3].T, RATE, subtype="PCM_24")
    sf.write(song / "bass.ogg", a["bass"][:1].T, RATE, format="OGG", subtype="VORBIS")
    sf.write(song / "other.wav", a["other"].T, RATE, subtype="PCM_16")
    sf.write(song / "mixture.wav", (sum(a.values()) * 0.5).T, RATE)  # never part of the accompaniment
    (song / "notes.txt").write_text("not audio")

    b = synthetic_sources(2.0, 48000, seed=2)
    song = root / "songB"
    song.mkdir()
    sf.write(song / "vocals.flac", b["vocals"].T, 48000)
    accompaniment = synthetic_sources(2.0, RATE, seed=3)
    sf.write(song / "accompaniment.wav", (accompaniment["bass"] + accompaniment["other"]).T, RATE, subtype="FLOAT")

    c = synthetic_sources(1.0, RATE, seed=4)
    song = root / "songC"
    song.mkdir()
    sf.write(song / "vocals.wav", c["vocals"].T, RATE, subtype="FLOAT")
    sf.write(song / "accompaniment.flac", c["drums"].T, RATE)

    split_file = root / "splits.json"
    split_file.write_text(json.dumps({"train": ["songA", "songB"], "test": ["songC"], "empty": []}))
    return split_file


def test_folder_dataset_mixed_formats(tmp_path, caplog):
    split_file = write_folder_dataset(tmp_path)
    config = DataConfig(root=str(tmp_path), split_file="splits.json")  # found under root
    with caplog.at_level(logging.INFO, logger="unet_sep.data"):
        tracks = {t.name: t for t in load_tracks(config, "train", RATE, 2)}
    assert list(tracks) == ["songA", "songB"]

    a = tracks["songA"]
    n = 2 * RATE - 3
    assert a.length == n and all(s.shape == (2, n) for s in a.sources.values())
    np.testing.assert_array_equal(a.sources["vocals"], read_file(tmp_path / "songA/vocals.wav")[:, :n])
    bass = read_file(tmp_path / "songA/bass.ogg")
    assert bass.shape[0] == 1
    expected = np.repeat(bass, 2, axis=0)[:, :n] + read_file(tmp_path / "songA/drums.flac")[:, :n]
    expected += read_file(tmp_path / "songA/other.wav")[:, :n]
    np.testing.assert_allclose(a.sources["accompaniment"], expected, atol=1e-6)
    assert any("cropped to the shortest" in r.getMessage() and "songA" in r.getMessage() for r in caplog.records)
    assert any("decoded" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)

    b = tracks["songB"]
    assert b.length == 2 * RATE  # 96000 samples at 48 kHz -> 88200 at 44.1 kHz
    np.testing.assert_allclose(
        b.sources["vocals"], resample(read_file(tmp_path / "songB/vocals.flac"), 48000, RATE), atol=1e-6
    )
    np.testing.assert_array_equal(b.sources["accompaniment"], read_file(tmp_path / "songB/accompaniment.wav"))

    (c,) = load_tracks(DataConfig(root=str(tmp_path), split_file=str(split_file)), "test", RATE, 1)
    assert c.name == "songC" and c.sources["vocals"].shape == (1, RATE)

    with pytest.raises(ConfigError, match="no split 'valid'; it has train, test, empty"):
        load_tracks(config, "valid", RATE, 2)

    # "a+b": the union of two splits, in file order, each track once (songA is in both here)
    split_file.write_text(json.dumps({"train": ["songA", "songB"], "test": ["songC", "songA"], "empty": []}))
    union = DataConfig(root=str(tmp_path), split_file="splits.json", train_split="train+test")
    assert [spec.name for spec in list_tracks(union, "train")] == ["songA", "songB", "songC"]
    both = load_tracks(DataConfig(root=str(tmp_path), split_file="splits.json", valid_split="test+empty"), "valid",
                       RATE, 1)
    assert [t.name for t in both] == ["songC", "songA"]
    with pytest.raises(ConfigError, match="no split 'valid'; it has train, test, empty"):
        list_tracks(DataConfig(root=str(tmp_path), split_file="splits.json", train_split="train+valid"), "train")
    split_file.write_text(json.dumps({"train": ["songA", "songB"], "test": ["songC"], "empty": [],
                                      "train+test": ["songB"]}))
    assert [spec.name for spec in list_tracks(union, "train")] == ["songB"]  # a split of that very name wins
    split_file.write_text(json.dumps({"train": ["songA", "songB"], "test": ["songC"], "empty": []}))
    with pytest.raises(ConfigError, match="holds no tracks"):
        load_tracks(DataConfig(root=str(tmp_path), split_file="splits.json", test_split="empty"), "test", RATE, 2)


def test_folder_dataset_errors(tmp_path, caplog):
    write_folder_dataset(tmp_path)
    root = str(tmp_path)
    with pytest.raises(DatasetError, match="no 'drums' stem file"):
        load_tracks(DataConfig(root=root, split_file="splits.json", targets=["vocals", "drums"]), "test", RATE, 2)
    with pytest.raises(ConfigError, match="not found"):
        load_tracks(DataConfig(root=root, split_file="nowhere.json"), "train", RATE, 2)
    with pytest.raises(ConfigError, match="is not a folder"):
        load_tracks(DataConfig(root=str(tmp_path / "absent")), "train", RATE, 2)

    (tmp_path / "missing.json").write_text(json.dumps({"train": ["songA", "songZ"]}))
    with pytest.raises(DatasetError, match="songZ.*missing"):
        load_tracks(DataConfig(root=root, split_file="missing.json"), "train", RATE, 2)

    (tmp_path / "nested.json").write_text(json.dumps({"paper": {"train": ["songA"]}, "other": {"train": []}}))
    with pytest.raises(ConfigError, match=r"groups its splits \(paper, other\); set data.split_group"):
        load_tracks(DataConfig(root=root, split_file="nested.json"), "train", RATE, 2)
    with pytest.raises(ConfigError, match="no group 'nope'; its groups are paper, other"):
        load_tracks(DataConfig(root=root, split_file="nested.json", split_group="nope"), "train", RATE, 2)
    (track,) = load_tracks(DataConfig(root=root, split_file="nested.json", split_group="paper"), "train", RATE, 2)
    assert track.name == "songA"

    # stems of clearly different lengths
    sf.write(tmp_path / "songC/accompaniment.flac", np.zeros((RATE // 2, 2), np.float32), RATE)
    with pytest.raises(DatasetError, match="differ in length by 22050 samples"):
        load_tracks(DataConfig(root=root, split_file="splits.json"), "test", RATE, 2)

    # two files for one stem
    sf.write(tmp_path / "songB/vocals.wav", np.zeros((100, 2), np.float32), RATE)
    with pytest.raises(DatasetError, match="two files for stem 'vocals'"):
        load_tracks(DataConfig(root=root, split_file="splits.json"), "train", RATE, 2)

    # no split file: every track folder in every split, with a warning
    (tmp_path / "songB/vocals.wav").unlink()
    (tmp_path / "songC/accompaniment.flac").unlink()
    sf.write(tmp_path / "songC/accompaniment.flac", np.zeros((RATE, 2), np.float32), RATE)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="unet_sep.data"):
        tracks = load_tracks(DataConfig(root=root), "valid", RATE, 2)
    assert [t.name for t in tracks] == ["songA", "songB", "songC"]
    assert any("split_file is not set" in r.getMessage() for r in caplog.records)


# ---- MIR-1K -----------------------------------------------------------------------------------------------


def test_mir1k_clips():
    if not (MIR1K / "splits.json").is_file():
        pytest.skip(f"MIR-1K not found at {MIR1K} (../shared is absent)")
    splits = json.loads((MIR1K / "splits.json").read_text())["singers"]
    config = DataConfig(root=str(MIR1K), split_file="splits.json", split_group="singers", max_tracks=2)
    for split in ("train", "valid", "test"):
        tracks = load_tracks(config, split, 16000, 1)
        assert [t.name for t in tracks] == splits[split][:2]
        for track in tracks:
            info = sf.info(str(MIR1K / track.name / "vocals.ogg"))
            assert info.samplerate == 16000 and info.channels == 1
            assert track.sources["vocals"].shape == track.sources["accompaniment"].shape == (1, info.frames)
            assert 4 * 16000 <= track.length <= 14 * 16000
    (stereo,) = load_tracks(DataConfig(root=str(MIR1K), split_file=str(MIR1K / "splits.json"),
                                       split_group="literature", max_tracks=1), "test", 16000, 2)
    np.testing.assert_array_equal(stereo.sources["vocals"][0], stereo.sources["vocals"][1])
