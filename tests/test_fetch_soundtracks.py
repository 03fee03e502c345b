"""recipes/produced/fetch_soundtracks.py: the Debian copyright parser, the package table, extraction of a small
.deb built here (globs, a zip member, a symlink, a duplicate, a track too short), the screen's decisions, the files
it writes and a second run reusing the first. No network: the .deb files are built with dpkg-deb."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unet_sep.audio.formats import AUDIO_EXTENSIONS

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "produced"
COPYRIGHT = Path(__file__).resolve().parent / "data" / "copyright"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


fetch = _load("fetch_soundtracks")
copyright_module = sys.modules["debian_copyright"]
screening = sys.modules["screening"]


# ---- copyright files -----------------------------------------------------------------------------------------


def _rights_of(text: str, path: str, member: str | None = None):
    candidate = fetch.Candidate(path, member, "", Path("/nonexistent"))
    return copyright_module.parse_copyright(text)(fetch.copyright_paths(candidate))


def test_dep5_last_matching_stanza_wins_for_archive_members_named_by_source_path():
    text = (COPYRIGHT / "dep5").read_text()
    pk3 = "usr/share/games/example/base/0music.pk3"
    marine = _rights_of(text, pk3, "music/Marine01.ogg")
    assert marine.license == "CC-BY-SA-3.0"
    assert marine.copyright == '"Marine" Baklund; Gren'
    later = _rights_of(text, pk3, "music/Marine02.ogg")  # in two stanzas: the last one wins
    assert (later.license, later.copyright) == ("CC-BY-3.0", "2010 Someone Else")
    assert _rights_of(text, pk3, "music/greece1.ogg").license == "public-domain"
    # "?" is one character: greece10 falls through to "Files: *"
    other = _rights_of(text, pk3, "music/greece10.ogg")
    assert (other.license, other.copyright) == ("GPL-2+", "2002-2014, The Example Team")
    plain = _rights_of(text, "usr/share/games/example/base/music/returnjourney.ogg")
    assert plain.license == "CC-BY-SA-3.0"


def test_free_form_takes_the_first_license_and_the_authors_before_it():
    rights = _rights_of((COPYRIGHT / "free-form").read_text(), "usr/share/x/music/a.ogg")
    assert rights.license == "GPL-2+"
    assert rights.copyright.split("; ") == [
        "Max Composer", "Second Composer <second@example.org>", "Copyright (C) 2007-2008,2012 Max Composer"]


@pytest.mark.parametrize("text, license_name", [
    ("released under the same BY-SA 3.0 ... e.g., Attribution-ShareAlike 3.0 US", "CC-BY-SA-3.0"),
    ("Licensed under CC-BY 4.0 by the artist", "CC-BY-4.0"),
    ("under the terms of the GNU General Public License, version 2 or later.", "GPL-2+"),
    ("GNU Lesser General Public License version 2.1 only", "LGPL-2.1"),
    ("The music is in the public domain.", "public-domain"),
    ("Permission is hereby granted, free of charge, to any person", "Expat"),
    ("All rights reserved.", "unknown"),
])
def test_free_form_license_names(text, license_name):
    assert copyright_module.free_form_rights(text).license == license_name


@pytest.mark.parametrize("text", ["", "\x00\x01 binary \xff junk", "Format: x\n\nFiles: *\n", "Format: x\nFiles"])
def test_odd_copyright_files_are_unknown_never_an_error(text):
    rights = _rights_of(text, "usr/share/x/a.ogg")
    assert (rights.license, rights.copyright) == ("unknown", "unknown")


# ---- the package table ---------------------------------------------------------------------------------------


def test_package_table_splits_by_package():
    pairs = json.loads((RECIPE / "packages.json").read_text(), object_pairs_hook=lambda p: p)
    names = [name for name, _ in dict(pairs)["packages"]]
    assert len(names) == len(set(names)), "a package listed twice could land in two splits"
    specs = fetch.load_packages()
    by_split = {split: sorted(s.name for s in specs.values() if s.split == split) for split in fetch.SPLITS}
    assert by_split == {
        "test": ["nexuiz-music", "singularity-music"],
        "valid": ["extremetuxracer-data", "hyperrogue-music"],
        "train": ["asc-music", "drascula-music", "planetblupi-music-ogg", "ufoai-music", "warzone2100-music",
                  "wesnoth-1.16-music"],
    }
    for spec in specs.values():
        globs = list(spec.music) + [a.members for a in spec.archives]
        assert all(Path(g).suffix in AUDIO_EXTENSIONS for g in globs), spec
        assert not any("sounds/" in g for g in globs), spec  # effects, not music


def test_exclude_file_is_a_map_of_reasons():
    assert all(isinstance(v, str) and v for v in fetch.load_exclusions().values())


def test_slugs_and_glob_bases():
    assert fetch.slugify("Advanced Simulacra.ogg") == "advanced-simulacra"
    assert fetch.slugify("albums/legacy_soundtrack/track12.opus") == "albums-legacy-soundtrack-track12"
    assert fetch.glob_base("usr/share/scummvm/drascula/*/*.ogg") == "usr/share/scummvm/drascula/"
    assert screening.window_starts(80.0) == [0.0, 10.286, 20.571, 30.857, 41.143, 51.429, 61.714, 72.0]
    assert screening.window_starts(20.0) == [0.0, 12.0]
    assert screening.window_starts(7.9) == []
    assert screening.screen_score([-20.0, None, -3.0, -9.5]) == -9.5
    assert screening.screen_score([None, -4.0]) == -4.0


# ---- a small package, end to end -----------------------------------------------------------------------------

RATE = 8000


def _tone(seconds: float, freq: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _ogg(path: Path, seconds: float, freq: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, _tone(seconds, freq), RATE, format="OGG", subtype="VORBIS")


def _build_deb(tmp: Path, debs: Path, name: str) -> Path:
    """A .deb holding music/a.ogg (31 s), music/b.ogg (a copy of a), music/short.ogg (10 s), music/c.ogg (a
    symlink to a), sounds/fx.ogg (outside the globs) and data/music.pk3 (a zip with music/z.ogg, 32 s). The
    files are the same bytes in every package built (Ogg streams carry a random serial number)."""
    sources = tmp / "sources"
    if not sources.is_dir():
        for file, seconds, freq in [("a", 31, 440), ("short", 10, 330), ("fx", 31, 550), ("z", 32, 660)]:
            _ogg(sources / f"{file}.ogg", seconds, freq)
    tree = tmp / f"{name}-tree"
    music = tree / "usr/share/games/tiny/music"
    music.mkdir(parents=True)
    shutil.copy(sources / "a.ogg", music / "a.ogg")
    shutil.copy(sources / "a.ogg", music / "b.ogg")
    shutil.copy(sources / "short.ogg", music / "short.ogg")
    (music / "c.ogg").symlink_to("a.ogg")
    (tree / "usr/share/games/tiny/sounds").mkdir()
    shutil.copy(sources / "fx.ogg", tree / "usr/share/games/tiny/sounds/fx.ogg")
    (tree / "usr/share/games/tiny/data").mkdir()
    with zipfile.ZipFile(tree / "usr/share/games/tiny/data/music.pk3", "w") as bundle:
        bundle.write(sources / "z.ogg", "music/z.ogg")
        bundle.writestr("maps/readme.txt", "not music")
    doc = tree / "usr/share/doc" / name
    doc.mkdir(parents=True)
    shutil.copy(COPYRIGHT / "dep5", doc / "copyright")
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
        "Description: test music\n")
    debs.mkdir(parents=True, exist_ok=True)
    deb = debs / f"{name}_1.2-3_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)], check=True,
                   capture_output=True)
    return deb


@pytest.fixture(scope="module")
def debs(tmp_path_factory) -> Path:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    tmp = tmp_path_factory.mktemp("debs")
    folder = tmp / "debs"
    _build_deb(tmp, folder, "tiny-music")
    _build_deb(tmp, folder, "other-music")
    return folder


def _table(path: Path) -> Path:
    table = {"packages": {
        "tiny-music": {"split": "train", "music": ["usr/share/games/tiny/music/*.ogg"],
                       "archives": [{"path": "usr/share/games/tiny/data/music.pk3", "members": "music/*.ogg"}]},
        "other-music": {"split": "test", "music": ["usr/share/games/tiny/music/*.ogg"]},
    }}
    path.write_text(json.dumps(table))
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_package_becomes_a_stem_folder_data_set(debs, tmp_path):
    out = tmp_path / "out"
    specs = fetch.load_packages(_table(tmp_path / "packages.json"))

    def stub_levels(path: Path, seconds: float):  # z.ogg's 660 Hz tone sounds like singing to this stub
        audio, _ = sf.read(path)
        peak = np.argmax(np.abs(np.fft.rfft(audio[:RATE])))  # 1 Hz bins
        return [-20.0, -5.0, -6.0] if abs(peak - 660) < 5 else [-3.0, -15.0, -18.0]

    records, failed = fetch.run(out, {"tiny-music": specs["tiny-music"]}, debs, stub_levels, "stub", -8.0,
                                {"tiny-music--missing": "not there"})
    assert failed == []
    by_id = {r["track"]: r for r in records}
    assert {t: (r["decision"], r["reason"]) for t, r in by_id.items()} == {
        "tiny-music--a": ("kept", ""),
        "tiny-music--b": ("excluded", "duplicate of tiny-music--a"),
        "tiny-music--c": ("excluded", "duplicate of tiny-music--a"),
        "tiny-music--short": ("excluded", "too short (10.0 s < 30 s)"),
        "tiny-music--z": ("excluded", "vocals screen: 2nd highest window -6.00 dB > -8 dB"),
    }
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "SOURCES.json", "SOURCES.md", "splits.json", "tiny-music--a"]
    kept = out / "tiny-music--a" / "accompaniment.ogg"
    assert _sha(kept) == by_id["tiny-music--a"]["sha256"]  # the original file, byte for byte
    assert json.loads((out / "splits.json").read_text()) == {"train": ["tiny-music--a"], "valid": [], "test": []}
    sources = json.loads((out / "SOURCES.json").read_text())
    assert sources == records
    a, z = by_id["tiny-music--a"], by_id["tiny-music--z"]
    assert (a["package"], a["version"], a["path"], a["member"]) == (
        "tiny-music", "1.2-3", "usr/share/games/tiny/music/a.ogg", None)
    assert (a["seconds"], a["sample_rate"], a["channels"], a["split"]) == (31.0, RATE, 1, "train")
    assert (a["license"], a["copyright"]) == ("GPL-2+", "2002-2014, The Example Team")
    assert (z["path"], z["member"], z["vocals_db"], z["vocals_score_db"]) == (
        "usr/share/games/tiny/data/music.pk3", "music/z.ogg", [-20.0, -5.0, -6.0], -6.0)
    markdown = (out / "SOURCES.md").read_text()
    assert "| train | tiny-music | 1 | 0.5 | 4 |" in markdown
    assert "| tiny-music--z | train | excluded | vocals screen" in markdown


def test_a_second_run_reuses_the_first_and_applies_exclude_json(debs, tmp_path, monkeypatch):
    out = tmp_path / "out"
    specs = fetch.load_packages(_table(tmp_path / "packages.json"))
    calls = []

    def stub_levels(path: Path, seconds: float):
        calls.append(path.parent.name)
        return [-20.0, -19.0]

    first, _ = fetch.run(out, specs, debs, stub_levels, "stub")
    assert sorted(calls) == ["other-music--a", "tiny-music--z"]  # tiny-music's a is other-music's: a duplicate
    assert json.loads((out / "splits.json").read_text()) == {
        "train": ["tiny-music--z"], "valid": [], "test": ["other-music--a"]}
    by_id = {r["track"]: r for r in first}
    assert by_id["tiny-music--a"]["reason"] == "duplicate of other-music--a"

    def no_extraction(*args):
        raise AssertionError("extracted again")

    monkeypatch.setattr(fetch, "extract_deb", no_extraction)
    calls.clear()
    second, _ = fetch.run(out, specs, debs, stub_levels, "stub", exclusions={"tiny-music--z": "a choir"})
    assert calls == []  # levels from the cache
    by_id = {r["track"]: r for r in second}
    assert (by_id["tiny-music--z"]["decision"], by_id["tiny-music--z"]["reason"]) == (
        "excluded", "excluded by hand: a choir")
    assert not (out / "tiny-music--z").exists()
    assert json.loads((out / "splits.json").read_text())["train"] == []


def test_command_line_names_a_broken_package_and_goes_on(debs, tmp_path, capsys):
    broken = tmp_path / "debs"
    shutil.copytree(debs, broken)
    (broken / "other-music_1.2-3_all.deb").write_bytes(b"not a deb")
    out = tmp_path / "out"
    code = fetch.main(["--out", str(out), "--debs", str(broken), "--table", str(_table(tmp_path / "t.json")),
                       "--skip-screen"])
    captured = capsys.readouterr()
    assert code == 1
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "other-music_1.2-3_all.deb: not a readable .deb" in errors[0]
    assert errors[1] == "error: 1 package(s) failed: other-music"
    assert "Traceback" not in captured.err
    assert json.loads((out / "splits.json").read_text()) == {
        "train": ["tiny-music--a", "tiny-music--z"], "valid": [], "test": []}
    assert "tiny-music" in captured.out and "other-music" in captured.out and "failed" in captured.out


def test_command_line_rejects_an_unknown_package_in_one_line(tmp_path, capsys):
    code = fetch.main(["--out", str(tmp_path / "out"), "--packages", "no-such-music", "--skip-screen"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: --packages: not in ") and "no-such-music" in err
    assert not (tmp_path / "out").exists()


# ---- the bundled model's screen ------------------------------------------------------------------------------


def test_bundled_model_hears_a_sung_vowel_above_a_drum_loop(bundled, tmp_path):
    """A vowel-like tone stepping in pitch with vibrato, noise hits and a steady chord: the levels the screen works
    with, at their extremes."""
    rate = 16000
    t = np.arange(24 * rate) / rate
    pitch = 220 * 2 ** (np.floor(t) % 5 / 12) * (1 + 0.02 * np.sin(2 * np.pi * 5.5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    formants = [(1, 1.0), (2, 0.8), (3, 0.9), (4, 0.5), (5, 0.3), (6, 0.15)]
    voice = sum(a * np.sin(k * phase) for k, a in formants) * (0.5 + 0.5 * (t % 1 < 0.85))
    rng = np.random.default_rng(0)
    hits = rng.standard_normal(t.size) * np.exp(-30 * (t % 0.5))
    chord = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate([220, 277, 330, 440]))
    for name, signal in [("voice", voice), ("drums", hits), ("chord", chord)]:
        sf.write(tmp_path / f"{name}.wav", (0.2 * signal / np.abs(signal).max()).astype(np.float32), rate)
    levels = screening.ModelLevels(str(bundled))
    voice_levels = levels(tmp_path / "voice.wav", 24.0)
    drum_levels = levels(tmp_path / "drums.wav", 24.0)
    chord_levels = levels(tmp_path / "chord.wav", 24.0)
    assert len(voice_levels) == len(drum_levels) == len(chord_levels) == 3  # windows at 0, 8 and 16 s
    assert screening.screen_score(voice_levels) > -3.0  # measured -0.04 dB
    assert screening.screen_score(drum_levels) < -20.0  # -35.8 dB
    assert screening.screen_score(chord_levels) < -20.0  # -37.0 dB: a steady chord is not taken for a voice
