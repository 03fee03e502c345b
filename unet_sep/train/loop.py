"""The training loop: Spleeter's loss on masked magnitudes, Adam, validation by separation score, exact resume,
and data-parallel scale-out through ``torchrun`` (torch.distributed: gloo on the CPU, NCCL on GPUs).

A run folder (``--out runs/NAME``) holds:

    config.json, model.safetensors   the best model so far (by validation score): ``unet-sep separate --model DIR``
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
it changes the rounding of sums; see :class:`~unet_sep.train.threads.ThreadGovernor`).

Resuming compares the recipe with the run's ``recipe.json`` (:mod:`unet_sep.train.resume` says which changes are
free); resuming a run that has finished (or stopped early) trains nothing. The parts of a run live beside this
module: :mod:`~unet_sep.train.checkpoints`, :mod:`~unet_sep.train.metrics`, :mod:`~unet_sep.train.validation`,
:mod:`~unet_sep.train.prefetch` and :mod:`~unet_sep.train.threads`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist

from unet_sep.data.load import load_tracks
from unet_sep.device import process_device
from unet_sep.distributed import Ranks, waiting_group
from unet_sep.dsp.stft import stft
from unet_sep.model.stems import StemsNet
from unet_sep.train.average import WeightAverage, with_average
from unet_sep.train.checkpoints import (
    CHECKPOINTS_FOLDER,
    checkpoint_step,
    latest_checkpoint,
    load_initial_weights,
    restore_checkpoint,
    save_checkpoint,
)
from unet_sep.train.metrics import CURVES_FILE, MetricsWriter, StepWindow
from unet_sep.train.prefetch import BatchPrefetcher
from unet_sep.train.recipe import Recipe
from unet_sep.train.result import TrainResult
from unet_sep.train.resume import nothing_left_to_do, recipe_changes, refuse_to_overwrite, save_recipe
from unet_sep.train.sampler import ExcerptSampler, load_stem_pool
from unet_sep.train.threads import ThreadGovernor
from unet_sep.train.validation import Validator, load_validation_tracks
from unet_sep.weights.checkpoint import save_model

logger = logging.getLogger(__name__)


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The seed of dropout at ``step`` on process ``rank``."""
    return (seed * 1_000_003 + step * 7_919 + rank * 104_729) % (2**63 - 1)


def _new_loop_state() -> dict[str, Any]:
    """The loop state saved with every checkpoint: the best validation score and its step, the validations since
    the last improvement, the history of validation scores, and the steps in the weight average."""
    return {"best_score": None, "best_step": None, "bad_validations": 0, "history": [], "average_count": 0}


@dataclass
class _RunState:
    """What one call of :meth:`Trainer.run` trains: the network (``model`` is it, or its DDP wrapper), the
    optimizer and its gradient scaler, the weight average, the loop state and the steps."""

    net: StemsNet
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    average: WeightAverage | None
    loop_state: dict[str, Any]
    start_step: int = 0
    step: int = 0
    last_loss: float | None = None
    stopped_early: bool = False


class Trainer:
    """Trains ``recipe`` into the run folder ``out``; see the module's doc for what the folder holds.

    Args:
        recipe: model, data and training settings.
        out: the run folder.
        device: "auto", "cpu", "cuda", ... (under torchrun each process takes ``cuda:LOCAL_RANK``; more processes
            on a machine than GPUs, or a GPU named by index, is a :class:`~unet_sep.errors.SettingError`: see
            :func:`~unet_sep.device.process_device`).
        resume: continue from ``out/checkpoints/latest``; without it an existing run folder is an error.
        allow_changes: on resume, accept a recipe that differs from the run's ``recipe.json`` in keys that change
            the training (see :mod:`unet_sep.train.resume`); the differences are logged and the old recipe is kept.
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
        # The device first (a GPU per local rank, made current before NCCL starts); NCCL takes one per process.
        self.device = process_device(device, self.ranks, exclusive=self.distributed)
        self._owns_group = False
        self._waits: dist.ProcessGroup | None = None  # barriers and rank 0's word, with a timeout that covers its work
        if self.distributed:
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
                self._owns_group = True
            self._waits = waiting_group()
        # one layout for training and validation: a Separator in another layout would convert the network
        self.channels_last = recipe.train.channels_last and self.device.type in ("cpu", "cuda")
        self.use_amp = self.device.type == "cuda" and recipe.train.precision != "fp32"
        self.amp_dtype = torch.bfloat16 if recipe.train.precision == "bf16" else torch.float16
        model = recipe.model
        self.frames = recipe.train.excerpt_frames or model.segment_frames
        self.excerpt_samples = self.frames * model.stft.hop_length - model.stft.n_fft

    # -- the run
    def run(self) -> TrainResult:
        """Train to ``train.steps`` (or an early stop), from the latest checkpoint when resuming."""
        started = time.perf_counter()
        checkpoints = self.out / CHECKPOINTS_FOLDER
        resume_from = latest_checkpoint(checkpoints) if self.resume else None
        changed = self._check_folder(checkpoints, resume_from)
        governor = self._thread_governor()
        state = self._initial_state(resume_from)
        complete = ""
        if resume_from is not None:
            complete, state.stopped_early = nothing_left_to_do(self.recipe.train, state.step, state.loop_state)
        if complete:  # the run folder is left as it is
            self._shutdown()
            return self._result(state, started, complete)
        self._write_recipe(changed, resume_from)
        if self.channels_last:
            state.net = state.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
        sampler, validator = self._load_data()
        self._barrier()  # rank 0 loads the validation tracks too: the others wait here, not in DDP's first broadcast
        state.model = state.net
        if self.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            state.model = torch.nn.parallel.DistributedDataParallel(state.net, device_ids=device_ids)
        metrics = MetricsWriter(self.out, state.start_step, enabled=self.ranks.main)
        try:
            self._train(state, sampler, validator, metrics, governor)
        finally:
            metrics.close()
        if self.ranks.main:
            if state.loop_state["best_step"] is None:  # no validation data: keep the last model (or the weight average)
                save_model(self.out, with_average(state.net, state.average), self.recipe.model)
            metrics.plot(self.out / CURVES_FILE)
        self._shutdown()
        return self._result(state, started)

    def _train(self, state: _RunState, sampler: ExcerptSampler, validator: Validator, metrics: MetricsWriter,
               governor: ThreadGovernor | None) -> None:
        """The steps from ``state.step`` on to ``train.steps`` (or an early stop), each followed by what is due:
        a metrics row, the weight average, a validation, a checkpoint."""
        train = self.recipe.train
        batches = BatchPrefetcher(lambda step: sampler.batch(self._batch_indices(step)), state.step, train.steps,
                                  train.prefetch)
        bar = self._progress_bar(state.step)
        window = StepWindow()
        state.net.train()
        if governor is not None:
            governor.update(now=True)  # the load while the run started
        try:
            while state.step < train.steps and not state.stopped_early:
                if governor is not None:
                    governor.update()
                loss, lr, grad_norm = self._step(state, batches, window)
                self._report(state.step, loss, lr, grad_norm, window, metrics, bar)
                self._after_step(state, validator, metrics)
        finally:
            batches.close()
            if bar is not None:
                bar.close()

    def _step(self, state: _RunState, batches: BatchPrefetcher,
              window: StepWindow) -> tuple[float, float, torch.Tensor]:
        """One optimisation step on the batch of step ``state.step``; its loss, learning rate and gradient norm."""
        train = self.recipe.train
        wait_started = time.perf_counter()
        batch_np = batches.get(state.step)
        window.data_wait += time.perf_counter() - wait_started
        batch = torch.from_numpy(batch_np).to(self.device, non_blocking=True)
        torch.manual_seed(_step_seed(train.seed, state.step, self.ranks.rank))
        lr = train.learning_rate_at(state.step)
        for group in state.optimizer.param_groups:
            group["lr"] = lr
        mix_mag, target_mag = self._spectrogram_targets(batch)
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            estimates = state.model(mix_mag)
        loss = self._loss(estimates, target_mag)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
        max_norm = train.grad_clip if train.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(state.net.parameters(), max_norm)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.step += 1
        state.last_loss = float(loss.detach())
        window.losses.append(state.last_loss)
        return state.last_loss, lr, grad_norm

    def _report(self, step: int, loss: float, lr: float, grad_norm: torch.Tensor, window: StepWindow,
                metrics: MetricsWriter, bar: Any) -> None:
        """Tell ``on_step`` and the progress bar about the step just taken; a metrics row every
        ``train.log_every`` steps and at the last step."""
        train = self.recipe.train
        if self.on_step is not None:
            self.on_step(step, loss)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
        if step % train.log_every == 0 or step == train.steps:
            metrics.log_train(step, window.row(lr, float(grad_norm), train.batch_size * self.ranks.world))

    def _after_step(self, state: _RunState, validator: Validator, metrics: MetricsWriter) -> None:
        """What is due after the step just taken: the weight average, a validation, a checkpoint."""
        train, step, average = self.recipe.train, state.step, state.average
        if (average is not None and train.average_from is not None and step >= train.average_from
                and (step - train.average_from) % train.average_every == 0):
            average.update(state.net.state_dict())
            state.loop_state["average_count"] = average.count
        if (train.valid_every and step % train.valid_every == 0) or step == train.steps:
            state.stopped_early = self._validate(state, validator, metrics)
            state.net.train()
        if step % train.checkpoint_every == 0 or step == train.steps or state.stopped_early:
            if self.ranks.main:
                save_checkpoint(self.out / CHECKPOINTS_FOLDER, step, state.net, state.optimizer, state.loop_state,
                                average=average)
            self._barrier()
        if state.stopped_early:
            logger.info("early stop at step %d: %d validations without improvement", step, train.patience)

    def _validate(self, state: _RunState, validator: Validator, metrics: MetricsWriter) -> bool:
        """Validate the model (the weight average once it has begun) on the main process; True means stop early,
        agreed by all processes. The others wait for rank 0's word on the waiting group, whose timeout covers a
        validation (NCCL's default of 10 minutes would not)."""
        stop = validator.validate(state.step, with_average(state.net, state.average), state.loop_state, metrics)
        if self.distributed:
            flag = torch.tensor([1 if stop else 0])
            dist.broadcast(flag, src=0, group=self._waits)
            stop = bool(flag.item())
        return stop

    # -- before the steps
    def _check_folder(self, checkpoints: Path, resume_from: Path | None) -> bool:
        """Refuse to overwrite a run, and a changed recipe on resume (unless allowed); True if the recipe changed.

        Every process checks (they all raise alike, so none waits for another at a barrier).
        """
        if not self.resume:
            refuse_to_overwrite(self.out, checkpoints)
        changes: dict[str, str] = {}
        if resume_from is not None:
            changes = recipe_changes(self.out, self.recipe, checkpoint_step(resume_from), self.allow_changes)
        for text in changes.values():
            logger.warning("resuming with a changed recipe: %s", text)
        self._barrier()  # all have read recipe.json before it is replaced
        return bool(changes)

    def _thread_governor(self) -> ThreadGovernor | None:
        """A :class:`ThreadGovernor` when told to adapt the CPU threads, else None."""
        if self.adapt_threads and self.device.type == "cpu":
            return ThreadGovernor(max(1, torch.get_num_threads() // self.ranks.local_world))
        return None

    def _initial_state(self, resume_from: Path | None) -> _RunState:
        """A new network (seeded with ``train.seed``) and optimizer, restored from ``resume_from`` or started
        from the weights of ``train.init_from``."""
        train, model_config = self.recipe.train, self.recipe.model
        torch.manual_seed(train.seed)
        net = StemsNet(model_config).to(self.device)
        optimizer = torch.optim.Adam(net.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and train.precision == "fp16")
        average = WeightAverage() if train.average_from is not None and self.ranks.main else None
        state = _RunState(net, net, optimizer, scaler, average, _new_loop_state())
        if resume_from is not None:
            state.step = state.start_step = restore_checkpoint(resume_from, net, optimizer, average, state.loop_state,
                                                               self.device)
            return state
        if self.resume:
            logger.info("nothing to resume in %s: starting from step 0", self.out / CHECKPOINTS_FOLDER)
        if train.init_from is not None:
            load_initial_weights(net, model_config, train.init_from)  # before the data: a wrong model fails fast
        return state

    def _write_recipe(self, changed: bool, resume_from: Path | None) -> None:
        """Write recipe.json (main process); a changed one keeps the recipe the steps so far were trained with."""
        if self.ranks.main:
            replaced_at = checkpoint_step(resume_from) if changed and resume_from is not None else None
            save_recipe(self.out, self.recipe, replaced_at)
        self._barrier()

    def _load_data(self) -> tuple[ExcerptSampler, Validator]:
        """The sampler of training excerpts, and the validator with the validation tracks (main process)."""
        recipe, model_config = self.recipe, self.recipe.model
        logger.info("loading training data (%s)", recipe.data.root)
        train_tracks = load_tracks(recipe.data, "train", model_config.sample_rate, model_config.n_channels)
        pools = [load_stem_pool(source, recipe.data.cache_dir, model_config.sample_rate, model_config.n_channels)
                 for source in recipe.data.stem_sources]
        valid_tracks = load_validation_tracks(recipe) if self.ranks.main else []
        sampler = ExcerptSampler(train_tracks, self.excerpt_samples, list(model_config.stems), recipe.data.augment,
                                 seed=recipe.train.seed, sample_rate=model_config.sample_rate, pools=pools)
        return sampler, Validator(self.out, recipe, valid_tracks, self.device, self.channels_last)

    def _progress_bar(self, start_step: int) -> Any:
        """A tqdm bar from ``start_step`` (main process, when asked for), else None."""
        if not (self.ranks.main and self.progress):
            return None
        from tqdm import tqdm

        return tqdm(total=self.recipe.train.steps, initial=start_step, unit="step", desc="training",
                    dynamic_ncols=True, disable=None)

    # -- helpers
    def _barrier(self) -> None:
        """Wait for every process (on the waiting group: one may be doing rank 0's work for a long time)."""
        if self.distributed:
            dist.barrier(group=self._waits)

    def _shutdown(self) -> None:
        self._barrier()
        if self.distributed:  # a clean shutdown, so no rank is killed while it flushes its output
            dist.destroy_process_group(None if self._owns_group else self._waits)

    def _result(self, state: _RunState, started: float, complete: str = "") -> TrainResult:
        loop_state = state.loop_state
        return TrainResult(self.out, state.step, state.stopped_early, loop_state["best_score"], loop_state["best_step"],
                           state.last_loss, time.perf_counter() - started, loop_state["history"],
                           start_step=state.start_step, complete=complete)

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
