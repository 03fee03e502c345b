"""CPU threads for training: as many torch threads as the cores other processes leave free."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

logger = logging.getLogger(__name__)


def free_threads(cores: int, others: float, most: int) -> int:
    """Torch threads for ``cores`` cores of which other processes keep ``others`` busy: the free ones (a quarter
    of a core of background noise still counts as free), at least 1 and at most ``most``."""
    return max(1, min(most, math.floor(cores - others + 0.25)))


class ThreadGovernor:
    """The default of ``unet-sep train --threads``: as many torch threads as the cores other processes leave free.

    OpenMP's threads meet at every parallel region, so a thread that shares its core with a busy process holds
    all the others up: with one of two cores busy, two threads took twice as long per step as one, and six times
    as long with a little more load (benchmarks/train_threads.py; recipes/README.md has the table). The other
    processes' load is the busy time of this process's cores (/proc/stat) less this process's own CPU time over
    the last ``interval`` seconds, checked between steps.
    Without /proc/stat (not Linux) the count stays at ``most``. The thread count changes the rounding of sums,
    so a run whose count changed is not bit-for-bit the run with a fixed one (``--threads N`` fixes it).
    """

    def __init__(self, most: int, interval: float = 5.0) -> None:
        self.most, self.interval, self.threads = most, interval, most
        self.cpus = {f"cpu{c}" for c in (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else ())}
        torch.set_num_threads(most)
        self._mark = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        """(wall clock, busy seconds of this process's cores, this process's CPU seconds); None without /proc/stat."""
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        ticks = 0
        for fields in (line.split() for line in lines):
            if fields and fields[0] in self.cpus:
                user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, fields[1:9])
                ticks += user + nice + system + irq + softirq + steal
        return time.monotonic(), ticks / os.sysconf("SC_CLK_TCK"), time.process_time()

    def update(self, now: bool = False) -> None:
        """Every ``interval`` seconds (or ``now``), count the free cores again and set torch's threads to them."""
        if self._mark is None or not self.cpus or (not now and time.monotonic() - self._mark[0] < self.interval):
            return
        sample = self._sample()
        if sample is None or sample[0] - self._mark[0] < 0.1:  # unreadable, or too short to tell
            return
        wall = sample[0] - self._mark[0]
        others = max(0.0, (sample[1] - self._mark[1] - (sample[2] - self._mark[2])) / wall)
        self._mark = sample
        threads = free_threads(len(self.cpus), others, self.most)
        if threads != self.threads:
            logger.info("%.1f of %d cores busy with other processes: %d torch threads (were %d)", others,
                        len(self.cpus), threads, self.threads)
            torch.set_num_threads(threads)
            self.threads = threads
