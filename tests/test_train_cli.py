"""`unet-sep train` as a user runs it: typed --set and recipe errors, what a resumed run reports, resuming a
finished run, a changed recipe on resume, Ctrl-C before the first checkpoint, and the default thread count. A tiny
U-Net on a generated folder of stems (no musdb, no ffmpeg), through the real command line in subprocesses."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from unet_sep.config import ConfigError
from unet_sep.train.loop import RecipeChangedError, Trainer, free_threads
from unet_sep.train.recipe import load_recipe

RATE = 16000


def tiny_recipe(root: Path, **train) -> dict:
    """A 16 kHz mono U-Net with 4..128 filters on 0.5 s excerpts: a step takes milliseconds."""
    return {
        "model": {"stems": ["vocals", "accompaniment"], "sample_rate": RATE, "n_channels": 1, "frequency_bins": 128,
                  "segment_frames": 64, "stft": {"n_fft": 512, "hop_length": 128},
                  "unet": {"filters": [4, 8, 16, 32, 64, 128]}},
        "data": {"kind": "folder", "root": str(root), "split_file": str(root / "splits.json")},
        "train": {"steps": 2, "batch_size": 2, "valid_every": 0, "checkpoint_every": 2, "log_every": 1, **train},
    }


@pytest.fixture(scope="module")
def stems(tmp_path_factory) -> Path:
    """<track>/vocals.wav + accompaniment.wav for three 2 s tracks (two to train on, one to validate)."""
    root = tmp_path_factory.mktemp("stems")
    rng = np.random.default_rng(0)
    t = np.arange(2 * RATE) / RATE
    for index, name in enumerate(["a", "b", "c"]):
        (root / name).mkdir()
        vocals = 0.2 * np.sin(2 * np.pi * (300 + 60 * index) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
        sf.write(root / name / "vocals.wav", vocals.astype(np.float32), RATE)
        sf.write(root / name / "accompaniment.wav", (0.1 * rng.standard_normal(t.size)).astype(np.float32), RATE)
    (root / "splits.json").write_text(json.dumps({"train": ["a", "b"], "valid": ["c"]}))
    return root


def write_recipe(path: Path, recipe: dict) -> Path:
    path.write_text(json.dumps(recipe))
    return path


def train(recipe: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "unet_sep", "train", str(recipe), "--out", str(out), "--device", "cpu",
               "--threads", "1", "--quiet", *extra]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def logged_steps(run: Path) -> list[int]:
    return [int(row["step"]) for row in csv.DictReader((run / "metrics.csv").open())]


@pytest.fixture(scope="module")
def finished_run(stems, tmp_path_factory) -> tuple[Path, Path, str]:
    """A run trained to step 2, then resumed with train.steps=4 (free: the schedule is constant); the recipe, the
    run folder and the resumed command's stderr."""
    folder = tmp_path_factory.mktemp("runs")
    recipe = write_recipe(folder / "tiny.json", tiny_recipe(stems))
    run = folder / "run"
    first = train(recipe, run)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith("trained 2 steps in "), first.stderr
    resumed = train(recipe, run, "--resume", "--set", "train.steps=4")
    assert resumed.returncode == 0, resumed.stderr
    return recipe, run, resumed.stderr


def test_a_value_of_the_wrong_type_names_the_key_the_type_and_the_value(stems, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.json", tiny_recipe(stems))
    result = train(recipe, tmp_path / "run", "--set", "train.steps=abc")
    assert result.returncode == 2
    assert result.stderr == 'error: --set: train.steps must be an integer, got "abc"\n'
    assert not (tmp_path / "run").exists()

    def error(overrides: list[str], recipe_path: Path = recipe) -> str:
        with pytest.raises(ConfigError) as caught:
            load_recipe(recipe_path, overrides)
        return str(caught.value)

    assert error(['model.unet.filters=[4,8,"x"]']) == '--set: model.unet.filters must be a list of integers, got [4, 8, "x"]'
    assert error(["train.average_from=1.5"]) == "--set: train.average_from must be an integer or null, got 1.5"
    assert error(["data.augment.gain_db=[1]"]) == "--set: data.augment.gain_db must be a list of 2 numbers, got [1]"
    assert error(["train.channels_last=1"]) == "--set: train.channels_last must be true or false, got 1"
    unknown = error(["train.stepz=3"])
    assert unknown.startswith("--set: unknown key train.stepz (did you mean train.steps?); section train has seed, steps, batch_size,")
    assert error(["model.unet.filterz=[4]"]).startswith("--set: unknown key model.unet.filterz (did you mean model.unet.filters?)")
    assert error(["train.steps.x=1"]) == "--set: train.steps is a value, not a section: it has no key 'x'"
    # a string field takes the text as it is; a number stays a number where one is wanted
    loaded = load_recipe(recipe, ["model.name=2024", "train.learning_rate=1", "train.init_from=null"])
    assert loaded.model.name == "2024" and loaded.train.learning_rate == 1.0 and loaded.train.init_from is None
    # the same checks for the recipe file itself, naming the file; a --set that corrects the file wins
    broken = tiny_recipe(stems)
    broken["train"]["steps"] = "abc"
    broken_path = write_recipe(tmp_path / "broken.json", broken)
    assert error([], broken_path) == f'{broken_path}: train.steps must be an integer, got "abc"'
    assert load_recipe(broken_path, ["train.steps=3"]).train.steps == 3
    broken["train"] = {"steps": 3, "batchsize": 2}
    assert error([], write_recipe(broken_path, broken)).startswith(
        f"{broken_path}: unknown key train.batchsize (did you mean train.batch_size?); section train has ")


def test_a_resumed_run_reports_the_steps_it_took_and_the_runs_total(finished_run):
    _, run, stderr = finished_run
    assert stderr.startswith("WARNING unet_sep.train.loop: resuming with a changed recipe: train.steps 2 -> 4\n"), stderr
    summary = stderr.splitlines()[1]
    assert summary.startswith("trained steps 3-4 (2 steps) in "), summary
    assert " s; the run has 4 steps; last loss " in summary
    assert logged_steps(run) == [1, 2, 3, 4]
    assert json.loads((run / "recipe.json").read_text())["train"]["steps"] == 4
    assert json.loads((run / "recipe.until-step-00000002.json").read_text())["train"]["steps"] == 2


def test_resuming_a_finished_run_has_nothing_to_do(finished_run):
    recipe, run, _ = finished_run
    latest = (run / "checkpoints" / "latest").read_text()
    result = train(recipe, run, "--resume", "--set", "train.steps=4")
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"nothing to do: the run {run} already finished its 4 steps"
    assert (run / "checkpoints" / "latest").read_text() == latest and logged_steps(run) == [1, 2, 3, 4]


def test_a_changed_recipe_on_resume_is_an_error_unless_allowed(finished_run, tmp_path):
    recipe, finished, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    refused = train(recipe, run, "--resume", "--set", "train.steps=6", "--set", "train.batch_size=3",
                    "--set", "train.log_every=2")
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: the recipe differs from the one {run} was trained with ({run / 'recipe.json'}): train.batch_size 2 -> 3. "
        "Resume with that recipe, or pass --allow-changes to continue from step 4 with the new values\n")
    assert json.loads((run / "recipe.json").read_text())["train"]["batch_size"] == 2

    allowed = train(recipe, run, "--resume", "--set", "train.steps=5", "--set", "train.batch_size=3", "--allow-changes")
    assert allowed.returncode == 0, allowed.stderr
    assert "resuming with a changed recipe: train.batch_size 2 -> 3" in allowed.stderr
    assert "trained step 5 (1 step) in " in allowed.stderr and "the run has 5 steps" in allowed.stderr
    assert json.loads((run / "recipe.json").read_text())["train"]["batch_size"] == 3
    assert json.loads((run / "recipe.until-step-00000004.json").read_text())["train"]["batch_size"] == 2

    # under a cosine schedule the learning rates depend on train.steps: extending such a run is a change to allow
    cosine = load_recipe(recipe, ["train.lr_schedule=cosine"])
    Trainer(cosine, tmp_path / "cosine", device="cpu", progress=False).run()
    cosine.train.steps = 4
    with pytest.raises(RecipeChangedError, match=r"train.steps 2 -> 4 \(the cosine schedule's learning rates depend on it\)\."):
        Trainer(cosine, tmp_path / "cosine", device="cpu", progress=False, resume=True).run()


def test_ctrl_c_before_the_first_checkpoint_says_the_run_must_start_again(stems, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.json", tiny_recipe(stems, steps=100_000, checkpoint_every=500))
    run = tmp_path / "run"
    command = [sys.executable, "-m", "unet_sep", "train", str(recipe), "--out", str(run), "--device", "cpu",
               "--threads", "1", "--quiet"]
    # SIGINT back to its default in the child, so Python turns it into KeyboardInterrupt even when pytest runs
    # in a background job (which ignores SIGINT)
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.csv").is_file():  # written after the first step
            assert process.poll() is None and time.monotonic() < deadline, "the run did not start training"
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert stderr == (f"error: {run}: interrupted; no checkpoint was saved yet (train.checkpoint_every is 500 steps), "
                      "so the run must start again from step 0: run the same command again\n")
    assert not (run / "checkpoints").exists()


def test_default_threads_are_the_cores_other_processes_leave_free():
    """The thread count the default --threads picks from the other processes' load (in cores)."""
    assert free_threads(2, 0.0, 2) == 2 and free_threads(2, 0.2, 2) == 2  # idle, or a little background noise
    assert free_threads(2, 0.7, 2) == 1 and free_threads(2, 1.0, 2) == 1  # one core taken
    assert free_threads(2, 3.5, 2) == 1  # never fewer than one
    assert free_threads(16, 1.0, 16) == 15 and free_threads(16, 0.0, 8) == 8  # at most the cap (torchrun's share)
