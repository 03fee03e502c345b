"""Training speed against CPU threads, on an idle machine and with cores busy with other processes.

    python benchmarks/train_threads.py [--recipe recipes/mir1k/vocals-accompaniment.json] [--steps 12]
                                       [--threads default,1,2] [--busy 0,1] [--set key=value ...]

Each row runs the real command (``python -m unet_sep train RECIPE --threads T``) in a fresh process, while
``--busy`` other processes spin (``while True: pass``), and prints the median and the fastest seconds per step
from the run's metrics.csv (the first ``--warmup`` steps excluded; on a shared machine the fastest step is the
least disturbed one). "default" runs without ``--threads``. ``--env`` adds an
environment variable to the training process (e.g. ``OMP_WAIT_POLICY=PASSIVE``) to compare OpenMP settings.

The last column is the CPU the rest of the machine used during the run, in cores (from /proc/stat, less the
training process's own CPU time; the spinning processes count): on a shared machine an "idle" row is only as
idle as that column says.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]


def busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (all cores, from /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, open("/proc/stat").readline().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def seconds_per_step(recipe: str, threads: str, steps: int, warmup: int, overrides: list[str],
                     env: dict[str, str]) -> tuple[float, float, float]:
    """Median and fastest seconds per step of one training run in a fresh process, and the other processes' load
    in cores."""
    with tempfile.TemporaryDirectory(prefix="unet-sep-threads-") as tmp:
        command = [sys.executable, "-m", "unet_sep", "train", recipe, "--out", f"{tmp}/run", "--device", "cpu",
                   "--quiet", "--set", f"train.steps={steps}", "--set", "train.valid_every=0",
                   "--set", "train.valid_tracks=0", "--set", f"train.checkpoint_every={steps}",
                   "--set", "train.log_every=1"]
        for override in overrides:
            command += ["--set", override]
        if threads != "default":
            command += ["--threads", threads]
        started, busy, mine = time.perf_counter(), busy_seconds(), children_cpu_seconds()
        subprocess.run(command, check=True, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        others = (busy_seconds() - busy - (children_cpu_seconds() - mine)) / (time.perf_counter() - started)
        rows = [r for r in csv.DictReader(open(f"{tmp}/run/metrics.csv")) if int(r["step"]) > warmup]
        times = [float(r["seconds_per_step"]) for r in rows]
        return statistics.median(times), min(times), max(0.0, others)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "mir1k" / "vocals-accompaniment.json"))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", default="default,1,2", help="comma-separated --threads values; 'default' omits it")
    p.add_argument("--busy", default="0,1", help="comma-separated numbers of spinning processes")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the training process")
    args = p.parse_args()
    env = dict(item.split("=", 1) for item in args.env)

    cores = len(os.sched_getaffinity(0))
    print(f"{cpu_name()}, {cores} cores; recipe {Path(args.recipe).name} {' '.join(args.overrides)} "
          f"{' '.join(args.env)}")
    print(f"{'busy processes':>14}  {'--threads':>9}  {'s per step':>10}  {'fastest':>7}  {'other load (cores)':>18}")
    for busy in (int(b) for b in args.busy.split(",")):
        spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        try:
            time.sleep(0.5 if spinners else 0)
            for threads in args.threads.split(","):
                speed, best, others = seconds_per_step(args.recipe, threads, args.steps, args.warmup, args.overrides,
                                                       env)
                print(f"{busy:>14}  {threads:>9}  {speed:>10.3f}  {best:>7.3f}  {others:>18.2f}", flush=True)
        finally:
            for spinner in spinners:
                spinner.kill()
                spinner.wait()


if __name__ == "__main__":
    main()
