"""The CUDA side of issue 30's items 3-5, where only a GPU can say it: each torchrun rank on its own GPU and nothing
on GPU 0 from a process on another, what a file that ran out of GPU memory held given back, and the STFT and iSTFT
on the GPU. Skipped, with the reason, without CUDA (or with fewer GPUs than a test needs); the CPU side of the same
code is tested in test_ranks.py, test_out_of_memory.py and test_pipeline_threads.py."""

from __future__ import annotations

import ast
import gc
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import soundfile as sf
import torch

from conftest import music_like
from unet_sep import Separator
from unet_sep.separate import wiener_window

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
cuda = pytest.mark.skipif(GPUS == 0, reason="no CUDA device on this machine")
two_gpus = pytest.mark.skipif(GPUS < 2, reason=f"needs 2 CUDA devices, this machine has {GPUS}")


@cuda
def test_cuda_engine_keeps_the_stft_and_istft_on_the_gpu(tiny_model):
    runner = Separator.from_pretrained(tiny_model, device="cuda").runner
    engine = runner.engine(1, 44100 * 20)
    engine.feed(music_like(20.0, 44100, 2, seed=1)[None])
    for name in ("signal", "spec", "mask_sum", "out"):
        assert getattr(engine, name).storage.device.type == "cuda", name
    engine.close()
    for _ in runner.run_ready(lambda: [engine], final=True):
        pass
    stems, _ = engine.drain()
    assert stems.shape == (2, 1, 2, 44100 * 20)  # back on the CPU as numpy, as long as the input


@cuda
def test_cuda_out_of_memory_in_the_filter_gives_the_files_memory_back(tmp_path, tiny_model, monkeypatch):
    songs = []
    for name, seconds in (("long", 40.0), ("short", 4.0)):
        songs.append(tmp_path / f"{name}.wav")
        sf.write(songs[-1], music_like(seconds, 44100, 2, seed=len(songs)).T, 44100, subtype="FLOAT")
    real = wiener_window.wiener

    def limited(stems, mixture, *args, **kwargs):
        if mixture.shape[-1] > 600:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(stems, mixture, *args, **kwargs)

    monkeypatch.setattr(wiener_window, "wiener", limited)
    separator = Separator.from_pretrained(tiny_model, device="cuda", segmentation="spleeter", wiener_iterations=1)
    torch.cuda.synchronize()
    held_by_the_model = torch.cuda.memory_allocated()
    events = separator.separate_files(songs, tmp_path / "out")
    assert [event.kind for event in events] == ["failed", "done"]
    assert str(events[0].error).endswith("use wiener_window=1024 or device='cpu'")
    gc.collect()
    torch.backends.cuda.cufft_plan_cache.clear()  # cuFFT's plans keep their work areas, and are no input's
    assert torch.cuda.memory_allocated() == held_by_the_model  # nothing of either input is left on the GPU


PROCESS_ON_GPU_1 = textwrap.dedent("""
    import os, subprocess, sys
    import numpy as np
    from unet_sep import Separator
    from unet_sep.device import process_device

    device = process_device("cuda:1")
    Separator.from_pretrained(sys.argv[1], device=device).separate(np.zeros((2, 44100 * 5), np.float32), 44100)
    apps = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,gpu_bus_id", "--format=csv,noheader"],
                          capture_output=True, text=True).stdout
    print([line.split(", ")[1] for line in apps.splitlines() if line.split(", ")[0] == str(os.getpid())])
""")


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="needs nvidia-smi to list the GPUs a process uses")
@two_gpus
def test_cuda_a_process_on_gpu_1_opens_nothing_on_gpu_0(tiny_model):
    result = subprocess.run([sys.executable, "-c", PROCESS_ON_GPU_1, str(tiny_model)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    bus_ids = subprocess.run(["nvidia-smi", "--query-gpu=pci.bus_id", "--format=csv,noheader"], capture_output=True,
                             text=True).stdout.split()
    assert ast.literal_eval(result.stdout.strip()) == [bus_ids[1]]  # its one context is on GPU 1


@two_gpus
def test_cuda_torchrun_ranks_each_take_their_gpu(tmp_path, tiny_model):
    songs = []
    for index in range(4):
        songs.append(tmp_path / f"song{index}.wav")
        sf.write(songs[-1], music_like(3.0, 44100, 2, seed=index).T, 44100)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
               "unet_sep", "separate", *map(str, songs), "--out", str(tmp_path / "out"), "--model", str(tiny_model),
               "--quiet", "--verbose", "--device", "cuda"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    devices = sorted(line.rsplit(" on ", 1)[1] for line in result.stderr.splitlines() if " Hz on cuda" in line)
    assert devices == ["cuda:0", "cuda:1"], result.stderr[-3000:]
    assert len(list((tmp_path / "out").rglob("*.wav"))) == 8
