"""A run's checkpoints, and the weights a run starts from.

``checkpoints/step-XXXXXXXX/`` holds the model, the optimizer state and the loop state (and the weight average,
when one is kept); the pointer file ``checkpoints/latest`` names the newest. Nothing is pickled: tensors go to
safetensors files, the rest to ``state.json``. Every write goes through :mod:`unet_sep.atomic`: a checkpoint
folder is filled under a temporary name and renamed, then the pointer is replaced, so a process killed at any
moment (even ``kill -9`` in the middle of a save) leaves the previous checkpoint and pointer intact, and the next
save removes what it left behind.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from unet_sep.atomic import atomic_folder, remove_stale_temporaries, remove_stale_temporary_folders, write_text_atomic
from unet_sep.config import WEIGHTS_FILE, ModelConfig
from unet_sep.errors import ConfigError
from unet_sep.model.stems import StemsNet
from unet_sep.train.average import WeightAverage
from unet_sep.train.result import TrainingError
from unet_sep.weights.checkpoint import CheckpointError, load_model, save_tensors
from unet_sep.weights.entries import ModelNotFoundError
from unet_sep.weights.registry import resolve_model

logger = logging.getLogger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"  # in a run folder
LATEST = "latest"
OPTIMIZER_FILE, STATE_FILE, AVERAGE_FILE = "optimizer.safetensors", "state.json", "average.safetensors"
# what the model must share with the one a run starts from (train.init_from)
SHAPE_KEYS = ("stems", "sample_rate", "n_channels", "frequency_bins", "stft", "unet")


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Adam's state as flat tensors (safetensors) plus its JSON-able parts: nothing is pickled."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                       meta: dict[str, Any]) -> None:
    """The inverse of :func:`_optimizer_tensors`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_checkpoint(folder: Path, step: int, net: StemsNet, optimizer: torch.optim.Optimizer,
                    loop_state: dict[str, Any], keep: int = 2, average: WeightAverage | None = None) -> Path:
    """Write ``folder/step-XXXXXXXX`` under a temporary name, rename it, then point ``latest`` at it; keep the
    newest ``keep`` checkpoints. The temporaries of a save that was killed are removed first."""
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporary_folders(folder)
    remove_stale_temporaries(folder)
    name = f"step-{step:08d}"
    with atomic_folder(folder / name) as partial:
        save_tensors(partial / WEIGHTS_FILE, net.state_dict())
        tensors, meta = _optimizer_tensors(optimizer)
        save_tensors(partial / OPTIMIZER_FILE, tensors)
        if average is not None and average.state is not None:
            save_tensors(partial / AVERAGE_FILE, average.state)
        write_text_atomic(partial / STATE_FILE, json.dumps({**loop_state, "step": step, "optimizer": meta}, indent=2))
    write_text_atomic(folder / LATEST, name + "\n")
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return folder / name


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest`` points at, if it is complete."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    candidate = folder / pointer.read_text(encoding="utf-8").strip()
    if all((candidate / name).is_file() for name in (WEIGHTS_FILE, OPTIMIZER_FILE, STATE_FILE)):
        return candidate
    return None


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder (``step-00000030`` -> 30)."""
    return int(checkpoint.name.removeprefix("step-"))


def resume_advice(out: Path, checkpoint_every: int) -> str:
    """What an interrupted run in ``out`` can do next: resume from its last checkpoint, or start again without one."""
    last = latest_checkpoint(out / CHECKPOINTS_FOLDER)
    if last is None:
        return (f"no checkpoint was saved yet (train.checkpoint_every is {checkpoint_every} steps), so the run must "
                "start again from step 0: run the same command again")
    return f"continue with --resume from the last checkpoint (step {checkpoint_step(last)})"


def restore_checkpoint(checkpoint: Path, net: StemsNet, optimizer: torch.optim.Optimizer,
                       average: WeightAverage | None, loop_state: dict[str, Any], device: torch.device) -> int:
    """Load ``checkpoint`` into the network, the optimizer, the weight average and the loop state; its step."""
    net.load_state_dict(load_file(str(checkpoint / WEIGHTS_FILE), device=str(device)))
    saved = json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))
    tensors = load_file(str(checkpoint / OPTIMIZER_FILE), device=str(device))
    _restore_optimizer(optimizer, tensors, saved.pop("optimizer"))
    step = int(saved.pop("step"))
    loop_state.update(saved)
    if average is not None and loop_state["average_count"]:
        average.load(load_file(str(checkpoint / AVERAGE_FILE), device=str(device)), loop_state["average_count"])
    logger.info("resumed from %s at step %d", checkpoint, step)
    return step


def load_initial_weights(net: StemsNet, config: ModelConfig, source: str) -> None:
    """Load the weights of model ``source`` (folder or registered name) into ``net``, after checking they fit its
    ``config`` (``train.init_from``); a :class:`TrainingError` when they cannot be read or do not fit."""
    try:
        folder = resolve_model(source, offline=True)
        their_config, their_net = load_model(folder, device="cpu")
    except (ModelNotFoundError, CheckpointError, ConfigError, OSError) as error:
        raise TrainingError(f"train.init_from {source!r}: {error}") from None
    mine, theirs = config.to_dict(), their_config.to_dict()
    different = [key for key in SHAPE_KEYS if mine[key] != theirs[key]]
    if different:
        raise TrainingError(f"train.init_from {source!r} does not fit this recipe's model: "
                            f"{', '.join(different)} differ")
    net.load_state_dict(their_net.state_dict())  # copies onto net's device
    logger.info("initialised from %s", folder)
