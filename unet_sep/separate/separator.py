"""The public entry point: a loaded model that turns waveforms or files into stems."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from unet_sep.config import ModelConfig
from unet_sep.model.stems import StemsNet, freeze_for_inference
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.batch import FileEvent, FileOptions, FilePipeline
from unet_sep.separate.stages import InputStage, InvalidAudioError, OutputStage
from unet_sep.separate.stream import SeparationStream
from unet_sep.weights.checkpoint import load_model
from unet_sep.weights.registry import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
PRECISIONS = ("fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" picks CUDA, then Apple's MPS, then the CPU; an explicit device that is absent is an error."""
    name = str(device)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise RuntimeError("--device mps: Apple's MPS backend is not available")
    return torch.device(name)


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
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
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
        self.batch_size = batch_size or (2 if self.device.type == "cpu" else 8)
        self.mask_extension = mask_extension or config.mask_extension
        if self.mask_extension not in ("zeros", "average", "last"):
            raise ValueError(f"mask_extension must be zeros, average or last, got {self.mask_extension!r}")

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

        Returns ``{stem: waveform}`` with the input's shape, sample rate and type (numpy in, numpy out;
        torch in, torch out on the input's device). Float samples are expected in [-1, 1]; integer arrays
        are scaled from their type's full range.
        """
        is_torch = isinstance(waveform, torch.Tensor)
        array = waveform.detach().cpu().numpy() if is_torch else np.asarray(waveform)
        if array.ndim not in (1, 2, 3):
            raise InvalidAudioError(f"expected [samples], [channels, samples] or [batch, channels, samples], got shape {array.shape}")
        if np.issubdtype(array.dtype, np.integer):
            array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
        audio = array.astype(np.float32, copy=False).reshape((1,) * (3 - array.ndim) + array.shape)
        if audio.shape[1] < 1:
            raise InvalidAudioError("audio has no channels")
        if audio.shape[-1] == 0:
            stems = np.zeros((len(self.stems),) + audio.shape, dtype=np.float32)
        else:
            stems = np.concatenate(list(self.stream([audio], int(sample_rate))), axis=-1)
        result: dict[str, np.ndarray | torch.Tensor] = {}
        for i, stem in enumerate(self.stems):
            out = stems[i].reshape(array.shape)
            result[stem] = torch.from_numpy(out).to(waveform.device) if is_torch else out
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
        Raises :class:`InvalidAudioError` on NaN or infinite samples.
        """
        iterator = iter(blocks)
        first = next(iterator, None)
        if first is None:
            return
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
        self, path: Path, out_dir: Path, template: str = DEFAULT_TEMPLATE, fmt: str = "wav", stems: Iterable[str] | None = None
    ) -> dict[str, Path]:
        """Where :meth:`separate_file` writes each stem of ``path``."""
        selected = self._select(stems)
        paths = {}
        for stem in selected:
            try:
                relative = template.format(track=path.stem, stem=stem, ext=fmt, model=self.config.name or "model")
            except (KeyError, IndexError, ValueError) as error:
                raise ValueError(f"bad filename template {template!r}: {error}") from error
            paths[stem] = Path(out_dir) / relative
        if len(set(paths.values())) != len(paths):
            raise ValueError(f"filename template {template!r} gives several stems the same file name; use {{stem}}")
        return paths

    def _select(self, stems: Iterable[str] | None) -> list[str]:
        if stems is None:
            return self.stems
        selected = list(dict.fromkeys(stems))
        unknown = [s for s in selected if s not in self.stems]
        if unknown:
            raise ValueError(f"unknown stem(s) {', '.join(unknown)}; this model has {', '.join(self.stems)}")
        return selected

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
    ) -> FileResult:
        """Separate one file into ``out_dir``, streaming: memory does not grow with the file's length.

        Each stem is written under a temporary name and renamed when complete; on any error (or Ctrl-C)
        the temporary files are removed and nothing is left under the final names. Existing outputs are
        kept (``skipped=True``) unless ``overwrite``. ``sample_rate`` resamples the stems (default: the
        input's rate). ``progress(done, total)`` counts input samples.
        Raises :class:`AudioDecodeError`, :class:`AudioEncodeError`, :class:`InvalidAudioError` or
        ``ValueError`` with a one-line message.
        """
        options = FileOptions(Path(out_dir), template, fmt, bit_depth, None if stems is None else list(stems),
                              offset, duration, overwrite, sample_rate)

        def report(event: FileEvent) -> None:
            if progress is not None and event.kind in ("progress", "done"):
                progress(event.done, event.total)

        (event,) = FilePipeline(self, options, readers=1).run([path], on_event=report)
        if event.kind == "failed":
            raise event.error
        return FileResult(Path(path), event.outputs, skipped=event.kind == "skipped", seconds=event.seconds)

    def separate_files(
        self,
        paths: Iterable[str | Path],
        out_dir: str | Path,
        on_event: Callable[[FileEvent], None] | None = None,
        readers: int = 2,
        **options,
    ) -> list[FileEvent]:
        """Separate many files, batching U-Net segments across songs, decoding and encoding in threads.

        ``options`` are :class:`~unet_sep.separate.batch.FileOptions` fields (``template``, ``fmt``, ``stems``,
        ...). A file that fails does not stop the others: every input gets one final event ("done",
        "skipped" or "failed" with its one-line error); ``on_event`` also sees progress events.
        """
        return FilePipeline(self, FileOptions(Path(out_dir), **options), readers=readers).run(paths, on_event)
