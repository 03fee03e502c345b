"""What a run over files is asked (:class:`FileOptions`), what it reports (:class:`FileEvent`), and the state each
input carries through the stages of the file pipeline (:class:`FileJob`)."""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from unet_sep.audio.decode import AudioInfo
from unet_sep.audio.encode import (
    CLIP_MODES,
    check_encoding,
    check_output,
    default_bit_depth,
    holds_beyond_full_scale,
    rate_problem,
)
from unet_sep.audio.resample import check_sample_rate
from unet_sep.errors import FileError, SettingError
from unet_sep.separate.outputs import DEFAULT_TEMPLATE, check_template

QUEUE_END = object()  # put last into a queue between stages: nothing more is coming


@dataclass(frozen=True)
class FileOptions:
    """Where and how every file of a run is written (see ``unet-sep separate``), checked when made.

    ``template``: see :mod:`unet_sep.separate.outputs`. ``fmt``: wav, flac, ogg or mp3 (any case, a leading dot
    ignored). ``bit_depth``: None writes float WAV and FLAC at the input's depth
    (:func:`~unet_sep.audio.encode.default_bit_depth`). ``bitrate``: kbit/s of mp3 and ogg outputs. ``stems``:
    the stems to write (of the model's, or of ``two_stems`` and ``no_<two_stems>``). ``two_stems``: write this
    stem and the sum of all the others. ``offset`` and ``duration``: the seconds of each input to separate.
    ``overwrite``: replace existing outputs (else an input whose outputs all exist is skipped). ``sample_rate``:
    the stems' rate (None: each input's own). ``clip_mode``: stem samples beyond full scale, where the format
    cannot hold them (FLAC, 16- or 24-bit WAV), are "rescale"d (one gain per song for all the stems written, so
    they still add up to gain x the input; the gain is logged as a warning naming the input) or "clamp"ed
    (each sample clipped, counted in a warning); "none" writes them as they are, which only float WAV, mp3 and
    ogg can. None: "rescale" where the format cannot hold them, else "none".

    Raises :class:`~unet_sep.errors.SettingError` naming the first setting that cannot be used; ``stems`` and
    ``two_stems``, which need the model, are checked by the pipeline
    (:class:`~unet_sep.separate.outputs.OutputStems`).
    """

    out_dir: Path
    template: str = DEFAULT_TEMPLATE
    fmt: str = "wav"
    bit_depth: str | None = None
    bitrate: int | None = None
    stems: list[str] | None = None
    two_stems: str | None = None
    offset: float = 0.0
    duration: float | None = None
    overwrite: bool = False
    sample_rate: int | None = None
    clip_mode: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        object.__setattr__(self, "fmt", self.fmt.lower().lstrip("."))
        check_encoding(self.fmt, self.bit_depth, self.bitrate)
        check_template(self.template)
        if not (math.isfinite(self.offset) and self.offset >= 0):
            raise SettingError("offset", f"must be a number of seconds >= 0, got {self.offset}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise SettingError("duration", f"must be a number of seconds > 0, got {self.duration}")
        if self.sample_rate is not None:
            object.__setattr__(self, "sample_rate", check_sample_rate(self.sample_rate))
        problem = None if self.sample_rate is None else rate_problem(self.fmt, int(self.sample_rate), self.bitrate)
        if problem is not None:  # every input would fail: a setting error before any work
            setting, error = problem
            advice = dict(error.advice)
            hint = (f"choose {advice['sample_rate']} Hz, or a format without this limit (flac, wav or ogg)"
                    if setting == "sample_rate" else
                    f"choose {advice['bitrate']} kbit/s, or a sample rate of {advice['sample_rate']} Hz")
            raise SettingError(setting, f"{error.problem}; {hint}")
        self._check_clip_mode()

    def _check_clip_mode(self) -> None:
        if self.clip_mode is not None and self.clip_mode not in CLIP_MODES:
            raise SettingError("clip_mode", f"unknown mode {self.clip_mode!r}; choose from {', '.join(CLIP_MODES)}")
        if self.clip_mode == "none" and not holds_beyond_full_scale(self.fmt, self.bit_depth):
            what = f"{self.fmt} at {self.bit_depth} bits" if self.bit_depth else f"{self.fmt} (integer PCM)"
            raise SettingError("clip_mode", f"{what} cannot hold samples beyond full scale; choose rescale or clamp, "
                                            "or write float wav")

    @property
    def clip(self) -> str:
        """The clip mode in force: :attr:`clip_mode`, or its default for this format."""
        if self.clip_mode is not None:
            return self.clip_mode
        return "none" if holds_beyond_full_scale(self.fmt, self.bit_depth) else "rescale"

    def bit_depth_for(self, info: AudioInfo) -> str | None:
        """The bit depth an input's stems are written at (None where the format has none to choose)."""
        return self.bit_depth or default_bit_depth(self.fmt, info.subtype)

    def output_rate(self, info: AudioInfo) -> int:
        """The sample rate an input's stems are written at."""
        return int(self.sample_rate or info.sample_rate)

    def check_output(self, info: AudioInfo, frames: int) -> None:
        """Raise :class:`~unet_sep.audio.encode.EncoderLimitError` (naming settings that would work) where this
        input's stems (``frames`` input samples) cannot be written as asked; called before any work on it."""
        rate = self.output_rate(info)
        subtype = check_encoding(self.fmt, self.bit_depth_for(info), None)[1]
        check_output(self.fmt, rate, info.channels, self.bitrate, math.ceil(frames * rate / info.sample_rate),
                     subtype)

    def planned_frames(self, info: AudioInfo) -> int:
        """Input samples :attr:`offset` and :attr:`duration` leave of a file (0 where its length is unknown and no
        duration is given)."""
        total = info.frames - int(round(self.offset * info.sample_rate)) if info.frames > 0 else 0
        if self.duration is not None:
            wanted = int(round(self.duration * info.sample_rate))
            total = min(total, wanted) if total > 0 else wanted
        return max(total, 0)


@dataclass
class FileEvent:
    """Something that happened to one input: ``kind`` is "started", "progress", "done", "skipped" or "failed".

    "started": a reader opened the input; ``total`` is what it will give (see below), known from here on.
    ``done`` and ``total`` count input samples at ``sample_rate`` (for progress bars); ``error`` is the exception
    of a failed file, whose message is one line (:class:`NotSeparatedError` for an input a stopped run left
    undone); ``seconds`` is the wall time from the file's first block to its last write. Every input gets exactly
    one final event: "done", "skipped" or "failed".
    """

    kind: str
    index: int
    path: Path
    outputs: dict[str, Path] = field(default_factory=dict)
    done: int = 0
    total: int = 0
    sample_rate: int = 0
    seconds: float = 0.0
    error: BaseException | None = None
    gain: float = 1.0  # "done": the gain of --clip-mode rescale its stems were written with

    @property
    def final(self) -> bool:
        return self.kind in ("done", "skipped", "failed")


class FileJob:
    """One input as it travels through the stages: what the reader learnt of it, and whether any stage gave up."""

    def __init__(self, index: int, path: Path, outputs: dict[str, Path]) -> None:
        self.index = index
        self.path = path
        self.outputs = outputs
        self.total = 0  # input samples the reader will send (0: unknown)
        self.started = 0.0  # perf_counter() when the reader opened it
        self.failed = threading.Event()  # set by any stage; the others then drop the file


class NotSeparatedError(FileError):
    """An input the run left undone because it stopped early (see :class:`RunHalt`); ``cause`` is why."""

    def __init__(self, reason: str, path: str | Path | None = None, cause: BaseException | None = None) -> None:
        super().__init__(reason, path)
        self.cause = cause

    def __reduce__(self):
        return type(self), (self.reason, self.path, self.cause)


class RunHalt:
    """Set once, by the writer, when the output folder can take no more (a full disk, a quota, a read-only file
    system: :class:`~unet_sep.audio.encode.OutputFolderError`): every later input would fail the same way, so
    the inputs not yet started are dropped from ``pending`` and the run ends early."""

    def __init__(self, pending: queue.SimpleQueue) -> None:
        self._pending = pending
        self._event = threading.Event()
        self.cause: BaseException | None = None

    def stop(self, cause: BaseException) -> None:
        """Stop the run because of ``cause`` (the first cause is kept)."""
        if self._event.is_set():
            return
        self.cause = cause
        self._event.set()
        while True:
            try:
                self._pending.get_nowait()
            except queue.Empty:
                return

    def is_set(self) -> bool:
        return self._event.is_set()

    def error(self) -> NotSeparatedError:
        """The error of an input the stopped run leaves undone."""
        cause = self.cause.reason if isinstance(self.cause, FileError) else str(self.cause)
        return NotSeparatedError(f"not separated: the run stopped ({cause})", cause=self.cause)

