"""The settings of a separation, declared once: each with its type and default in :class:`SeparationSettings`,
which the command line (``unet-sep separate``, ``unet-sep evaluate``), :class:`~unet_sep.separate.separator.Separator`,
torch.hub's entry, the evaluation and training's validation all build and pass on.

A :class:`SeparationSettings` is checked when it is made (:meth:`~SeparationSettings.validate`: a
:class:`~unet_sep.errors.SettingError` names the first setting that cannot be used), before any model is read, and
resolved once against a model's config and this machine (:meth:`~SeparationSettings.resolve`) into the values the
runner and its streams use (:class:`ResolvedSettings`): the model's own mask extension and Wiener iterations, the
device's batch size and memory layout, the segment plan.

The module imports no torch until a setting is checked, so the command line's help reads its defaults from here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from unet_sep.config import DEFAULT_WIENER_WINDOW, MASK_EXTENSIONS, MAX_WIENER_ITERATIONS, PRECISIONS
from unet_sep.errors import SettingError

if TYPE_CHECKING:
    import torch

    from unet_sep.config import ModelConfig
    from unet_sep.separate.segments import SegmentPlan
    from unet_sep.separate.wiener_window import WienerSettings

SEGMENTATIONS = ("overlap", "spleeter")
BACKENDS = ("torch", "onnxruntime")
DEFAULT_BACKEND = "torch"  # what runs the U-Nets when none is named (an ONNX file is onnxruntime's)
MAX_OVERLAP = 0.75  # the most overlap between segments, as a fraction of a segment
# Segments per U-Net batch when none is given: a GPU gains from larger batches, the CPU does not.
CPU_BATCH_SIZE = 2
GPU_BATCH_SIZE = 8
# Most segments per U-Net batch: a batch's activations grow with it (Spleeter's U-Nets: about 0.2 GB per segment
# and stem), and beyond a few dozen a GPU gains nothing more.
MAX_BATCH_SIZE = 256
MIN_WIENER_WINDOW = 4  # STFT frames: a window of statistics over fewer is no window
MAX_LIVE_LATENCY = 60.0  # seconds: the most delay a live session is planned for


@dataclass(frozen=True)
class SeparationSettings:
    """How a model separates; every field has the default the whole package uses. Checked when made
    (:meth:`validate`).

    Args:
        device: "auto", "cpu", "cuda", "cuda:N", "mps" or a torch device ("auto": CUDA, then MPS, then the CPU;
            MPS where this PyTorch build cannot run the STFT and U-Nets on it: the CPU, with a warning).
        segmentation: "overlap" (overlapping segments, cross-faded masks) or "spleeter" (back-to-back segments,
            exactly as Spleeter).
        overlap: overlap between segments as a fraction of the segment length, 0 to :data:`MAX_OVERLAP` (overlap
            mode only): the overlap of streams of unknown length, and the least overlap of songs of known length,
            which get the fewest segments that keep it. None: :data:`~unet_sep.separate.segments.STREAM_OVERLAP`
            for streams; songs of known length (arrays, files) the fewest segments overlapping by at least one
            stride step (``2 ** depth`` frames), spread evenly
            (:meth:`SegmentPlan.for_length <unet_sep.separate.segments.SegmentPlan.for_length>`).
        batch_size: segments per U-Net batch, 1 to :data:`MAX_BATCH_SIZE`; None: :data:`CPU_BATCH_SIZE` on the CPU,
            :data:`GPU_BATCH_SIZE` elsewhere.
        mask_extension: how masks are extended above the model's band (one of ``MASK_EXTENSIONS``); None: the
            model config's.
        channels_last: run the U-Nets in channels-last memory layout; None: on the CPU and CUDA with the torch
            backend (the numbers are the same to float precision).
        optimize: trace and freeze the U-Nets with TorchScript on first use (the README's speed section and
            ``benchmarks/spleeter_speed.py --variants`` compare it with the default).
        precision: "fp32", "bf16" or "fp16": autocast of the U-Nets (masks, STFT and iSTFT stay fp32).
        compile: run the U-Nets through ``torch.compile`` (``optimize`` is then ignored).
        backend: "torch" or "onnxruntime": the U-Nets exported to ONNX and run by ONNX Runtime (the ``onnx`` extra;
            STFT, masks and inverse STFT stay in torch; fp32 only, no ``compile`` or ``optimize``). None:
            :data:`DEFAULT_BACKEND`, or onnxruntime for an ONNX file given as the model.
        onnx_path: with "onnxruntime", the ONNX file to run (from :func:`~unet_sep.weights.onnx_export.export_onnx`);
            None: the network exported in memory.
        wiener_iterations: multichannel Wiener (EM) iterations after the masks, 0 to ``MAX_WIENER_ITERATIONS``
            (0: the ratio masks alone); None: the model config's. With ``segmentation="spleeter"`` this is
            Spleeter's ``MWF=True`` (1 iteration from softmask estimates, statistics over the whole track).
        wiener_window: STFT frames the filter's statistics are taken over (0: the whole track; else at least
            :data:`MIN_WIENER_WINDOW`); None: the whole track in Spleeter-exact mode, else
            :data:`~unet_sep.config.DEFAULT_WIENER_WINDOW`, so memory stays bounded.
        live_latency: the most seconds of delay a live session (:mod:`unet_sep.separate.live`) is planned for when
            none is given, above 0 and at most :data:`MAX_LIVE_LATENCY`. The default, 1 s, gave the bundled model's
            offline MIR-1K vocals GNSDR (within 0.1 dB) at a tenth of a CPU second per second of audio; 0.25 s
            loses 0.9 dB and costs three times more (``docs/live.md``).
        live_segment_frames: STFT frames of a live session's segments, a positive multiple of the U-Nets' stride
            ``2 ** depth`` (checked with the model); None:
            :data:`~unet_sep.separate.live.DEFAULT_SEGMENT_FRAMES`, or the model's own length when shorter.
        live_lookahead: the share of a live session's delay spent on frames after those it gives (future context),
            from 0 up to (not including) 1; the rest is the hop between its segments, so more lookahead costs
            more segments.
    """

    device: str | torch.device = "auto"
    segmentation: str = "overlap"
    overlap: float | None = None
    batch_size: int | None = None
    mask_extension: str | None = None
    channels_last: bool | None = None
    optimize: bool = False
    precision: str = "fp32"
    compile: bool = False
    backend: str | None = None
    onnx_path: str | Path | None = None
    wiener_iterations: int | None = None
    wiener_window: int | None = None
    live_latency: float = 1.0
    live_segment_frames: int | None = None
    live_lookahead: float = 0.5

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def of(cls, settings: SeparationSettings | None, options: SeparationOptions) -> SeparationSettings:
        """``settings`` (default: the defaults) with the fields ``options`` names replaced."""
        if settings is None:
            return cls(**options)
        return dataclasses.replace(settings, **options) if options else settings

    def validate(self) -> None:
        """A :class:`~unet_sep.errors.SettingError` naming the first setting that cannot be used, alone or with the
        others (onnxruntime runs the exported U-Nets in fp32, without ``compile`` or ``optimize``); for
        onnxruntime, :class:`~unet_sep.extras.MissingExtraError` when it is not installed."""
        self._check_network()
        from unet_sep.device import resolve_device

        resolve_device(self.device)
        if self.segmentation not in SEGMENTATIONS:
            raise SettingError("segmentation", f"{self.segmentation!r} is not a segmentation; choose from "
                                               f"{', '.join(SEGMENTATIONS)}")
        if self.segmentation == "overlap" and self.overlap is not None and not 0.0 <= self.overlap <= MAX_OVERLAP:
            raise SettingError("overlap", f"must be a fraction of the segment from 0 to {MAX_OVERLAP}, got "
                                          f"{self.overlap}")
        if self.batch_size is not None and not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise SettingError("batch_size", f"must be from 1 to {MAX_BATCH_SIZE} segments, got {self.batch_size}")
        if self.mask_extension is not None and self.mask_extension not in MASK_EXTENSIONS:
            raise SettingError("mask_extension", f"{self.mask_extension!r} is not a mask extension; "
                                                 f"choose from {', '.join(MASK_EXTENSIONS)}")
        iterations, window = self.wiener_iterations, self.wiener_window
        if iterations is not None and not (_whole(iterations) and 0 <= iterations <= MAX_WIENER_ITERATIONS):
            raise SettingError("wiener_iterations", f"must be a whole number from 0 to {MAX_WIENER_ITERATIONS}, "
                                                    f"got {iterations!r}")
        if window is not None and not (_whole(window) and (window == 0 or window >= MIN_WIENER_WINDOW)):
            raise SettingError("wiener_window", f"must be 0 (the whole track) or a number of STFT frames of "
                                                f"{MIN_WIENER_WINDOW} or more, got {window!r}")
        self._check_live()

    def _check_live(self) -> None:
        """The live session's settings (the segment length's stride grid is the model's: checked with it)."""
        latency, frames, lookahead = self.live_latency, self.live_segment_frames, self.live_lookahead
        if not (_real(latency) and 0.0 < latency <= MAX_LIVE_LATENCY):
            raise SettingError("live_latency", f"must be seconds above 0 and at most {MAX_LIVE_LATENCY:g}, got "
                                               f"{latency!r}")
        if frames is not None and not (_whole(frames) and frames > 0):
            raise SettingError("live_segment_frames", f"must be a positive number of STFT frames, got {frames!r}")
        if not (_real(lookahead) and 0.0 <= lookahead < 1.0):
            raise SettingError("live_lookahead", f"must be a share from 0 up to (not including) 1, got {lookahead!r}")

    def _check_network(self) -> None:
        """The settings of what runs the U-Nets: precision, backend and what the backend can honour."""
        if self.precision not in PRECISIONS:
            raise SettingError("precision", f"{self.precision!r} is not a precision; choose from "
                                            f"{', '.join(PRECISIONS)}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise SettingError("backend", f"{self.backend!r} is not a backend; choose from {', '.join(BACKENDS)}")
        if self.backend != "onnxruntime":
            if self.onnx_path is not None:
                raise SettingError("onnx_path", "an ONNX file is run by the onnxruntime backend only")
            return
        if self.precision != "fp32":
            raise SettingError("precision", f"{self.precision!r} is for the torch backend; onnxruntime runs the "
                                            "exported U-Nets in fp32")
        if self.compile:
            raise SettingError("compile", "torch.compile is for the torch backend, not onnxruntime")
        if self.optimize:
            raise SettingError("optimize", "TorchScript optimisation is for the torch backend, not onnxruntime")
        from unet_sep.separate.onnx_network import require_onnxruntime

        require_onnxruntime()

    def resolve(self, config: ModelConfig) -> ResolvedSettings:
        """These settings for ``config``'s model on this machine: every None filled with the model's own value or
        the device's (see the fields), the device chosen (:func:`~unet_sep.device.separation_device`) and the
        segment plan made."""
        from unet_sep.device import separation_device
        from unet_sep.separate.segments import SegmentPlan
        from unet_sep.separate.wiener_window import WienerSettings

        device = separation_device(self.device)
        backend = self.backend or DEFAULT_BACKEND
        exact = self.segmentation == "spleeter"
        iterations = config.wiener_iterations if self.wiener_iterations is None else self.wiener_iterations
        window = (0 if exact else DEFAULT_WIENER_WINDOW) if self.wiener_window is None else self.wiener_window
        # ONNX Runtime takes contiguous arrays: channels-last segments would only add a copy.
        layout = device.type in ("cpu", "cuda") and backend == "torch"
        return ResolvedSettings(
            device=device,
            plan=SegmentPlan.create(config.segment_frames, self.overlap, 2 ** config.unet.depth, self.segmentation),
            batch_size=self.batch_size or (CPU_BATCH_SIZE if device.type == "cpu" else GPU_BATCH_SIZE),
            mask_extension=self.mask_extension or config.mask_extension,
            channels_last=layout if self.channels_last is None else self.channels_last,
            optimize=self.optimize and not self.compile,
            precision=self.precision,
            compile=self.compile,
            backend=backend,
            onnx_path=None if self.onnx_path is None else Path(self.onnx_path),
            wiener=WienerSettings(iterations, window, softmask=exact),
            # TF32 convolutions (cuDNN's default on a GPU) put the stems 66-75 dB from float32 (emulated on the CPU,
            # benchmarks/tf32.py). Spleeter-exact mode promises Spleeter's numbers (99-103 dB): float32. The default
            # mode keeps TF32: its error is 55 dB under the model's own (MIR-1K SDR 9.58 dB, changed by 0.0001 dB).
            tf32=not exact,
            live_latency=self.live_latency,
            live_segment_frames=self.live_segment_frames,
            live_lookahead=self.live_lookahead,
        )


def _real(value: object) -> bool:
    """Whether ``value`` is a finite real number (an int or float, not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    """Whether ``value`` is a whole number (an int, not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)


class SeparationOptions(TypedDict, total=False):
    """:class:`SeparationSettings`' fields as keyword arguments (``**options: Unpack[SeparationOptions]``), so that
    type checkers see the names and types of ``Separator(...)``'s settings; the defaults are the dataclass's alone
    (``tests/test_settings.py`` checks that the two list the same fields with the same types)."""

    device: str | torch.device
    segmentation: str
    overlap: float | None
    batch_size: int | None
    mask_extension: str | None
    channels_last: bool | None
    optimize: bool
    precision: str
    compile: bool
    backend: str | None
    onnx_path: str | Path | None
    wiener_iterations: int | None
    wiener_window: int | None
    live_latency: float
    live_segment_frames: int | None
    live_lookahead: float


@dataclass(frozen=True)
class ResolvedSettings:
    """:class:`SeparationSettings` resolved for one model on this machine (:meth:`SeparationSettings.resolve`):
    nothing left to default, what :class:`~unet_sep.separate.runner.NetworkRunner` and its streams use.

    ``plan`` is the segment plan of streams of unknown length; ``optimize`` is off when ``compile`` is on;
    ``tf32``, whether the U-Nets' float32 convolutions may run as TF32 on a GPU (not in Spleeter-exact mode); the
    live settings as given (a live session's plan also depends on its latency and rate:
    :func:`~unet_sep.separate.live.live_plan`).
    """

    device: torch.device
    plan: SegmentPlan
    batch_size: int
    mask_extension: str
    channels_last: bool
    optimize: bool
    precision: str
    compile: bool
    backend: str
    onnx_path: Path | None
    wiener: WienerSettings
    tf32: bool
    live_latency: float
    live_segment_frames: int | None
    live_lookahead: float
