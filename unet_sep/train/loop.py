"""The training loop: Spleeter's loss on masked magnitudes, Adam, validation by separation score, exact resume,
and data-parallel scale-out through ``torchrun`` (torch.distributed: gloo on the CPU, NCCL on GPUs).

A run folder (``--out runs/NAME``) holds:

    config.json, model.safetensors   the best model so far (by validation score): ``unet-sep separate --model runs/NAME``
    recipe.json                      the resolved recipe (defaults and overrides filled in)
    recipe.until-step-XXXXXXXX.json  the recipe before a resume that changed it (the one steps 1..XXXXXXXX used)
    checkpoints/step-XXXXXXXX/       model, optimizer state and loop state (and the weight average, when one is
                                     kept: ``train.average_from``); ``checkpoints/latest`` names the newest
    metrics.csv, tensorboard/        training and validation metrics
    curves.png                       loss and validation curves, drawn at the end
    best.json                        step and scores of the kept model

Determinism: the excerpts of step ``k`` are a pure function of (seed, k, rank), dropout is re-seeded from
(seed, k, rank) at every step and the learning rate is a function of ``k``, so a run resumed from any
checkpoint continues exactly as the uninterrupted run would have (on the CPU, with the same torch thread count:
it changes the rounding of sums; see :class:`ThreadGovernor`).

Resuming compares the recipe with the run's ``recipe.json``. A change is an error (:class:`RecipeChangedError`)
unless the Trainer is told ``allow_changes``, except for keys that change neither the steps taken nor the model
kept (:data:`FREE_ON_RESUME`) and ``train.steps`` when the learning rate does not depend on it (any schedule but
"cosine"): a run can be extended, or finished sooner, without changing the steps it has taken. Resuming a run
that has finished (or stopped early) trains nothing.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from unet_sep.atomic import atomic_path, write_text_atomic
from unet_sep.config import ConfigError, ModelConfig
from unet_sep.distributed import Ranks
from unet_sep.dsp.measures import snr_db
from unet_sep.dsp.stft import stft
from unet_sep.model.stems import StemsNet
from unet_sep.device import resolve_device
from unet_sep.separate.separator import Separator
from unet_sep.train.average import WeightAverage
from unet_sep.train.datasets import ExcerptSampler, load_tracks
from unet_sep.fields import show_value
from unet_sep.train.recipe import Recipe, recipe_differences
from unet_sep.weights.checkpoint import CheckpointError, load_model, save_model, save_tensors
from unet_sep.weights.registry import ModelNotFoundError, resolve_model

logger = logging.getLogger(__name__)

LATEST = "latest"
# recipe keys that may change when a run is resumed: they affect neither the steps taken nor the model kept
FREE_ON_RESUME = ("train.log_every", "train.checkpoint_every", "train.prefetch", "data.cache_dir", "model.name",
                  "model.provenance")
VALIDATION_EPS = 1e-9  # keeps the SDR of a silent validation stem finite
METRIC_FIELDS = ["step", "loss", "lr", "grad_norm", "excerpts_per_s", "seconds_per_step", "data_wait_s"]


class TrainingError(Exception):
    """A run that cannot start or continue; the message is meant for the user."""


class RecipeChangedError(TrainingError):
    """A resume with a recipe that differs from the run's own in keys that change the training."""


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run did: ``steps`` is the run's step count, ``start_step`` the step this
    invocation started from (the checkpoint's, when resumed)."""

    out: Path
    steps: int
    stopped_early: bool
    best_score: float | None
    best_step: int | None
    final_loss: float | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    start_step: int = 0
    complete: str = ""  # why a resumed run had nothing left to do: "already finished its 60 steps", ...

    @property
    def trained_steps(self) -> int:
        """Steps taken by this invocation (0: the resumed run was already complete)."""
        return self.steps - self.start_step

    def summary(self) -> str:
        """One line: what this invocation trained (and the run's total when resumed), the last loss, the best score."""
        if self.complete:
            return f"nothing to do: the run {self.out} {self.complete}"
        best = "no validation data" if self.best_score is None else f"best validation SDR {self.best_score:.2f} dB at step {self.best_step}"
        loss = "-" if self.final_loss is None else f"{self.final_loss:.4f}"
        stop = " and stopped early" if self.stopped_early else ""
        if not self.start_step:
            return f"trained {self.steps} steps in {self.seconds:.0f} s{stop}; last loss {loss}; {best}"
        n = self.trained_steps
        span = f"step {self.steps} (1 step)" if n == 1 else f"steps {self.start_step + 1}-{self.steps} ({n} steps)"
        return f"trained {span} in {self.seconds:.0f} s{stop}; the run has {self.steps} steps; last loss {loss}; {best}"


# ---- distributed helpers ---------------------------------------------------------------------------------
def _step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


# ---- checkpoint state ------------------------------------------------------------------------------------
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


def _restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = tensor
    for index, values in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _init_from(net: StemsNet, config: ModelConfig, source: str) -> None:
    """Load the weights of model ``source`` (folder or registered name) into ``net``, after checking they fit."""
    try:
        folder = resolve_model(source, offline=True)
        their_config, their_net = load_model(folder, device="cpu")
    except (ModelNotFoundError, CheckpointError, ConfigError, OSError) as error:
        raise TrainingError(f"train.init_from {source!r}: {error}") from None
    mine, theirs = config.to_dict(), their_config.to_dict()
    different = [key for key in ("stems", "sample_rate", "n_channels", "frequency_bins", "stft", "unet") if mine[key] != theirs[key]]
    if different:
        raise TrainingError(f"train.init_from {source!r} does not fit this recipe's model: {', '.join(different)} differ")
    net.load_state_dict(their_net.state_dict())  # copies onto net's device
    logger.info("initialised from %s", folder)


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def save_checkpoint(folder: Path, step: int, net: StemsNet, optimizer: torch.optim.Optimizer, loop_state: dict[str, Any],
                    keep: int = 2, average: WeightAverage | None = None) -> Path:
    """Write ``folder/step-XXXXXXXX`` under a temporary name, rename it, then point ``latest`` at it.

    A process killed at any moment (even ``kill -9`` in the middle of this) leaves the previous checkpoint
    and pointer intact: the new folder only counts once renamed, and the pointer is replaced atomically.
    """
    folder.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:08d}"
    final = folder / name
    partial = folder / f".{name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    save_tensors(partial / "model.safetensors", net.state_dict())
    tensors, meta = _optimizer_tensors(optimizer)
    save_tensors(partial / "optimizer.safetensors", tensors)
    if average is not None and average.state is not None:
        save_tensors(partial / "average.safetensors", average.state)
    (partial / "state.json").write_text(json.dumps({**loop_state, "step": step, "optimizer": meta}, indent=2), encoding="utf-8")
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    pointer = folder / LATEST
    tmp = folder / f".{LATEST}.partial"
    tmp.write_text(name + "\n", encoding="utf-8")
    os.replace(tmp, pointer)
    steps = sorted(p for p in folder.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    """The checkpoint ``latest`` points at, if it is complete."""
    pointer = folder / LATEST
    if not pointer.is_file():
        return None
    candidate = folder / pointer.read_text(encoding="utf-8").strip()
    if all((candidate / f).is_file() for f in ("model.safetensors", "optimizer.safetensors", "state.json")):
        return candidate
    return None


def checkpoint_step(checkpoint: Path) -> int:
    """The step of a checkpoint folder (``step-00000030`` -> 30)."""
    return int(checkpoint.name.removeprefix("step-"))


def resume_advice(out: Path, checkpoint_every: int) -> str:
    """What an interrupted run in ``out`` can do next: resume from its last checkpoint, or start again without one."""
    last = latest_checkpoint(out / "checkpoints")
    if last is None:
        return (f"no checkpoint was saved yet (train.checkpoint_every is {checkpoint_every} steps), so the run must "
                "start again from step 0: run the same command again")
    return f"continue with --resume from the last checkpoint (step {checkpoint_step(last)})"


# ---- CPU threads ---------------------------------------------------------------------------------------
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


# ---- the loop --------------------------------------------------------------------------------------------
class Trainer:
    """Trains ``recipe`` into the run folder ``out``; see the module's doc for what the folder holds.

    Args:
        recipe: model, data and training settings.
        out: the run folder.
        device: "auto", "cpu", "cuda", ... (under torchrun each process takes ``cuda:LOCAL_RANK``).
        resume: continue from ``out/checkpoints/latest``; without it an existing run folder is an error.
        allow_changes: on resume, accept a recipe that differs from the run's ``recipe.json`` in keys that change
            the training (see the module's doc); the differences are logged and the old recipe is kept.
        adapt_threads: on the CPU, let a :class:`ThreadGovernor` set torch's thread count to the cores other
            processes leave free (at most torch's default shared among the local processes); False leaves it alone.
        progress: show a progress bar (main process only).
        on_step: called as ``on_step(step, loss)`` after every optimisation step (for tests and tools).
    """

    def __init__(
        self,
        recipe: Recipe,
        out: str | Path,
        device: str = "auto",
        resume: bool = False,
        progress: bool = True,
        on_step: Callable[[int, float], None] | None = None,
        allow_changes: bool = False,
        adapt_threads: bool = False,
    ) -> None:
        recipe.validate()
        self.recipe = recipe
        self.out = Path(out)
        self.resume = resume
        self.allow_changes = allow_changes
        self.adapt_threads = adapt_threads
        self.progress = progress
        self.on_step = on_step
        self.ranks = Ranks.from_env()
        self.distributed = self.ranks.world > 1
        self._owns_group = False
        if self.distributed and not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() and device != "cpu" else "gloo"
            dist.init_process_group(backend=backend)
            self._owns_group = True
        if self.distributed and dist.get_backend() == "nccl":
            self.device = torch.device("cuda", self.ranks.local_rank)
            torch.cuda.set_device(self.device)
        else:
            self.device = resolve_device(device)
        # one layout for training and validation: a Separator in another layout would convert the network
        self.channels_last = recipe.train.channels_last and self.device.type in ("cpu", "cuda")
        model = recipe.model
        self.frames = recipe.train.excerpt_frames or model.segment_frames
        self.excerpt_samples = self.frames * model.stft.hop_length - model.stft.n_fft

    # -- helpers
    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _batch_indices(self, step: int) -> list[int]:
        size = self.recipe.train.batch_size
        first = (step * self.ranks.world + self.ranks.rank) * size
        return list(range(first, first + size))

    def _spectrogram_targets(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Excerpts ``[B, S, C, L]`` -> (mixture magnitude ``[B, C, T, F]``, target magnitudes ``[S, B, C, T, F]``)."""
        model = self.recipe.model
        n_fft, hop, bins = model.stft.n_fft, model.stft.hop_length, model.frequency_bins
        mixture = batch.sum(dim=1)
        mix_mag = stft(mixture, n_fft, hop)[..., :bins, : self.frames].abs().transpose(-1, -2)
        target_mag = stft(batch, n_fft, hop)[..., :bins, : self.frames].abs().transpose(-1, -2)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        return mix_mag.contiguous(memory_format=layout), target_mag.permute(1, 0, 2, 3, 4).contiguous()

    def _loss(self, estimates: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed over stems, mean over everything else (Spleeter: sum of per-instrument L1 means)."""
        error = estimates.float() - targets
        per_stem = error.abs().flatten(1).mean(1) if self.recipe.train.loss == "l1" else (error**2).flatten(1).mean(1)
        return per_stem.sum()

    def _check_folder(self, checkpoints: Path, resume_from: Path | None) -> bool:
        """Refuse to overwrite a run, and a changed recipe on resume (unless allowed); True if the recipe changed.

        Every process checks (they all raise alike, so none waits for another at a barrier).
        """
        if not self.resume and checkpoints.exists() and any(not p.name.startswith(".") for p in checkpoints.iterdir()):
            raise TrainingError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
        changed = self._check_recipe(resume_from) if resume_from is not None else False
        self._barrier()  # all have read recipe.json before it is replaced
        return changed

    def _write_recipe(self, changed: bool, resume_from: Path | None) -> None:
        """Write recipe.json (main process); a changed one keeps the recipe the steps so far were trained with."""
        if self.ranks.main:
            self.out.mkdir(parents=True, exist_ok=True)
            recipe_file = self.out / "recipe.json"
            if changed and resume_from is not None:  # an earlier copy for the same step stays: it trained those steps
                kept = self.out / f"recipe.until-step-{checkpoint_step(resume_from):08d}.json"
                if not kept.exists():
                    shutil.copyfile(recipe_file, kept)
            _write_json(recipe_file, self.recipe.to_dict())
        self._barrier()

    def _check_recipe(self, resume_from: Path) -> bool:
        """Compare the recipe with the run's recipe.json; raise RecipeChangedError for changes that are not free on
        resume (see the module's doc) unless ``allow_changes``. True when the recipe differs at all."""
        path = self.out / "recipe.json"
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            logger.warning("%s: cannot read the run's recipe (%s): changes to it are not checked", path, error)
            return False
        changes = recipe_differences(saved, json.loads(json.dumps(self.recipe.to_dict())))
        cosine = self.recipe.train.lr_schedule == "cosine"
        listed = {key: f"{key} {show_value(old)} -> {show_value(new)}" for key, (old, new) in changes.items()}
        if "train.steps" in changes and cosine:
            listed["train.steps"] += " (the cosine schedule's learning rates depend on it)"
        binding = [text for key, text in listed.items()
                   if not (key == "train.steps" and not cosine)
                   and not any(key == free or key.startswith(free + ".") for free in FREE_ON_RESUME)]
        if binding and not self.allow_changes:
            raise RecipeChangedError(
                f"the recipe differs from the one {self.out} was trained with ({path}): {'; '.join(binding)}. "
                f"Resume with that recipe, or pass --allow-changes to continue from step {checkpoint_step(resume_from)} with the new values")
        for text in listed.values():
            logger.warning("resuming with a changed recipe: %s", text)
        return bool(changes)

    def _restore(self, resume_from: Path, net: StemsNet, optimizer: torch.optim.Optimizer,
                 average: WeightAverage | None, loop_state: dict[str, Any]) -> int:
        """Load a checkpoint into the network, the optimizer, the weight average and the loop state; its step."""
        net.load_state_dict(load_file(str(resume_from / "model.safetensors"), device=str(self.device)))
        saved = json.loads((resume_from / "state.json").read_text(encoding="utf-8"))
        _restore_optimizer(optimizer, load_file(str(resume_from / "optimizer.safetensors"), device=str(self.device)), saved.pop("optimizer"))
        step = int(saved.pop("step"))
        loop_state.update(saved)
        if average is not None and loop_state["average_count"]:
            average.load(load_file(str(resume_from / "average.safetensors"), device=str(self.device)), loop_state["average_count"])
        logger.info("resumed from %s at step %d", resume_from, step)
        return step

    def _complete(self, step: int, loop_state: dict[str, Any]) -> tuple[str, bool]:
        """Why a run restored at ``step`` has nothing left to do ("" when it has), and whether it stopped early."""
        train = self.recipe.train
        if step == train.steps:
            return f"already finished its {train.steps} steps", False
        if step > train.steps:
            return f"is already at step {step}, past train.steps ({train.steps})", False
        if train.patience and loop_state["bad_validations"] >= train.patience:  # the loop's own stopping rule
            return (f"stopped early at step {step} ({loop_state['bad_validations']} validations without improvement; "
                    f"train.patience is {train.patience})"), True
        return "", False

    def _shutdown(self) -> None:
        self._barrier()
        if self.distributed and self._owns_group:
            dist.destroy_process_group()  # a clean shutdown, so no rank is killed while it flushes its output

    # -- the run
    def run(self) -> TrainResult:
        recipe, train = self.recipe, self.recipe.train
        model_config = recipe.model
        started = time.perf_counter()
        checkpoints = self.out / "checkpoints"
        resume_from = latest_checkpoint(checkpoints) if self.resume else None
        changed = self._check_folder(checkpoints, resume_from)
        governor = None
        if self.adapt_threads and self.device.type == "cpu":
            governor = ThreadGovernor(max(1, torch.get_num_threads() // self.ranks.local_world))

        torch.manual_seed(train.seed)
        net = StemsNet(model_config).to(self.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
        loop_state: dict[str, Any] = {"best_score": None, "best_step": None, "bad_validations": 0, "history": [], "average_count": 0}
        average = WeightAverage() if train.average_from is not None and self.ranks.main else None
        start_step = 0
        if resume_from is not None:
            start_step = self._restore(resume_from, net, optimizer, average, loop_state)
            complete, stopped = self._complete(start_step, loop_state)
            if complete:  # the run folder is left as it is
                self._shutdown()
                return TrainResult(self.out, start_step, stopped, loop_state["best_score"], loop_state["best_step"], None,
                                   time.perf_counter() - started, loop_state["history"], start_step=start_step,
                                   complete=complete)
        else:
            if self.resume:
                logger.info("nothing to resume in %s: starting from step 0", checkpoints)
            if train.init_from is not None:
                _init_from(net, model_config, train.init_from)  # before the data: a wrong model fails fast
        self._write_recipe(changed, resume_from)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)

        logger.info("loading training data (%s)", recipe.data.root)
        train_tracks = load_tracks(recipe.data, "train", model_config.sample_rate, model_config.n_channels)
        valid_tracks = []
        if self.ranks.main and train.valid_tracks == 0:
            logger.info("train.valid_tracks is 0: no validation; the last model (or the weight average) is kept")
        elif self.ranks.main:
            try:
                valid_tracks = load_tracks(recipe.data, "valid", model_config.sample_rate, model_config.n_channels)
            except (ValueError, ConfigError) as error:
                logger.warning("no validation data (%s): the last model is kept instead of the best", error)
            if train.valid_tracks is not None:
                valid_tracks = valid_tracks[: train.valid_tracks]
        sampler = ExcerptSampler(train_tracks, self.excerpt_samples, list(model_config.stems), recipe.data.augment,
                                 seed=train.seed, sample_rate=model_config.sample_rate)

        model = net
        if self.distributed:
            model = torch.nn.parallel.DistributedDataParallel(net, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        use_amp = self.device.type == "cuda" and train.precision != "fp32"
        amp_dtype = torch.bfloat16 if train.precision == "bf16" else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and train.precision == "fp16")

        metrics = _Metrics(self.out, start_step, enabled=self.ranks.main)
        batches = _Prefetcher(sampler, self._batch_indices, start_step, train.steps, train.prefetch)
        bar = None
        if self.ranks.main and self.progress:
            from tqdm import tqdm

            bar = tqdm(total=train.steps, initial=start_step, unit="step", desc="training", dynamic_ncols=True, disable=None)
        stopped_early = False
        last_loss: float | None = None
        window: list[float] = []
        window_start = time.perf_counter()
        data_wait = 0.0
        step = start_step
        net.train()
        if governor is not None:
            governor.update(now=True)  # the load while the run started
        try:
            while step < train.steps:
                if governor is not None:
                    governor.update()
                wait_started = time.perf_counter()
                batch_np = batches.get(step)
                data_wait += time.perf_counter() - wait_started
                batch = torch.from_numpy(batch_np).to(self.device, non_blocking=True)
                torch.manual_seed(_step_seed(train.seed, step, self.ranks.rank))
                lr = train.learning_rate_at(step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                mix_mag, target_mag = self._spectrogram_targets(batch)
                with torch.autocast(device_type=self.device.type, dtype=amp_dtype, enabled=use_amp):
                    estimates = model(mix_mag)
                loss = self._loss(estimates, target_mag)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), train.grad_clip if train.grad_clip > 0 else math.inf)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                last_loss = float(loss.detach())
                window.append(last_loss)
                if self.on_step is not None:
                    self.on_step(step, last_loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{last_loss:.4f}", lr=f"{lr:.2e}")
                if step % train.log_every == 0 or step == train.steps:
                    elapsed = time.perf_counter() - window_start
                    excerpts = len(window) * train.batch_size * self.ranks.world
                    metrics.log_train(step, {
                        "loss": float(np.mean(window)), "lr": lr, "grad_norm": float(grad_norm),
                        "excerpts_per_s": excerpts / elapsed, "seconds_per_step": elapsed / len(window),
                        "data_wait_s": data_wait / len(window),
                    })
                    window, data_wait, window_start = [], 0.0, time.perf_counter()
                if average is not None and step >= train.average_from and (step - train.average_from) % train.average_every == 0:
                    average.update(net.state_dict())
                    loop_state["average_count"] = average.count
                validate_now = train.valid_every and step % train.valid_every == 0
                if validate_now or step == train.steps:
                    stop = self._validate(step, self._averaged(net, average), valid_tracks, loop_state, metrics)
                    net.train()
                    if stop:
                        stopped_early = True
                if step % train.checkpoint_every == 0 or step == train.steps or stopped_early:
                    if self.ranks.main:
                        save_checkpoint(checkpoints, step, net, optimizer, loop_state, average=average)
                    self._barrier()
                if stopped_early:
                    logger.info("early stop at step %d: %d validations without improvement", step, train.patience)
                    break
        finally:
            batches.close()
            if bar is not None:
                bar.close()
            metrics.close()
        if self.ranks.main:
            if loop_state["best_step"] is None:  # no validation data: keep the last model (or the weight average)
                save_model(self.out, self._averaged(net, average), model_config)
            metrics.plot(self.out / "curves.png")
        self._shutdown()
        return TrainResult(self.out, step, stopped_early, loop_state["best_score"], loop_state["best_step"], last_loss,
                           time.perf_counter() - started, loop_state["history"], start_step=start_step)

    @staticmethod
    def _averaged(net: StemsNet, average: WeightAverage | None) -> StemsNet:
        """``net`` itself, or a copy holding the weight average once it has begun."""
        if average is None or average.state is None:
            return net
        averaged = copy.deepcopy(net)
        averaged.load_state_dict(average.state)
        return averaged

    @torch.no_grad()
    def _validate(self, step: int, net: StemsNet, tracks: list, loop_state: dict[str, Any], metrics: "_Metrics") -> bool:
        """Score the model on the validation tracks (main process); keep it if best; True means stop early."""
        stop = False
        if self.ranks.main and tracks:
            net.eval()
            separator = Separator(net, self.recipe.model, device=self.device, channels_last=self.channels_last, optimize=False)
            scores = validation_scores(separator, tracks)
            score = float(np.mean([scores[f"sdr_{s}"] for s in self.recipe.model.stems]))
            scores["score"] = score
            entry = {"step": step, **scores}
            if loop_state.get("average_count"):
                entry["averaged_weights"] = loop_state["average_count"]
            loop_state["history"].append(entry)
            metrics.log_valid(step, scores)
            best = loop_state["best_score"]
            if best is None or score > best:
                loop_state.update(best_score=score, best_step=step, bad_validations=0)
                save_model(self.out, net, self.recipe.model)
                _write_json(self.out / "best.json", entry)
                logger.info("step %d: validation SDR %.2f dB (best so far, kept)", step, score)
            else:
                loop_state["bad_validations"] += 1
                logger.info("step %d: validation SDR %.2f dB (best %.2f dB at step %d)", step, score, best, loop_state["best_step"])
                patience = self.recipe.train.patience
                stop = bool(patience and loop_state["bad_validations"] >= patience)
        if self.distributed:
            flag = torch.tensor([1 if stop else 0], device=self.device if dist.get_backend() == "nccl" else "cpu")
            dist.broadcast(flag, src=0)
            stop = bool(flag.item())
        return stop


def validation_scores(separator: Separator, tracks: list) -> dict[str, float]:
    """Mean SDR per stem over ``tracks`` for the separator and for the mixture used as the estimate."""
    per_stem: dict[str, list[float]] = {s: [] for s in separator.stems}
    baseline: dict[str, list[float]] = {s: [] for s in separator.stems}
    for track in tracks:
        mixture = track.mixture
        estimates = separator.separate(mixture, separator.sample_rate)
        for stem in separator.stems:
            per_stem[stem].append(snr_db(track.sources[stem], estimates[stem], eps=VALIDATION_EPS))
            baseline[stem].append(snr_db(track.sources[stem], mixture, eps=VALIDATION_EPS))
    scores = {f"sdr_{s}": float(np.mean(v)) for s, v in per_stem.items()}
    scores.update({f"mixture_sdr_{s}": float(np.mean(v)) for s, v in baseline.items()})
    return scores


class _Prefetcher:
    """Prepares the batches of the coming steps in a background thread (bounded queue), in step order."""

    def __init__(self, sampler: ExcerptSampler, indices: Callable[[int], list[int]], start: int, stop: int, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._sampler, self._indices = sampler, indices
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._work, args=(start, stop), daemon=True, name="unet-sep-data")
            self._thread.start()

    def _work(self, start: int, stop: int) -> None:
        for step in range(start, stop):
            if self._stop.is_set():
                return
            try:
                item = (step, self._sampler.batch(self._indices(step)))
            except BaseException as error:  # hand the error to the training thread
                item = (step, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self, step: int) -> np.ndarray:
        if self._thread is None:
            return self._sampler.batch(self._indices(step))
        got, batch = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        assert got == step, (got, step)
        return batch

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class _Metrics:
    """metrics.csv (rows after the resumed step are dropped) and TensorBoard, main process only."""

    def __init__(self, out: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / "metrics.csv"
        self.valid_path = out / "validation.csv"
        self.writer = None
        if not enabled:
            return
        for path in (self.path, self.valid_path):
            if path.exists():
                rows = [r for r in csv.DictReader(path.open()) if int(r["step"]) <= start_step]
                fields = list(rows[0].keys()) if rows else None
                if fields:
                    with path.open("w", newline="") as handle:
                        writer = csv.DictWriter(handle, fieldnames=fields)
                        writer.writeheader()
                        writer.writerows(rows)
                else:
                    path.unlink()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
            logger.warning("tensorboard is not available: metrics go to CSV only")

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        new = not path.exists()
        with path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def log_train(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._append(self.path, {"step": step, **{k: f"{v:.6g}" for k, v in values.items()}})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"train/{key}", value, step)
        logger.info("step %d: loss %.4f, %.2f excerpts/s, %.3f s/step (data wait %.3f s)", step, values["loss"],
                    values["excerpts_per_s"], values["seconds_per_step"], values["data_wait_s"])

    def log_valid(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self._append(self.valid_path, {"step": step, **{k: f"{v:.4f}" for k, v in values.items()}})
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"valid/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def plot(self, path: Path) -> None:
        """Loss curve and validation SDR per stem (with the mixture baseline dashed) as a PNG."""
        if not self.path.exists():
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = list(csv.DictReader(self.path.open()))
        valid = list(csv.DictReader(self.valid_path.open())) if self.valid_path.exists() else []
        fig, axes = plt.subplots(1, 2 if valid else 1, figsize=(11 if valid else 6, 4), squeeze=False)
        ax = axes[0][0]
        ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], color="tab:blue")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.set_title("training loss")
        if valid:
            ax = axes[0][1]
            steps = [int(r["step"]) for r in valid]
            stems = [k[4:] for k in valid[0] if k.startswith("sdr_")]
            for i, stem in enumerate(stems):
                color = f"C{i}"
                ax.plot(steps, [float(r[f"sdr_{stem}"]) for r in valid], marker="o", color=color, label=stem)
                ax.plot(steps, [float(r[f"mixture_sdr_{stem}"]) for r in valid], ls="--", color=color, alpha=0.6,
                        label=f"{stem}: mixture as estimate")
            ax.set_xlabel("step")
            ax.set_ylabel("SDR (dB)")
            ax.set_title("validation")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=7)
        fig.tight_layout()
        with atomic_path(path, ".partial.png") as temporary:
            fig.savefig(temporary, dpi=110)
        plt.close(fig)
