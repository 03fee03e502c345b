"""A separation run under torchrun (``WORLD_SIZE`` > 1): the device and CPU threads each process takes, and one
summary the ranks agree on. The ranks split the inputs without talking (``FilePipeline.run(shard=...)``).
Without torchrun it is a single rank and does nothing."""

from __future__ import annotations

import torch

from unet_sep.device import process_device
from unet_sep.distributed import WAIT_TIMEOUT, Ranks


class SeparationRanks:
    """This process's place among the ranks of a separation run; :meth:`close` when the run is over."""

    def __init__(self) -> None:
        self.env = env = Ranks.from_env()
        self.world, self.rank, self.local_rank, self.local_world = env.world, env.rank, env.local_rank, env.local_world
        self.group = False
        if self.world > 1:
            import torch.distributed as dist

            # gloo for the few small messages (the summary), whatever device separates; a rank that is done waits
            # for the others' last songs in the summary's gather, for up to WAIT_TIMEOUT.
            dist.init_process_group("gloo", timeout=WAIT_TIMEOUT)
            self.group = True

    @property
    def shard(self) -> tuple[int, int]:
        """``(rank, world)``: this process separates every ``world``-th input from its rank's index on."""
        return self.rank, self.world

    def device(self, requested: str) -> torch.device:
        """This process's device (:func:`~unet_sep.device.process_device`: one GPU per local rank, shared round the
        GPUs when there are more ranks), made the current CUDA device before anything is put on it."""
        return process_device(requested, self.env)

    def cpu_threads(self) -> int:
        """The cores this process may use, shared out among the ranks on this machine."""
        return self.env.cores()

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
