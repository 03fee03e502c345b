"""Peak memory, wall time and speed of ``unet-sep separate`` against input length.

Generates stereo 44.1 kHz 16-bit WAV inputs (written block by block, so generating an hour of audio takes
little memory), runs ``python -m unet_sep separate`` once per input in a fresh subprocess and prints a
table: the child's peak resident memory, wall seconds (start-up included) and real-time factor (seconds
of audio per wall second). Separation streams, so peak memory should stay flat as inputs grow.

Peak RSS comes from ``os.wait4`` on that one child (the kernel's ru_maxrss for it alone, unlike
``getrusage(RUSAGE_CHILDREN)``, which is a maximum over all children so far); the largest ``VmRSS``
sampled from ``/proc/<pid>/status`` while it runs is shown beside it as a cross-check.

    python benchmarks/memory.py                       # 1, 5 and 60 minutes with a fresh tiny random model
    python benchmarks/memory.py --minutes 1 10 --model path/to/model --args "--format flac --threads 2"
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from machine import cpu_name  # benchmarks/machine.py

RATE = 44100
CHANNELS = 2
BLOCK_SECONDS = 10


def hardware() -> str:
    cpu = cpu_name()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    memory = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f", {int(line.split()[1]) / 1024 ** 2:.1f} GiB RAM"
                break
    except OSError:
        pass
    import torch

    return (f"{cpu}, {os.cpu_count()} cores ({usable} usable){memory}; Python {platform.python_version()}, "
            f"torch {torch.__version__} (threads {torch.get_num_threads()}), {platform.system()} {platform.release()}")


def make_model(folder: Path) -> Path:
    import torch

    from unet_sep import ModelConfig, UNetConfig, save_model
    from unet_sep.model import StemsNet

    torch.manual_seed(0)
    cfg = ModelConfig(unet=UNetConfig(filters=[4, 8, 16, 32, 64, 128]), name="tiny-random")
    return save_model(folder, StemsNet(cfg).eval(), cfg)


def make_input(path: Path, seconds: float, seed: int = 0) -> Path:
    """Tones plus noise, streamed to disk ``BLOCK_SECONDS`` at a time."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * RATE))
    with sf.SoundFile(str(path), "w", RATE, CHANNELS, subtype="PCM_16") as handle:
        for start in range(0, frames, BLOCK_SECONDS * RATE):
            n = min(BLOCK_SECONDS * RATE, frames - start)
            t = (start + np.arange(n)) / RATE
            tone = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1320 * t)
            block = tone[:, None] + 0.1 * rng.standard_normal((n, CHANNELS))
            handle.write(block.astype(np.float32))
    return path


def _status_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def measure(command: list[str], log_path: Path) -> dict:
    """Run ``command``; return its exit code, wall seconds and peak RSS (MiB) from wait4 and from sampling."""
    sampled = {"rss": 0, "hwm": 0}
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                rss, hwm = _status_kib(process.pid, "VmRSS"), _status_kib(process.pid, "VmHWM")
                sampled["rss"] = max(sampled["rss"], rss or 0)
                sampled["hwm"] = max(sampled["hwm"], hwm or 0)
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            stop.set()
            sampler.join()
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    max_rss_kib = usage.ru_maxrss  # Linux: KiB (macOS: bytes)
    if sys.platform == "darwin":
        max_rss_kib //= 1024
    return {
        "rc": process.returncode,
        "wall": wall,
        "peak_mib": max_rss_kib / 1024,
        "sampled_mib": max(sampled["rss"], sampled["hwm"]) / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 60], help="input lengths (default: 1 5 60)")
    parser.add_argument("--model", type=Path,
                        help="model folder or registered name (default: a fresh tiny random model)")
    parser.add_argument("--args", default="", help='extra options for `separate`, e.g. "--format flac --threads 2"')
    parser.add_argument("--workdir", type=Path, help="where to put inputs and outputs (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the generated inputs and outputs")
    options = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="unet-sep-memory-", dir=options.workdir))
    try:
        print(f"hardware: {hardware()}")
        model = options.model if options.model is not None else make_model(root / "tiny-random-model")
        print(f"model:    {model}{'  (tiny random, filters 4..128)' if options.model is None else ''}")
        extra = shlex.split(options.args)
        print(f"command:  {sys.executable} -m unet_sep separate INPUT --out OUT --model MODEL --quiet --overwrite "
              f"{' '.join(extra)}")

        baseline = measure([sys.executable, "-c", "import torch, unet_sep.cli, unet_sep.separate.separator"],
                           root / "baseline.log")
        rows = [("import only", "-", "-", f"{baseline['peak_mib']:.0f}", f"{baseline['sampled_mib']:.0f}",
                 f"{baseline['wall']:.1f}", "-", "-", str(baseline["rc"]))]
        print(f"baseline: importing torch and unet_sep peaks at {baseline['peak_mib']:.0f} MiB\n")
        for minutes in options.minutes:
            seconds = minutes * 60
            source = root / f"input_{minutes:g}min.wav"
            t0 = time.perf_counter()
            make_input(source, seconds)
            generated = time.perf_counter() - t0
            out = root / f"out_{minutes:g}min"
            command = [sys.executable, "-m", "unet_sep", "separate", str(source), "--out", str(out),
                       "--model", str(model), "--quiet", "--overwrite", *extra]
            result = measure(command, root / f"run_{minutes:g}min.log")
            if result["rc"] != 0:
                print(f"run for {minutes:g} min failed (exit {result['rc']}):\n"
                      + (root / f"run_{minutes:g}min.log").read_text()[-2000:], file=sys.stderr)
            rows.append((f"{minutes:g} min", f"{seconds:.0f}", f"{source.stat().st_size / 2 ** 20:.0f}",
                         f"{result['peak_mib']:.0f}", f"{result['sampled_mib']:.0f}", f"{result['wall']:.1f}",
                         f"{seconds / result['wall']:.1f}x", f"{result['cpu_s'] / result['wall']:.2f}",
                         str(result["rc"])))
            print(f"  {minutes:g} min: generated in {generated:.1f} s, separated in {result['wall']:.1f} s", flush=True)
            if not options.keep:
                shutil.rmtree(out, ignore_errors=True)
                source.unlink()
        header = ("input", "audio s", "input MiB", "peak RSS MiB", "sampled MiB", "wall s", "speed", "cpu/wall", "exit")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        print()
        for row in [header, *rows]:
            print("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        print("\npeak RSS: the child's ru_maxrss from wait4; sampled: largest VmRSS/VmHWM seen in /proc every 50 ms;"
              "\nspeed: seconds of audio per wall second, start-up (about the import-only wall time) included.")
        return 0 if all(row[-1] == "0" for row in rows) else 1
    finally:
        if options.keep:
            print(f"\nkept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
