"""Every way a name reaches the file system, through the real command line (a subprocess per case).

Folders and globs through symbolic links (loops included), one file under several names, names that are not
files (broken or looping links, named pipes, sockets, devices, standard input), and names that are hard to
handle: bytes that are not UTF-8, 255 bytes of multi-byte characters (the output and temporary names too),
newlines and escape sequences, leading dashes, colons that FFmpeg would read as a protocol. The contract of
tests/test_bad_inputs.py holds: one line per bad input naming it, the other inputs separated, exit 1, no
traceback, nothing partial left, inputs untouched.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import music_like, write_m4a
from test_bad_inputs import RATE, check_no_leftovers, check_stderr, check_stems, cli, frames_of, snapshot, write_wav
from test_outputs import files_under
from unet_sep.audio.decode import AudioDecodeError, open_audio
from unet_sep.separate.inputs import expand_inputs

STEMS = ["vocals", "accompaniment"]  # the tiny model's (conftest.tiny_model)
PIPE_ADVICE = "unet-sep reads files it can seek in: write the audio to a file first and give that file"


def stem_files(*tracks: str) -> list[str]:
    """The files the default template writes for ``tracks`` (``"sub/c"``: c.wav found in the folder sub)."""
    return sorted(f"{track}/{stem}.wav" for track in tracks for stem in STEMS)


def summary_line(result: subprocess.CompletedProcess) -> str:
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("separated ")]
    return line


# ---- folders and globs through symbolic links -----------------------------------------------------------


@pytest.mark.parametrize("how", ["glob", "folder"])
def test_a_symlink_loop_is_not_descended_and_each_file_is_separated_once(tmp_path, tiny_model, how):
    """in/loop -> . and in/sub/up -> ..: Python's glob("**") followed both 40 levels deep (2 files separated 82
    times with the first alone); a loop is never entered."""
    inputs = tmp_path / "in"
    for name in ("a", "b", "sub/c"):
        write_wav(inputs / f"{name}.wav", 0.5, seed=len(name))
    (inputs / "loop").symlink_to(".", target_is_directory=True)
    (inputs / "sub" / "up").symlink_to("..", target_is_directory=True)
    out = tmp_path / "out"

    result = cli(tiny_model, [inputs / "**" / "*.wav" if how == "glob" else inputs], out, timeout=90)

    assert result.returncode == 0, result.stderr
    assert summary_line(result).startswith("separated 3 file(s) (1.5 s of audio)"), result.stderr
    assert files_under(out) == stem_files("a", "b", "sub/c")


@pytest.mark.parametrize("how", ["glob", "folder"])
def test_a_symlinked_folder_is_followed_once(tmp_path, tiny_model, how):
    """in/outside -> ../other is searched (a folder the user linked in); in/alias -> real leads to a folder
    searched already, under its real name, so x.wav is separated once, as real/x."""
    inputs = tmp_path / "in"
    write_wav(inputs / "real" / "x.wav", 0.5, seed=1)
    write_wav(tmp_path / "other" / "y.wav", 0.5, seed=2)
    (inputs / "alias").symlink_to("real", target_is_directory=True)
    (inputs / "outside").symlink_to("../other", target_is_directory=True)
    out = tmp_path / "out"

    result = cli(tiny_model, [inputs / "**" / "*.wav" if how == "glob" else inputs], out)

    assert result.returncode == 0, result.stderr
    assert files_under(out) == stem_files("outside/y", "real/x")
    assert "named" not in summary_line(result)  # nothing was named twice: alias was never searched


@pytest.mark.parametrize("pattern", ["*.wav", "**/*.wav", "**", "sub/*/*.wav", "s?b/**/*.flac", "[ab].wav",
                                     ".hidden/*.wav", "**/.*.wav", "sub/**/deep/*"])
def test_patterns_match_what_python_glob_matches_where_there_are_no_links(tmp_path, monkeypatch, pattern):
    """The loop-safe search gives Python's glob.glob(recursive=True) results (files only) on a tree without links:
    hidden names only for a part that starts with ".", "**" for any folders, character classes."""
    for name in ["a.wav", "b.wav", "c.flac", ".h.wav", "sub/x/1.wav", "sub/x/deep/2.flac", "sub/y/3.wav",
                 "sub/.z/4.wav", ".hidden/5.wav", "sub/x/deep/.6.wav"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)

    files, errors, repeated = expand_inputs([pattern])

    expected = sorted(p for p in glob.glob(pattern, recursive=True) if not os.path.isdir(p))
    assert expected, "the pattern should match something"
    assert sorted(str(f.path) for f in files) == expected and not errors and not repeated


# ---- one file under several names ------------------------------------------------------------------------


@pytest.mark.parametrize("names,said", [
    (["a.wav", "{pwd}/a.wav", "b.wav"], "; 1 input named twice, separated once"),
    (["a.wav", "./a.wav", "link.wav", "hard.wav", "{pwd}/a.wav", "b.wav", "./b.wav"],
     "; 2 inputs named more than once, separated once"),
])
def test_one_file_under_several_names_is_separated_once(tmp_path, tiny_model, names, said):
    """a.wav, ./a.wav, $PWD/a.wav, a symbolic link and a hard link to it: one file (one device and inode),
    separated once under the first name. It used to fail with "its outputs would be the same files as those of
    a.wav; add {stem} or {dir} to the template", a hint that cannot help."""
    write_wav(tmp_path / "a.wav", 0.5, seed=1)
    write_wav(tmp_path / "b.wav", 0.5, seed=2)
    (tmp_path / "link.wav").symlink_to("a.wav")
    os.link(tmp_path / "a.wav", tmp_path / "hard.wav")
    out = tmp_path / "out"

    result = cli(tiny_model, [name.format(pwd=tmp_path) for name in names], out, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr
    assert summary_line(result).startswith("separated 2 file(s)") and summary_line(result).endswith(said)
    assert files_under(out) == stem_files("a", "b")


def test_the_api_names_a_file_given_twice(tmp_path, tiny_model, monkeypatch):
    """Separator.separate_files with raw paths (no expand_inputs), a.wav and $PWD/a.wav: the second name is refused
    for what it is (not with a template hint that cannot help), and the file is separated once."""
    from unet_sep import Separator

    source = write_wav(tmp_path / "a.wav", 0.5, seed=1)
    monkeypatch.chdir(tmp_path)
    separator = Separator.from_pretrained(str(tiny_model), device="cpu")

    events = separator.separate_files(["a.wav", source], tmp_path / "out")

    assert [e.kind for e in events] == ["done", "failed"]
    assert str(events[1].error) == f"{source}: another name for a.wav, which this batch separates already: give " \
                                   "each file once (expand_inputs lists each once)"
    assert files_under(tmp_path / "out") == stem_files("a")


# ---- names that are not files ----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["folder", "glob", "named"])
def test_broken_and_looping_links_are_failed_inputs(tmp_path, tiny_model, how):
    """Inside a folder they were skipped without a word; named directly, "no such file or folder"."""
    inputs = tmp_path / "in"
    good = write_wav(inputs / "good.wav", 0.5, seed=1)
    links = {"broken.wav": "missing.wav", "self.wav": "self.wav", "ping.wav": "pong.wav", "pong.wav": "ping.wav"}
    for name, target in links.items():
        (inputs / name).symlink_to(target)
    bad = [inputs / name for name in links]
    before = snapshot(inputs)
    out = tmp_path / "out"
    items = {"folder": [inputs], "glob": [inputs / "*.wav"], "named": [good, *bad]}[how]

    result = cli(tiny_model, items, out)

    assert result.returncode == 1, result.stderr
    check_stderr(result, bad)
    lines = result.stderr.splitlines()
    assert f"error: {inputs / 'broken.wav'}: broken symbolic link to missing.wav" in lines
    for name in ("self.wav", "ping.wav", "pong.wav"):
        assert f"error: {inputs / name}: symbolic link that loops (to {links[name]}) and never reaches a file" in lines
    assert summary_line(result).endswith("; 4 failed")
    check_stems(out, "good", STEMS, frames_of(good))
    check_no_leftovers(out, [path.stem for path in bad])
    assert snapshot(inputs) == before


@pytest.mark.parametrize("how", ["named", "folder"])
def test_a_named_pipe_is_refused_without_waiting_for_a_writer(tmp_path, tiny_model, how):
    """It was reported as "file is empty (0 bytes)" (named) or skipped without a word (in a folder). Nothing ever
    writes to it: opening it for reading would wait forever, so the run must not."""
    inputs = tmp_path / "in"
    good = write_wav(inputs / "good.wav", 0.5, seed=1)
    pipe = inputs / "pipe.wav"
    os.mkfifo(pipe)
    out = tmp_path / "out"

    result = cli(tiny_model, [good, pipe] if how == "named" else [inputs], out, timeout=60)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [pipe])
    assert f"error: {pipe}: is a named pipe (FIFO), not a file; {PIPE_ADVICE}" in result.stderr.splitlines()
    check_stems(out, "good", STEMS, frames_of(good))
    check_no_leftovers(out, ["pipe"])
    with pytest.raises(AudioDecodeError, match=r"pipe\.wav: is a named pipe \(FIFO\), not a file; "):
        open_audio(pipe)  # the Python API says the same, without opening it


def test_sockets_devices_and_standard_input_are_refused_with_what_to_do(tmp_path, tiny_model, monkeypatch):
    """A socket and /dev/null were "file is empty (0 bytes)"; "-" was "no such file or folder"."""
    good = write_wav(tmp_path / "good.wav", 0.5, seed=1)
    monkeypatch.chdir(tmp_path)  # a socket's path is limited to 107 bytes: bind it by its short relative name
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind("sock.wav")
    out = tmp_path / "out"
    try:
        result = cli(tiny_model, [good, "sock.wav", "/dev/null", "-"], out, timeout=60)
    finally:
        server.close()

    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert f"error: sock.wav: is a socket, not a file; {PIPE_ADVICE}" in lines
    assert f"error: /dev/null: is a device, not a file; {PIPE_ADVICE}" in lines
    assert f"error: -: standard input is not read; {PIPE_ADVICE}" in lines
    assert summary_line(result).endswith("; 3 failed")
    check_stems(out, "good", STEMS, frames_of(good))
    check_no_leftovers(out)


# ---- names that are hard to handle -----------------------------------------------------------------------


def read_stems(folder: bytes) -> np.ndarray:
    """The sum of the stems under ``folder`` (bytes: the name need not be UTF-8), [samples, channels]."""
    assert sorted(os.listdir(folder)) == sorted(f"{stem}.wav".encode() for stem in STEMS), os.listdir(folder)
    stems = [sf.read(os.path.join(folder, f"{stem}.wav".encode()), dtype="float32", always_2d=True)
             for stem in STEMS]
    assert all(rate == RATE for _, rate in stems)
    return sum(data for data, _ in stems)


def test_names_that_are_not_utf8(tmp_path, tiny_model):
    """b"caf\\xe9 \\xff.wav" (Latin-1, not UTF-8) is separated into out/b"caf\\xe9 \\xff"/, found in a folder or
    named; a bad file of such a name gets one line with its bytes escaped. Writing the stems failed with
    "'utf-8' codec can't encode characters ... surrogates not allowed"."""
    inputs = tmp_path / "in"
    good = os.fsdecode(os.path.join(os.fsencode(inputs), b"caf\xe9 \xff.wav"))
    os.rename(write_wav(inputs / "good.wav", 0.5, seed=1), good)  # soundfile takes such a name only as bytes
    bad = os.fsdecode(os.path.join(os.fsencode(inputs), b"bad\xfe.wav"))
    Path(bad).write_bytes(b"this is not audio\n")
    named = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"named\xff.wav"))
    os.rename(write_wav(tmp_path / "named.wav", 0.5, seed=2), named)
    out = tmp_path / "out"

    result = cli(tiny_model, [inputs, named], out)  # text=True: stderr must be valid UTF-8 to be read at all

    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {inputs}/bad\\xfe.wav: not a readable audio file (soundfile: Format not recognised.; "
                      "PyAV: Invalid data found when processing input)"]
    for source, folder in [(good, b"caf\xe9 \xff"), (named, b"named\xff")]:
        mixture, _ = sf.read(os.fsencode(source), dtype="float32", always_2d=True)
        total = read_stems(os.path.join(os.fsencode(out), folder))
        assert total.shape == mixture.shape and np.abs(total - mixture).max() < 1e-3  # stems add up (16-bit)
    check_no_leftovers(out, ["bad\udcfe"])


@pytest.mark.parametrize("template,fits", [("{stem}/{track}.{ext}", True), ("{track}-{stem}.{ext}", False)])
def test_names_of_255_bytes(tmp_path, tiny_model, template, fits):
    """Inputs named with 255 bytes of 4- and 2-byte characters. With {track}.{ext} as a name the stem's name is
    255 bytes: allowed, but its temporary name (80 characters kept: 320 bytes) was not. With {track}-{stem}.{ext}
    the name itself is over the limit: one line before any work, naming the byte count."""
    inputs = tmp_path / "in"
    names = ["🎵" * 62 + "xyz", "é" * 125 + "x"]
    sources = [write_wav(inputs / f"{name}.wav", 0.5, seed=i) for i, name in enumerate(names)]
    assert [len(os.fsencode(p.name)) for p in sources] == [255, 255]
    other = write_wav(tmp_path / "b.wav", 0.5, seed=3)
    out = tmp_path / "out"

    result = cli(tiny_model, [*sources, other], out, "--template", template)

    if fits:
        assert result.returncode == 0, result.stderr
        assert files_under(out) == sorted(f"{stem}/{track}.wav" for stem in STEMS for track in [*names, "b"])
    else:
        assert result.returncode == 1, result.stderr
        check_stderr(result, sources)
        for source, size in zip(sources, [262, 262], strict=True):
            assert (f"error: {source}: a name in its vocals output's path would be {size} bytes, over the file "
                    f"system's limit of 255: use a template that puts fewer fields in one name, or a shorter input "
                    f"name") in result.stderr.splitlines()
        assert files_under(out) == [f"b-{stem}.wav" for stem in sorted(STEMS)]
    check_no_leftovers(out)


def test_newlines_and_escape_sequences_in_names_print_on_one_line(tmp_path, tiny_model):
    """A name may hold a newline or a terminal's escape sequence: the stems get the name as it is, and the one
    error line of a bad file stays one line, escaped as Python writes it (\\n, \\x1b)."""
    inputs = tmp_path / "in"
    good = write_wav(inputs / "new\nline.wav", 0.5, seed=1)
    bad = [inputs / "bad\nname.wav", inputs / "red\x1b[31m.wav"]
    for path in bad:
        path.write_text("this is not audio\n")
    out = tmp_path / "out"

    result = cli(tiny_model, [inputs], out)

    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stderr
    lines = result.stderr.splitlines()
    assert [line for line in lines if not line.startswith("error: ")] == [summary_line(result)]  # no stray line
    assert len(lines) == 3 and {line.split(": not a readable")[0] for line in lines[:2]} == {
        f"error: {inputs}/bad\\nname.wav", f"error: {inputs}/red\\x1b[31m.wav"}
    check_stems(out, "new\nline", STEMS, frames_of(good))
    check_no_leftovers(out, ["bad\nname", "red\x1b[31m"])


def test_leading_dashes_and_colons_in_names(tmp_path, tiny_model):
    """-dash.wav after "--"; track:1.m4a and pipe:0.m4a are read by FFmpeg, which took "track:" for an unknown
    protocol ("Protocol not found") and "pipe:0" for standard input."""
    inputs = tmp_path / "in"
    write_wav(inputs / "-dash.wav", 0.5, seed=1)
    audio = music_like(0.5, 48000)
    for name in ("track:1.m4a", "pipe:0.m4a"):
        write_m4a(inputs / name, audio, 48000)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "unet_sep", "separate", "--out", str(out), "--model", str(tiny_model), "--quiet",
               "--", "-dash.wav", "track:1.m4a", "pipe:0.m4a"]

    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=inputs, stdin=subprocess.DEVNULL)

    assert result.returncode == 0, result.stderr
    assert files_under(out) == stem_files("-dash", "pipe:0", "track:1")
    for name in ("track:1", "pipe:0"):
        info = sf.info(out / name / "vocals.wav")
        assert info.samplerate == 48000 and abs(info.frames - 24000) < 2048, info  # the m4a's own length
