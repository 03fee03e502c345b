"""A separation run under torchrun (``WORLD_SIZE`` > 1): the device and CPU threads each process takes, and one
summary the ranks agree on. The ranks split the inputs without talking (``FilePipeline.run(shard=...)``).
Without torchrun it is a single rank and does nothing."""

from __future__ import annotations

import datetime
import os

from unet_sep.distributed import Ranks


class SeparationRanks:
    """This process's place among the ranks of a separation run; :meth:`close` when the run is over."""

    def __init__(self) -> None:
        env = Ranks.from_env()
        self.world, self.rank, self.local_rank, self.local_world = env.world, env.rank, env.local_rank, env.local_world
        self.group = False
        if self.world > 1:
            import torch.distributed as dist

            # gloo for the few small messages (the summary), whatever device separates.
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
            self.group = True

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world)``: this process separates every ``world``-th input from its rank's index on."""
        return self.rank, self.world

    def device(self, requested: str) -> str:
        """One GPU per process on a machine: ``cuda:<local rank>`` where "auto" or "cuda" was asked for."""
        import torch

        if self.world > 1 and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def cpu_threads(self) -> int:
        """The cores this process may use, shared out among the ranks on this machine."""
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, cores // self.local_world)

    def gather(self, stats: dict) -> list[dict]:
        """Every rank's ``stats``, in rank order (only this one's without torchrun)."""
        if not self.group:
            return [stats]
        import torch.distributed as dist

        everyone: list = [None] * self.world
        dist.all_gather_object(everyone, stats)
        return everyone

    def close(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = False
