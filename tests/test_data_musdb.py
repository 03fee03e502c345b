"""MUSDB18-HQ (a synthetic tree) and MUSDB18 (a .stem.mp4) read by unet_sep.data.musdb: the tracks and splits
musdb.DB lists, the sources and the accompaniment, other rates and channel counts, missing sources."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from musdb_tree import SOURCES, make_musdb_tree, musdb_config, musdb_validation_names, read_file, synthetic_sources
from unet_sep.audio import resample
from unet_sep.data.config import DataConfig
from unet_sep.data.load import list_tracks, load_tracks
from unet_sep.data.musdb_support import import_musdb, import_stempeg, missing_ffmpeg_programs
from unet_sep.data.tracks import DatasetError, Part
from unet_sep.dsp.measures import rms_db
from unet_sep.errors import ConfigError

RATE = 44100
MISSING_FFMPEG = missing_ffmpeg_programs()
# musdb.DB and stempeg run ffprobe/ffmpeg (musdb.DB probes every track's mixture file, even MUSDB18-HQ's WAVs)
needs_ffmpeg = pytest.mark.skipif(
    bool(MISSING_FFMPEG),
    reason=f"ffmpeg/ffprobe not found: {' and '.join(MISSING_FFMPEG)} not on PATH (musdb.DB and MUSDB18 "
    ".stem.mp4 need them; .ci/run installs them)",
)


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    return make_musdb_tree(tmp_path_factory.mktemp("musdb"), n_train=3, n_valid=2, n_test=2, seconds=3.0)


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
                "vocals": [Part(folder / "vocals.wav")],
                "accompaniment": [Part(folder / f"{s}.wav") for s in ("drums", "bass", "other")],
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
    assert [t.name for t in load_tracks(config, "valid", RATE, 2)] == names["valid"]


def test_musdb_vocals_accompaniment_and_four_stems(musdb_root):
    two = {t.name: t for t in load_tracks(musdb_config(musdb_root), "train", RATE, 2)}
    four = {t.name: t for t in load_tracks(musdb_config(musdb_root, targets=list(SOURCES)), "train", RATE, 2)}
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
