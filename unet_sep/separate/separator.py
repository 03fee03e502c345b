"""The public entry point: a loaded model that turns waveforms or files into stems."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np
import torch

from unet_sep.audio.resample import check_sample_rate
from unet_sep.audio.samples import from_float32, to_float32
from unet_sep.config import MAX_CHANNELS, ModelConfig
from unet_sep.errors import SettingError
from unet_sep.model.stems import StemsNet
from unet_sep.separate.files import FileEvent, FileOptions
from unet_sep.separate.inputs import InputFile
from unet_sep.separate.live import LiveSession, live_plan
from unet_sep.separate.outputs import DEFAULT_TEMPLATE, OutputStems, check_template, output_paths
from unet_sep.separate.pipeline import FilePipeline
from unet_sep.separate.runner import NetworkRunner, load_network
from unet_sep.separate.settings import SeparationOptions, SeparationSettings
from unet_sep.separate.stages import BLOCK_SAMPLES, InvalidAudioError, check_array, check_layout

if TYPE_CHECKING:
    from typing_extensions import Unpack

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
        settings: how to separate (:class:`~unet_sep.separate.settings.SeparationSettings`; default: its defaults).
        options: fields of :class:`~unet_sep.separate.settings.SeparationSettings` to set (over ``settings``):
            ``device``, ``segmentation``, ``overlap``, ``batch_size``, ``mask_extension``, ``channels_last``,
            ``optimize``, ``precision``, ``compile``, ``backend``, ``onnx_path``, ``wiener_iterations``,
            ``wiener_window``, and for :meth:`live_session` ``live_latency``, ``live_segment_frames`` and
            ``live_lookahead``; each field's documentation says what it does and what it defaults to.

    Raises :class:`~unet_sep.errors.SettingError` naming the first setting that cannot be used. The network and
    its resolved settings live in :attr:`runner` (:class:`~unet_sep.separate.runner.NetworkRunner`).

    Example::

        sep = Separator.from_pretrained("path/to/model", device="cpu")
        stems = sep.separate(waveform, 44100)   # {"vocals": array like waveform, ...}
    """

    def __init__(self, net: StemsNet | None, config: ModelConfig, *, settings: SeparationSettings | None = None,
                 **options: Unpack[SeparationOptions]) -> None:
        self.runner = NetworkRunner(net, config, SeparationSettings.of(settings, options))

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, settings: SeparationSettings | None = None,
                        **options: Unpack[SeparationOptions]) -> "Separator":
        """Load a registered model name, a model folder (see ``unet-sep models``) or an ONNX file written by
        ``unet-sep models export``; ``settings`` and ``options`` as the constructor's, checked before any file is
        read.

        ``backend`` defaults to "torch", and to "onnxruntime" for an ONNX file. With "onnxruntime" and a name or
        folder, the U-Nets are exported to ONNX on first use and the export is kept in the cache
        (:func:`~unet_sep.separate.runner.load_network`).
        """
        net, config, chosen = load_network(name_or_path, SeparationSettings.of(settings, options))
        return cls(net, config, settings=chosen)

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

    # ---- live --------------------------------------------------------------------------------------
    def live_session(self, sample_rate: int, channels: int, latency: float | None = None) -> LiveSession:
        """A :class:`~unet_sep.separate.live.LiveSession` separating ``[channels, n]`` blocks at ``sample_rate`` as
        they arrive, with a delay of at most ``latency`` seconds (None: the ``live_latency`` setting); its
        ``latency_samples`` says the exact delay. A :class:`~unet_sep.errors.SettingError` (one line) for a
        latency no plan fits, naming the least latency this model allows (see :mod:`unet_sep.separate.live`)."""
        sample_rate = check_sample_rate(sample_rate)
        settings = self.runner.settings
        if latency is None:
            latency = settings.live_latency
        elif isinstance(latency, bool) or not isinstance(latency, (int, float)) or not latency > 0:
            raise SettingError("latency", f"must be seconds above 0, got {latency!r}")
        if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_CHANNELS:
            raise SettingError("channels", f"must be a whole number from 1 to {MAX_CHANNELS}, got {channels!r}")
        grid = 2 ** self.config.unet.depth
        frames = settings.live_segment_frames
        if frames is not None and frames % grid:
            raise SettingError("live_segment_frames", f"must be a multiple of {grid} for this model (2 ** its "
                                                      f"depth), got {frames}")
        plan = live_plan(self.config, sample_rate, float(latency), frames, settings.live_lookahead)
        return LiveSession(self.runner, plan, channels)

    def live(self, blocks: Iterable[np.ndarray], sample_rate: int,
             latency: float | None = None) -> Iterator[np.ndarray]:
        """Separate ``[channels, n]`` blocks as they come: one ``[stems, channels, n]`` block per block in, then the
        tail (:meth:`LiveSession.flush <unet_sep.separate.live.LiveSession.flush>`); the stems of output sample
        ``t`` are those of input sample ``t - latency_samples`` (zeros before the input starts). The channels are
        the first block's; ``latency`` as :meth:`live_session`'s."""
        session: LiveSession | None = None
        for block in blocks:
            if session is None:
                check_array(block, "blocks", (np.ndarray,))
                if np.ndim(block) != 2:
                    raise InvalidAudioError(f"live blocks must be [channels, n], got shape {np.shape(block)}")
                check_layout(block.shape)
                session = self.live_session(sample_rate, int(block.shape[0]), latency)
            yield session.process(block)
        if session is not None:
            yield session.flush()

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
