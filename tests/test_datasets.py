"""Training data: MUSDB (synthetic MUSDB18-HQ tree and a .stem.mp4), stem folders, MIR-1K, the decode cache and
the deterministic excerpt sampler with its augmentations."""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musdb_tree import SOURCES, make_musdb_tree, musdb_validation_names, synthetic_sources
from unet_sep.audio import read_audio, resample
from unet_sep.config import ConfigError
from unet_sep.musdb_support import import_musdb, import_stempeg, missing_ffmpeg_programs
from unet_sep.train import datasets
from unet_sep.train.augment import lowpass, rms_db, synthetic_hihats
from unet_sep.train.datasets import (
    AugmentConfig,
    DataConfig,
    DatasetError,
    ExcerptSampler,
    Track,
    list_tracks,
    load_tracks,
    validation_tracks,
)

RATE = 44100
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MIR1K = SHARED / "data" / "mir1k"
NO_AUGMENT = AugmentConfig(remix=False, gain_db=(0.0, 0.0), channel_swap=False, skip_silent=False)
MISSING_FFMPEG = missing_ffmpeg_programs()
# musdb.DB and stempeg run ffprobe/ffmpeg (musdb.DB probes every track's mixture file, even MUSDB18-HQ's WAVs)
needs_ffmpeg = pytest.mark.skipif(
    bool(MISSING_FFMPEG),
    reason=f"ffmpeg/ffprobe not found: {' and '.join(MISSING_FFMPEG)} not on PATH (musdb.DB and MUSDB18 "
    ".stem.mp4 need them; .ci/run installs them)",
)


# ---- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    return make_musdb_tree(tmp_path_factory.mktemp("musdb"), n_train=3, n_valid=2, n_test=2, seconds=3.0)


def musdb_config(root: Path, **overrides) -> DataConfig:
    return DataConfig(kind="musdb", root=str(root), is_wav=True, **overrides)


def read_file(path: Path) -> np.ndarray:
    audio, _ = read_audio(path)
    return audio


def by_name(tracks: list[Track]) -> dict[str, Track]:
    return {track.name: track for track in tracks}


def coded_tracks(n_tracks: int = 4, length: int = 20000) -> list[Track]:
    """Tracks whose samples say where they come from: |value| = 1000000 * (track + 1) + 10 * position + stem,
    positive on the left channel and negative on the right, all exact in float32."""
    tracks = []
    for k in range(n_tracks):
        sources = {}
        for s, stem in enumerate(("vocals", "accompaniment")):
            code = 1000000.0 * (k + 1) + 10.0 * np.arange(length) + s
            sources[stem] = np.stack([code, -code]).astype(np.float32)
        tracks.append(Track(f"song{k}", sources))
    return tracks


def decode(value: float) -> tuple[int, int, int, bool]:
    """(track, position, stem, swapped) from a sample of :func:`coded_tracks` read on the left channel."""
    swapped = value < 0
    value = abs(int(round(value)))
    return value // 1000000 - 1, (value % 1000000) // 10, value % 10, swapped


# ---- MUSDB ---------------------------------------------------------------------------------------------


def test_musdb_hq_splits(musdb_root):
    """MUSDB18-HQ is listed without musdb.DB (which runs ffprobe): sorted folders, musdb's validation split."""
    valid = sorted(musdb_validation_names()[:2])
    expected = {
        "train": [f"Synthetic Artist {i:02d} - Train Song" for i in range(3)],
        "valid": valid,
        "train+valid": sorted([*valid, *(f"Synthetic Artist {i:02d} - Train Song" for i in range(3))]),
        "test": [f"Synthetic Artist {i:02d} - Test Song" for i in range(2)],
    }
    for split_name, names in expected.items():
        config = musdb_config(musdb_root, train_split=split_name)
        specs = list_tracks(config, "train")
        assert [spec.name for spec in specs] == names, split_name
        for spec in specs:  # vocals and accompaniment = drums + bass + other, as WAV files of the track folder
            folder = musdb_root / ("test" if split_name == "test" else "train") / spec.name
            assert spec.targets == {
                "vocals": [datasets._Part(folder / "vocals.wav")],
                "accompaniment": [datasets._Part(folder / f"{s}.wav") for s in ("drums", "bass", "other")],
            }
    assert [spec.name for spec in list_tracks(musdb_config(musdb_root, max_tracks=2), "train")] == expected["train"][:2]


@needs_ffmpeg
def test_musdb_tree_is_what_musdb_reads(musdb_root):
    musdb = import_musdb()

    names = {
        "train": [t.name for t in musdb.DB(root=str(musdb_root), is_wav=True, subsets="train", split="train")],
        "valid": [t.name for t in musdb.DB(root=str(musdb_root), is_wav=True, subsets="train", split="valid")],
        "test": [t.name for t in musdb.DB(root=str(musdb_root), is_wav=True, subsets="test")],
    }
    assert len(names["train"]) == 3 and len(names["test"]) == 2
    assert names["valid"] == sorted(musdb_validation_names()[:2])
    assert not set(names["train"]) & set(names["valid"])

    config = musdb_config(musdb_root)
    for split, expected in names.items():
        tracks = load_tracks(config, split, RATE, 2)
        assert [t.name for t in tracks] == expected
    assert [t.name for t in validation_tracks(config, RATE, 2)] == names["valid"]


def test_musdb_vocals_accompaniment_and_four_stems(musdb_root):
    two = by_name(load_tracks(musdb_config(musdb_root), "train", RATE, 2))
    four = by_name(load_tracks(musdb_config(musdb_root, targets=list(SOURCES)), "train", RATE, 2))
    assert two.keys() == four.keys()
    for name, track in two.items():
        assert list(track.sources) == ["vocals", "accompaniment"]
        stems = four[name].sources
        assert list(stems) == list(SOURCES)
        folder = musdb_root / "train" / name
        for stem in SOURCES:
            assert stems[stem].dtype == np.float32 and stems[stem].shape == (2, int(3.0 * RATE))
            np.testing.assert_array_equal(stems[stem], read_file(folder / f"{stem}.wav"))
        np.testing.assert_array_equal(track.sources["vocals"], stems["vocals"])
        np.testing.assert_allclose(
            track.sources["accompaniment"], stems["drums"] + stems["bass"] + stems["other"], atol=1e-6
        )
        # the mixture is the sum of the targets, and matches the 16-bit mixture.wav up to rounding
        np.testing.assert_array_equal(track.mixture, track.sources["vocals"] + track.sources["accompaniment"])
        np.testing.assert_allclose(track.mixture, read_file(folder / "mixture.wav"), atol=4 / 32768)
        assert track.length == int(3.0 * RATE)


def test_musdb_other_rate_and_mono(musdb_root):
    tracks = load_tracks(musdb_config(musdb_root, targets=["vocals", "drums", "accompaniment"]), "test", 22050, 1)
    for track in tracks:
        stereo = read_file(musdb_root / "test" / track.name / "vocals.wav")
        expected = resample(stereo.mean(axis=0, keepdims=True), RATE, 22050)
        assert track.sources["vocals"].shape == (1, int(3.0 * 22050))
        np.testing.assert_allclose(track.sources["vocals"], expected, atol=1e-6)
        assert track.sources["accompaniment"].shape == track.sources["drums"].shape  # bass + other


@needs_ffmpeg
def test_musdb_stem_mp4(tmp_path):
    """MUSDB18 proper: one .stem.mp4 per track (AAC streams mixture, drums, bass, other, vocals)."""
    stempeg = import_stempeg()
    name = musdb_validation_names()[0]
    (tmp_path / "train").mkdir()
    sources = synthetic_sources(2.0, RATE, seed=5)
    stack = np.stack(
        [sum(sources.values()), sources["drums"], sources["bass"], sources["other"], sources["vocals"]]
    ).transpose(0, 2, 1)
    try:
        stempeg.write_stems(str(tmp_path / "train" / f"{name}.stem.mp4"), stack, sample_rate=RATE,
                            writer=stempeg.StreamsWriter(codec="aac"))
    except Exception as error:  # ffmpeg without an AAC encoder
        pytest.skip(f"cannot write a .stem.mp4 here: {error}")
    config = DataConfig(kind="musdb", root=str(tmp_path), is_wav=False)
    # listed as musdb.DB lists it: the same tracks, each source one stream of the file
    (listed,) = import_musdb().DB(root=str(tmp_path), is_wav=False, subsets="train", split="valid").tracks
    (spec,) = list_tracks(config, "valid")
    assert spec.name == listed.name == name
    assert {target: [(p.path, p.stream) for p in parts] for target, parts in spec.targets.items()} == {
        target: [(Path(listed.sources[s].path), listed.sources[s].stem_id) for s in sources]
        for target, sources in (("vocals", ["vocals"]), ("accompaniment", ["drums", "bass", "other"]))
    }
    (track,) = load_tracks(config, "valid", RATE, 2)
    assert track.name == name
    vocals = track.sources["vocals"]
    assert vocals.shape[0] == 2 and abs(vocals.shape[1] - 2 * RATE) < 2048  # AAC priming/padding
    # AAC is lossy: compare energies, and that vocals (high, harmonic) and accompaniment differ
    assert abs(rms_db(vocals) - rms_db(sources["vocals"])) < 1.0
    accompaniment = sources["drums"] + sources["bass"] + sources["other"]
    assert abs(rms_db(track.sources["accompaniment"]) - rms_db(accompaniment)) < 1.0
    with pytest.raises(ConfigError, match="is_wav"):
        load_tracks(DataConfig(kind="musdb", root=str(tmp_path), is_wav=True), "valid", RATE, 2)


def test_musdb_missing_source(tmp_path):
    root = make_musdb_tree(tmp_path, n_train=1, n_valid=0, n_test=0, seconds=0.5)
    (track_folder,) = (root / "train").iterdir()
    (track_folder / "bass.wav").unlink()
    with pytest.raises(DatasetError, match="no bass source"):
        load_tracks(musdb_config(root), "train", RATE, 2)
    with pytest.raises(ConfigError, match="holds no tracks"):
        load_tracks(musdb_config(root), "valid", RATE, 2)


# ---- configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(kind="zip"), "data.kind"),
        (dict(root=""), "data.root"),
        (dict(targets=[]), "non-empty"),
        (dict(targets=["vocals", "vocals"]), "distinct"),
        (dict(targets=["vocals", "../x"]), "usable stem name"),
        (dict(targets=["mixture"]), "mixture"),
        (dict(max_tracks=0), "max_tracks"),
        (dict(split_group="singers"), "split_file is not"),
        (dict(valid_split=""), "valid_split"),
        (dict(augment=AugmentConfig(remix_probability=1.5)), "remix_probability"),
        (dict(augment=AugmentConfig(gain_db=(3.0, -3.0))), "low <= high"),
        (dict(augment=AugmentConfig(gain_db=(1.0,))), "two numbers"),
        (dict(augment=AugmentConfig(lowpass_probability=-0.1)), "lowpass_probability"),
        (dict(augment=AugmentConfig(silence_db=float("nan"))), "silence_db"),
        (dict(augment=AugmentConfig(percussion_probability=2.0)), "percussion_probability"),
        (dict(augment=AugmentConfig(percussion_db=(-6.0, -20.0))), "percussion_db"),
        (dict(augment=AugmentConfig(percussion_probability=0.2, percussion_stem="drums")), "percussion_stem 'drums' must be one of"),
        (dict(kind="musdb", targets=["vocals", "piano"]), "not MUSDB stems"),
        (dict(kind="musdb", targets=[*SOURCES, "accompaniment"]), "every source is a target"),
        (dict(kind="musdb", train_split="training"), "train_split for MUSDB"),
        (dict(kind="musdb", split_file="s.json"), "folder data sets"),
    ],
)
def test_config_errors(overrides, message):
    config = DataConfig(**{"root": "/data", **overrides})
    with pytest.raises(ConfigError, match=message):
        config.validate()


def test_config_dict_round_trip():
    config = DataConfig(kind="musdb", root="/m", is_wav=True, targets=list(SOURCES), cache_dir="/c",
                        augment=AugmentConfig(gain_db=(-3.0, 0.0), lowpass_probability=0.2,
                                              percussion_probability=0.1, percussion_stem="drums"))
    again = DataConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config and again.augment.gain_db == (-3.0, 0.0) and again.augment.percussion_db == (-20.0, -6.0)
    with pytest.raises(ConfigError, match="unknown key.*'data'.*colour"):
        DataConfig.from_dict({"root": "/x", "colour": 1})
    with pytest.raises(ConfigError, match="unknown key.*data.augment.*pitch"):
        DataConfig.from_dict({"root": "/x", "augment": {"pitch": 1}})


# ---- folders of stem files -------------------------------------------------------------------------------


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
    with caplog.at_level(logging.INFO, logger="unet_sep.train.datasets"):
        tracks = by_name(load_tracks(config, "train", RATE, 2))
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
    both = load_tracks(DataConfig(root=str(tmp_path), split_file="splits.json", valid_split="test+empty"), "valid", RATE, 1)
    assert [t.name for t in both] == ["songC", "songA"]
    with pytest.raises(ConfigError, match="no split 'valid'; it has train, test, empty"):
        list_tracks(DataConfig(root=str(tmp_path), split_file="splits.json", train_split="train+valid"), "train")
    split_file.write_text(json.dumps({"train": ["songA", "songB"], "test": ["songC"], "empty": [], "train+test": ["songB"]}))
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
    with caplog.at_level(logging.WARNING, logger="unet_sep.train.datasets"):
        tracks = load_tracks(DataConfig(root=root), "valid", RATE, 2)
    assert [t.name for t in tracks] == ["songA", "songB", "songC"]
    assert any("split_file is not set" in r.getMessage() for r in caplog.records)


# ---- MIR-1K --------------------------------------------------------------------------------------------


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


# ---- decode cache --------------------------------------------------------------------------------------


def test_decode_cache(tmp_path, monkeypatch):
    root = make_musdb_tree(tmp_path / "musdb", n_train=2, n_valid=0, n_test=0, seconds=1.0)
    cache = tmp_path / "cache"
    config = musdb_config(root, cache_dir=str(cache))
    real_read = datasets.read_audio
    calls: list[Path] = []

    def counting_read(path, *args, **kwargs):
        calls.append(Path(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(datasets, "read_audio", counting_read)
    first = load_tracks(config, "train", RATE, 2)
    assert len(calls) == 2 * 4  # vocals + drums, bass, other per track
    files = sorted(cache.iterdir())
    assert len(files) == 4 and all(f.suffix == ".npy" and not f.name.startswith(".") for f in files)

    # the second load maps the cache and never decodes
    def failing_read(path, *args, **kwargs):
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(datasets, "read_audio", failing_read)
    second = load_tracks(config, "train", RATE, 2)
    for a, b in zip(first, second):
        for stem in ("vocals", "accompaniment"):
            assert isinstance(b.sources[stem], np.memmap)
            np.testing.assert_array_equal(a.sources[stem], b.sources[stem])
    # without a cache: the same data, in RAM
    monkeypatch.setattr(datasets, "read_audio", real_read)
    for a, b in zip(second, load_tracks(musdb_config(root), "train", RATE, 2)):
        assert not isinstance(b.sources["vocals"], np.memmap)
        np.testing.assert_array_equal(a.sources["accompaniment"], b.sources["accompaniment"])
    # a memory-mapped track pickles by file name, not by content
    blob = pickle.dumps(second[0])
    assert len(blob) < 10000
    np.testing.assert_array_equal(pickle.loads(blob).sources["vocals"], second[0].sources["vocals"])

    # a changed source file invalidates its cache entry (and only that one)
    monkeypatch.setattr(datasets, "read_audio", counting_read)
    calls.clear()
    changed = root / "train" / second[0].name / "vocals.wav"
    sf.write(changed, 0.5 * read_file(changed).T, RATE, subtype="PCM_16")
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = load_tracks(config, "train", RATE, 2)
    assert calls == [changed]
    np.testing.assert_allclose(third[0].sources["vocals"], 0.5 * first[0].sources["vocals"], atol=1e-4)
    np.testing.assert_array_equal(third[1].sources["vocals"], first[1].sources["vocals"])

    # a corrupt cache file is decoded again (with a warning), not trusted
    victim = next(f for f in cache.iterdir() if "accompaniment" in f.name)
    victim.write_bytes(victim.read_bytes()[:200])
    calls.clear()
    load_tracks(config, "train", RATE, 2)
    assert len(calls) == 3


def test_cache_writes_are_atomic(tmp_path, monkeypatch):
    root = make_musdb_tree(tmp_path / "musdb", n_train=1, n_valid=0, n_test=0, seconds=1.0)
    cache = tmp_path / "cache"
    config = musdb_config(root, cache_dir=str(cache))
    real_save = np.save

    def interrupted_save(handle, array, *args, **kwargs):
        handle.write(b"\x93NUMPY partial")  # some bytes reach the disk, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(datasets.np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        load_tracks(config, "train", RATE, 2)
    assert list(cache.iterdir()) == []  # neither a final file nor the temporary one

    monkeypatch.setattr(datasets.np, "save", real_save)
    (track,) = load_tracks(config, "train", RATE, 2)
    assert sorted(f.suffix for f in cache.iterdir()) == [".npy", ".npy"]
    np.testing.assert_array_equal(track.sources["vocals"], read_file(root / "train" / track.name / "vocals.wav"))


# ---- excerpt sampler -----------------------------------------------------------------------------------


def test_sampler_is_deterministic():
    tracks = coded_tracks()
    augment = AugmentConfig(lowpass_probability=0.3)
    sampler = ExcerptSampler(tracks, 5000, ["vocals", "accompaniment"], augment, seed=7, sample_rate=RATE)
    excerpt = sampler.excerpt(3)
    assert excerpt.shape == (2, 2, 5000) and excerpt.dtype == np.float32
    np.testing.assert_array_equal(excerpt, sampler.excerpt(3))
    assert not np.array_equal(excerpt, sampler.excerpt(4))
    other = ExcerptSampler(coded_tracks(), 5000, ["vocals", "accompaniment"], AugmentConfig(lowpass_probability=0.3),
                           seed=7, sample_rate=RATE)
    batch = other.batch([5, 3, 11])
    assert batch.shape == (3, 2, 2, 5000)
    np.testing.assert_array_equal(batch[1], excerpt)
    np.testing.assert_array_equal(batch[0], sampler.excerpt(5))
    reseeded = ExcerptSampler(tracks, 5000, ["vocals", "accompaniment"], augment, seed=8, sample_rate=RATE)
    assert not np.array_equal(reseeded.excerpt(3), excerpt)
    # global random state plays no part
    np.random.seed(0)
    a = sampler.excerpt(9)
    np.random.seed(1)
    np.testing.assert_array_equal(a, sampler.excerpt(9))
    # the stems come out in the order asked for
    swapped_order = ExcerptSampler(tracks, 5000, ["accompaniment", "vocals"], NO_AUGMENT, 0, RATE).excerpt(2)
    assert decode(swapped_order[0, 0, 0])[2] == 1 and decode(swapped_order[1, 0, 0])[2] == 0


def test_sampler_without_augmentation_reads_one_excerpt_of_one_track():
    length = 5000
    sampler = ExcerptSampler(coded_tracks(), length, ["vocals", "accompaniment"], NO_AUGMENT, 0, RATE)
    seen_tracks, seen_offsets = set(), set()
    for index in range(40):
        excerpt = sampler.excerpt(index)
        (k0, p0, s0, w0), (k1, p1, s1, w1) = decode(excerpt[0, 0, 0]), decode(excerpt[1, 0, 0])
        assert (k0, p0, s0, w0) == (k1, p1, 0, False) and s1 == 1 and not w1
        assert 0 <= p0 <= 20000 - length
        expected = coded_tracks()[k0].sources["vocals"][:, p0 : p0 + length]
        np.testing.assert_array_equal(excerpt[0], expected)
        seen_tracks.add(k0)
        seen_offsets.add(p0)
    assert seen_tracks == {0, 1, 2, 3} and len(seen_offsets) > 30


def test_remix_gain_and_swap_change_the_excerpts():
    targets = ["vocals", "accompaniment"]
    remix = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=True, remix_probability=1.0, gain_db=(0.0, 0.0), channel_swap=False, skip_silent=False), 0, RATE)
    mixed = [remix.excerpt(i) for i in range(20)]
    assert sum(decode(e[0, 0, 0])[:2] != decode(e[1, 0, 0])[:2] for e in mixed) >= 15
    half = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=True, remix_probability=0.5, gain_db=(0.0, 0.0), channel_swap=False, skip_silent=False), 0, RATE)
    remixed = sum(decode(e[0, 0, 0])[:2] != decode(e[1, 0, 0])[:2] for e in map(half.excerpt, range(60)))
    assert 15 <= remixed <= 45

    swap = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=False, gain_db=(0.0, 0.0), channel_swap=True, skip_silent=False), 0, RATE)
    flags = [(decode(e[0, 0, 0])[3], decode(e[1, 0, 0])[3]) for e in map(swap.excerpt, range(40))]
    assert 0 < sum(a for a, _ in flags) < 40 and any(a != b for a, b in flags)
    for e in map(swap.excerpt, range(5)):  # a swapped stem is the other channel, sample for sample
        np.testing.assert_array_equal(e[:, 0], -e[:, 1])

    plain = ExcerptSampler(coded_tracks(), 4000, targets, NO_AUGMENT, 0, RATE)
    gained = ExcerptSampler(coded_tracks(), 4000, targets, AugmentConfig(
        remix=False, gain_db=(-6.0, 3.0), channel_swap=False, skip_silent=False), 0, RATE)
    ratios = []
    for index in range(30):
        ratio = gained.excerpt(index)[:, 0, 0] / plain.excerpt(index)[:, 0, 0]  # same draw: gains come after
        quotient = gained.excerpt(index) / plain.excerpt(index)
        np.testing.assert_allclose(quotient, np.broadcast_to(ratio[:, None, None], quotient.shape), rtol=1e-5)
        ratios.append(ratio)
    ratios = np.array(ratios)
    assert ratios.min() >= 10 ** (-6 / 20) - 1e-6 and ratios.max() <= 10 ** (3 / 20) + 1e-6
    assert np.ptp(ratios) > 0.5 and np.mean(np.abs(ratios[:, 0] - ratios[:, 1]) > 1e-3) > 0.9


def test_lowpass_removes_the_top_band():
    rate = 44100
    noise = np.random.default_rng(0).standard_normal((2, 2, 30000)).astype(np.float32)
    tracks = [Track("noise", {"vocals": noise[0], "accompaniment": noise[1]})]
    augment = AugmentConfig(remix=False, gain_db=(0.0, 0.0), channel_swap=False, lowpass_probability=1.0)
    excerpt = ExcerptSampler(tracks, 8192, ["vocals", "accompaniment"], augment, 0, rate).excerpt(0)
    spectrum = np.abs(np.fft.rfft(excerpt, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(8192, 1 / rate)
    low = spectrum[..., freqs < 3500].mean()
    high = spectrum[..., freqs > 0.45 * rate].mean()
    assert high < 1e-4 * low
    # linear and exact below the ramp
    filtered = lowpass(noise[0], rate, 10000.0)
    np.testing.assert_allclose(lowpass(noise[0] + noise[1], rate, 10000.0), filtered + lowpass(noise[1], rate, 10000.0),
                               atol=1e-4)
    band = np.abs(np.fft.rfft(filtered, axis=-1))[..., np.fft.rfftfreq(30000, 1 / rate) < 9000]
    reference = np.abs(np.fft.rfft(noise[0], axis=-1))[..., np.fft.rfftfreq(30000, 1 / rate) < 9000]
    assert np.median(np.abs(band / reference - 1)) < 0.02


def band_energy(audio: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio, axis=-1)) ** 2
    freqs = np.fft.rfftfreq(audio.shape[-1], 1 / rate)
    return float(spectrum[..., (freqs >= low) & (freqs < high)].sum())


def test_synthetic_hihats_are_bright_transients_at_unit_rms():
    rate, length = 16000, 32000
    for seed in range(5):
        hats = synthetic_hihats(np.random.default_rng(seed), length, rate, 1)
        assert hats.shape == (1, length) and hats.dtype == np.float32
        assert abs(np.sqrt(np.mean(hats**2)) - 1.0) < 1e-3
        total = band_energy(hats, rate, 0, rate / 2)
        assert band_energy(hats, rate, 0, 2800) < 1e-3 * total  # high-passed at >= 3 kHz
        # transients: the loudest 10 ms frames carry far more energy than the quietest ones
        frames = (hats[0, : length // 160 * 160].reshape(-1, 160) ** 2).mean(axis=1)
        assert np.percentile(frames, 95) > 30 * np.percentile(frames, 20)
        np.testing.assert_array_equal(hats, synthetic_hihats(np.random.default_rng(seed), length, rate, 1))
    stereo = synthetic_hihats(np.random.default_rng(0), 8000, 44100, 2)
    assert stereo.shape == (2, 8000) and np.allclose(stereo[0] * np.sum(stereo[1] ** 2) ** 0.5,
                                                     stereo[1] * np.sum(stereo[0] ** 2) ** 0.5, atol=1e-3)
    assert not synthetic_hihats(np.random.default_rng(0), 8000, 6000, 1).any()  # no band above 3 kHz to fill


def test_percussion_goes_to_its_stem_only_and_off_changes_nothing():
    rate, length = 16000, 16000
    rng = np.random.default_rng(1)
    t = np.arange(40000) / rate
    tracks = [Track(f"t{k}", {"vocals": (0.1 * np.sin(2 * np.pi * 220 * (k + 1) * t))[None].astype(np.float32),
                              "accompaniment": (0.1 * np.sin(2 * np.pi * 110 * (k + 1) * t)
                                                + 0.01 * rng.standard_normal(t.size))[None].astype(np.float32)})
              for k in range(3)]
    targets = ["vocals", "accompaniment"]
    plain = ExcerptSampler(tracks, length, targets, AugmentConfig(remix=True, gain_db=(-3.0, 3.0), lowpass_probability=0.3), 4, rate)
    # probability 0: no random number is drawn, whatever the other settings say
    off = ExcerptSampler(tracks, length, targets, AugmentConfig(remix=True, gain_db=(-3.0, 3.0), lowpass_probability=0.3,
                                                                percussion_stem="vocals", percussion_db=(0.0, 6.0)), 4, rate)
    for index in range(10):
        np.testing.assert_array_equal(plain.excerpt(index), off.excerpt(index))
    always = AugmentConfig(remix=False, gain_db=(0.0, 0.0), skip_silent=False, percussion_probability=1.0,
                           percussion_db=(-10.0, -10.0))
    clean = AugmentConfig(remix=False, gain_db=(0.0, 0.0), skip_silent=False)
    with_hats = ExcerptSampler(tracks, length, targets, always, 0, rate)
    without = ExcerptSampler(tracks, length, targets, clean, 0, rate)
    for index in range(6):
        a, b = with_hats.excerpt(index), without.excerpt(index)
        np.testing.assert_array_equal(a[0], b[0])  # the vocals are untouched
        added = a[1] - b[1]
        level = 20 * np.log10(np.sqrt(np.mean(added**2)) / np.sqrt(np.mean(b[1] ** 2)))
        assert abs(level - (-10.0)) < 0.05, level
        assert band_energy(added, rate, 3000, 8000) > 0.99 * band_energy(added, rate, 0, 8000)
    with pytest.raises(ValueError, match="percussion_stem 'drums'"):
        ExcerptSampler(tracks, length, targets, AugmentConfig(percussion_probability=0.5, percussion_stem="drums"), 0, rate)


def test_skip_silent_redraws():
    rng = np.random.default_rng(0)
    tracks = []
    for k in range(3):
        vocals = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
        if k == 0:
            vocals[:] = 0.0  # an instrumental: silent vocals
        accompaniment = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
        tracks.append(Track(f"song{k}", {"vocals": vocals, "accompaniment": accompaniment}))

    def silent_count(skip: bool) -> int:
        augment = AugmentConfig(remix=True, remix_probability=0.5, skip_silent=skip)
        sampler = ExcerptSampler(tracks, 8000, ["vocals", "accompaniment"], augment, 3, RATE)
        return sum(rms_db(sampler.excerpt(i)[0]) < -60 for i in range(60))

    assert silent_count(False) > 10
    assert silent_count(True) == 0
    # every draw silent: after 10 attempts the last one is kept (no endless loop)
    silent = [
        Track("quiet", {"vocals": np.zeros((2, 9000), np.float32), "accompaniment": np.ones((2, 9000), np.float32)})
    ]
    excerpt = ExcerptSampler(silent, 8000, ["vocals", "accompaniment"], AugmentConfig(), 0, RATE).excerpt(0)
    assert not excerpt[0].any() and excerpt[1].all()


def test_short_tracks_are_zero_padded_and_mixture_is_the_sum():
    short = Track("short", {"vocals": np.full((2, 300), 0.5, np.float32),
                            "accompaniment": np.full((2, 300), 0.25, np.float32)})
    np.testing.assert_array_equal(short.mixture, np.full((2, 300), 0.75, np.float32))
    sampler = ExcerptSampler([short], 1000, ["vocals", "accompaniment"], AugmentConfig(skip_silent=False), 0, RATE)
    excerpt = sampler.excerpt(0)
    assert excerpt[:, :, :300].all() and not excerpt[:, :, 300:].any()
    with pytest.raises(ValueError, match="has no drums stem"):
        ExcerptSampler([short], 1000, ["vocals", "drums"], AugmentConfig(), 0, RATE)
    with pytest.raises(ValueError, match="index must be >= 0"):
        sampler.excerpt(-1)


def test_sampler_full_size_excerpts_are_reproducible():
    """Full-size excerpts (520192 samples, stereo, 44.1 kHz) with the default augmentation: the right shape,
    finite, and the same excerpt for the same index (the time a draw takes is benchmarks/train_throughput.py's)."""
    rng = np.random.default_rng(0)
    tracks = [
        Track(f"t{k}", {s: (0.1 * rng.standard_normal((2, 44100 * 40))).astype(np.float32)
                        for s in ("vocals", "accompaniment")})
        for k in range(3)
    ]
    sampler = ExcerptSampler(tracks, 520192, ["vocals", "accompaniment"], AugmentConfig(), 0, RATE)
    batch = sampler.batch(range(100, 116))
    assert batch.shape == (16, 2, 2, 520192)
    assert np.isfinite(batch).all()
    np.testing.assert_array_equal(sampler.batch(range(108, 116)), batch[8:])
    assert np.abs(batch[0] - batch[1]).max() > 0.01  # different indices differ
