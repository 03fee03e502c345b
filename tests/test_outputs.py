"""Where and how stems are written, through the real command line: inputs under --out, songs of the same name,
templates that leave --out, leftovers of killed runs, bit depths, bit rates and --two-stems."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import music_like
from unet_sep.atomic import is_stale_temporary, temporary_path
from unet_sep.dsp.measures import snr_db

RATE = 44100
BUNDLED = "mir1k-vocals-accompaniment"


def cli(model: Path | str, *args, timeout: float = 180) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "unet_sep", "separate", *map(str, args), "--model", str(model), "--quiet"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def song(path: Path, seconds: float = 1.0, seed: int = 0, subtype: str = "PCM_16", rate: int = RATE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, music_like(seconds, rate, seed=seed).T, rate, subtype=subtype)
    return path


def files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---- 7. the output folder inside an input folder ----------------------------------------------------------


def test_out_inside_the_input_folder_twice(tmp_path, tiny_model):
    lib = tmp_path / "lib"
    song(lib / "song.wav")
    first = cli(tiny_model, lib, "--out", lib / "stems")
    assert first.returncode == 0, first.stderr
    assert files_under(lib / "stems") == ["song/accompaniment.wav", "song/vocals.wav"]

    second = cli(tiny_model, lib, "--out", lib / "stems")
    assert second.returncode == 0, second.stderr
    assert "would overwrite" not in second.stderr and "error" not in second.stderr, second.stderr
    assert "skipped 1 already done" in second.stderr
    assert files_under(lib / "stems") == ["song/accompaniment.wav", "song/vocals.wav"]

    third = cli(tiny_model, str(lib / "**" / "*.wav"), "--out", lib / "stems")  # a glob that reaches into --out
    assert third.returncode == 0 and "separated 0 file(s)" in third.stderr and "skipped 1" in third.stderr, third.stderr


# ---- 8. songs of the same name -----------------------------------------------------------------------------


def test_same_names_in_different_folders_stay_apart(tmp_path, tiny_model):
    lib = tmp_path / "lib"
    a, b = song(lib / "a" / "song.wav", 1.0, seed=1), song(lib / "b" / "song.wav", 1.5, seed=2)
    result = cli(tiny_model, lib, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert files_under(out) == ["a/song/accompaniment.wav", "a/song/vocals.wav", "b/song/accompaniment.wav",
                                "b/song/vocals.wav"]
    assert sf.info(out / "a/song/vocals.wav").frames == sf.info(a).frames
    assert sf.info(out / "b/song/vocals.wav").frames == sf.info(b).frames


def test_a_glob_keeps_its_folders_apart_too(tmp_path, tiny_model):
    song(tmp_path / "x" / "song.wav", seed=1)
    song(tmp_path / "y" / "song.wav", seed=2)
    result = cli(tiny_model, str(tmp_path / "*" / "song.wav"), "--out", tmp_path / "out", "--stems", "vocals")
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path / "out") == ["x/song/vocals.wav", "y/song/vocals.wav"]


def test_same_name_other_extension_is_caught_before_any_work_with_a_template_that_helps(tmp_path, tiny_model):
    lib = tmp_path / "lib"
    song(lib / "song.wav", seed=1)
    song(lib / "song.flac", seed=2)
    out = tmp_path / "out"
    result = cli(tiny_model, lib / "song.flac", lib / "song.wav", "--out", out)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(lib / "song.wav") in errors[0] and "{trackext}" in errors[0], result.stderr
    assert files_under(out) == ["song/accompaniment.wav", "song/vocals.wav"]  # the first one was separated

    template = "{dir}/{track}.{trackext}/{stem}.{ext}"
    result = cli(tiny_model, lib / "song.flac", lib / "song.wav", "--out", tmp_path / "out2", "--template", template)
    assert result.returncode == 0, result.stderr
    assert files_under(tmp_path / "out2") == ["song.flac/accompaniment.wav", "song.flac/vocals.wav",
                                              "song.wav/accompaniment.wav", "song.wav/vocals.wav"]


def test_files_of_the_same_name_given_one_by_one_get_advice_that_works(tmp_path, tiny_model):
    first, second = song(tmp_path / "one" / "song.wav", seed=1), song(tmp_path / "two" / "song.wav", seed=2)
    result = cli(tiny_model, first, second, "--out", tmp_path / "out")
    assert result.returncode == 1
    assert "give the folder that holds both" in result.stderr, result.stderr
    assert "{model}" not in result.stderr


# ---- 9. nothing is written outside --out --------------------------------------------------------------------


@pytest.mark.parametrize("template", ["../escape/{track}/{stem}.{ext}", "{dir}/../../escape/{stem}.{ext}",
                                      "/tmp/unet-sep-escape/{track}/{stem}.{ext}", "{track}/../../{stem}.{ext}"])
def test_templates_that_leave_out_are_refused(tmp_path, tiny_model, template):
    source = song(tmp_path / "in" / "song.wav")
    result = cli(tiny_model, source, "--out", tmp_path / "out", "--template", template)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --template: "), result.stderr
    assert not (tmp_path / "escape").exists() and not Path("/tmp/unet-sep-escape").exists()
    assert not (tmp_path / "out").exists()


def test_a_symlink_out_of_out_is_refused_for_that_file(tmp_path, tiny_model):
    first, second = song(tmp_path / "in" / "first.wav", seed=1), song(tmp_path / "in" / "second.wav", seed=2)
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "second").symlink_to(elsewhere, target_is_directory=True)
    result = cli(tiny_model, first, second, "--out", out)
    assert result.returncode == 1
    assert f"error: {second}: " in result.stderr and "outside the output folder" in result.stderr, result.stderr
    assert list(elsewhere.iterdir()) == []
    assert (out / "first" / "vocals.wav").is_file()


def test_a_symlinked_out_folder_itself_is_fine(tmp_path, tiny_model):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    result = cli(tiny_model, song(tmp_path / "song.wav"), "--out", tmp_path / "link")
    assert result.returncode == 0, result.stderr
    assert files_under(real) == ["song/accompaniment.wav", "song/vocals.wav"]


# ---- 10. leftovers of killed runs ---------------------------------------------------------------------------


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_leftovers_of_a_killed_run_are_removed_and_counted(tmp_path, tiny_model):
    out = tmp_path / "out"
    (out / "song").mkdir(parents=True)
    (out / "gone").mkdir()
    dead = _dead_pid()
    stale = [out / "song" / f".vocals.wav.{dead}.partial",  # the form older versions wrote
             temporary_path(out / "gone" / "vocals.wav").with_name(f".vocals.wav.0a1b2c3d.{dead}@{_host()}.partial")]
    live = temporary_path(out / "song" / "drums.wav")  # this test's own pid: a live writer
    other_host = out / "song" / f".bass.wav.0a1b2c3d.{dead}@some-other-machine.partial"
    for path in [*stale, live, other_host]:
        path.write_bytes(b"\0" * 4096)
    assert [is_stale_temporary(p.name) for p in stale] == [True, True]
    assert not is_stale_temporary(live.name) and not is_stale_temporary(other_host.name)

    result = cli(tiny_model, song(tmp_path / "song.wav"), "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"removed 2 temporary file(s) that killed runs left under {out}" in result.stderr
    assert not any(p.exists() for p in stale)
    assert live.exists() and other_host.exists()
    assert not (out / "gone").exists()  # the folder held nothing else
    assert (out / "song" / "vocals.wav").is_file()


def _host() -> str:
    name = temporary_path(Path("x")).name
    return name.split("@")[1].split(".partial")[0]


def test_kill_9_leftovers_are_gone_after_the_next_run(tmp_path, tiny_model):
    """A real kill -9 in the middle of writing, then the same command again."""
    source = tmp_path / "long.wav"
    with sf.SoundFile(source, "w", RATE, 2, subtype="PCM_16") as handle:
        rng = np.random.default_rng(0)
        for _ in range(30):  # 5 minutes
            handle.write(rng.uniform(-0.3, 0.3, (10 * RATE, 2)).astype(np.float32))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "unet_sep", "separate", str(source), "--out", str(out), "--model", str(tiny_model),
               "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.rglob(".*.partial")):
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    leftovers = list(out.rglob(".*.partial"))
    assert leftovers, "the run ended before it wrote anything"

    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"removed {len(leftovers)} temporary file(s)" in result.stderr
    assert not list(out.rglob(".*")), "temporary files are still there"
    assert sf.info(out / "long" / "vocals.wav").frames == 300 * RATE


# ---- 12. an empty stem selection ---------------------------------------------------------------------------


@pytest.mark.parametrize("selection", [",", " , ", ""])
def test_empty_stem_selection_is_an_option_error(tmp_path, tiny_model, selection):
    result = cli(tiny_model, song(tmp_path / "song.wav"), "--out", tmp_path / "out", "--stems", selection)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --stems: no stem selected; choose from vocals, accompaniment"
    assert not (tmp_path / "out").exists()


# ---- 17, 19; issue 25 item 5. wav stems are float, flac follows the input; stems add up without clipping ----


@pytest.mark.parametrize("subtype, fmt, expected", [("PCM_16", "wav", "FLOAT"), ("PCM_24", "wav", "FLOAT"),
                                                     ("FLOAT", "wav", "FLOAT"), ("PCM_32", "wav", "FLOAT"),
                                                     ("PCM_24", "flac", "PCM_24"), ("FLOAT", "flac", "PCM_24"),
                                                     ("PCM_16", "flac", "PCM_16")])
def test_bit_depth_defaults(tmp_path, tiny_model, subtype, fmt, expected):
    """WAV stems are float whatever the input's depth (they are float results, which the input's depth does not
    bound); FLAC, which has no float, keeps the input's depth."""
    source = song(tmp_path / "song.wav", subtype=subtype)
    result = cli(tiny_model, source, "--out", tmp_path / "out", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert sf.info(tmp_path / "out" / "song" / f"vocals.{fmt}").subtype == expected


def test_mp3_above_full_scale_gives_float_stems_that_add_up_without_clipping(tmp_path, example_mp3):
    """The README's first command (the bundled model): the example song decodes to samples above 1.0."""
    result = cli(BUNDLED, example_mp3, "--out", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "clipped" not in result.stderr, result.stderr
    mixture, _ = sf.read(example_mp3, dtype="float32")
    assert np.abs(mixture).max() > 1.0  # the case that clipped 16-bit stems
    stems = [sf.read(tmp_path / "out" / "audio_example" / f"{s}.wav", dtype="float32")[0]
             for s in ("vocals", "accompaniment")]
    assert sf.info(tmp_path / "out" / "audio_example" / "vocals.wav").subtype == "FLOAT"
    assert snr_db(mixture, stems[0] + stems[1]) > 100


def test_a_16_bit_choice_rescales_and_clamp_still_clips_with_its_warning(tmp_path, example_mp3):
    rescaled = cli(BUNDLED, example_mp3, "--out", tmp_path / "out", "--bit-depth", "16")
    assert rescaled.returncode == 0, rescaled.stderr
    assert "clipped" not in rescaled.stderr and f"WARNING unet_sep.separate.writer: {example_mp3}: stems scaled by " \
        in rescaled.stderr
    clamped = cli(BUNDLED, example_mp3, "--out", tmp_path / "clamped", "--bit-depth", "16", "--clip-mode", "clamp")
    assert clamped.returncode == 0, clamped.stderr
    assert "clipped to [-1, 1] for PCM_16" in clamped.stderr and "scaled" not in clamped.stderr


# ---- issue 25 item 5: no default clips a loud master ------------------------------------------------------


@pytest.fixture(scope="module")
def loud_master(tmp_path_factory, example_mp3) -> Path:
    """A loud produced master as 16-bit FLAC: the real excerpt through 6 dB of soft limiting (tanh), peak at
    -0.1 dBFS, RMS -8 dBFS. (The excerpt only normalised to -0.1 dBFS gives stems that fit the bundled model's
    full scale; mastered for loudness, its separated accompaniment peaks at 1.18.)"""
    mixture, rate = sf.read(example_mp3, dtype="float64")
    limited = np.tanh(2.0 * mixture / np.abs(mixture).max())
    path = tmp_path_factory.mktemp("loud") / "loud.flac"
    sf.write(path, limited / np.abs(limited).max() * 10 ** (-0.1 / 20), rate, subtype="PCM_16")
    return path


def _stems(folder: Path, fmt: str) -> dict[str, np.ndarray]:
    return {stem: sf.read(folder / "loud" / f"{stem}.{fmt}", dtype="float64")[0]
            for stem in ("vocals", "accompaniment")}


def _gain_in(stderr: str) -> float:
    line = next(line for line in stderr.splitlines() if "stems scaled by " in line)
    return float(line.split("stems scaled by ")[1].split()[0])


def test_a_loud_16_bit_master_gives_stems_that_add_up_by_default(tmp_path, loud_master):
    result = cli(BUNDLED, loud_master, "--out", tmp_path / "out")
    assert result.returncode == 0 and "WARNING" not in result.stderr, result.stderr
    stems = _stems(tmp_path / "out", "wav")
    mixture, _ = sf.read(loud_master, dtype="float64")
    assert sf.info(tmp_path / "out" / "loud" / "vocals.wav").subtype == "FLOAT"
    assert np.abs(stems["accompaniment"]).max() > 1.1  # what 16-bit stems clipped
    assert snr_db(mixture, stems["vocals"] + stems["accompaniment"]) > 100


def test_flac_rescales_a_loud_master_by_one_gain_for_all_its_stems(tmp_path, loud_master):
    result = cli(BUNDLED, loud_master, "--out", tmp_path / "out", "--format", "flac")
    assert result.returncode == 0, result.stderr
    assert "clipped" not in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and f": {loud_master}: stems scaled by " in warnings[0], result.stderr
    gain = _gain_in(result.stderr)
    assert 0.75 < gain < 0.9  # 1 / the loudest stem's peak: 0.799 with the bundled model's stage 5, 0.8-0.9 before
    stems = _stems(tmp_path / "out", "flac")
    mixture, _ = sf.read(loud_master, dtype="float64")
    assert sf.info(tmp_path / "out" / "loud" / "vocals.flac").subtype == "PCM_16"
    assert max(np.abs(s).max() for s in stems.values()) == pytest.approx(32767 / 32768, abs=1 / 32768)
    total = stems["vocals"] + stems["accompaniment"]
    fitted = float(np.sum(total * mixture) / np.sum(mixture * mixture))  # the gain the stems add up to
    assert fitted == pytest.approx(gain, abs=0.0005)  # the warning's, to its 3 decimals
    assert snr_db(fitted * mixture, total) > 85  # exact but for the 16-bit rounding of two stems
    assert not [p for p in (tmp_path / "out").rglob("*") if p.name.startswith(".")]  # the spool is gone


def test_clamp_clips_a_loud_master_as_before_and_says_so(tmp_path, loud_master):
    result = cli(BUNDLED, loud_master, "--out", tmp_path / "out", "--format", "flac", "--clip-mode", "clamp")
    assert result.returncode == 0, result.stderr
    assert "samples clipped to [-1, 1] for PCM_16" in result.stderr and "scaled" not in result.stderr
    stems = _stems(tmp_path / "out", "flac")
    mixture, _ = sf.read(loud_master, dtype="float64")
    assert snr_db(mixture, stems["vocals"] + stems["accompaniment"]) < 60  # the damage clamp does


@pytest.mark.parametrize("args, message", [
    (["--format", "flac", "--clip-mode", "none"],
     "error: --clip-mode: flac (integer PCM) cannot hold samples beyond full scale; choose rescale or clamp, or "
     "write float wav"),
    (["--bit-depth", "24", "--clip-mode", "none"],
     "error: --clip-mode: wav at 24 bits cannot hold samples beyond full scale; choose rescale or clamp, or write "
     "float wav"),
    (["--clip-mode", "soft"], "error: --clip-mode: unknown mode 'soft'; choose from rescale, clamp, none"),
])
def test_clip_mode_errors(tmp_path, tiny_model, args, message):
    result = cli(tiny_model, song(tmp_path / "song.wav"), "--out", tmp_path / "out", *args)
    assert result.returncode == 2 and result.stderr.strip() == message, result.stderr
    assert not (tmp_path / "out").exists()


# ---- 20. --bitrate and --two-stems --------------------------------------------------------------------------


def _kbps(path: Path, seconds: float) -> float:
    return path.stat().st_size * 8 / seconds / 1000


@pytest.mark.parametrize("bitrate", [96, 192, 320])
def test_mp3_bitrate(tmp_path, tiny_model, bitrate):
    source = song(tmp_path / "song.wav", 4.0)
    result = cli(tiny_model, source, "--out", tmp_path / "out", "--format", "mp3", "--bitrate", bitrate,
                 "--stems", "vocals")
    assert result.returncode == 0, result.stderr
    assert _kbps(tmp_path / "out" / "song" / "vocals.mp3", 4.0) == pytest.approx(bitrate, rel=0.05)


def test_ogg_bitrate_orders_the_sizes(tmp_path, tiny_model):
    source = song(tmp_path / "song.wav", 4.0)
    sizes = []
    for bitrate in (64, 128, 320):
        out = tmp_path / f"out{bitrate}"
        result = cli(tiny_model, source, "--out", out, "--format", "ogg", "--bitrate", bitrate, "--stems",
                     "accompaniment")
        assert result.returncode == 0, result.stderr
        sizes.append(_kbps(out / "song" / "accompaniment.ogg", 4.0))
    assert sizes[0] < sizes[1] < sizes[2], sizes


@pytest.mark.parametrize("args, message", [
    (["--bitrate", "100"], "--bitrate: 100 kbit/s is not offered"),
    (["--format", "wav", "--bitrate", "128"], "--bitrate: applies to mp3 and ogg, not wav"),
    (["--format", "ogg", "--bitrate", "16"], "--bitrate: ogg takes 64 to 500 kbit/s, not 16"),
    (["--sample-rate", "11025", "--bitrate", "320"], "--bitrate: mp3 at 11025 Hz offers 8, 16, 24, 32, 40, 48, 56, "
                                                     "64 kbit/s, not 320; choose 64 kbit/s, or a sample rate of 44100"),
])
def test_bitrate_errors(tmp_path, tiny_model, args, message):
    fmt = [] if "--format" in args else ["--format", "mp3"]
    result = cli(tiny_model, song(tmp_path / "song.wav"), "--out", tmp_path / "out", *fmt, *args)
    assert result.returncode == 2 and result.stderr.startswith(f"error: {message}"), result.stderr


def test_a_bit_rate_mp3_cannot_give_at_the_inputs_rate_is_an_error_before_any_work(tmp_path, tiny_model):
    """It was written at the nearest rate with a warning (320 -> 64 kbit/s at 11025 Hz) while a bit rate no rate
    offers was an option error; both are errors now, and this one names the rates that work."""
    source = song(tmp_path / "low.wav", 4.0, rate=11025)
    other = song(tmp_path / "other.wav", 1.0)
    result = cli(tiny_model, source, other, "--out", tmp_path / "out", "--format", "mp3", "--bitrate", "320")
    assert result.returncode == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == [
        f"error: {source}: mp3 at 11025 Hz offers 8, 16, 24, 32, 40, 48, 56, 64 kbit/s, not 320; use --bitrate 64 "
        "or --sample-rate 44100"]
    assert files_under(tmp_path / "out") == ["other/accompaniment.mp3", "other/vocals.mp3"]
    kept = cli(tiny_model, source, "--out", tmp_path / "kept", "--format", "mp3", "--bitrate", "64")
    assert kept.returncode == 0 and "WARNING" not in kept.stderr, kept.stderr
    assert _kbps(tmp_path / "kept" / "low" / "vocals.mp3", 4.0) == pytest.approx(64, rel=0.05)


def test_two_stems_writes_the_stem_and_the_sum_of_the_others(tmp_path, tmp_path_factory):
    from conftest import make_model

    model = make_model(tmp_path_factory.mktemp("four") / "four", stems=["vocals", "drums", "bass", "other"])
    source = song(tmp_path / "song.wav", 2.0, subtype="FLOAT")
    full = cli(model, source, "--out", tmp_path / "all")
    two = cli(model, source, "--out", tmp_path / "two", "--two-stems", "vocals")
    assert full.returncode == 0 and two.returncode == 0, full.stderr + two.stderr
    assert files_under(tmp_path / "two") == ["song/no_vocals.wav", "song/vocals.wav"]
    read = lambda p: sf.read(p, dtype="float32")[0]  # noqa: E731
    others = sum(read(tmp_path / "all" / "song" / f"{s}.wav") for s in ("drums", "bass", "other"))
    assert snr_db(others, read(tmp_path / "two" / "song" / "no_vocals.wav")) > 100
    assert snr_db(read(tmp_path / "all" / "song" / "vocals.wav"), read(tmp_path / "two" / "song" / "vocals.wav")) > 100

    karaoke = cli(model, source, "--out", tmp_path / "k", "--two-stems", "vocals", "--stems", "no_vocals")
    assert karaoke.returncode == 0 and files_under(tmp_path / "k") == ["song/no_vocals.wav"], karaoke.stderr
    bad = cli(model, source, "--out", tmp_path / "bad", "--two-stems", "piano")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "error: --two-stems: 'piano' is not a stem of this model (vocals, drums, bass, other)"
