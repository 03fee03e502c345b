"""The training loop: a tiny MUSDB18-HQ tree made here and read with musdb's splits (the loss falls and the model
beats the mixture), fine-tuning from another model, the channels-last layout, weight averaging, a 2-process
torchrun run on gloo, and a short MIR-1K run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import SHARED
from musdb_tree import make_musdb_tree
from train_runs import musdb_recipe, train_command, write_recipe
from unet_sep import Separator
from unet_sep.data.load import load_tracks
from unet_sep.train.average import average_files
from unet_sep.train.loop import Trainer
from unet_sep.train.recipe import load_recipe
from unet_sep.train.validation import validation_scores

MIR1K = SHARED / "data" / "mir1k"
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    return make_musdb_tree(tmp_path_factory.mktemp("musdb") / "musdb18hq", seconds=8.0)


def test_training_lowers_the_loss_and_beats_the_mixture(tmp_path, musdb_root):
    recipe = load_recipe(write_recipe(tmp_path / "r.json", musdb_recipe(musdb_root)))
    losses: list[float] = []
    torch.set_num_threads(2)
    result = Trainer(recipe, tmp_path / "run", device="cpu", progress=False,
                     on_step=lambda step, loss: losses.append(loss)).run()
    assert result.steps == 40 and len(losses) == 40
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8]), losses
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "recipe.json", "metrics.csv", "validation.csv", "curves.png",
                 "best.json"):
        assert (run / name).is_file(), name
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000040"
    assert any((run / "tensorboard").iterdir())
    # The run folder is a model folder; score it on the held-out test tracks against the mixture baseline.
    separator = Separator.from_pretrained(str(run), device="cpu")
    test_tracks = load_tracks(recipe.data, "test", 16000, 2)
    scores = validation_scores(separator, test_tracks)
    for stem in ("vocals", "accompaniment"):
        assert scores[f"sdr_{stem}"] > scores[f"mixture_sdr_{stem}"] + 3.0, scores
    assert result.best_step in (20, 40)


def test_init_from_fine_tunes_from_another_models_weights(tmp_path, musdb_root):
    torch.set_num_threads(2)
    base = load_recipe(write_recipe(tmp_path / "base.json",
                                    musdb_recipe(musdb_root, steps=4, valid_every=0, checkpoint_every=4)))
    Trainer(base, tmp_path / "base", device="cpu", progress=False).run()
    start = load_file(str(tmp_path / "base" / "model.safetensors"))
    # a learning rate of 1e-12 leaves the weights where they started: they must be the base model's
    tuned = load_recipe(write_recipe(tmp_path / "tuned.json", musdb_recipe(
        musdb_root, steps=1, valid_every=0, checkpoint_every=1, learning_rate=1e-12, init_from=str(tmp_path / "base"))))
    Trainer(tuned, tmp_path / "tuned", device="cpu", progress=False).run()
    after = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    fresh = musdb_recipe(musdb_root, steps=1, valid_every=0, checkpoint_every=1, learning_rate=1e-12)
    Trainer(load_recipe(write_recipe(tmp_path / "fresh.json", fresh)), tmp_path / "fresh", device="cpu",
            progress=False).run()
    random_init = load_file(str(tmp_path / "fresh" / "model.safetensors"))
    weights = [name for name in start if name.endswith("weight") and start[name].ndim == 4]
    assert len(weights) >= 8
    for name in weights:
        assert torch.allclose(after[name].float(), start[name].float(), atol=1e-6), name
        assert not torch.allclose(random_init[name].float(), start[name].float(), atol=1e-3), name
    assert json.loads((tmp_path / "tuned" / "recipe.json").read_text())["train"]["init_from"] == str(tmp_path / "base")
    # a model of another shape is refused with one line, before any step
    wider = musdb_recipe(musdb_root, steps=1, init_from=str(tmp_path / "base"))
    wider["model"]["unet"]["filters"] = [8, 16, 32, 128]
    proc = subprocess.run(train_command(write_recipe(tmp_path / "wider.json", wider), tmp_path / "wider"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "does not fit" in proc.stderr and "unet" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "wider" / "checkpoints").exists()
    nope = write_recipe(tmp_path / "r.json", musdb_recipe(musdb_root, init_from=str(tmp_path / "nope")))
    missing = subprocess.run(train_command(nope, tmp_path / "nope-run"), capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "init_from" in missing.stderr and "Traceback" not in missing.stderr, \
        missing.stderr


def test_channels_last_training_takes_the_same_steps(tmp_path, musdb_root):
    """The layout changes the speed, not the arithmetic (without dropout, whose masks follow memory order)."""
    torch.set_num_threads(2)
    losses = {}
    for layout in (True, False):
        recipe = musdb_recipe(musdb_root, steps=5, valid_every=0, checkpoint_every=5, channels_last=layout)
        recipe["model"]["unet"]["dropout"] = 0.0
        run: list[float] = []
        Trainer(load_recipe(write_recipe(tmp_path / f"{layout}.json", recipe)), tmp_path / str(layout), device="cpu",
                progress=False, on_step=lambda step, loss, run=run: run.append(loss)).run()
        losses[layout] = run
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)
    assert len(set(np.round(losses[True], 4))) > 1  # the steps did change the model


def test_weight_averaging_is_the_mean_of_the_chosen_steps_weights(tmp_path, musdb_root):
    """train.average_from averages the weights of steps 4, 6 and 8 without changing the steps taken; the average
    equals average_files over those steps' saved weights, continues across a resume, and is what validation
    scores and the run keeps."""
    torch.set_num_threads(2)
    plain_losses: list[float] = []
    snapshots: dict[int, Path] = {}

    def keep_previous_checkpoint(step: int, loss: float) -> None:  # step k's checkpoint exists once step k+1 ends
        plain_losses.append(loss)
        saved = tmp_path / "plain" / "checkpoints" / f"step-{step - 1:08d}" / "model.safetensors"
        if saved.is_file():
            snapshots[step - 1] = tmp_path / f"weights-{step - 1}.safetensors"
            snapshots[step - 1].write_bytes(saved.read_bytes())

    plain = musdb_recipe(musdb_root, steps=8, valid_every=0, checkpoint_every=1)
    Trainer(load_recipe(write_recipe(tmp_path / "plain.json", plain)), tmp_path / "plain", device="cpu", progress=False,
            on_step=keep_previous_checkpoint).run()
    snapshots[8] = tmp_path / "plain" / "checkpoints" / "step-00000008" / "model.safetensors"
    expected = average_files([snapshots[4], snapshots[6], snapshots[8]])
    assert expected.count == 3

    averaged_losses: list[float] = []
    recipe = musdb_recipe(musdb_root, steps=8, valid_every=0, checkpoint_every=2, average_from=4, average_every=2)
    Trainer(load_recipe(write_recipe(tmp_path / "avg.json", recipe)), tmp_path / "avg", device="cpu", progress=False,
            on_step=lambda step, loss: averaged_losses.append(loss)).run()
    np.testing.assert_allclose(averaged_losses, plain_losses, rtol=1e-6)  # averaging does not touch training
    in_loop = load_file(str(tmp_path / "avg" / "checkpoints" / "step-00000008" / "average.safetensors"))
    kept = load_file(str(tmp_path / "avg" / "model.safetensors"))
    last = load_file(str(snapshots[8]))
    assert in_loop.keys() == expected.state.keys() == kept.keys()
    moved = 0
    for name, value in expected.state.items():
        assert torch.allclose(in_loop[name].float(), value.float(), atol=1e-6, rtol=0), name
        assert torch.allclose(kept[name].float(), value.float(), atol=1e-6, rtol=0), name
        if value.is_floating_point() and value.ndim == 4:
            moved += not torch.allclose(value, last[name], atol=1e-7)
    assert moved >= 8  # the average is not simply the last step's weights
    best = json.loads((tmp_path / "avg" / "best.json").read_text())
    assert best["step"] == 8 and best["averaged_weights"] == 3

    # stop after step 6 (two steps averaged), then resume to step 8: the same average
    first = musdb_recipe(musdb_root, steps=6, valid_every=0, checkpoint_every=2, average_from=4, average_every=2)
    Trainer(load_recipe(write_recipe(tmp_path / "first.json", first)), tmp_path / "split", device="cpu",
            progress=False).run()
    state = json.loads((tmp_path / "split" / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert state["average_count"] == 2
    Trainer(load_recipe(write_recipe(tmp_path / "rest.json", recipe)), tmp_path / "split", device="cpu", progress=False,
            resume=True).run()
    resumed = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000008" / "average.safetensors"))
    for name, value in expected.state.items():
        assert torch.allclose(resumed[name].float(), value.float(), atol=1e-6, rtol=0), name

    # valid_tracks 0 (a final run on train+valid): nothing is validated and the run keeps the average of the last step
    blind = dict(recipe, train={**recipe["train"], "valid_tracks": 0})
    Trainer(load_recipe(write_recipe(tmp_path / "blind.json", blind)), tmp_path / "blind", device="cpu",
            progress=False).run()
    assert not (tmp_path / "blind" / "best.json").exists()
    kept = load_file(str(tmp_path / "blind" / "model.safetensors"))
    for name, value in expected.state.items():
        assert torch.allclose(kept[name].float(), value.float(), atol=1e-6, rtol=0), name

    for setting in ("train.average_from=9", "train.valid_tracks=-1"):
        command = train_command(write_recipe(tmp_path / "bad.json", recipe), tmp_path / "bad", "--set", setting)
        bad = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert bad.returncode == 2 and setting.split("=")[0] in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_torchrun_two_processes_on_gloo(tmp_path, musdb_root):
    recipe = write_recipe(tmp_path / "r.json",
                          musdb_recipe(musdb_root, steps=4, checkpoint_every=4, valid_every=0, log_every=2))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "unet_sep", "train", str(recipe), "--out", str(tmp_path / "ddp"), "--device", "cpu",
               "--threads", "1", "--quiet"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    checkpoints = sorted(p.name for p in (tmp_path / "ddp" / "checkpoints").iterdir() if p.is_dir())
    assert checkpoints == ["step-00000004"]
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
    rows = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + steps 2 and 4, written once (rank 0 only)
    assert "trained 4 steps" in proc.stderr and proc.stderr.count("trained 4 steps") == 1


def test_short_mir1k_run(tmp_path):
    if not (MIR1K / "splits.json").is_file():
        pytest.skip(f"MIR-1K not found at {MIR1K} (../shared is absent)")
    recipe = load_recipe(RECIPES / "mir1k" / "vocals-accompaniment.json", [
        "train.steps=12", "train.batch_size=2", "train.valid_every=6", "train.checkpoint_every=6", "train.log_every=3",
        "data.max_tracks=6", "model.unet.filters=[4,8,16,32,64,128]",
    ])
    result = Trainer(recipe, tmp_path / "mir1k", device="cpu", progress=False).run()
    assert result.steps == 12 and result.best_score is not None and np.isfinite(result.best_score)
    rows = (tmp_path / "mir1k" / "validation.csv").read_text().splitlines()
    assert len(rows) == 3
    config = json.loads((tmp_path / "mir1k" / "config.json").read_text())
    assert config["sample_rate"] == 16000 and config["stems"] == ["vocals", "accompaniment"]
