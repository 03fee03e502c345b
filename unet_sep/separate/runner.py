"""The U-Nets on their device: streaming engines for signals, and their ready segments run in shared batches.

A :class:`NetworkRunner` is what :class:`~unet_sep.separate.separator.Separator` and the file pipeline
(:mod:`unet_sep.separate.pipeline`) have in common: the network in its device, memory layout, precision and
(optionally) compiled form, the segment plan and the batch size. It makes one
:class:`~unet_sep.separate.stream.SeparationStream` per signal and the stages that bring a signal to the model's
rate and channels and back (:mod:`unet_sep.separate.stages`); :meth:`NetworkRunner.run_ready` is the one loop
that sends the ready segments of any number of engines through the U-Nets, a batch at a time.
:func:`load_network` reads a model (name, folder or ONNX file) for one, with the settings it runs under.
"""

from __future__ import annotations

import copy
import dataclasses
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from unet_sep.config import CONFIG_FILE, ModelConfig
from unet_sep.dsp.stft import num_frames
from unet_sep.errors import SettingError
from unet_sep.model.stems import StemsNet, freeze_for_inference, inference_network
from unet_sep.separate.onnx_network import OnnxNetwork
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.settings import ResolvedSettings, SeparationSettings
from unet_sep.separate.stages import HOLDBACK, InputStage, OutputStage
from unet_sep.separate.stream import SeparationStream
from unet_sep.weights.checkpoint import load_model
from unet_sep.weights.entries import ModelNotFoundError
from unet_sep.weights.onnx_export import cached_onnx_export, onnx_model_bytes, read_onnx_config
from unet_sep.weights.registry import resolve_model

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@contextmanager
def convolution_precision(tf32: bool) -> Iterator[None]:
    """cuDNN's float32 convolutions in TF32 (``tf32``: inputs and weights rounded to a 10-bit mantissa on the tensor
    cores, sums in float32) or in full float32, for the calls made inside; the process-wide setting is restored on
    the way out, so separators of either kind can share a process (not threads running at once: the setting is
    the process's). Other devices ignore it."""
    cudnn = torch.backends.cudnn
    wanted = "tf32" if tf32 else "ieee"
    if hasattr(cudnn, "conv"):  # the per-operation API (torch 2.9+); the old flag may not be mixed with it
        before = cudnn.conv.fp32_precision
        cudnn.conv.fp32_precision = wanted
        try:
            yield
        finally:
            cudnn.conv.fp32_precision = before
        return
    old = cudnn.allow_tf32  # pragma: no cover - torch before 2.9
    cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        cudnn.allow_tf32 = old


def load_network(name_or_path: str | Path,
                 settings: SeparationSettings) -> tuple[StemsNet | None, ModelConfig, SeparationSettings]:
    """The U-Nets (None where an ONNX file gives them) and config of a registered model name, a model folder or an
    ONNX file written by ``unet-sep models export``, with ``settings`` as they run them: the backend is onnxruntime
    for an ONNX file (another is a :class:`~unet_sep.errors.SettingError`), and with onnxruntime the file to run
    is the ONNX file or the model's export, made on first use and kept in the cache
    (:func:`~unet_sep.weights.onnx_export.cached_onnx_export`). The settings are checked before any file is read."""
    if Path(str(name_or_path)).suffix.lower() == ".onnx":
        if settings.backend not in (None, "onnxruntime"):
            raise SettingError("backend", f"{name_or_path} is an ONNX file, which only onnxruntime runs")
        settings = dataclasses.replace(settings, backend="onnxruntime", onnx_path=name_or_path)
        if not Path(name_or_path).is_file():
            raise ModelNotFoundError(f"{name_or_path}: no such ONNX file")
        return None, read_onnx_config(name_or_path), settings
    folder = resolve_model(name_or_path)
    if settings.backend == "onnxruntime":
        config = ModelConfig.load(folder / CONFIG_FILE)
        return None, config, dataclasses.replace(settings, onnx_path=cached_onnx_export(folder))
    config, net = load_model(folder)
    return net, config, settings


class NetworkRunner:
    """A model's U-Nets ready to run on segments, with ``settings`` resolved for the model and this machine
    (:meth:`SeparationSettings.resolve <unet_sep.separate.settings.SeparationSettings.resolve>`; :attr:`settings`).

    Raises :class:`~unet_sep.errors.ConfigError` for an invalid ``config``, a
    :class:`~unet_sep.errors.SettingError` when neither ``net`` nor an ONNX file gives the U-Nets, and
    :class:`~unet_sep.weights.checkpoint.CheckpointError` for an ONNX file whose U-Nets do not fit ``config`` (the
    settings themselves were checked when made). Its engines refuse stems that are not finite
    (:class:`~unet_sep.separate.stream.NonFiniteStemsError`, naming ``precision`` when it is not fp32).
    On a GPU, the U-Nets' float32 convolutions run as TF32 in the default mode and in full float32 in
    Spleeter-exact mode (``segmentation="spleeter"``), whatever the process has set (:attr:`tf32`,
    :func:`convolution_precision`).
    With ``backend="onnxruntime"`` the U-Nets are those of the ONNX file ``onnx_path`` (then ``net`` may be None),
    or ``net`` exported in memory (:mod:`unet_sep.separate.onnx_network`); the session is made here, so a
    problem with the file shows before any input is read.
    """

    def __init__(self, net: StemsNet | None, config: ModelConfig, settings: SeparationSettings) -> None:
        config.validate()
        resolved = settings.resolve(config)
        if net is None and resolved.onnx_path is None:
            raise SettingError("backend", f"the {resolved.backend} backend needs the network (net) or an ONNX file "
                                          "(onnx_path)")
        self.config = config
        self.settings: ResolvedSettings = resolved
        if net is not None:
            # Module.to takes memory_format (torch documents it); torch's overloads of it leave it out.
            net = net.to(resolved.device, memory_format=self._layout).eval()  # type: ignore[call-overload]
        self.net = net
        self._network: Callable[[torch.Tensor], torch.Tensor] | None = None
        if resolved.backend == "onnxruntime":
            self._network = OnnxNetwork(resolved.onnx_path or self._exported(), resolved.device, config=config)

    def with_settings(self, settings: ResolvedSettings) -> "NetworkRunner":
        """These U-Nets under other resolved ``settings`` (another segment plan: a live session's): the same module
        and weights, made for its segments on first use (an ONNX Runtime session is shared)."""
        runner = copy.copy(self)
        runner.settings = settings
        if settings.backend == "torch":
            runner._network = None
        return runner

    @property
    def device(self) -> torch.device:
        return self.settings.device

    @property
    def tf32(self) -> bool:
        """Whether the U-Nets' float32 convolutions may run as TF32 on a GPU (settable, for measurements)."""
        return self.settings.tf32

    @tf32.setter
    def tf32(self, allowed: bool) -> None:
        self.settings = dataclasses.replace(self.settings, tf32=allowed)

    @property
    def stems(self) -> list[str]:
        return list(self.config.stems)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def _layout(self) -> torch.memory_format:
        return torch.channels_last if self.settings.channels_last else torch.contiguous_format

    def _exported(self) -> bytes:
        """The runner's module exported to ONNX, in memory."""
        assert self.net is not None  # checked above: no ONNX file, so a module
        return onnx_model_bytes(self.net, self.config)

    # ---- one signal's parts -------------------------------------------------------------------------
    def input_stage(self, batch: int, in_channels: int, in_rate: int) -> InputStage:
        """Checks blocks ``[batch, in_channels, n]`` at ``in_rate`` and brings them to the model's rate and channels."""
        return InputStage(batch, in_channels, in_rate, self.sample_rate, self.config.n_channels)

    def shares_residual(self, in_rate: int) -> bool:
        """Whether stems at ``in_rate`` get shares of what they miss of the mixture: the band above the model's
        rate, the edge of the band that resampling to it and back loses, and what the Wiener filter's
        regularisation keeps from quiet bins. Masks extended with zeros (Spleeter's way) leave that out. At the
        model's own rate without the filter there is nothing to share (the masks sum to one, so the stems already
        add up to the mixture), and the work is skipped."""
        missing = in_rate != self.sample_rate or self.settings.wiener.active
        return self.settings.mask_extension != "zeros" and missing

    def output_stage(self, batch: int, in_channels: int, in_rate: int, holdback: int = HOLDBACK) -> OutputStage:
        """Brings an engine's stems back to ``in_rate`` and the input's channels (:meth:`shares_residual`), holding
        ``holdback`` samples back until the end (:class:`~unet_sep.separate.stages.OutputStage`)."""
        return OutputStage(batch, in_channels, in_rate, self.sample_rate, self.config.n_channels, len(self.stems),
                           share=self.shares_residual(in_rate), holdback=holdback)

    def plan_for(self, length: int | None = None, sample_rate: int | None = None) -> SegmentPlan:
        """The segment plan of a signal of ``length`` samples at ``sample_rate`` (default: the model's rate), made
        for that length (:meth:`SegmentPlan.for_length`; an estimate is fine); the plan of streams (``settings.plan``),
        when the length is unknown (None or 0)."""
        if not length:
            return self.settings.plan
        samples = round(length * self.sample_rate / (sample_rate or self.sample_rate))
        return self.settings.plan.for_length(num_frames(samples, self.config.stft.n_fft, self.config.stft.hop_length))

    def engine(self, groups: int, length: int | None = None, sample_rate: int | None = None) -> SeparationStream:
        """A fresh engine for one signal of ``groups`` channel groups, run by these U-Nets; ``length`` (samples at
        ``sample_rate``, when known or estimated) plans its segments (:meth:`plan_for`), and ``sample_rate`` (the
        input's; default the model's) says whether it keeps extension weights (:meth:`shares_residual`)."""
        return SeparationStream(self.config, self.plan_for(length, sample_rate), groups, self.settings,
                                extension_weights=self.shares_residual(sample_rate or self.sample_rate))

    # ---- running segments ---------------------------------------------------------------------------
    def run_ready(self, engines: Callable[[], Sequence[SeparationStream]], final: bool = False,
                  in_batch: list[SeparationStream] | None = None) -> Iterator[int]:
        """Run the ready segments of ``engines()`` through the U-Nets, ``batch_size`` at a time, while a full batch
        is ready (with ``final``, when no more input is coming: while any segment is).

        Yields the number of segments after each batch, so a caller can drain the engines between batches;
        ``engines`` is asked again before every batch (the set of signals in flight may change). ``in_batch``, when
        given, holds the engines with segments in the batch being run (see :meth:`run_batch`).
        """
        while True:
            current = engines()
            ready = sum(engine.ready() for engine in current)
            if ready == 0 or (ready < self.settings.batch_size and not final):
                return
            yield self.run_batch(current, self.settings.batch_size, in_batch)

    @torch.inference_mode()
    def run_batch(self, engines: Sequence[SeparationStream], limit: int,
                  in_batch: list[SeparationStream] | None = None) -> int:
        """Take up to ``limit`` ready segments from ``engines`` (in order), run them through the U-Nets as one
        batch and give every engine its estimates; returns the number of segments run.

        ``in_batch``, when given, is set to the engines the batch takes segments from, each before its segments are
        taken: when the batch fails (out of memory, say), those are the signals it leaves unusable, and only those.
        """
        taken = []
        count = 0
        if in_batch is not None:
            in_batch.clear()
        for engine in engines:
            want = min(engine.ready(), limit - count)
            if want > 0:
                if in_batch is not None:
                    in_batch.append(engine)
                batch, starts = engine.take(want)
                taken.append((engine, batch, starts))
                count += len(starts)
        if not taken:
            return 0
        inputs = torch.cat([batch for _, batch, _ in taken]) if len(taken) > 1 else taken[0][1]
        estimates = self.forward(inputs)
        offset = 0
        for engine, batch, starts in taken:
            engine.give(estimates[:, offset : offset + batch.shape[0]], starts)
            offset += batch.shape[0]
        return count

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The U-Nets on one batch ``[N, C, T, F]`` -> ``[S, N, C, T, F]``, in the chosen precision (float32 out),
        float32 convolutions in TF32 or not as :attr:`tf32` says (:func:`convolution_precision`). Compiled U-Nets
        get every batch padded to the batch size, so they are compiled once."""
        network = self.network()
        count = batch.shape[0]
        if self.settings.compile and count < self.settings.batch_size:
            # One graph for every batch: a smaller one is padded to the batch size, which costs less than compiling
            # each size (benchmarks/compile_batches.py). The segments of a batch do not mix, so padding changes none.
            padding = batch.new_zeros(self.settings.batch_size - count, *batch.shape[1:])
            batch = torch.cat([batch, padding]).contiguous(memory_format=self._layout)
        with convolution_precision(self.tf32):
            if self.settings.precision == "fp32":
                return network(batch)[:, :count]
            with torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.settings.precision]):
                return network(batch)[:, :count].float()

    def network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The U-Nets as run on segments, built on first use from the module's weights as they are then: the module
        made for inference on segments (:func:`~unet_sep.model.stems.inference_network`; the default), its
        TorchScript-frozen form (``optimize``) or its ``torch.compile`` form (``compile``); with the onnxruntime
        backend, the ONNX Runtime session made with the runner."""
        if self._network is None:
            assert self.net is not None  # the torch backend always has its module
            frames, bins = self.settings.plan.frames, self.config.frequency_bins
            if self.settings.optimize:
                example = torch.rand(1, self.config.n_channels, frames, bins,
                                     device=self.device).contiguous(memory_format=self._layout)
                self._network = freeze_for_inference(self.net, example)
                return self._network
            prepared = inference_network(self.net, frames, bins, self.settings.channels_last)
            self._network = torch.compile(prepared, dynamic=False) if self.settings.compile else prepared
        return self._network
