"""``compile=True`` (``--compile``): the U-Nets are compiled once, into one graph, and every later batch runs it.

Before, the sub-pixel decoders' weight cache (a comparison of data pointers) broke the graph into 27 pieces that
failed their guards on every call, up to torch's recompile limit, after which they ran eagerly; and each new
size of a song's last batch compiled again. Counted here with ``torch._dynamo``'s own counters, on a small model on
the CPU (inductor builds C++ kernels with the compiler that is here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import count_batches, music_like
from unet_sep import ModelConfig, Separator, UNetConfig, save_model
from unet_sep.dsp.measures import snr_db
from unet_sep.model import StemsNet

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None and shutil.which("cc") is None,
                                reason="torch.compile on the CPU needs a C++ compiler (gcc or cc); none found")
RATE = 44100


@pytest.fixture(scope="module")
def small():
    """A U-Net small enough to compile in seconds: 3 levels, 128 bins, 64-frame segments."""
    torch.manual_seed(5)
    config = ModelConfig(unet=UNetConfig(filters=[4, 8, 16], dropout_layers=2), frequency_bins=128, segment_frames=64,
                         name="compile-test")
    return config, StemsNet(config).eval()


@pytest.fixture()
def counters():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield counters
    torch._dynamo.reset()


def graphs(counters) -> int:
    return int(counters["stats"]["unique_graphs"])


def traced(counters) -> dict:
    """What torch has traced and compiled so far: frames (each a compilation, or a recompilation) and graphs."""
    return {key: dict(counters[key]) for key in ("frames", "stats")}


def test_a_compiled_separator_compiles_once_for_every_song(small, counters):
    """Songs whose last batches differ in size run the one graph compiled for the first; a second compiled
    separator (Spleeter-exact mode, as a process serving both would hold) adds at most its own."""
    config, net = small
    compiled = Separator(net, config, device="cpu", batch_size=3, compile=True)
    sizes = count_batches(compiled)
    songs = [music_like(seconds, RATE, seed=i) for i, seconds in enumerate([2.0, 9.5, 4.7, 0.4])]
    compiled.separate(songs[0], RATE)
    assert graphs(counters) == 1 and not counters["graph_break"]
    first = traced(counters)
    eager = Separator(net, config, device="cpu", batch_size=3)
    for song in songs[1:]:
        stems, expected = compiled.separate(song, RATE), eager.separate(song, RATE)
        for stem in compiled.stems:
            assert snr_db(expected[stem], stems[stem]) > 90.0
    assert traced(counters) == first  # no frame traced again: no recompilation
    assert sorted(set(sizes)) == [1, 2, 3], sizes  # the last batches differed in size: all ran the one graph

    exact = Separator(net, config, device="cpu", batch_size=3, compile=True, segmentation="spleeter")
    for separator in (exact, compiled, exact):
        stems = separator.separate(songs[2], RATE)
        assert all(np.isfinite(stem).all() for stem in stems.values())
    assert counters["frames"]["total"] <= 2 and graphs(counters) <= 2 and not counters["graph_break"]


def test_the_cli_compiles_once(tmp_path, small):
    """``unet-sep separate --compile`` over songs of different lengths: no recompilation (torch logs each one under
    TORCH_LOGS=recompiles) and no graph break."""
    config, net = small
    save_model(tmp_path / "model", net, config)
    inputs = []
    for i, seconds in enumerate([3.0, 1.1, 6.2]):
        path = tmp_path / f"song{i}.wav"
        sf.write(path, music_like(seconds, RATE, seed=i).T, RATE, subtype="FLOAT")
        inputs.append(str(path))
    done = subprocess.run([sys.executable, "-m", "unet_sep", "separate", *inputs, "--model", str(tmp_path / "model"),
                           "--out", str(tmp_path / "out"), "--device", "cpu", "--batch-size", "3", "--compile"],
                          capture_output=True, text=True, env={**os.environ, "TORCH_LOGS": "recompiles,graph_breaks"})
    assert done.returncode == 0, done.stderr
    assert "Recompiling function" not in done.stderr and "Graph break" not in done.stderr, done.stderr[-3000:]
    assert len(list((tmp_path / "out").rglob("*.wav"))) == 6
