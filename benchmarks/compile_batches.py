"""``--compile`` and the last, partial batch of each song: compile per batch size, pad to the batch size, or a
dynamic batch dimension.

    python benchmarks/compile_batches.py                          # bundled model, CPU, batch size 8
    python benchmarks/compile_batches.py --model full-2stems --device cuda

A compiled separator runs its U-Nets on ``--batch-size`` segments at a time; the last batch of a song (and of a
run of many files) is smaller, and each size compiled anew (``dynamic=False``) costs a compilation, up to
``--batch-size`` of them, past torch's recompile limit of 8. The strategies, each in a fresh torch.compile:

* ``per-size``: ``dynamic=False``, every batch size compiled when first seen;
* ``padded``: ``dynamic=False``, a partial batch padded with zeros to the batch size (one compilation; the padding
  costs U-Net work, on average half a batch per song);
* ``dynamic``: the batch dimension marked dynamic (``torch._dynamo.mark_dynamic``), the rest static.

The workload is the U-Net batches of ``--songs`` songs separated one at a time (``Separator.separate``): their
segment counts are chosen so that their last batches differ in size (1 to batch size - 1). The table gives the
graphs compiled, the first call (compilation), the whole workload (compilations included), the median of a full
batch once compiled, and the segments computed (the padding included). Each strategy runs in a process of its
own with an empty inductor cache (``TORCHINDUCTOR_CACHE_DIR``), so none reuses what another compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.model.stems import inference_network  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402
from unet_sep.weights.registry import default_model_name, resolve_model  # noqa: E402

STRATEGIES = ("per-size", "padded", "dynamic")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="bundled", help="bundled, full-2stems (random weights) or a model folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--songs", type=int, default=4, help="songs in the workload (each with its own last batch)")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--repeats", type=int, default=5, help="timed full batches once compiled")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--one", help=argparse.SUPPRESS)  # run one strategy here and print its row as JSON
    return p.parse_args()


def model(name: str) -> tuple[StemsNet, int, int, int]:
    """The network and its input's channels, frames and bins."""
    if name == "full-2stems":
        torch.manual_seed(0)
        config = spleeter.spleeter_model_config("spleeter:2stems")
        return StemsNet(config).eval(), config.n_channels, config.segment_frames, config.frequency_bins
    config, net = load_model(resolve_model(default_model_name() or "" if name == "bundled" else name))
    return net, config.n_channels, config.segment_frames, config.frequency_bins


def workload(songs: int, batch_size: int) -> list[int]:
    """Batch sizes of ``songs`` songs, one at a time: 1 to 3 full batches each, then last batches of sizes
    batch_size - 1, batch_size - 2, ... (down to 1, then again)."""
    sizes: list[int] = []
    for song in range(songs):
        sizes += [batch_size] * (1 + song % 3)
        if batch_size > 1:
            sizes.append(batch_size - 1 - song % (batch_size - 1))
    return sizes


def strategy(name: str, net: torch.nn.Module, batch_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    compiled = torch.compile(net, dynamic=False)
    if name == "per-size":
        return compiled
    if name == "padded":
        def padded(batch: torch.Tensor) -> torch.Tensor:
            count = batch.shape[0]
            if count < batch_size:
                batch = torch.cat([batch, batch.new_zeros(batch_size - count, *batch.shape[1:])])
            return compiled(batch)[:, :count]
        return padded

    def dynamic(batch: torch.Tensor) -> torch.Tensor:
        torch._dynamo.mark_dynamic(batch, 0)
        return compiled(batch)
    return dynamic


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(name: str, net: torch.nn.Module, shape: tuple[int, int, int], args: argparse.Namespace) -> dict:
    from torch._dynamo.utils import counters

    device = torch.device(args.device)
    torch._dynamo.reset()
    counters.clear()
    run = strategy(name, net, args.batch_size)
    layout = torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format

    def batch(count: int) -> torch.Tensor:
        return torch.rand(count, *shape, device=device).contiguous(memory_format=layout)

    sizes = workload(args.songs, args.batch_size)
    with torch.inference_mode():
        started = time.perf_counter()
        run(batch(sizes[0]))
        synchronize(device)
        first = time.perf_counter() - started
        for count in sizes[1:]:
            run(batch(count))
        synchronize(device)
        total = time.perf_counter() - started
        times = []
        full = batch(args.batch_size)
        for _ in range(args.repeats):
            started = time.perf_counter()
            run(full)
            synchronize(device)
            times.append(time.perf_counter() - started)
    computed = sum(args.batch_size if name == "padded" else count for count in sizes)
    return {"graphs": counters["stats"]["unique_graphs"], "first": first, "total": total,
            "full": statistics.median(times), "segments": computed, "needed": sum(sizes)}


def in_own_process(name: str) -> dict:
    """:func:`measure` of strategy ``name`` in a fresh process with an empty inductor cache."""
    arguments = list(sys.argv[1:])
    with tempfile.TemporaryDirectory(prefix="compile-batches-") as cache:
        done = subprocess.run([sys.executable, __file__, *arguments, "--one", name], capture_output=True, text=True,
                              env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: failed\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net, channels, frames, bins = model(args.model)
    if args.one:
        channels_last = device.type in ("cpu", "cuda")
        net = net.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        prepared = inference_network(net, frames, bins, channels_last)
        print(json.dumps(measure(args.one, prepared, (channels, frames, bins), args)))
        return
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    sizes = workload(args.songs, args.batch_size)
    print(f"torch.compile of {args.model} U-Nets ({channels} x {frames} x {bins}) on {where}, "
          f"torch {torch.__version__}, batch size {args.batch_size}; workload: {args.songs} songs, batches {sizes}")
    print(f"{'strategy':<10}{'graphs':>8}{'first call s':>14}{'workload s':>12}{'full batch s':>14}{'segments':>12}")
    for name in args.strategies.split(","):
        row = in_own_process(name)
        print(f"{name:<10}{row['graphs']:>8}{row['first']:>14.1f}{row['total']:>12.1f}{row['full']:>14.4f}"
              f"{row['segments']:>6} / {row['needed']}", flush=True)


if __name__ == "__main__":
    main()
