"""Choosing the torch device to run on, from what the user asked for, what the machine has and, under torchrun,
which of the machine's processes this is."""

from __future__ import annotations

import logging

import torch

from unet_sep.distributed import Ranks
from unet_sep.errors import SettingError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" picks CUDA, then Apple's MPS, then the CPU; anything else must name a device this machine has.

    Raises :class:`~unet_sep.errors.SettingError` (setting ``device``) for a name that is not a device, a device
    type unet-sep does not run on, or a device the machine lacks, saying what is there.
    """
    name = str(device).strip()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        chosen = torch.device(name)
    except (RuntimeError, ValueError):
        raise SettingError("device", f"{name!r} is not a device; choose from {DEVICE_CHOICES}") from None
    if chosen.type not in ("cpu", "cuda", "mps"):
        raise SettingError("device", f"{name!r}: unet-sep runs on {DEVICE_CHOICES}")
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SettingError("device", f"{name}: no CUDA device is available on this machine (use cpu or auto)")
        if chosen.index is not None and chosen.index >= count:
            raise SettingError("device", f"{name}: no such CUDA device; this machine has {count} "
                                         f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if chosen.type == "mps" and not _mps_available():
        raise SettingError("device", f"{name}: Apple's MPS backend is not available on this machine (use cpu or auto)")
    return chosen


def _mps_runs_separation() -> bool:
    """Whether the complex STFT, its inverse and a strided convolution run on MPS in this PyTorch build."""
    try:
        device = torch.device("mps")
        signal = torch.rand(1, 4096, device=device)
        window = torch.hann_window(1024, device=device)
        spec = torch.stft(signal, 1024, 256, window=window, return_complex=True)
        torch.istft(spec * spec.abs(), 1024, 256, window=window)
        torch.nn.functional.conv2d(torch.rand(1, 2, 16, 16, device=device), torch.rand(4, 2, 5, 5, device=device),
                                   stride=2)
        return True
    except Exception:  # any failure means: not usable here
        return False


def separation_device(device: str | torch.device) -> torch.device:
    """:func:`resolve_device`, except that MPS becomes the CPU (with a warning) where this PyTorch build cannot
    run the STFT and the U-Nets on it."""
    chosen = resolve_device(device)
    if chosen.type == "mps" and not _mps_runs_separation():
        logger.warning("mps: this PyTorch build cannot run the STFT and U-Nets on Apple's GPU; using the CPU")
        return torch.device("cpu")
    return chosen


def process_device(requested: str | torch.device, ranks: Ranks | None = None,
                   exclusive: bool = False) -> torch.device:
    """The device this process works on (``unet-sep separate`` and training alike), made the current CUDA device.

    Without torchrun (or with one process per machine) it is :func:`resolve_device`'s. Under torchrun with
    several processes on this machine (``ranks``; default: from the environment), "auto" and "cuda" give local
    rank ``r`` the GPU ``cuda:(r mod n)`` of the machine's ``n``; a device with an index (``cuda:0``) is refused,
    since every process would take that one GPU (``CUDA_VISIBLE_DEVICES`` says which GPUs the processes share
    out). With more local processes than GPUs they share them, unless ``exclusive`` (NCCL, which training uses,
    refuses two processes of one group on one GPU): then that is a :class:`~unet_sep.errors.SettingError`.

    A CUDA device with an index is made the current device before anything else runs, so that what torch does on
    "the current device" (a context, pinned host memory, NCCL) happens on this process's GPU, not on GPU 0.
    """
    ranks = Ranks.from_env() if ranks is None else ranks
    chosen = resolve_device(requested)
    if chosen.type != "cuda":
        return chosen
    if ranks.local_world > 1:
        count = torch.cuda.device_count()
        if chosen.index is not None:
            raise SettingError("device", f"{chosen} would put all {ranks.local_world} processes torchrun started on "
                                         "this machine on one GPU; ask for cuda (local rank r takes GPU r) and choose "
                                         "the GPUs with CUDA_VISIBLE_DEVICES")
        if exclusive and ranks.local_world > count:
            raise SettingError("device", f"torchrun started {ranks.local_world} processes on this machine, which has "
                                         f"{count} GPU{'s' if count > 1 else ''}: training needs a GPU per process "
                                         f"(NCCL); use --nproc-per-node {count}, or cpu")
        chosen = torch.device("cuda", ranks.local_rank % count)
        if ranks.local_world > count:
            logger.info("%d processes share %d GPU(s): local rank %d on %s", ranks.local_world, count,
                        ranks.local_rank, chosen)
    if chosen.index is not None:
        torch.cuda.set_device(chosen)
    return chosen
