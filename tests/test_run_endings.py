"""How a run ends, whatever happens to the streams it writes to and the signals it gets (unet_sep.cli.process).

- stderr closed, full, or a pipe whose reader left: the stems are still separated and the exit status is that of
  the work (the messages are lost, as they must be); bad inputs still exit 1.
- stdout closed or full: the command's output (a listing) could not be given: one line on stderr, exit 1; a
  reader that stopped reading (``| head -1``): exit 141, as SIGPIPE ends a C program, and no traceback.
- Signals: a run whose SIGHUP is ignored (``nohup``) goes on through a hang-up; one paused with SIGTSTP and
  resumed with SIGCONT finishes whole; a training run ended by SIGTERM says how to resume and exits 143.
  (Every signal that ends a separation is in ``test_bad_inputs.py::test_interrupt_while_writing``.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_model
from test_bad_inputs import check_no_leftovers, check_stems, frames_of, write_wav
from train_runs import make_stems, stems_recipe
from unet_sep.train.checkpoints import CHECKPOINTS_FOLDER, latest_checkpoint

COMMAND = [sys.executable, "-m", "unet_sep"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("endings-model") / "tiny")


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    return write_wav(tmp_path_factory.mktemp("endings-in") / "song.wav", 2.0, seed=3)


def shell(script: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """``script`` in bash with ``$UNET_SEP`` the command; the exit status of its first pipeline element."""
    return subprocess.run(["bash", "-c", f"set -o pipefail; {script}; exit ${{PIPESTATUS[0]}}"], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "UNET_SEP": " ".join(COMMAND), **env})


# ---- stderr: the work does not depend on whether its messages can be shown -------------------------------------


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full", "2>&1 | (exec 0<&-; sleep 1)", "<&- >&- 2>&-"],
                         ids=["closed", "full", "reader-gone", "all-closed"])
def test_stems_are_written_whatever_stderr_is(tmp_path, model, song, redirect):
    out = tmp_path / "out"
    result = shell(f"$UNET_SEP separate {song} --out {out} --model {model} {redirect}")
    assert result.returncode == 0, result.stderr[-3000:]
    check_stems(out, "song", ["vocals", "accompaniment"], frames_of(song))
    check_no_leftovers(out)


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full"], ids=["closed", "full"])
def test_a_bad_input_still_exits_1_when_stderr_cannot_say_so(tmp_path, model, song, redirect):
    out = tmp_path / "out"
    result = shell(f"$UNET_SEP separate {song} {tmp_path / 'missing.wav'} --out {out} --model {model} {redirect}")
    assert result.returncode == 1, result.stderr[-3000:]
    check_stems(out, "song", ["vocals", "accompaniment"], frames_of(song))


def test_no_file_the_command_writes_takes_the_number_of_a_closed_stderr(tmp_path, model, song):
    """With descriptor 2 closed, the first file opened would get number 2, and every native library's warning (and
    Python's own last words) would be written into it: the stems must hold audio only."""
    out = tmp_path / "out"
    result = shell(f"$UNET_SEP separate {song} --out {out} --model {model} --verbose 2>&-")
    assert result.returncode == 0
    for stem in ("vocals", "accompaniment"):
        data = (out / "song" / f"{stem}.wav").read_bytes()
        assert b"INFO" not in data and b"unet_sep" not in data


# ---- stdout: the output of a listing -----------------------------------------------------------------------


@pytest.mark.parametrize("redirect, reason", [(">/dev/full", "No space left on device"),
                                              (">&-", "it was closed when the command started")])
def test_output_that_cannot_be_written_is_one_line_and_exit_1(redirect, reason):
    result = shell(f"$UNET_SEP models {redirect}")
    assert result.returncode == 1, result.stderr[-3000:]
    assert result.stderr == f"error: cannot write to standard output: {reason}\n"


@pytest.mark.parametrize("command", ["models", "separate --help", "--version"])
def test_a_reader_that_stops_reading_ends_the_command_quietly(command):
    result = shell(f"$UNET_SEP {command} | (exec 0<&-; sleep 1)")
    assert result.returncode == 141, result.stderr[-3000:]
    assert result.stderr == ""


def test_output_that_fits_still_exits_0():
    result = shell("$UNET_SEP models | head -1")
    assert result.returncode in (0, 141) and result.stdout.startswith("name "), result.stderr
    assert shell("$UNET_SEP models >/dev/null").returncode == 0


# ---- signals that do not end a run -------------------------------------------------------------------------


def _start(args: list[str], ignore_hangup: bool = False) -> subprocess.Popen:
    def child() -> None:
        if ignore_hangup:
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup does

    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=child)


def _wait_for_temporary(process: subprocess.Popen, folder: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not (folder.is_dir() and any(folder.glob(".*.partial"))):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.02)


def test_a_hangup_that_nohup_ignores_does_not_end_the_run(tmp_path, model):
    song = write_wav(tmp_path / "in" / "long.wav", 120.0, seed=4)
    out = tmp_path / "out"
    process = _start([*COMMAND, "separate", str(song), "--out", str(out), "--model", str(model), "--quiet"],
                     ignore_hangup=True)
    _wait_for_temporary(process, out / "long")
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    check_stems(out, "long", ["vocals", "accompaniment"], frames_of(song))


def test_a_run_paused_and_resumed_finishes_whole(tmp_path, model):
    song = write_wav(tmp_path / "in" / "long.wav", 120.0, seed=6)
    out = tmp_path / "out"
    process = _start([*COMMAND, "separate", str(song), "--out", str(out), "--model", str(model), "--quiet"])
    _wait_for_temporary(process, out / "long")
    process.send_signal(signal.SIGTSTP)  # Ctrl-Z
    time.sleep(1.0)
    assert process.poll() is None
    process.send_signal(signal.SIGCONT)  # fg
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    check_stems(out, "long", ["vocals", "accompaniment"], frames_of(song))
    check_no_leftovers(out)


def test_a_training_run_ended_by_sigterm_says_how_to_resume(tmp_path):
    """torchrun and service managers stop a training run with SIGTERM; before, it died on the spot without a word."""
    root = make_stems(tmp_path / "stems")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(stems_recipe(root, steps=100_000, checkpoint_every=5)))
    run = tmp_path / "run"
    process = _start([*COMMAND, "train", str(recipe), "--out", str(run), "--quiet"])
    deadline = time.monotonic() + 120
    while latest_checkpoint(run / CHECKPOINTS_FOLDER) is None and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith(f"error: {run}: interrupted;") and "--resume" in lines[-1], err
    assert "Traceback" not in err
