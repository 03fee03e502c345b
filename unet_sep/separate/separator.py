"""The public entry point: a loaded model that turns waveforms or files into stems."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from unet_sep.audio.resample import check_sample_rate
from unet_sep.audio.samples import from_float32, to_float32
from unet_sep.config import CONFIG_FILE, ModelConfig
from unet_sep.errors import SettingError
from unet_sep.model.stems import StemsNet
from unet_sep.separate.files import FileEvent, FileOptions
from unet_sep.separate.inputs import InputFile
from unet_sep.separate.outputs import DEFAULT_TEMPLATE, OutputStems, check_template, output_paths
from unet_sep.separate.pipeline import FilePipeline
from unet_sep.separate.runner import NetworkRunner, check_network_settings
from unet_sep.separate.stages import BLOCK_SAMPLES, InvalidAudioError, check_array, check_layout
from unet_sep.weights.checkpoint import load_model
from unet_sep.weights.entries import ModelNotFoundError
from unet_sep.weights.onnx_export import cached_onnx_export, read_onnx_config
from unet_sep.weights.registry import resolve_model

logger = logging.getLogger(__name__)


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
        net: the per-stem U-Nets (None when ``onnx_path`` gives them).
        config: the model's configuration.
        device: "auto", "cpu", "cuda", "cuda:N", "mps" or a torch device ("auto": CUDA, then MPS, then the CPU;
            MPS where this PyTorch build cannot run the STFT and U-Nets on it: the CPU, with a warning).
        segmentation: "overlap" (default: overlapping segments, cross-faded masks) or "spleeter" (back-to-back
            segments, exactly as Spleeter).
        overlap: overlap between segments as a fraction of the segment length, 0 to 0.75 (overlap mode only): the
            overlap of streams of unknown length, and the least overlap of songs of known length, which get the
            fewest segments that keep it. Default (None): 0.25 for streams; songs of known length (arrays, files)
            the fewest segments overlapping by at least one stride step (``2 ** depth`` frames), spread evenly
            (:meth:`SegmentPlan.for_length <unet_sep.separate.segments.SegmentPlan.for_length>`).
        batch_size: segments per U-Net batch (default 2 on the CPU, 8 elsewhere).
        mask_extension: override the config's extension of masks above F (see ``MASK_EXTENSIONS``).
        wiener_iterations: multichannel Wiener (EM) iterations after the masks (default: the model config's, 0 for
            most: the ratio masks alone). With ``segmentation="spleeter"`` this is Spleeter's ``MWF=True`` (1
            iteration from softmask estimates, statistics over the whole track).
        wiener_window: frames the filter's statistics are taken over (default: the whole track in Spleeter-exact
            mode, else :data:`~unet_sep.separate.wiener_window.DEFAULT_WIENER_WINDOW`, so memory stays bounded;
            0: the whole track).
        channels_last: run the U-Nets in channels-last memory layout (default: on the CPU and CUDA; the numbers
            are the same to float precision).
        optimize: trace and freeze the U-Nets with TorchScript on first use (default: off; the README's speed
            section and ``benchmarks/spleeter_speed.py --variants`` compare it with the default).
        precision: "fp32" (default), "bf16" or "fp16": autocast of the U-Nets (masks, STFT and iSTFT stay fp32).
        compile: run the U-Nets through ``torch.compile`` (``optimize`` is then ignored).
        backend: "torch" (default) or "onnxruntime": the U-Nets exported to ONNX and run by ONNX Runtime (the
            ``onnx`` extra; STFT, masks and inverse STFT stay in torch; fp32 only, no ``compile`` or ``optimize``).
        onnx_path: with "onnxruntime", the ONNX file to run (from :func:`~unet_sep.weights.onnx_export.export_onnx`);
            default: ``net`` exported in memory.

    Raises :class:`~unet_sep.errors.SettingError` naming the first setting that cannot be used. The network and
    its settings live in :attr:`runner` (:class:`~unet_sep.separate.runner.NetworkRunner`).

    Example::

        sep = Separator.from_pretrained("path/to/model", device="cpu")
        stems = sep.separate(waveform, 44100)   # {"vocals": array like waveform, ...}
    """

    def __init__(
        self,
        net: StemsNet | None,
        config: ModelConfig,
        device: str | torch.device = "auto",
        segmentation: str = "overlap",
        overlap: float | None = None,
        batch_size: int | None = None,
        mask_extension: str | None = None,
        channels_last: bool | None = None,
        optimize: bool = False,
        precision: str = "fp32",
        compile: bool = False,
        backend: str = "torch",
        onnx_path: str | Path | None = None,
        wiener_iterations: int | None = None,
        wiener_window: int | None = None,
    ) -> None:
        self.runner = NetworkRunner(net, config, device=device, segmentation=segmentation, overlap=overlap,
                                    batch_size=batch_size, mask_extension=mask_extension, channels_last=channels_last,
                                    optimize=optimize, precision=precision, compile=compile, backend=backend,
                                    onnx_path=onnx_path, wiener_iterations=wiener_iterations,
                                    wiener_window=wiener_window)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, device: str | torch.device = "auto", backend: str | None = None,
                        **options) -> "Separator":
        """Load a registered model name, a model folder (see ``unet-sep models``) or an ONNX file written by
        ``unet-sep models export``; ``options`` as the constructor's.

        ``backend`` defaults to "torch", and to "onnxruntime" for an ONNX file. With "onnxruntime" and a name or
        folder, the U-Nets are exported to ONNX on first use and the export is kept in the cache
        (:func:`~unet_sep.weights.onnx_export.cached_onnx_export`).
        """
        onnx_file = Path(str(name_or_path)).suffix.lower() == ".onnx"
        if onnx_file and backend not in (None, "onnxruntime"):
            raise SettingError("backend", f"{name_or_path} is an ONNX file, which only onnxruntime runs")
        backend = "onnxruntime" if onnx_file else backend or "torch"
        if backend != "torch":  # checked before reading or exporting (seconds, the first time) the ONNX file
            check_network_settings(options.get("precision", "fp32"), backend, options.get("compile", False),
                                   options.get("optimize", False))
        if onnx_file:
            if not Path(name_or_path).is_file():
                raise ModelNotFoundError(f"{name_or_path}: no such ONNX file")
            config = read_onnx_config(name_or_path)
            return cls(None, config, device=device, backend=backend, onnx_path=name_or_path, **options)
        folder = resolve_model(name_or_path)
        if backend == "onnxruntime":
            return cls(None, ModelConfig.load(folder / CONFIG_FILE), device=device, backend=backend,
                       onnx_path=cached_onnx_export(folder), **options)
        config, net = load_model(folder)
        return cls(net, config, device=device, backend=backend, **options)

    @property
    def config(self) -> ModelConfig:
        return self.runner.config

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def stems(self) -> list[str]:
        return self.runner.stems

    @property
    def sample_rate(self) -> int:
        return self.runner.sample_rate

    # ---- in memory ---------------------------------------------------------------------------------
    def separate(self, waveform: np.ndarray | torch.Tensor, sample_rate: int) -> dict[str, np.ndarray | torch.Tensor]:
        """Separate ``[samples]``, ``[channels, samples]`` or ``[batch, channels, samples]`` audio.

        ``waveform`` is a numpy array or a torch tensor; ``sample_rate`` a whole number of Hz from 8000 to 192000
        (a :class:`~unet_sep.errors.SettingError` names either when it is not).
        Returns ``{stem: waveform}`` with the input's shape, sample rate and type: numpy in, numpy out; torch in,
        torch out on the input's device; the input's dtype. Float samples are expected in [-1, 1]. Integer
        samples are scaled from their type's full range and the stems come back in that type, rounded and
        clipped to its range (clipped samples are counted in a logged warning); the stems then add up to the
        input within one step per stem (32-bit integers: within float32's resolution, in which the work is
        done). A ``[samples, channels]`` array (soundfile's layout) is refused before anything is allocated for
        it: pass its transpose.
        """
        check_array(waveform, "waveform", (np.ndarray, torch.Tensor))
        sample_rate = check_sample_rate(sample_rate)  # before anything is allocated for the stems
        shape = tuple(waveform.shape)
        if len(shape) not in (1, 2, 3):
            raise InvalidAudioError(f"expected [samples], [channels, samples] or [batch, channels, samples], got shape "
                                    f"{shape}")
        if len(shape) > 1:
            check_layout(shape, samples=shape[-1])
        tensor_in = waveform if isinstance(waveform, torch.Tensor) else None
        if tensor_in is not None:
            tensor = tensor_in.detach().cpu()
            array = (tensor.float() if tensor.dtype == torch.bfloat16 else tensor).numpy()
        else:
            array = np.asarray(waveform)
        try:
            audio: np.ndarray = to_float32(array).reshape((1,) * (3 - array.ndim) + array.shape)
        except TypeError as error:
            raise InvalidAudioError(str(error)) from error
        if audio.shape[-1] == 0:
            stems = np.zeros((len(self.stems),) + audio.shape, dtype=np.float32)
        else:
            # In blocks, as files are read: a whole song at once would pass through every step as one array
            # (its spectrogram alone 0.9 GB for 10 min of stereo) and run 20 % slower from memory.
            blocks = (audio[..., i : i + BLOCK_SAMPLES] for i in range(0, audio.shape[-1], BLOCK_SAMPLES))
            stems = np.concatenate(list(self.stream(blocks, sample_rate, length=audio.shape[-1])), axis=-1)
        result: dict[str, np.ndarray | torch.Tensor] = {}
        for i, stem in enumerate(self.stems):
            out, clipped = from_float32(stems[i].reshape(array.shape), array.dtype)
            if clipped:
                logger.warning("%s: %d samples clipped to the range of %s (the stems no longer add up to the input; "
                               "pass float samples, e.g. x / 32768 for int16, to get stems beyond full scale)",
                               stem, clipped, array.dtype)
            result[stem] = (torch.from_numpy(out).to(tensor_in.device, tensor_in.dtype) if tensor_in is not None
                            else out)
        return result

    # ---- streaming ---------------------------------------------------------------------------------
    def stream(
        self,
        blocks: Iterable[np.ndarray],
        sample_rate: int,
        progress: Callable[[int], None] | None = None,
        length: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Separate a stream of ``[batch, channels, n]`` float32 blocks at ``sample_rate``.

        Yields ``[stems, batch, channels, m]`` blocks at the same rate; all together exactly as many samples
        as came in. ``progress(n)`` is called with the input samples consumed after each block. ``length``, the
        samples the stream will bring when known in advance (an estimate is fine: the output is right for any
        real length), plans the segments for it (fewer segments, see ``overlap``); without it the stream gets
        the overlap of streams.
        Raises :class:`InvalidAudioError` on NaN or infinite samples, and before any work on blocks whose layout
        is not ``[batch, channels, n]`` (e.g. more channels than real audio has: see :func:`check_layout`); a
        :class:`~unet_sep.errors.SettingError` for a ``sample_rate`` that is not a whole number of Hz in the
        supported range, or a block that is not a numpy array.
        """
        sample_rate = check_sample_rate(sample_rate)
        iterator = iter(blocks)
        try:
            first = next(iterator)
        except StopIteration:
            return
        check_array(first, "blocks", (np.ndarray,))
        if np.ndim(first) != 3:
            raise InvalidAudioError(f"stream blocks must be [batch, channels, n], got shape {np.shape(first)}")
        check_layout(first.shape)
        batch, in_channels = first.shape[:2]
        runner = self.runner
        front = runner.input_stage(batch, in_channels, sample_rate)
        back = runner.output_stage(batch, in_channels, sample_rate)
        engine = runner.engine(front.groups, length, sample_rate)
        for block in itertools.chain([first], iterator):
            block = front.check(block)
            back.add_input(block)
            engine.feed(front.process(block))
            for _ in runner.run_ready(lambda: [engine]):  # drained once per block, below
                pass
            yield from back.push(*engine.drain())
            if progress is not None:
                progress(front.consumed)
        engine.feed(front.flush())
        engine.close()
        for _ in runner.run_ready(lambda: [engine], final=True):
            pass
        yield from back.push(*engine.drain(), final=True)

    # ---- files -------------------------------------------------------------------------------------
    def output_paths(
        self, path: str | Path | InputFile, out_dir: str | Path, template: str = DEFAULT_TEMPLATE, fmt: str = "wav",
        stems: Iterable[str] | None = None, two_stems: str | None = None,
    ) -> dict[str, Path]:
        """Where :meth:`separate_file` writes each stem of ``path`` (see :mod:`unet_sep.separate.outputs`)."""
        check_template(template)
        selected = OutputStems.choose(self.stems, None if stems is None else list(stems), two_stems)
        return output_paths(InputFile.of(path), Path(out_dir), template, fmt, selected.names,
                            self.config.name or "model")

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
        clip_mode: str | None = None,
    ) -> FileResult:
        """Separate one file into ``out_dir``, streaming: memory does not grow with the file's length.

        Each stem is written under a temporary name and renamed when complete; on any error (or Ctrl-C)
        the temporary files are removed and nothing is left under the final names. Existing outputs are
        kept (``skipped=True``) unless ``overwrite``. ``bit_depth`` defaults to float for WAV and to the input's
        depth for FLAC (16 bits for 16-bit inputs, else 24). ``clip_mode`` says what happens to samples beyond
        full scale where the format cannot hold them: "rescale" (the default there: one gain for all the stems,
        logged), "clamp" or "none" (see :class:`~unet_sep.separate.files.FileOptions`). ``sample_rate`` resamples
        the stems (default: the input's rate). ``bitrate`` (kbit/s) is for mp3 and ogg. ``two_stems="vocals"``
        writes ``vocals`` and ``no_vocals`` (the sum of the other stems). ``progress(done, total)`` counts input
        samples. A format that cannot hold this input's stems (mp3 at 96 kHz, 6 channels) fails before any work
        with an :class:`~unet_sep.audio.encode.EncoderLimitError` whose message says what to use instead.
        Raises :class:`~unet_sep.errors.SettingError` for an unusable setting, and for a file that fails
        :class:`AudioDecodeError`, :class:`AudioEncodeError`, :class:`InvalidAudioError` or
        :class:`~unet_sep.separate.outputs.OutputPathError`, whose messages name the file.
        """
        options = FileOptions(Path(out_dir), template, fmt, bit_depth, bitrate, None if stems is None else list(stems),
                              two_stems, offset, duration, overwrite, sample_rate, clip_mode)

        def report(event: FileEvent) -> None:
            if progress is not None and event.kind in ("progress", "done"):
                progress(event.done, event.total)

        (event,) = FilePipeline(self.runner, options, readers=1, writers=1).run([path], on_event=report)
        if event.error is not None:  # only a "failed" event carries one, and it always does
            raise event.error
        return FileResult(Path(path), event.outputs, skipped=event.kind == "skipped", seconds=event.seconds)

    def separate_files(
        self,
        paths: Iterable[str | Path | InputFile],
        out_dir: str | Path,
        on_event: Callable[[FileEvent], None] | None = None,
        readers: int | None = None,
        writers: int | None = None,
        **options,
    ) -> list[FileEvent]:
        """Separate many files, batching U-Net segments across songs, decoding and encoding in threads.

        ``options`` are :class:`~unet_sep.separate.files.FileOptions` fields (``template``, ``fmt``, ``stems``,
        ...). ``paths`` may be :class:`~unet_sep.separate.inputs.InputFile` entries from
        :func:`~unet_sep.separate.inputs.expand_inputs` (folders and globs, with their ``{dir}``). A file that fails
        does not stop the others: every input gets one final event ("done", "skipped", or "failed" with an error
        naming the file and no outputs); ``on_event`` also sees "started" and "progress" events. ``readers`` and
        ``writers``, the decoding and encoding threads (1 to 64), follow the machine by default: 2 and 1 on the CPU,
        the cores less one each with a GPU (:func:`~unet_sep.separate.pipeline.default_threads`).
        """
        pipeline = FilePipeline(self.runner, FileOptions(Path(out_dir), **options), readers=readers, writers=writers)
        return pipeline.run(paths, on_event)
