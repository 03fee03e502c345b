"""What a run over files is asked (:class:`FileOptions`), what it reports (:class:`FileEvent`), and the state each
input carries through the stages of the file pipeline (:class:`FileJob`)."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

from unet_sep.audio.decode import AudioInfo
from unet_sep.audio.encode import check_encoding
from unet_sep.audio.resample import check_sample_rate
from unet_sep.errors import SettingError
from unet_sep.separate.outputs import DEFAULT_TEMPLATE, check_template

QUEUE_END = object()  # put last into a queue between stages: nothing more is coming


@dataclass(frozen=True)
class FileOptions:
    """Where and how every file of a run is written (see ``unet-sep separate``), checked when made.

    ``template``: see :mod:`unet_sep.separate.outputs`. ``fmt``: wav, flac, ogg or mp3 (any case, a leading dot
    ignored). ``bit_depth``: None writes each input's own depth where the format can store it
    (:func:`~unet_sep.audio.encode.default_bit_depth`). ``bitrate``: kbit/s of mp3 and ogg outputs. ``stems``:
    the stems to write (of the model's, or of ``two_stems`` and ``no_<two_stems>``). ``two_stems``: write this
    stem and the sum of all the others. ``offset`` and ``duration``: the seconds of each input to separate.
    ``overwrite``: replace existing outputs (else an input whose outputs all exist is skipped). ``sample_rate``:
    the stems' rate (None: each input's own).

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
    of a failed file, whose message is one line; ``seconds`` is the wall time from the file's first block to its
    last write. Every input gets exactly one final event: "done", "skipped" or "failed".
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
