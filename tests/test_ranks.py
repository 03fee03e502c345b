"""torchrun's processes: which device each one takes (separation and training through one function,
:func:`unet_sep.device.process_device`), checked on a machine that ``torch.cuda`` is made to report GPUs for, and
how long they wait for rank 0's own work, checked with real processes on gloo."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.distributed as dist

from conftest import music_like
from musdb_tree import make_musdb_tree
from train_runs import musdb_recipe, write_recipe
from unet_sep.device import process_device
from unet_sep.distributed import Ranks
from unet_sep.errors import SettingError
from unet_sep.train.loop import Trainer
from unet_sep.train.recipe import load_recipe

FAKE_GPUS = Path(__file__).with_name("fake_gpus.py")


class FakeGPUs:
    """What ``torch.cuda`` reports: ``count`` GPUs; every ``set_device`` is recorded in ``current``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
        self.count = count
        self.current: list[torch.device] = []
        monkeypatch.setattr(torch.cuda, "is_available", lambda: self.count > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda device: self.current.append(torch.device(device)))


def _local(rank: int, local_world: int) -> Ranks:
    return Ranks(rank=rank, world=local_world, local_rank=rank, local_world=local_world)


@pytest.mark.parametrize("requested", ["auto", "cuda"])
def test_each_local_rank_takes_its_gpu_and_makes_it_current(monkeypatch, requested):
    gpus = FakeGPUs(monkeypatch, 2)
    for rank, expected in enumerate(["cuda:0", "cuda:1"]):  # as many processes as GPUs
        gpus.current.clear()
        assert process_device(requested, _local(rank, 2)) == torch.device(expected)
        assert gpus.current == [torch.device(expected)]
    taken = [process_device(requested, _local(rank, 5)) for rank in range(5)]  # more processes: they share
    assert [str(device) for device in taken] == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    gpus.current.clear()
    assert process_device("cpu", _local(1, 2)) == torch.device("cpu") and gpus.current == []


def test_a_gpu_named_by_index_is_one_process_s_choice(monkeypatch):
    gpus = FakeGPUs(monkeypatch, 2)
    assert process_device("cuda:1", _local(0, 1)) == torch.device("cuda:1")
    assert gpus.current == [torch.device("cuda:1")]  # made current: pinned memory and contexts go to GPU 1
    gpus.current.clear()
    with pytest.raises(SettingError, match="cuda:0 would put all 2 processes torchrun started on this machine on one "
                                           "GPU; ask for cuda") as caught:
        process_device("cuda:0", _local(1, 2))
    assert caught.value.setting == "device" and gpus.current == []
    with pytest.raises(SettingError, match="cuda:2: no such CUDA device; this machine has 2"):
        process_device("cuda:2", _local(0, 1))


def test_training_takes_its_gpu_before_nccl_starts_and_refuses_shared_gpus(tmp_path, monkeypatch):
    """Local rank 2 of 4 used to ask NCCL for a group before choosing a GPU, and take cuda:LOCAL_RANK whatever the
    machine had ("invalid device ordinal" with fewer GPUs)."""
    recipe = load_recipe(write_recipe(tmp_path / "r.json", musdb_recipe(tmp_path / "absent")))
    for name, value in {"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(name, value)
    gpus = FakeGPUs(monkeypatch, 4)
    seen: list[tuple[str, list[torch.device]]] = []

    class GroupStarted(Exception):
        pass

    def init_process_group(backend, **_):
        seen.append((backend, list(gpus.current)))
        raise GroupStarted

    monkeypatch.setattr(dist, "init_process_group", init_process_group)
    with pytest.raises(GroupStarted):
        Trainer(recipe, tmp_path / "run", device="auto", progress=False)
    assert seen == [("nccl", [torch.device("cuda:2")])]

    gpus.count, gpus.current = 2, []  # 4 processes, 2 GPUs: NCCL cannot share one GPU between two of them
    with pytest.raises(SettingError, match="torchrun started 4 processes on this machine, which has 2 GPUs: "
                                           "training needs a GPU per process") as caught:
        Trainer(recipe, tmp_path / "run", device="auto", progress=False)
    assert caught.value.setting == "device" and gpus.current == [] and len(seen) == 1


def test_torchrun_refuses_one_gpu_for_every_rank(tmp_path, tiny_model):
    song = tmp_path / "song.wav"
    sf.write(song, music_like(1.0, 44100).T, 44100)
    log = tmp_path / "set_device.log"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(FAKE_GPUS),
               "2", str(log), "separate", str(song), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
               "--quiet", "--device", "cuda:0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode != 0 and "exitcode  : 2 " in proc.stderr  # torchrun's report of the first to end
    refusals = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert refusals and set(refusals) == {  # the other rank may be ended by torchrun before it says it too
        "error: --device: cuda:0 would put all 2 processes torchrun started on this machine on one GPU; ask for cuda "
        "(local rank r takes GPU r) and choose the GPUs with CUDA_VISIBLE_DEVICES"}, proc.stderr
    assert proc.stderr.count("Traceback") == 1 and "ChildFailedError" in proc.stderr  # torchrun's own, no rank's
    assert not log.exists() and not (tmp_path / "out").exists()


SLOW_VALIDATION = textwrap.dedent("""
    import datetime, sys, time
    import torch.distributed as dist
    from torch.distributed.distributed_c10d import _set_pg_timeout
    from unet_sep.train import validation
    from unet_sep.train.loop import Trainer
    from unet_sep.train.recipe import load_recipe

    dist.init_process_group("gloo")
    _set_pg_timeout(datetime.timedelta(seconds=float(sys.argv[3])))  # once every process has joined
    validate = validation.Validator.validate

    def slow(self, *args, **kwargs):
        if self.tracks:  # rank 0 only
            time.sleep(float(sys.argv[4]))
        return validate(self, *args, **kwargs)

    validation.Validator.validate = slow
    result = Trainer(load_recipe(sys.argv[1]), sys.argv[2], device="cpu", progress=False).run()
    print(f"rank {dist.get_rank()}: {result.steps} steps, best {result.best_step}", flush=True)
    dist.destroy_process_group()
""")


def test_ranks_wait_for_a_validation_longer_than_the_groups_timeout(tmp_path):
    """Rank 0 validates alone while the others wait for its word: a validation longer than the process group's
    timeout (NCCL's default: 10 minutes; here 4 s for a 12 s validation) used to end the run."""
    root = make_musdb_tree(tmp_path / "musdb18hq", seconds=4.0)
    recipe = write_recipe(tmp_path / "r.json", musdb_recipe(root, steps=4, valid_every=4, checkpoint_every=4,
                                                           log_every=2, batch_size=2))
    script = tmp_path / "slow_validation.py"
    script.write_text(SLOW_VALIDATION)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               str(recipe), str(tmp_path / "run"), "4", "12"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("rank ")) == [
        "rank 0: 4 steps, best 4", "rank 1: 4 steps, best None"]  # rank 0 validates and keeps the best model
    assert (tmp_path / "run" / "best.json").is_file()
