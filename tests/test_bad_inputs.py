"""Bad inputs through the real command line (a subprocess per case).

The contract: each bad input gets ONE line on stderr naming it and the run exits non-zero (1 when any
input of the batch failed, 2 for a model or option error, 130 on Ctrl-C); never a Python traceback; the
other files of the batch are still separated; nothing partial is left (no hidden ``.*.partial`` temp
files, no empty stem folders) and the inputs are untouched (same bytes, same mtime).
"""

from __future__ import annotations

import hashlib
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from unet_sep import ModelConfig, UNetConfig, save_model
from unet_sep.model import StemsNet

EXAMPLE_MP3 = Path(__file__).resolve().parents[1].parent / "shared/data/mixtures/audio_example.mp3"
RATE = 44100
# Lines the command may print with --quiet; anything else (a native library's chatter, a traceback) is noise.
ALLOWED_PREFIXES = ("error: ", "separated ", "skipped ", "WARNING ", "INFO ")


# ---- fixtures and helpers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("bad-inputs-model") / "tiny"
    torch.manual_seed(0)
    cfg = ModelConfig(unet=UNetConfig(filters=[4, 8, 16, 32, 64, 128]), name="tiny-random")
    save_model(folder, StemsNet(cfg).eval(), cfg)
    return folder, list(cfg.stems)


@pytest.fixture(scope="module")
def long_wav(tmp_path_factory) -> Path:
    """10 minutes of stereo noise, written block by block: about 8 s of work for the tiny model on 2 Zen 4 cores,
    so a signal sent once the short file is done still finds this one in progress (3 minutes, 2.5 s of work,
    left too little margin: the run sometimes finished first)."""
    return write_wav(tmp_path_factory.mktemp("bad-inputs-long") / "long.wav", 600.0, seed=7)


def write_wav(path: Path, seconds: float, kind: str = "noise", rate: int = RATE, channels: int = 2,
              subtype: str = "PCM_16", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * rate))
    with sf.SoundFile(str(path), "w", rate, channels, subtype=subtype) as handle:
        for start in range(0, frames, 10 * rate):
            n = min(10 * rate, frames - start)
            block = np.zeros((n, channels), np.float32) if kind == "silent" else rng.uniform(-0.3, 0.3, (n, channels))
            handle.write(block.astype(np.float32))
    return path


def cli(model_dir: Path, inputs, out: Path, *extra, timeout: float = 120, **popen) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "unet_sep", "separate", *map(str, inputs), "--out", str(out),
            "--model", str(model_dir), "--quiet", *map(str, extra)]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **popen)


def snapshot(*paths: Path) -> dict:
    """Bytes (sha256), size and mtime of every file under ``paths``; folders list their entries."""
    state = {}
    for root in paths:
        items = [root] if not root.is_dir() else [root, *sorted(root.rglob("*"))]
        for item in items:
            if item.is_dir():
                state[item] = ("dir", sorted(p.name for p in item.iterdir()))
            elif item.exists():
                st = item.stat()
                state[item] = (hashlib.sha256(item.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns)
            else:
                state[item] = None
    return state


def check_stderr(result: subprocess.CompletedProcess, bad: list, strict: bool = True) -> None:
    """No traceback; exactly one ``error:`` line per bad input, naming it; with ``strict``, no other noise."""
    err = result.stderr
    assert "Traceback" not in err and "most recent call last" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error: ")]
    for item in bad:
        naming = [line for line in lines if str(item) in line]
        assert len(naming) == 1, f"expected one line naming {item}, got {naming}\n{err}"
        assert naming[0].startswith("error: "), err
    assert len(error_lines) == len(bad), err
    if strict:
        noise = [line for line in lines if not line.startswith(ALLOWED_PREFIXES)]
        assert not noise, f"unexpected stderr lines {noise}\n{err}"


def check_stems(out: Path, track: str, stems: list[str], frames: int, channels: int = 2, rate: int = RATE,
                template_dir: bool = True) -> dict[str, np.ndarray]:
    """Every stem of ``track`` exists, is readable audio of the input's length, rate and channels."""
    result = {}
    for stem in stems:
        path = out / track / f"{stem}.wav" if template_dir else out / f"{track}.wav"
        assert path.is_file(), f"missing {path}"
        data, file_rate = sf.read(str(path), dtype="float32", always_2d=True)
        assert file_rate == rate and data.shape == (frames, channels), (path, file_rate, data.shape)
        assert np.isfinite(data).all()
        result[stem] = data
    return result


def check_no_leftovers(out: Path, failed_tracks: list[str] = ()) -> None:
    if not out.exists():
        return
    everything = list(out.rglob("*"))
    temps = [p for p in everything if p.name.startswith(".") or p.name.endswith(".partial")]
    assert not temps, f"temporary files left behind: {temps}"
    empty = [p for p in everything if p.is_dir() and not any(p.iterdir())]
    assert not empty, f"empty folders left behind: {empty}"
    zero = [p for p in everything if p.is_file() and p.stat().st_size == 0]
    assert not zero, f"empty files left behind: {zero}"
    for track in failed_tracks:
        assert not (out / track).exists(), f"outputs left for failed input {track}: {list((out / track).rglob('*'))}"


def frames_of(path: Path) -> int:
    return sf.info(str(path)).frames


# ---- bad inputs next to good ones --------------------------------------------------------------------


def _text(path: Path) -> None:
    path.write_text("this is not audio, only text in a file named .wav\n")


def _zero(path: Path) -> None:
    path.write_bytes(b"")


def _nonfinite(value: float):
    def build(path: Path) -> None:
        audio = np.random.default_rng(1).uniform(-0.3, 0.3, (2 * RATE, 2)).astype(np.float32)
        audio[RATE // 2, 1] = value
        sf.write(str(path), audio, RATE, subtype="FLOAT")
    return build


def _low_rate(path: Path) -> None:
    sf.write(str(path), np.zeros((4000, 2), np.float32), 4000)


BAD_FILES = {
    "text-named-wav": ("notaudio.wav", _text),
    "zero-length": ("emptyfile.wav", _zero),
    "nan-samples": ("nansamples.wav", _nonfinite(np.nan)),
    "inf-samples": ("infsamples.wav", _nonfinite(np.inf)),
    "unsupported-rate": ("lowrate.wav", _low_rate),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_beside_good_ones(tmp_path, model, case):
    model_dir, stems = model
    name, build = BAD_FILES[case]
    inputs = tmp_path / "in"
    first = write_wav(inputs / "first.wav", 2.0, seed=1)
    bad = inputs / name
    build(bad)
    last = write_wav(inputs / "last.wav", 1.5, seed=2)
    before = snapshot(inputs)
    out = tmp_path / "out"

    result = cli(model_dir, [first, bad, last], out)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [bad])
    check_stems(out, "first", stems, frames_of(first))
    check_stems(out, "last", stems, frames_of(last))
    check_no_leftovers(out, [bad.stem])
    assert snapshot(inputs) == before


def test_missing_path_and_empty_folder(tmp_path, model):
    model_dir, stems = model
    good = write_wav(tmp_path / "in" / "good.wav", 2.0)
    missing = tmp_path / "in" / "missing.wav"
    empty = tmp_path / "emptyfolder"
    empty.mkdir()
    pattern = tmp_path / "in" / "*.flac"  # a glob that matches nothing
    before = snapshot(tmp_path / "in", empty)
    out = tmp_path / "out"

    result = cli(model_dir, [missing, good, empty, pattern], out)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [missing, empty, pattern])
    check_stems(out, "good", stems, frames_of(good))
    check_no_leftovers(out, ["missing", "emptyfolder"])
    assert snapshot(tmp_path / "in", empty) == before


def test_everything_in_one_batch(tmp_path, model):
    """Good, silent and bad files interleaved: each bad one reported once, all good ones separated."""
    model_dir, stems = model
    inputs = tmp_path / "in"
    goods = [write_wav(inputs / "a_good.wav", 1.0, seed=3), write_wav(inputs / "z_good.wav", 1.0, seed=4)]
    silent = write_wav(inputs / "m_silent.wav", 1.0, kind="silent")
    bads = []
    for name, build in BAD_FILES.values():
        build(inputs / name)
        bads.append(inputs / name)
    missing = tmp_path / "nowhere.wav"
    before = snapshot(inputs)
    out = tmp_path / "out"

    result = cli(model_dir, [goods[0], *bads[:2], silent, missing, *bads[2:], goods[1]], out)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [*bads, missing])
    for good in [*goods, silent]:
        check_stems(out, good.stem, stems, frames_of(good))
    check_no_leftovers(out, [b.stem for b in bads])
    assert snapshot(inputs) == before


# ---- the truncated real mp3 -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def truncated_run(tmp_path_factory, model):
    if not EXAMPLE_MP3.is_file():
        pytest.skip(f"real song excerpt not found at {EXAMPLE_MP3} (../shared is absent)")
    model_dir, _ = model
    root = tmp_path_factory.mktemp("bad-inputs-truncated")
    data = EXAMPLE_MP3.read_bytes()
    truncated = root / "in" / "cutshort.mp3"
    truncated.parent.mkdir()
    truncated.write_bytes(data[: int(len(data) * 0.45)])  # the Xing header still announces the full length
    good = root / "in" / "whole.mp3"
    shutil.copyfile(EXAMPLE_MP3, good)
    before = snapshot(root / "in")
    mp3_before = snapshot(EXAMPLE_MP3)
    result = cli(model_dir, [truncated, good], root / "out")
    return result, truncated, good, root, before, mp3_before


def test_truncated_mp3_is_an_error(truncated_run, model):
    _, stems = model
    result, truncated, good, root, before, mp3_before = truncated_run
    assert result.returncode == 1, result.stderr
    check_stderr(result, [truncated], strict=False)
    assert "truncated" in result.stderr
    check_stems(root / "out", "whole", stems, frames_of(EXAMPLE_MP3))
    check_no_leftovers(root / "out", ["cutshort"])
    assert snapshot(root / "in") == before and snapshot(EXAMPLE_MP3) == mp3_before


def test_truncated_mp3_prints_no_decoder_chatter(truncated_run):
    """libmpg123 (inside libsndfile) writes 'Warning: Xing stream size off ...' straight to fd 2."""
    result, truncated, *_ = truncated_run
    check_stderr(result, [truncated], strict=True)


def test_error_lines_written_while_a_decoder_is_muted_are_not_lost():
    """A reader thread mutes fd 2 while libsndfile opens a file; the command's own lines (an earlier file's error)
    written at that moment must still arrive. Here the muting and the line are forced to coincide."""
    script = (
        "import sys\n"
        "from unet_sep.cli.process import guard_standard_streams\n"
        "from unet_sep.audio.native_stderr import quiet_native_stderr\n"
        "guard_standard_streams()\n"
        "with quiet_native_stderr():\n"
        "    print('error: first.wav: file is empty (0 bytes)', file=sys.stderr)\n"
        "    import os; os.write(2, b'native chatter\\n')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "error: first.wav: file is empty (0 bytes)\n"


# ---- not an error: silence ---------------------------------------------------------------------------


def test_all_silent_file_is_not_an_error(tmp_path, model):
    model_dir, stems = model
    silent = write_wav(tmp_path / "in" / "quiet.wav", 2.0, kind="silent")
    before = snapshot(silent)
    out = tmp_path / "out"

    result = cli(model_dir, [silent], out)

    assert result.returncode == 0, result.stderr
    check_stderr(result, [])
    for stem, data in check_stems(out, "quiet", stems, frames_of(silent)).items():
        assert np.abs(data).max() < 1e-6, stem
    check_no_leftovers(out)
    assert snapshot(silent) == before


# ---- outputs that cannot be written ------------------------------------------------------------------


def _writes_blocked(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_bytes(b"x")
    except OSError:
        return True
    probe.unlink()
    return False


@pytest.mark.parametrize("how", ["read-only-folder", "folder-under-a-file"])
def test_unwritable_output(tmp_path, model, how):
    model_dir, _ = model
    first = write_wav(tmp_path / "in" / "first.wav", 1.0, seed=1)
    second = write_wav(tmp_path / "in" / "second.wav", 1.0, seed=2)
    before = snapshot(tmp_path / "in")
    if how == "read-only-folder":
        out = tmp_path / "readonly"
        out.mkdir()
        out.chmod(0o555)
        if not _writes_blocked(out):
            out.chmod(0o755)
            pytest.skip("chmod 0o555 does not stop writes here (running as root); see folder-under-a-file")
    else:
        blocker = tmp_path / "a_regular_file"
        blocker.write_text("not a folder")
        out = blocker / "stems"
        file_before = snapshot(blocker)
    try:
        result = cli(model_dir, [first, second], out)
    finally:
        if how == "read-only-folder":
            out.chmod(0o755)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [first, second])
    if how == "read-only-folder":
        assert list(out.iterdir()) == []
    else:
        assert snapshot(blocker) == file_before
    assert snapshot(tmp_path / "in") == before


def test_write_failing_midway(tmp_path, model):
    """A write error in the middle of a stem (file size limit, like a full disk) leaves nothing behind."""
    model_dir, stems = model
    big = write_wav(tmp_path / "in" / "big.wav", 3.0, seed=1)  # 16-bit stems of ~530 kB
    small = write_wav(tmp_path / "in" / "small.wav", 1.0, seed=2)  # ~176 kB
    before = snapshot(tmp_path / "in")
    out = tmp_path / "out"
    limit = 400_000

    def limit_file_size():  # in the child; Python ignores SIGXFSZ, so writes past the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    result = cli(model_dir, [big, small], out, preexec_fn=limit_file_size)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [big])
    check_stems(out, "small", stems, frames_of(small))
    check_no_leftovers(out, ["big"])
    assert snapshot(tmp_path / "in") == before


@pytest.mark.parametrize("spelling", ["same-folder", "through-a-symlink"])
def test_output_that_is_the_input(tmp_path, model, spelling):
    model_dir, _ = model
    folder = tmp_path / "music"
    victim = write_wav(folder / "x.wav", 1.0, seed=1)
    other = write_wav(tmp_path / "elsewhere" / "y.wav", 1.0, seed=2)
    out = folder
    if spelling == "through-a-symlink":
        out = tmp_path / "link"
        out.symlink_to(folder, target_is_directory=True)
    before = snapshot(victim, other)

    # Template "{track}.{ext}" with one stem: x.wav's vocals would be written to <out>/x.wav, the input itself.
    result = cli(model_dir, [victim, other], out, "--template", "{track}.{ext}", "--stems", "vocals")

    assert result.returncode == 1, result.stderr
    check_stderr(result, [victim])
    assert "overwrite" in result.stderr
    assert snapshot(victim, other) == before
    data, rate = sf.read(str(folder / "y.wav"), always_2d=True)
    assert rate == RATE and data.shape == (frames_of(other), 2)
    assert sorted(p.name for p in folder.iterdir()) == ["x.wav", "y.wav"]


def test_output_of_one_input_is_another_input(tmp_path, model):
    """a.wav's stems go to <folder>/vocals.wav, which is the batch's second input: it must not be replaced."""
    model_dir, _ = model
    folder = tmp_path / "music"
    a = write_wav(folder / "a.wav", 1.0, seed=1)
    vocals = write_wav(folder / "vocals.wav", 1.0, kind="silent")
    before = snapshot(a, vocals)

    result = cli(model_dir, [a, vocals], folder, "--template", "{stem}.{ext}")

    assert result.returncode in (1, 2), result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(a, vocals) == before, "an input was overwritten by another input's stem"
    check_no_leftovers(folder)


def test_two_inputs_with_the_same_outputs(tmp_path, model):
    """one/song.wav and two/song.wav both map to out/song/*.wav: the second must not be silently 'skipped'."""
    model_dir, stems = model
    first = write_wav(tmp_path / "one" / "song.wav", 1.0, seed=1)
    second = write_wav(tmp_path / "two" / "song.wav", 2.0, seed=2)
    out = tmp_path / "out"

    result = cli(model_dir, [first, second], out)

    assert result.returncode in (1, 2), result.stderr
    check_stderr(result, [second])
    if result.returncode == 1:
        check_stems(out, "song", stems, frames_of(first))


def test_input_vanishing_during_the_batch(tmp_path, model):
    """An input deleted after the batch started fails on its own; the rest of the batch goes on.

    Each input is opened once, when a reader gets to it: with one reader thread the victim is opened only once the
    slow file is fully decoded, and the slow file is longer than the pipeline's bounded queues hold, so the victim
    is gone before anything opens it.
    """
    model_dir, stems = model
    inputs = tmp_path / "in"
    slow = write_wav(inputs / "slow.wav", 240.0, seed=1)
    victim = write_wav(inputs / "victim.wav", 1.0, seed=2)
    after = write_wav(inputs / "after.wav", 1.0, seed=3)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "unet_sep", "separate", str(slow), str(victim), str(after), "--out", str(out),
            "--model", str(model_dir), "--quiet", "--readers", "1"]

    def delete_the_victim(process: subprocess.Popen) -> None:
        wait_for_partial(process, out / "slow")
        victim.unlink()

    result = run_while(args, delete_the_victim, timeout=120)
    err = result.stderr

    assert result.returncode == 1, err
    check_stderr(result, [victim])
    check_stems(out, "slow", stems, frames_of(slow))
    check_stems(out, "after", stems, frames_of(after))
    check_no_leftovers(out, ["victim"])


# ---- model and option errors -------------------------------------------------------------------------


def _corrupt_config(folder: Path, model_dir: Path) -> None:
    shutil.copytree(model_dir, folder)
    (folder / "config.json").write_text("{not json")


def _corrupt_weights(folder: Path, model_dir: Path) -> None:
    shutil.copytree(model_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.mark.parametrize("case", ["missing-model", "corrupt-config", "corrupt-weights", "bad-template",
                                  "negative-offset", "zero-duration"])
def test_model_and_option_errors_exit_2(tmp_path, model, case):
    model_dir, _ = model
    good = write_wav(tmp_path / "in" / "good.wav", 1.0)
    before = snapshot(good)
    extra: list = []
    if case == "missing-model":
        model_dir = tmp_path / "no-such-model"
    elif case == "corrupt-config":
        _corrupt_config(tmp_path / "broken", model_dir)
        model_dir = tmp_path / "broken"
    elif case == "corrupt-weights":
        _corrupt_weights(tmp_path / "broken", model_dir)
        model_dir = tmp_path / "broken"
    elif case == "bad-template":
        extra = ["--template", "{album}/{stem}.{ext}"]
    elif case == "negative-offset":
        extra = ["--offset", "-1"]
    else:
        extra = ["--duration", "0"]
    out = tmp_path / "out"

    result = cli(model_dir, [good], out, *extra)

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert not out.exists()
    assert snapshot(good) == before


# ---- Ctrl-C and SIGTERM while writing ----------------------------------------------------------------


def run_while(args: list[str], act, timeout: float) -> subprocess.CompletedProcess:
    """Run ``args``, call ``act(process)`` while it runs, then wait for it (killed if it outlives ``timeout``)."""
    process = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    try:
        act(process)
        _, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(args, process.returncode, "", err)


def wait_for_partial(process: subprocess.Popen, folder: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if folder.is_dir() and any(folder.glob(".*.partial")):
            return
        if process.poll() is not None:
            pytest.fail(f"the command ended (exit {process.returncode}) before writing into {folder}: "
                        f"{process.stderr.read() if process.stderr else ''}")
        time.sleep(0.02)
    pytest.fail(f"no temporary file appeared in {folder} within {timeout:.0f} s")


def wait_for_stems(process: subprocess.Popen, folder: Path, stems: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all((folder / f"{stem}.wav").is_file() for stem in stems):
            return
        if process.poll() is not None:
            pytest.fail(f"the command ended (exit {process.returncode}) before writing {folder}")
        time.sleep(0.02)
    pytest.fail(f"the stems of {folder} did not appear within {timeout:.0f} s")


ENDING_SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT]  # Ctrl-C, kill, hang-up, Ctrl-\\


@pytest.mark.parametrize("signum", ENDING_SIGNALS, ids=[s.name for s in ENDING_SIGNALS])
def test_interrupt_while_writing(tmp_path, model, long_wav, signum):
    """Every signal a terminal, a shell or a service manager sends to end a run: the file being written is removed,
    the finished one kept, and the exit status is 128 + the signal's number, as a shell reports it."""
    model_dir, stems = model
    done_first = write_wav(tmp_path / "in" / "done_first.wav", 1.0, seed=5)
    before = snapshot(done_first, long_wav)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "unet_sep", "separate", str(done_first), str(long_wav), "--out", str(out),
            "--model", str(model_dir), "--quiet"]

    def interrupt(process: subprocess.Popen) -> None:
        wait_for_partial(process, out / "long")
        wait_for_stems(process, out / "done_first", stems)  # decoded side by side: let the short one finish
        process.send_signal(signum)

    result = run_while(args, interrupt, timeout=60)
    err = result.stderr

    assert result.returncode == 128 + signum, err
    check_stderr(result, [long_wav])
    assert not (out / "long").exists(), list((out / "long").rglob("*"))
    check_stems(out, "done_first", stems, frames_of(done_first))  # finished before the signal: kept
    check_no_leftovers(out, ["long"])
    assert snapshot(done_first, long_wav) == before


def test_output_name_taken_by_a_folder(tmp_path, model):
    """A stem's file name is an existing folder: the input fails whole, without leaving its other stems."""
    model_dir, stems = model
    song = write_wav(tmp_path / "in" / "song.wav", 1.0, seed=1)
    other = write_wav(tmp_path / "in" / "other.wav", 1.0, seed=2)
    out = tmp_path / "out"
    (out / "song" / f"{stems[-1]}.wav").mkdir(parents=True)  # the last stem is committed last
    before = snapshot(tmp_path / "in")

    result = cli(model_dir, [song, other], out)

    assert result.returncode == 1, result.stderr
    check_stderr(result, [song])
    assert ".partial" not in result.stderr, "the message should name the output, not the temporary file"
    assert sorted(p.name for p in (out / "song").iterdir()) == [f"{stems[-1]}.wav"], list((out / "song").iterdir())
    check_stems(out, "other", stems, frames_of(other))
    assert snapshot(tmp_path / "in") == before
