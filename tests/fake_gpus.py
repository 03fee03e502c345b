"""Runs the ``unet-sep`` command line in a process whose ``torch.cuda`` says the machine has GPUS GPUs (none of
which can run anything), and records each ``torch.cuda.set_device`` in LOG as ``<RANK> <device>``: for tests of
which GPU each of torchrun's processes picks, on a machine without one.

    python -m torch.distributed.run --nproc-per-node 2 tests/fake_gpus.py GPUS LOG separate ... --device cuda
"""

from __future__ import annotations

import os
import sys

import torch


def main() -> None:
    gpus, log = int(sys.argv[1]), sys.argv[2]
    rank = os.environ.get("RANK", "0")

    def set_device(device) -> None:
        with open(log, "a") as handle:
            handle.write(f"{rank} {torch.device(device)}\n")

    torch.cuda.is_available = lambda: gpus > 0
    torch.cuda.device_count = lambda: gpus
    torch.cuda.set_device = set_device
    sys.argv = ["unet-sep", *sys.argv[3:]]
    from unet_sep.cli import main as unet_sep

    unet_sep()


if __name__ == "__main__":
    main()
