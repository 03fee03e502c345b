"""Where this process stands when torchrun started it: read from torchrun's environment variables.

Training (:mod:`unet_sep.train.loop`) and ``unet-sep separate`` both run under ``torchrun``; without it every
value says "one process on its own".
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup

# How long a process waits for the others where one of them does work of its own first: rank 0 loading the
# validation tracks, validating or writing a checkpoint while the others wait for its word; separation ranks that
# finished their share of the inputs while another still separates. NCCL gives up after 10 minutes by default (gloo
# after 30), far less than a validation on a slow machine or a rank's last long songs can take, so these waits go
# through a group of their own (:func:`waiting_group`) while the steps' collectives keep the backend's timeout.
WAIT_TIMEOUT = datetime.timedelta(hours=12)


@dataclass(frozen=True)
class Ranks:
    """This process's rank among ``world`` processes, and among the ``local_world`` ones on its machine."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def cores(self) -> int:
        """The CPU cores this process may use, shared out among the processes on its machine (at least 1)."""
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return max(1, usable // self.local_world)

    @classmethod
    def from_env(cls) -> "Ranks":
        """``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` as torchrun sets them."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world=world,
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
        )


def waiting_group() -> "ProcessGroup":
    """A gloo group of every process of the (initialised) default group, whose collectives wait up to
    :data:`WAIT_TIMEOUT`: for barriers and the few small messages around work one process does alone (CPU tensors
    and objects only). Every process must call it, in the same order; destroyed with the default group."""
    import torch.distributed as dist

    return dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
