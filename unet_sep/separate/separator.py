"""The public entry point: a loaded model that turns waveforms or files into stems."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from unet_sep.audio.samples import from_float32, to_float32
from unet_sep.config import MASK_EXTENSIONS, PRECISIONS, ModelConfig
from unet_sep.device import resolve_device
from unet_sep.errors import SettingError
from unet_sep.model.stems import StemsNet, freeze_for_inference
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.batch import FileEvent, FileOptions, FilePipeline
from unet_sep.separate.inputs import InputFile
from unet_sep.separate.outputs import DEFAULT_TEMPLATE, OutputStems, check_template, output_paths
from unet_sep.separate.stages import InputStage, InvalidAudioError, OutputStage, check_layout
from unet_sep.separate.stream import SeparationStream
from unet_sep.weights.checkpoint import load_model
from unet_sep.weights.registry import resolve_model

logger = logging.getLogger(__name__)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_works() -> bool:
    """Whether the complex STFT, its inverse and a convolution run on MPS in this PyTorch build."""
    try:
        device = torch.device("mps")
        signal = torch.rand(1, 4096, device=device)
        window = torch.hann_window(1024, device=device)
        spec = torch.stft(signal, 1024, 256, window=window, return_complex=True)
        torch.istft(spec * spec.abs(), 1024, 256, window=window)
        torch.nn.functional.conv2d(torch.rand(1, 2, 16, 16, device=device), torch.rand(4, 2, 5, 5, device=device), stride=2)
        return True
    except Exception:  # any failure means: not usable here
        return False


@dataclass
class FileResult:
    """What :meth:`Separator.separate_file` did for one input."""

    input: Path
    outputs: dict[str, Path]
    skipped: bool
    seconds: float


class Separator:
    """A separation model ready to use.

    Args:
        net: the per-stem U-Nets.
        config: the model's configuration.
        device: "auto", "cpu", "cuda", "mps" or a torch device.
        segmentation: "overlap" (default: overlapping segments, cross-faded masks) or "spleeter" (back-to-back
            segments, exactly as Spleeter).
        overlap: overlap between segments as a fraction of the segment length (overlap mode only).
        batch_size: segments per U-Net batch (default 2 on the CPU, where larger batches are no faster and
            use more memory; 8 elsewhere).
        mask_extension: override the config's extension of masks above F ("zeros", "average", "last").
        channels_last: run the U-Nets in channels-last memory layout (default: on the CPU, where oneDNN's
            convolutions are faster with it; the numbers are the same to float precision).
        optimize: trace and freeze the U-Nets with TorchScript on first use (default: off; on this project's
            Zen 5 CPU machine eager channels-last is 1.3-1.5x faster, see benchmarks/spleeter_speed.py --variants).
        precision: "fp32" (default), "bf16" or "fp16": autocast of the U-Nets (masks, STFT and iSTFT stay fp32).
        compile: run the U-Nets through ``torch.compile`` (instead of TorchScript on the CPU).

    Example::

        sep = Separator.from_pretrained("path/to/model", device="cpu")
        stems = sep.separate(waveform, 44100)   # {"vocals": array like waveform, ...}
    """

    def __init__(
        self,
        net: StemsNet,
        config: ModelConfig,
        device: str | torch.device = "auto",
        segmentation: str = "overlap",
        overlap: float = 0.25,
        batch_size: int | None = None,
        mask_extension: str | None = None,
        channels_last: bool | None = None,
        optimize: bool = False,
        precision: str = "fp32",
        compile: bool = False,
    ) -> None:
        config.validate()
        if precision not in PRECISIONS:
            raise SettingError("precision", f"{precision!r} is not a precision; choose from {', '.join(PRECISIONS)}")
        self.config = config
        self.device = resolve_device(device)
        if self.device.type == "mps" and not _mps_works():
            logger.warning("mps: this PyTorch build cannot run the STFT and U-Nets on Apple's GPU; using the CPU")
            self.device = torch.device("cpu")
        self.precision = precision
        self.compile = compile
        if channels_last is None:
            channels_last = self.device.type in ("cpu", "cuda")
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(self.device, memory_format=layout).eval()
        self.channels_last = channels_last
        self.optimize = optimize and not compile
        self._runner: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.plan = SegmentPlan.create(config.segment_frames, overlap, 2 ** config.unet.depth, segmentation)
        if batch_size is not None and batch_size < 1:
            raise SettingError("batch_size", f"must be a positive number of segments, got {batch_size}")
        self.batch_size = batch_size or (2 if self.device.type == "cpu" else 8)
        self.mask_extension = mask_extension or config.mask_extension
        if self.mask_extension not in MASK_EXTENSIONS:
            raise SettingError("mask_extension", f"{self.mask_extension!r} is not a mask extension; "
                                                 f"choose from {', '.join(MASK_EXTENSIONS)}")

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "auto", **options) -> "Separator":
        """Load a registered model name or a model folder (see ``unet-sep models``)."""
        folder = resolve_model(name_or_path)
        config, net = load_model(folder)
        return cls(net, config, device=device, **options)

    @property
    def stems(self) -> list[str]:
        return list(self.config.stems)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    # ---- in memory ---------------------------------------------------------------------------------
    def separate(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> dict[str, np.ndarray | torch.Tensor]:
        """Separate ``[samples]``, ``[channels, samples]`` or ``[batch, channels, samples]`` audio.

        Returns ``{stem: waveform}`` with the input's shape, sample rate and type: numpy in, numpy out; torch in,
        torch out on the input's device; the input's dtype. Float samples are expected in [-1, 1]. Integer
        samples are scaled from their type's full range and the stems come back in that type, rounded and
        clipped to its range (clipped samples are counted in a logged warning); the stems then add up to the
        input within one step per stem (32-bit integers: within float32's resolution, in which the work is
        done). A ``[samples, channels]`` array (soundfile's layout) is refused before anything is allocated for
        it: pass its transpose.
        """
        shape = tuple(waveform.shape)
        if len(shape) not in (1, 2, 3):
            raise InvalidAudioError(f"expected [samples], [channels, samples] or [batch, channels, samples], got shape {shape}")
        if len(shape) > 1:
            check_layout(shape, samples=shape[-1])
        is_torch = isinstance(waveform, torch.Tensor)
        if is_torch:
            tensor = waveform.detach().cpu()
            array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        else:
            array = np.asarray(waveform)
        try:
            audio = to_float32(array).reshape((1,) * (3 - array.ndim) + array.shape)
        except TypeError as error:
            raise InvalidAudioError(str(error)) from error
        if audio.shape[-1] == 0:
            stems = np.zeros((len(self.stems),) + audio.shape, dtype=np.float32)
        else:
            stems = np.concatenate(list(self.stream([audio], int(sample_rate))), axis=-1)
        result: dict[str, np.ndarray | torch.Tensor] = {}
        for i, stem in enumerate(self.stems):
            out, clipped = from_float32(stems[i].reshape(array.shape), array.dtype)
            if clipped:
                logger.warning("%s: %d samples clipped to the range of %s", stem, clipped, array.dtype)
            result[stem] = torch.from_numpy(out).to(waveform.device, waveform.dtype) if is_torch else out
        return result

    # ---- streaming ---------------------------------------------------------------------------------
    def stream(
        self,
        blocks: Iterable[np.ndarray],
        sample_rate: int,
        progress: Callable[[int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Separate a stream of ``[batch, channels, n]`` float32 blocks at ``sample_rate``.

        Yields ``[stems, batch, channels, m]`` blocks at the same rate; all together exactly as many samples
        as came in. ``progress(n)`` is called with the input samples consumed after each block.
        Raises :class:`InvalidAudioError` on NaN or infinite samples, and before any work on blocks whose layout
        is not ``[batch, channels, n]`` (e.g. more channels than real audio has: see :func:`check_layout`).
        """
        iterator = iter(blocks)
        first = next(iterator, None)
        if first is None:
            return
        if np.ndim(first) != 3:
            raise InvalidAudioError(f"stream blocks must be [batch, channels, n], got shape {np.shape(first)}")
        check_layout(first.shape)
        batch, in_channels = first.shape[:2]
        front = InputStage(batch, in_channels, sample_rate, self.sample_rate, self.config.n_channels)
        back = OutputStage(batch, in_channels, sample_rate, self.sample_rate, self.config.n_channels, len(self.stems),
                           share=self.mask_extension != "zeros")
        engine = self.engine(front.groups)
        block: np.ndarray | None = first
        while block is not None:
            block = front.check(block)
            back.add_input(block)
            engine.feed(front.process(block))
            while engine.ready() >= self.batch_size:
                self.run_batch([engine], self.batch_size)
            yield from back.push(*engine.drain())
            if progress is not None:
                progress(front.consumed)
            block = next(iterator, None)
        engine.feed(front.flush())
        engine.close()
        while engine.ready() > 0:
            self.run_batch([engine], self.batch_size)
        yield from back.push(*engine.drain(), final=True)

    def engine(self, groups: int) -> SeparationStream:
        """A fresh engine for one signal of ``groups`` channel groups, sharing this separator's U-Nets."""
        return SeparationStream(
            self.config, self.plan, groups, mask_extension=self.mask_extension, device=self.device,
            channels_last=self.channels_last,
        )

    @torch.inference_mode()
    def run_batch(self, engines: list[SeparationStream], limit: int) -> int:
        """Take up to ``limit`` ready segments from ``engines`` (in order), run them through the U-Nets as one
        batch and give every engine its masks; returns the number of segments run."""
        taken = []
        count = 0
        for engine in engines:
            want = min(engine.ready(), limit - count)
            if want > 0:
                batch, starts = engine.take(want)
                taken.append((engine, batch, starts))
                count += len(starts)
        if not taken:
            return 0
        inputs = torch.cat([batch for _, batch, _ in taken]) if len(taken) > 1 else taken[0][1]
        estimates = self._forward(inputs)
        offset = 0
        for engine, batch, starts in taken:
            engine.give(estimates[:, offset : offset + batch.shape[0]], starts)
            offset += batch.shape[0]
        return count

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """The U-Nets on one batch ``[N, C, T, F]`` -> ``[S, N, C, T, F]``, in the chosen precision."""
        network = self._network()
        if self.precision == "fp32":
            return network(batch)
        with torch.autocast(self.device.type, dtype=_AUTOCAST_DTYPES[self.precision]):
            return network(batch).float()

    def _network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The U-Nets as run on segments, built once: the module itself (the default), its TorchScript-frozen
        form (``optimize``) or its ``torch.compile`` form (``compile``)."""
        if self._runner is None:
            if self.compile:
                self._runner = torch.compile(self.net, dynamic=False)
            elif self.optimize:
                layout = torch.channels_last if self.channels_last else torch.contiguous_format
                example = torch.rand(1, self.config.n_channels, self.plan.frames, self.config.frequency_bins,
                                     device=self.device).contiguous(memory_format=layout)
                self._runner = freeze_for_inference(self.net, example)
            else:
                self._runner = self.net
        return self._runner

    # ---- files -------------------------------------------------------------------------------------
    def output_paths(
        self, path: str | Path | InputFile, out_dir: str | Path, template: str = DEFAULT_TEMPLATE, fmt: str = "wav",
        stems: Iterable[str] | None = None, two_stems: str | None = None,
    ) -> dict[str, Path]:
        """Where :meth:`separate_file` writes each stem of ``path`` (see :mod:`unet_sep.separate.outputs`)."""
        check_template(template)
        selected = OutputStems.choose(self.stems, None if stems is None else list(stems), two_stems)
        return output_paths(InputFile.of(path), Path(out_dir), template, fmt, selected.names, self.config.name or "model")

    def separate_file(
        self,
        path: str | Path,
        out_dir: str | Path,
        template: str = DEFAULT_TEMPLATE,
        fmt: str = "wav",
        bit_depth: str | None = None,
        stems: Iterable[str] | None = None,
        offset: float = 0.0,
        duration: float | None = None,
        overwrite: bool = False,
        sample_rate: int | None = None,
        progress: Callable[[int, int], None] | None = None,
        bitrate: int | None = None,
        two_stems: str | None = None,
    ) -> FileResult:
        """Separate one file into ``out_dir``, streaming: memory does not grow with the file's length.

        Each stem is written under a temporary name and renamed when complete; on any error (or Ctrl-C)
        the temporary files are removed and nothing is left under the final names. Existing outputs are
        kept (``skipped=True``) unless ``overwrite``. ``bit_depth`` defaults to the input's own (16 or 24-bit
        PCM; float WAV for float and lossy inputs, 24-bit FLAC). ``sample_rate`` resamples the stems (default:
        the input's rate). ``bitrate`` (kbit/s) is for mp3 and ogg. ``two_stems="vocals"`` writes ``vocals`` and
        ``no_vocals`` (the sum of the other stems). ``progress(done, total)`` counts input samples.
        Raises :class:`~unet_sep.errors.SettingError` for an unusable setting, and for a file that fails
        :class:`AudioDecodeError`, :class:`AudioEncodeError`, :class:`InvalidAudioError` or
        :class:`~unet_sep.separate.outputs.OutputPathError`, whose messages name the file.
        """
        options = FileOptions(Path(out_dir), template, fmt, bit_depth, bitrate, None if stems is None else list(stems),
                              two_stems, offset, duration, overwrite, sample_rate)

        def report(event: FileEvent) -> None:
            if progress is not None and event.kind in ("progress", "done"):
                progress(event.done, event.total)

        (event,) = FilePipeline(self, options, readers=1).run([path], on_event=report)
        if event.kind == "failed":
            raise event.error
        return FileResult(Path(path), event.outputs, skipped=event.kind == "skipped", seconds=event.seconds)

    def separate_files(
        self,
        paths: Iterable[str | Path | InputFile],
        out_dir: str | Path,
        on_event: Callable[[FileEvent], None] | None = None,
        readers: int = 2,
        **options,
    ) -> list[FileEvent]:
        """Separate many files, batching U-Net segments across songs, decoding and encoding in threads.

        ``options`` are :class:`~unet_sep.separate.batch.FileOptions` fields (``template``, ``fmt``, ``stems``,
        ...). ``paths`` may be :class:`~unet_sep.separate.inputs.InputFile` entries from
        :func:`~unet_sep.separate.inputs.expand_inputs` (folders and globs, with their ``{dir}``). A file that fails
        does not stop the others: every input gets one final event ("done", "skipped", or "failed" with an error
        naming the file and no outputs); ``on_event`` also sees progress events.
        """
        return FilePipeline(self, FileOptions(Path(out_dir), **options), readers=readers).run(paths, on_event)
