"""The public entry point: a loaded model that turns waveforms or files into stems."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from unet_sep.audio.decode import AudioDecodeError, open_audio
from unet_sep.audio.encode import AtomicAudioWriter, AudioEncodeError, subtype_for
from unet_sep.audio.resample import StreamResampler
from unet_sep.config import ModelConfig
from unet_sep.model.stems import StemsNet, freeze_for_inference
from unet_sep.separate.channels import from_groups, groups_per_item, to_groups
from unet_sep.separate.segments import SegmentPlan
from unet_sep.separate.stream import SeparationStream
from unet_sep.weights.checkpoint import load_model
from unet_sep.weights.registry import resolve_model

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
# Output samples held back until the end, so the resampled output can be cut to the input's exact length.
_HOLDBACK = 512


class InvalidAudioError(ValueError):
    """Audio that cannot be separated (NaN or infinite samples, wrong shape)."""


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
        optimize: trace and freeze the U-Nets with TorchScript on first use (default: on the CPU, ~1.5x
            faster there; same numbers to float precision).

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
        optimize: bool | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.device = resolve_device(device)
        if channels_last is None:
            channels_last = self.device.type == "cpu"
        layout = torch.channels_last if channels_last else torch.contiguous_format
        self.net = net.to(self.device, memory_format=layout).eval()
        self.channels_last = channels_last
        self.optimize = self.device.type == "cpu" if optimize is None else optimize
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
        model_channels = self.config.n_channels
        groups = batch * groups_per_item(in_channels, model_channels)
        n_stems = len(self.stems)
        share_residual = self.mask_extension != "zeros"
        engine = SeparationStream(
            self._network(), self.config, self.plan, groups,
            mask_extension=self.mask_extension, batch_segments=self.batch_size, device=self.device,
            channels_last=self.channels_last,
        )
        to_model = StreamResampler(sample_rate, self.sample_rate, groups * model_channels)
        # Stems (and their extension weights, when shared out) go back to the input's rate through one resampler.
        layers = 2 if share_residual else 1
        from_model = StreamResampler(self.sample_rate, sample_rate, layers * n_stems * groups * model_channels)
        pending: list[np.ndarray] = []  # [layers, S, B, C, n]: stems and extension weights
        inputs: list[np.ndarray] = []  # [B, C, n]: the input samples not yet matched by output
        state = {"pending": 0, "consumed": 0, "emitted": 0}

        def back(model_out: tuple[np.ndarray, np.ndarray | None], final: bool = False) -> None:
            both = np.stack(model_out[:layers]).reshape(layers * n_stems * groups * model_channels, -1)
            out = from_model.process(both)
            if final:
                out = np.concatenate([out, from_model.flush()], axis=-1)
            if out.shape[-1]:
                out = out.reshape(layers * n_stems, groups, model_channels, -1)
                pending.append(from_groups(out, batch, in_channels).reshape(layers, n_stems, batch, in_channels, -1))
                state["pending"] += out.shape[-1]

        def release(count: int) -> Iterator[np.ndarray]:
            if count <= 0:
                return
            both = np.concatenate(pending, axis=-1) if pending else np.zeros((layers, n_stems, batch, in_channels, 0), np.float32)
            short = count - both.shape[-1]
            if short > 0:  # the resampler came up a few samples short at the very end: pad with silence
                both = np.concatenate([both, np.zeros(both.shape[:-1] + (short,), np.float32)], axis=-1)
            mixture = np.concatenate(inputs, axis=-1)
            stems = both[0, ..., :count]
            pending[:] = [both[..., count:]]
            inputs[:] = [mixture[..., count:]]
            state["pending"] = pending[0].shape[-1]
            state["emitted"] += count
            if share_residual:
                yield _share_residual(stems, both[1, ..., :count], mixture[..., :count])
            else:
                yield stems

        block: np.ndarray | None = first
        while block is not None:
            if block.ndim != 3 or block.shape[:2] != (batch, in_channels):
                raise InvalidAudioError(f"block of shape {block.shape} does not match [{batch}, {in_channels}, n]")
            finite = np.isfinite(block)
            if not finite.all():
                bad = int(np.flatnonzero(~finite.all(axis=(0, 1)))[0])
                raise InvalidAudioError(f"audio contains NaN or infinite samples (first at sample {state['consumed'] + bad})")
            block = block.astype(np.float32, copy=False)
            state["consumed"] += block.shape[-1]
            inputs.append(block)
            grouped = to_groups(block, model_channels)
            model_in = to_model.process(grouped.reshape(groups * model_channels, -1))
            back(engine.push(model_in.reshape(groups, model_channels, -1)))
            yield from release(state["pending"] - _HOLDBACK)
            if progress is not None:
                progress(state["consumed"])
            block = next(iterator, None)
        tail = to_model.flush().reshape(groups, model_channels, -1)
        last_stems, last_weights = engine.push(tail)
        final_stems, final_weights = engine.finish()
        last_weights = None if last_weights is None else np.concatenate([last_weights, final_weights], -1)
        back((np.concatenate([last_stems, final_stems], -1), last_weights), final=True)
        yield from release(state["consumed"] - state["emitted"])

    def _network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The U-Nets as run on segments: the module itself, or its TorchScript-frozen form (built once)."""
        if not self.optimize:
            return self.net
        if self._runner is None:
            layout = torch.channels_last if self.channels_last else torch.contiguous_format
            example = torch.rand(1, self.config.n_channels, self.plan.frames, self.config.frequency_bins,
                                 device=self.device).contiguous(memory_format=layout)
            self._runner = freeze_for_inference(self.net, example)
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
        import time

        started = time.perf_counter()
        path = Path(path)
        subtype_for(fmt, bit_depth)  # reject an impossible format before decoding anything
        outputs = self.output_paths(path, Path(out_dir), template, fmt, stems)
        source = path.resolve()
        for stem, target in outputs.items():
            if target.resolve() == source:
                raise ValueError(f"output {target} for stem {stem} would overwrite the input")
            if target.is_dir():
                raise ValueError(f"output {target} for stem {stem} is an existing folder")
        if not overwrite and all(target.exists() for target in outputs.values()):
            return FileResult(path, outputs, skipped=True, seconds=0.0)
        reader = open_audio(path)
        info = reader.info
        if offset < 0 or (duration is not None and duration <= 0):
            raise ValueError("--offset must be >= 0 and --duration > 0")
        if info.frames_exact and offset * info.sample_rate >= info.frames:
            raise ValueError(f"offset {offset:g} s is past the end of the file ({info.duration:.2f} s)")
        total = info.frames - int(round(offset * info.sample_rate)) if info.frames > 0 else 0
        if duration is not None:
            total = min(total, int(round(duration * info.sample_rate))) if total > 0 else int(round(duration * info.sample_rate))
        out_rate = int(sample_rate or info.sample_rate)

        created_dirs: list[Path] = []
        for target in outputs.values():
            created_dirs.extend(_make_parents(target.parent))
        writers: dict[str, AtomicAudioWriter] = {}
        stem_index = {stem: self.stems.index(stem) for stem in outputs}
        try:
            for stem, target in outputs.items():
                writers[stem] = AtomicAudioWriter(target, out_rate, info.channels, fmt, bit_depth)
            blocks = (block[None] for block in reader.blocks(offset=offset, duration=duration))
            resamplers = StreamResampler(info.sample_rate, out_rate, len(outputs) * info.channels)
            callback = None if progress is None else (lambda done: progress(done, max(total, done)))
            written = 0
            for stem_block in self.stream(blocks, info.sample_rate, progress=callback):
                chosen = np.stack([stem_block[stem_index[s], 0] for s in outputs])
                out = resamplers.process(chosen.reshape(-1, chosen.shape[-1]))
                written += self._write(writers, out, info.channels)
            out = resamplers.flush()
            written += self._write(writers, out, info.channels)
            if written == 0:
                raise AudioDecodeError("no audio samples were decoded")
            for writer in writers.values():
                writer.commit()
        except BaseException:
            for writer in writers.values():
                writer.abort()
            for folder in reversed(created_dirs):
                try:
                    folder.rmdir()
                except OSError:
                    pass
            raise
        return FileResult(path, outputs, skipped=False, seconds=time.perf_counter() - started)

    @staticmethod
    def _write(writers: dict[str, AtomicAudioWriter], block: np.ndarray, channels: int) -> int:
        if block.shape[-1] == 0:
            return 0
        per_stem = block.reshape(len(writers), channels, -1)
        for i, writer in enumerate(writers.values()):
            writer.write(per_stem[i])
        return per_stem.shape[-1]


def _share_residual(stems: np.ndarray, weights: np.ndarray, mixture: np.ndarray) -> np.ndarray:
    """Add to each stem its share of what the stems miss of the mixture (content above the model's rate).

    ``weights`` are the stems' extension masks (summing to about one); they are renormalised, and an even
    split is used where they vanish (the few padded samples at the very end).
    """
    residual = mixture - stems.sum(axis=0)
    weights = np.clip(weights, 0.0, None)
    total = weights.sum(axis=0, keepdims=True)
    even = np.full_like(weights, 1.0 / weights.shape[0])
    share = np.where(total > 1e-3, weights / np.maximum(total, 1e-3), even)
    return stems + share * residual[None]


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return the ones created, outermost first."""
    missing = []
    current = folder
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    missing.reverse()
    for item in missing:
        try:
            item.mkdir()
        except FileExistsError:
            pass
        except OSError as error:
            raise AudioEncodeError(f"cannot create output folder {item}: {error.strerror or error}") from error
    if not os.access(folder, os.W_OK):
        raise AudioEncodeError(f"output folder {folder} is not writable")
    return missing
