"""The produced-song test set (recipes/produced/build_testset.py) and its instrumentals' score
(recipes/produced/vocals_leakage.py), on small synthetic folders: a MIR-1K of 3 clips per split and a produced set
of 3 instrumentals per split (Ogg Vorbis at 44.1 kHz stereo and WAV at 48 kHz, each opening with 3 s of silence).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import SHARED
from unet_sep.data.config import DataConfig
from unet_sep.data.load import list_tracks, load_track
from unet_sep.dsp.measures import level_db

CHECKOUT = Path(__file__).resolve().parents[1]
RECIPES = CHECKOUT / "recipes" / "produced"
SPLITS = ("train", "valid", "test")
CLIP_SECONDS = (2.5, 4.0, 6.0)  # with 3 s excerpts: one whole clip, two excerpts
TRACK_SECONDS = 12.0
SILENT_INTRO = 3.0
MUSIC_RMS_DB = -18.0
SMALL = ["--mixtures", "4", "--instrumentals", "3", "--excerpt-seconds", "3"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"produced_{name}", RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


build_testset = _script("build_testset")
vocals_leakage = _script("vocals_leakage")


def _singing(rng: np.random.Generator, seconds: float, rate: int = 16000) -> np.ndarray:
    """A voice-like tone (a vibrato harmonic series) sung in phrases, with pauses between them."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = rng.uniform(150, 400) * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    phrases = (np.sin(2 * np.pi * t / rng.uniform(1.5, 2.5)) > -0.6).astype(float)
    return (0.1 * voice * phrases).astype(np.float32)


def _music(rng: np.random.Generator, seconds: float, rate: int, channels: int) -> np.ndarray:
    """Full-band music-like noise with chords, after :data:`SILENT_INTRO` of digital silence: [samples, channels]."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    chord = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(100, 2000, 4))
    audio = chord[:, None] + rng.standard_normal((n, channels))
    audio *= 10 ** (MUSIC_RMS_DB / 20) / np.sqrt(np.mean(audio**2))
    audio[: int(SILENT_INTRO * rate)] = 0
    return audio.astype(np.float32)


def make_mir1k(root: Path) -> Path:
    rng = np.random.default_rng(1)
    splits = {split: [f"{singer}_1_0{i}" for i in range(1, 4)]
              for split, singer in zip(SPLITS, ("amy", "ariel", "heycat"), strict=True)}
    for names in splits.values():
        for name, seconds in zip(names, CLIP_SECONDS, strict=True):
            (root / name).mkdir(parents=True)
            sf.write(root / name / "vocals.wav", _singing(rng, seconds), 16000)
            sf.write(root / name / "accompaniment.wav", _singing(rng, seconds), 16000)
    (root / "splits.json").write_text(json.dumps({"singers": splits, "literature": {"train": [], "test": []}}))
    return root


def make_produced(root: Path) -> Path:
    rng = np.random.default_rng(2)
    splits = {split: [f"{split}-pack-{i}" for i in range(3)] for split in SPLITS}
    for names in splits.values():
        for index, name in enumerate(names):
            (root / name).mkdir(parents=True)
            if index % 2:
                sf.write(root / name / "accompaniment.wav", _music(rng, TRACK_SECONDS, 48000, 1), 48000)
            else:
                sf.write(root / name / "accompaniment.ogg", _music(rng, TRACK_SECONDS, 44100, 2), 44100,
                         format="OGG", subtype="VORBIS")
    (root / "splits.json").write_text(json.dumps(splits))
    (root / "SOURCES.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("inputs")
    return make_mir1k(base / "mir1k"), make_produced(base / "produced")


def build(inputs: tuple[Path, Path], out: Path, *more: str) -> Path:
    mir1k, produced = inputs
    code = build_testset.main(["--mir1k", str(mir1k), "--produced", str(produced), "--out", str(out), *SMALL, *more])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def built(inputs, tmp_path_factory) -> Path:
    return build(inputs, tmp_path_factory.mktemp("built") / "testset")


def listing(folder: Path) -> dict:
    return json.loads((folder / "mixtures.json").read_text())


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def stems(folder: Path, item: str) -> tuple[np.ndarray, np.ndarray, int]:
    vocals, rate = sf.read(folder / item / "vocals.wav", dtype="float64")
    accompaniment, accompaniment_rate = sf.read(folder / item / "accompaniment.wav", dtype="float64")
    assert rate == accompaniment_rate and vocals.shape == accompaniment.shape and vocals.ndim == 1
    return vocals, accompaniment, rate


def test_level_db():
    reference = np.random.default_rng(0).standard_normal((2, 1000))
    assert level_db(0.5 * reference, reference) == pytest.approx(20 * np.log10(0.5), abs=1e-12)
    assert level_db(np.zeros(3), np.ones(3)) == -np.inf
    with pytest.raises(ValueError, match="silent"):
        level_db(np.ones(3), np.zeros(3))


def test_same_seed_same_bytes_another_seed_others(inputs, built, tmp_path):
    again = files(build(inputs, tmp_path / "again"))
    assert again == files(built)
    assert len([name for name in again if name.endswith(".wav")]) == 2 * 2 * (4 + 3)
    other = files(build(inputs, tmp_path / "other", "--seed", "1"))
    assert other.keys() == again.keys()
    differing = [name for name in again if other[name] != again[name]]
    assert "mixtures.json" in differing and len([n for n in differing if n.endswith(".wav")]) >= 10


def test_levels_on_the_written_files(built):
    mixtures = [item for item in listing(built)["items"] if item["group"] == "mixtures"]
    assert len(mixtures) == 8
    levels = []
    for item in mixtures:
        vocals, accompaniment, rate = stems(built, item["id"])
        assert rate == 16000 and len(vocals) == item["samples"]
        measured = 10 * np.log10(np.sum(vocals**2) / np.sum(accompaniment**2))
        assert measured == pytest.approx(item["level_db"], abs=1e-3)
        assert -6 - 1e-3 <= measured <= 1e-3
        assert np.max(np.abs(vocals + accompaniment)) <= 0.98 + 1e-4
        levels.append(measured)
    assert np.ptp(levels) > 1  # drawn, not one level for all
    # whole clips (2.5 s) and 3 s excerpts of the longer ones, over excerpts of the same length
    assert {item["seconds"] for item in mixtures} <= {2.5, 3.0} and len({item["seconds"] for item in mixtures}) == 2


def test_instrumentals_are_silent_vocals_over_music(built):
    instrumentals = [item for item in listing(built)["items"] if item["group"] == "instrumentals"]
    assert len(instrumentals) == 6
    for item in instrumentals:
        vocals, accompaniment, rate = stems(built, item["id"])
        assert not np.any(vocals) and len(vocals) == 3 * rate
        assert item["level_db"] is None and item["clip"] is None


def test_excerpts_avoid_near_silence(built):
    """Every second of every excerpt (museval's windows) holds music: at most half a second of one comes from the
    tracks' silent intro."""
    for item in listing(built)["items"]:
        _, accompaniment, rate = stems(built, item["id"])
        seconds = accompaniment[: len(accompaniment) // rate * rate].reshape(-1, rate)
        window_db = 10 * np.log10(np.mean(seconds**2, axis=1) + 1e-30)
        assert window_db.min() > MUSIC_RMS_DB - 25, item
        assert item["track_offset_seconds"] >= SILENT_INTRO - 0.5


def test_splits_load_through_the_folder_format_and_do_not_overlap(inputs, built):
    mir1k, produced = (json.loads((root / "splits.json").read_text()) for root in inputs)
    items = {item["id"]: item for item in listing(built)["items"]}
    for group, count in (("mixtures", 4), ("instrumentals", 3)):
        config = DataConfig(kind="folder", root=str(built), split_file=str(built / "splits.json"), split_group=group)
        names = {split: [spec.name for spec in list_tracks(config, split)] for split in ("valid", "test")}
        assert len(names["valid"]) == len(names["test"]) == count
        assert not set(names["valid"]) & set(names["test"])
        track = load_track(list_tracks(config, "test")[0], 16000, 1)
        assert track.sources["vocals"].shape == track.sources["accompaniment"].shape
        for split, listed in names.items():
            for name in listed:
                assert items[name]["split"] == split and items[name]["group"] == group
                assert items[name]["track"] in produced[split]
                assert items[name]["clip"] in (mir1k["singers"][split] if group == "mixtures" else [None])


def test_44100_hz_vocals_hold_nothing_above_8_khz(inputs, built, tmp_path):
    folder = build(inputs, tmp_path / "44k", "--sample-rate", "44100")
    written = listing(folder)
    assert written["vocals_band_limit_hz"] == 8000 and listing(built)["vocals_band_limit_hz"] is None
    for item in written["items"]:
        if item["group"] != "mixtures":
            continue
        vocals, accompaniment, rate = stems(folder, item["id"])
        assert rate == 44100
        frequencies = np.fft.rfftfreq(len(vocals), 1 / rate)
        window = np.hanning(len(vocals))
        for stem, limit in ((vocals, -100), (accompaniment, None)):
            power = np.abs(np.fft.rfft(stem * window)) ** 2
            above = 10 * np.log10(power[frequencies > 8000].sum() / power.sum())
            if limit is None:
                assert above > -30  # the accompaniment stays full-band: the check above could fail
            else:
                assert above < limit
    # the same list at either rate: clips, tracks, offsets and levels are chosen on the inputs' own rates
    keys = ("id", "clip", "clip_offset_seconds", "track", "track_offset_seconds", "level_db")
    assert [[i[k] for k in keys] for i in written["items"]] == [[i[k] for k in keys] for i in listing(built)["items"]]


def run_script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RECIPES / f"{name}.py"), *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(CHECKOUT)}, timeout=300)


def test_missing_folder_is_one_line_and_leaves_nothing(inputs, tmp_path):
    _, produced = inputs
    out = tmp_path / "out"
    result = run_script("build_testset", "--mir1k", str(tmp_path / "no-mir1k"), "--produced", str(produced),
                        "--out", str(out), *SMALL)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'no-mir1k'}: no such folder"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_empty_split_names_it_and_leaves_nothing(inputs, tmp_path, capsys):
    mir1k, produced = inputs
    copy = tmp_path / "produced"
    copy.mkdir()
    (copy / "valid-pack-0").symlink_to(produced / "valid-pack-0")
    (copy / "splits.json").write_text(json.dumps({"train": [], "valid": ["valid-pack-0"], "test": []}))
    out = tmp_path / "out"
    code = build_testset.main(["--mir1k", str(mir1k), "--produced", str(copy), "--out", str(out), *SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "test split" in err[0] and str(copy) in err[0]
    assert not out.exists()


def test_undecodable_track_mid_build_leaves_nothing(inputs, tmp_path, capsys):
    mir1k, produced = inputs
    copy = tmp_path / "produced"
    (copy / "test-pack-2").mkdir(parents=True)
    for name in json.loads((produced / "splits.json").read_text())["valid"] + ["test-pack-0", "test-pack-1"]:
        (copy / name).symlink_to(produced / name)
    (copy / "test-pack-2" / "accompaniment.ogg").write_bytes(b"OggS not really")
    (copy / "splits.json").write_text((produced / "splits.json").read_text())
    out = tmp_path / "out"
    code = build_testset.main(["--mir1k", str(mir1k), "--produced", str(copy), "--out", str(out), *SMALL])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "test-pack-2/accompaniment.ogg" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["produced"]  # no --out, no temporary folder


def test_silent_track_is_left_out_and_listed(inputs, tmp_path):
    mir1k, produced = inputs
    copy = tmp_path / "produced"
    copy.mkdir()
    for name in json.loads((produced / "splits.json").read_text())["valid"] + ["test-pack-0", "test-pack-1"]:
        (copy / name).symlink_to(produced / name)
    (copy / "test-pack-2").mkdir()
    sf.write(copy / "test-pack-2" / "accompaniment.wav", np.full((48000 * 12, 2), 1e-4, dtype=np.float32), 48000)
    (copy / "splits.json").write_text((produced / "splits.json").read_text())
    written = listing(build((mir1k, copy), tmp_path / "out"))
    assert written["skipped"]["tracks"] == {"test-pack-2": "no excerpt of 3 s without a near-silent half second"}
    assert {i["track"] for i in written["items"] if i["split"] == "test"} == {"test-pack-0", "test-pack-1"}


def test_bad_options_and_foreign_out_folder(inputs, tmp_path, capsys):
    mir1k, produced = inputs
    common = ["--mir1k", str(mir1k), "--produced", str(produced)]
    for extra, message in ((["--sample-rate", "16k"], "--sample-rate: must be a whole number"),
                           (["--mixtures", "0"], "--mixtures: must be from 1"),
                           (["--excerpt-seconds", "nan"], "--excerpt-seconds: must be a finite number")):
        assert build_testset.main([*common, "--out", str(tmp_path / "x"), *extra]) == 2
        assert capsys.readouterr().err.strip().startswith(f"error: {message}")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert build_testset.main([*common, "--out", str(foreign), *SMALL]) == 2
    assert "is not a test set this script wrote" in capsys.readouterr().err
    assert build_testset.main([*common, "--out", str(produced / "testset"), *SMALL]) == 2
    assert "holds the input folder" in capsys.readouterr().err
    assert [p.name for p in foreign.iterdir()] == ["keep.txt"] and not (tmp_path / "x").exists()


def test_rebuild_replaces_a_previous_build(inputs, built, tmp_path):
    out = build(inputs, tmp_path / "set")
    (out / "test-mix-000" / "vocals.wav").write_bytes(b"spoiled")
    assert files(build(inputs, out)) == files(built)


def test_leakage_of_the_bundled_model(built, bundled, tmp_path, capsys):
    models = [str(bundled)]
    spleeter = SHARED / "data" / "spleeter-ref" / "2stems"
    if (spleeter / "checkpoint").is_file():
        models.append(str(spleeter))
    args = [a for m in models for a in ("--model", m)]
    code = vocals_leakage.main([*args, "--root", str(built), "--out", str(tmp_path / "leak"), "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0].startswith("| model | excerpts | vocals level, median (dB) | worst (dB)")
    summary = json.loads((tmp_path / "leak" / "summary.json").read_text())
    rows = (tmp_path / "leak" / "levels.csv").read_text().splitlines()
    assert rows[0] == "model,excerpt,vocals_level_db" and len(rows) == 1 + 3 * len(models)
    for model in models:
        levels = list(summary["levels"][model].values())
        assert len(levels) == 3 and all(level is not None and -80 < level < 1 for level in levels)
        assert summary["models"][model]["median_db"] == pytest.approx(float(np.median(levels)), abs=1e-3)
        assert summary["models"][model]["worst_db"] == pytest.approx(max(levels), abs=1e-3)
        row = next(line for line in out.splitlines() if line.startswith(f"| {model} | 3 |"))
        assert f"| {summary['models'][model]['median_db']:.1f} |" in row


def test_leakage_refuses_songs_with_vocals(built, bundled, tmp_path, capsys):
    code = vocals_leakage.main(["--model", str(bundled), "--root", str(built), "--group", "mixtures",
                                "--out", str(tmp_path / "leak"), "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "vocals.wav: not silent" in err[0]
    assert not (tmp_path / "leak").exists()
    assert vocals_leakage.main(["--model", str(bundled), "--root", str(built), "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --threads: must be from 1 to 512, got 0"
