"""Resuming training: a run killed with kill -9 and resumed ends bit for bit where the uninterrupted run does (with
vocal effects too), a run folder is never overwritten without --resume, a resumed run reports the steps it took and
the run's total, a finished run has nothing to do, a changed recipe on resume is an error unless allowed (a setting
the run's recipe predates is no change), Ctrl-C before the first checkpoint says the run must start again, and a
checkpoint save killed half-way leaves the previous one intact."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from musdb_tree import make_musdb_tree
from train_runs import (
    logged_steps,
    make_stems,
    musdb_recipe,
    stems_recipe,
    train,
    train_command,
    whole_and_resumed,
    write_recipe,
)
from unet_sep import ModelConfig, UNetConfig
from unet_sep.atomic import is_stale_temporary, temporary_path
from unet_sep.model.stems import StemsNet
from unet_sep.train import checkpoints
from unet_sep.train.checkpoints import latest_checkpoint, restore_checkpoint, save_checkpoint
from unet_sep.train.loop import Trainer
from unet_sep.train.recipe import load_recipe
from unet_sep.train.result import RecipeChangedError
from unet_sep.weights.checkpoint import save_tensors


@pytest.fixture(scope="module")
def musdb_root(tmp_path_factory) -> Path:
    return make_musdb_tree(tmp_path_factory.mktemp("musdb") / "musdb18hq", seconds=8.0)


@pytest.fixture(scope="module")
def stems(tmp_path_factory) -> Path:
    return make_stems(tmp_path_factory.mktemp("stems"))


def test_resume_after_kill_matches_uninterrupted_run(tmp_path, musdb_root):
    recipe = write_recipe(tmp_path / "r.json",
                          musdb_recipe(musdb_root, steps=16, checkpoint_every=2, valid_every=0, log_every=2))
    whole_and_resumed(recipe, tmp_path)
    final = "step-00000016"
    a = load_file(str(tmp_path / "whole" / "checkpoints" / final / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / final / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6, rtol=0), name
    oa = load_file(str(tmp_path / "whole" / "checkpoints" / final / "optimizer.safetensors"))
    ob = load_file(str(tmp_path / "killed" / "checkpoints" / final / "optimizer.safetensors"))
    for name in oa:
        assert torch.allclose(oa[name].float(), ob[name].float(), atol=1e-6, rtol=0), name
    rows = (tmp_path / "killed" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [str(s) for s in range(2, 17, 2)]  # no duplicated steps


def test_refuses_to_overwrite_a_run_without_resume(tmp_path, musdb_root):
    recipe = write_recipe(tmp_path / "r.json", musdb_recipe(musdb_root, steps=2, checkpoint_every=1, valid_every=0))
    first = subprocess.run(train_command(recipe, tmp_path / "run"), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(train_command(recipe, tmp_path / "run"), capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "--resume" in again.stderr and "Traceback" not in again.stderr
    bad = subprocess.run(train_command(recipe, tmp_path / "x", "--set", "train.loss=l3"), capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "train.loss" in bad.stderr


@pytest.fixture(scope="module")
def finished_run(stems, tmp_path_factory) -> tuple[Path, Path, str]:
    """A run trained to step 2, then resumed with train.steps=4 (free: the schedule is constant); the recipe, the
    run folder and the resumed command's stderr."""
    folder = tmp_path_factory.mktemp("runs")
    recipe = write_recipe(folder / "tiny.json", stems_recipe(stems))
    run = folder / "run"
    first = train(recipe, run)
    assert first.returncode == 0, first.stderr
    assert first.stderr.startswith("trained 2 steps in "), first.stderr
    resumed = train(recipe, run, "--resume", "--set", "train.steps=4")
    assert resumed.returncode == 0, resumed.stderr
    return recipe, run, resumed.stderr


def test_a_resumed_run_reports_the_steps_it_took_and_the_runs_total(finished_run):
    _, run, stderr = finished_run
    assert stderr.startswith(
        "WARNING unet_sep.train.loop: resuming with a changed recipe: train.steps 2 -> 4\n"), stderr
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
        f"error: the recipe differs from the one {run} was trained with ({run / 'recipe.json'}): "
        "train.batch_size 2 -> 3. "
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
    changed = r"train.steps 2 -> 4 \(the cosine schedule's learning rates depend on it\)\."
    with pytest.raises(RecipeChangedError, match=changed):
        Trainer(cosine, tmp_path / "cosine", device="cpu", progress=False, resume=True).run()


def test_a_run_with_vocal_effects_resumed_ends_where_the_uninterrupted_run_does(stems, finished_run, tmp_path):
    effects = {f"{name}_probability": 0.5 for name in ("eq", "compression", "saturation", "doubling", "reverb")}
    recipe = stems_recipe(stems, steps=4, checkpoint_every=2)
    recipe["data"]["augment"] = {"vocal_effects": effects}
    path = write_recipe(tmp_path / "effects.json", recipe)
    whole = train(path, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    first = train(path, tmp_path / "split", "--set", "train.steps=2")
    assert first.returncode == 0, first.stderr
    resumed = train(path, tmp_path / "split", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    final = Path("checkpoints") / "step-00000004" / "model.safetensors"
    a, b = load_file(str(tmp_path / "whole" / final)), load_file(str(tmp_path / "split" / final))
    assert a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)
    # the same run without the effects (finished_run: 2 steps, resumed to 4) trained on other data
    _, plain, _ = finished_run
    c = load_file(str(plain / final))
    assert any(not torch.equal(a[name], c[name]) for name in a)


def test_a_run_from_before_a_setting_existed_resumes_without_a_change(finished_run, tmp_path):
    recipe, finished, _ = finished_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    saved = json.loads((run / "recipe.json").read_text())
    del saved["data"]["augment"]["vocal_effects"]  # the recipe.json of a run started before vocal effects existed
    (run / "recipe.json").write_text(json.dumps(saved))
    result = train(recipe, run, "--resume", "--set", "train.steps=5")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(
        "WARNING unet_sep.train.loop: resuming with a changed recipe: train.steps 4 -> 5\n"), result.stderr
    assert "vocal_effects" not in result.stderr
    refused = train(recipe, run, "--resume", "--set", "train.steps=6",
                    "--set", "data.augment.vocal_effects.reverb_probability=0.5")
    assert refused.returncode == 2
    assert "data.augment.vocal_effects.reverb_probability 0.0 -> 0.5" in refused.stderr, refused.stderr


def test_ctrl_c_before_the_first_checkpoint_says_the_run_must_start_again(stems, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.json", stems_recipe(stems, steps=100_000, checkpoint_every=500))
    run = tmp_path / "run"
    command = train_command(recipe, run)
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


def _tiny_net() -> tuple[StemsNet, torch.optim.Optimizer]:
    config = ModelConfig(stems=["vocals", "accompaniment"], frequency_bins=64, segment_frames=32,
                         unet=UNetConfig(filters=[4, 8], dropout_layers=1))
    net = StemsNet(config)
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.rand(1, 2, 32, 64)).sum().backward()
    optimizer.step()  # Adam has state to save
    return net, optimizer


def test_a_checkpoint_save_killed_half_way_leaves_the_previous_one_and_the_next_save_cleans_up(tmp_path, monkeypatch):
    net, optimizer = _tiny_net()
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 2, net, optimizer, {"best_score": None})
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000002"]
    assert (folder / "latest").read_text() == "step-00000002\n"
    assert sorted(p.name for p in (folder / "step-00000002").iterdir()) == [
        "model.safetensors", "optimizer.safetensors", "state.json"]

    # a save that fails half-way: the previous checkpoint and pointer stay, and nothing of the new one
    def fail_on_the_optimizer(path, tensors):
        if Path(path).name == "optimizer.safetensors":
            raise KeyboardInterrupt
        save_tensors(path, tensors)

    monkeypatch.setattr(checkpoints, "save_tensors", fail_on_the_optimizer)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, 4, net, optimizer, {"best_score": None})
    monkeypatch.undo()
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000002"]
    assert latest_checkpoint(folder) == folder / "step-00000002"

    # what kill -9 in the middle of a save leaves: a half-filled checkpoint folder and a pointer, both temporaries
    # of a process that has ended; the next save removes them
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = temporary_path(folder / "latest").name.split("@")[1].split(".partial")[0]
    half = folder / f".step-00000004.0a1b2c3d.{dead.pid}@{host}.partial"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"\0" * 64)
    pointer = folder / f".latest.0a1b2c3d.{dead.pid}@{host}.partial"
    pointer.write_text("step-00000004\n")
    assert is_stale_temporary(half.name) and is_stale_temporary(pointer.name)
    assert latest_checkpoint(folder) == folder / "step-00000002"
    save_checkpoint(folder, 4, net, optimizer, {"best_score": None})
    save_checkpoint(folder, 6, net, optimizer, {"best_score": 1.5})
    assert sorted(p.name for p in folder.iterdir()) == ["latest", "step-00000004", "step-00000006"]  # keeps two
    assert latest_checkpoint(folder) == folder / "step-00000006"

    restored_net, restored_optimizer = _tiny_net()
    loop_state = {"best_score": None}
    step = restore_checkpoint(folder / "step-00000006", restored_net, restored_optimizer, None, loop_state,
                              torch.device("cpu"))
    assert step == 6 and loop_state == {"best_score": 1.5}
    for name, value in net.state_dict().items():
        assert torch.equal(restored_net.state_dict()[name], value), name
    saved, restored = optimizer.state_dict(), restored_optimizer.state_dict()
    assert restored["param_groups"] == json.loads(json.dumps(saved["param_groups"]))  # JSON: betas as a list
    assert restored["state"].keys() == saved["state"].keys()
    for index, values in saved["state"].items():
        assert restored["state"][index].keys() == values.keys()
        for key, value in values.items():
            assert torch.equal(restored["state"][index][key], value), (index, key)
