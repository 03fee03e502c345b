"""CRC32C throughput of the candidate implementations, on real checkpoint tensors and on a large random buffer.

    python benchmarks/crc32c_speed.py [--mb 64] [--repeats 5] [--ref ../shared/data/spleeter-ref]
                                      [--handwritten-from b6a5c07]

The TF checkpoint reader (``unet_sep.weights.tf_checkpoint``) checks the masked CRC32C of every tensor and of
every index block. This measures, in MB/s (10^6 bytes per second, best of ``--repeats``):

* ``google-crc32c (c)``: the package the reader uses, on ``bytes`` (the reader reads each tensor's bytes
  from its data file as a ``bytes`` object).
* ``google-crc32c (c) + copy``: the same from a ``memoryview``, which its C function does not take, so the
  bytes are copied first (what reading the whole data file and slicing it would cost).
* ``google-crc32c (pure Python)``: the package's fallback where no wheel fits (only on the checkpoint
  tensors; on a large buffer it would take minutes).
* ``crc32c``: the other maintained package (reads any buffer, no copy).
* ``hand-written (numpy)``: unet-sep's former implementation (byte table + numpy lanes combined over GF(2)),
  read from git history at ``--handwritten-from``; the row is left out when git or that revision is absent.

Workloads: every tensor of the Spleeter-format checkpoints in ``--ref`` one by one (what reading them
costs), the whole data files, and ``--mb`` MB of random bytes. Every implementation's values are checked
equal before anything is timed.
"""

from __future__ import annotations

import argparse
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep.weights.tf_checkpoint import read_tf_checkpoint  # noqa: E402

Crc = Callable[[bytes], int]


def handwritten(revision: str) -> Crc | None:
    """The CRC32C section of ``unet_sep/weights/spleeter.py`` at ``revision``, executed on its own."""
    try:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:unet_sep/weights/spleeter.py"],
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    start = source.find("# CRC32C (Castagnoli)")
    end = source.find("# Protobuf wire format")
    if start < 0 or end < 0:
        return None
    namespace: dict[str, Any] = {"np": np, "math": math}
    exec(compile(source[source.index("\n", start) : end], f"{revision}:spleeter.py", "exec"), namespace)
    return namespace["crc32c"]


def implementations(revision: str) -> dict[str, tuple[Crc, bool]]:
    """``{name: (function, fast enough for the large buffer)}`` of what is installed."""
    found: dict[str, tuple[Crc, bool]] = {}
    try:
        import google_crc32c
        from google_crc32c import python as google_python

        found[f"google-crc32c ({google_crc32c.implementation})"] = (google_crc32c.value, True)
        found[f"google-crc32c ({google_crc32c.implementation}) + copy"] = (
            lambda data: google_crc32c.value(bytes(memoryview(data))), True)
        found["google-crc32c (pure Python)"] = (lambda data: google_python.value(bytes(data)), False)
    except ImportError:
        print("google-crc32c is not installed", file=sys.stderr)
    try:
        import crc32c

        found["crc32c"] = (crc32c.crc32c, True)
    except ImportError:
        print("crc32c is not installed", file=sys.stderr)
    old = handwritten(revision)
    if old is not None:
        found["hand-written (numpy)"] = (old, True)
    else:
        print(f"the hand-written implementation is not readable from git revision {revision}", file=sys.stderr)
    return found


def workloads(ref: Path, megabytes: int) -> dict[str, list[bytes]]:
    """``{name: [buffers]}``: each checkpoint's tensors, its whole data file, and a random buffer."""
    loads: dict[str, list[bytes]] = {}
    for model in ("2stems", "4stems", "5stems"):
        folder = ref / model
        if not (folder / "model.index").is_file():
            continue
        tensors = read_tf_checkpoint(folder, verify=False).values()  # each as stored: little-endian, C order
        loads[f"{model}: {len(tensors)} tensors"] = [array.tobytes() for array in tensors]
        loads[f"{model}: data file"] = [(folder / "model.data-00000-of-00001").read_bytes()]
    random_bytes = np.random.default_rng(0).integers(0, 256, megabytes * 10**6, dtype=np.uint8).tobytes()
    loads[f"random {megabytes} MB"] = [random_bytes]
    return loads


def best_seconds(function: Crc, buffers: list[bytes], repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for buffer in buffers:
            function(buffer)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=64, help="size of the random buffer in MB")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ref", type=Path, default=ROOT.parent / "shared" / "data" / "spleeter-ref")
    p.add_argument("--handwritten-from", default="b6a5c07", help="git revision with the former implementation")
    args = p.parse_args()

    found = implementations(args.handwritten_from)
    loads = workloads(args.ref, args.mb)
    for name, buffers in loads.items():  # all implementations agree before anything is timed
        values = {impl: [function(b) for b in buffers] for impl, (function, fast) in found.items()
                  if fast or "random" not in name}
        assert len({tuple(v) for v in values.values()}) == 1, f"{name}: the implementations disagree"

    print(f"CPU: {cpu_name()}; Python {platform.python_version()}; best of {args.repeats}")
    print(f"{'workload':<24}{'implementation':<30}{'MB/s':>10}")
    for name, buffers in loads.items():
        size = sum(len(b) for b in buffers)
        for impl, (function, fast) in found.items():
            if not fast and "random" in name:
                continue
            seconds = best_seconds(function, buffers, args.repeats)
            print(f"{name:<24}{impl:<30}{size / seconds / 1e6:>10.0f}")


if __name__ == "__main__":
    main()
