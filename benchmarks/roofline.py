"""How close the U-Nets run to what the machine can do: FLOPs per separation against measured GFLOP/s.

    python benchmarks/roofline.py [--models 2stems,4stems] [--threads 2] [--device cpu]

For Spleeter's full-size U-Nets it counts the floating-point operations of one 30 s Spleeter-exact separation
(``torch.utils.flop_counter``; a multiply-add counts 2), times the U-Nets alone on those segments in each
backend, and times a large fp32 matrix product (what the BLAS/oneDNN kernels reach on this machine at
best). The ratio says how much a faster kernel could still gain: at 80-90 % of the matmul rate, only less
arithmetic (not faster arithmetic) makes the model path faster.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.model.stems import freeze_for_inference  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from spleeter_speed import timed  # noqa: E402  (the same timing loop, CUDA-synchronised)


def median_time(fn, repeats: int, device: str) -> float:
    return statistics.median(timed(fn, repeats, device))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="2stems,4stems")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--segments", type=int, default=3, help="segments of 512 frames (30 s at 44.1 kHz: 3)")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = args.device

    n = 2048 if device == "cpu" else 8192
    a, b = torch.rand(n, n, device=device), torch.rand(n, n, device=device)
    seconds = median_time(lambda: a @ b, args.repeats, device)
    peak = 2 * n**3 / seconds / 1e9
    print(f"fp32 matmul {n}x{n}: {peak:.0f} GFLOP/s ({args.threads} threads, {device})")

    print(f"{'model':<8}{'backend':<22}{'GFLOP':>8}{'seconds':>10}{'GFLOP/s':>10}{'of matmul':>11}")
    for name in args.models.split(","):
        config = spleeter.spleeter_model_config(f"spleeter:{name}")
        torch.manual_seed(0)
        net = StemsNet(config).eval().to(device)
        batch = torch.rand(args.segments, config.n_channels,
                           config.segment_frames, config.frequency_bins, device=device)
        # The architecture's arithmetic: counted with autograd on, so the decoders run as transposed
        # convolutions (at inference they run as sub-pixel convolutions, which also multiply some zeros).
        with FlopCounterMode(display=False) as counter:
            net(batch)
        gflop = counter.get_total_flops() / 1e9
        last = copy.deepcopy(net).to(memory_format=torch.channels_last)
        batch_last = batch.contiguous(memory_format=torch.channels_last)
        backends = {"eager": (net, batch)}
        backends["eager channels-last"] = (last, batch_last)
        if device == "cpu":
            backends["TorchScript frozen"] = (freeze_for_inference(last, batch_last[:1]), batch_last)
        dtype = torch.bfloat16
        for label, (module, data) in list(backends.items()) + [("bf16 autocast ch-last", (last, batch_last))]:
            reduced = label.startswith("bf16")

            def run(module=module, data=data, reduced=reduced, dtype=dtype):
                with torch.inference_mode(), torch.autocast(device.split(":")[0], dtype=dtype, enabled=reduced):
                    return module(data)

            seconds = median_time(run, args.repeats, device)
            rate = gflop / seconds
            print(f"{name:<8}{label:<22}{gflop:>8.1f}{seconds:>10.3f}{rate:>10.0f}{rate / peak:>10.0%}")


if __name__ == "__main__":
    main()
