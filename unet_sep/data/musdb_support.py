"""museval, musdb and stempeg, imported so that only reading a MUSDB18 ``.stem.mp4`` needs ffmpeg.

stempeg (musdb's reader of ``.stem.mp4`` files, which runs the ``ffmpeg`` and ``ffprobe`` programs) raises
``RuntimeError`` as soon as it is imported on a machine without those programs; musdb imports stempeg at its
top level and museval imports musdb at its top level. musdb's own uses of stempeg are all attribute accesses
inside functions, and museval's scoring (``museval.evaluate``, ``TrackStore``, ``EvalStore``) never reaches
them. So when a program is missing, :func:`import_stempeg` registers a stand-in ``stempeg`` module whose every
public attribute raises :class:`FFmpegMissingError` (one line: what needs ffmpeg and what does not); museval
and musdb then import and score as usual, and whatever would decode a ``.stem.mp4`` says why it cannot.

Every use of museval, musdb and stempeg in the package goes through :func:`import_museval`,
:func:`import_musdb`, :func:`import_stempeg`, :func:`musdb_setup` and :func:`read_stem_stream`. They are
optional packages (the ``train`` and ``eval`` extras), imported through :func:`unet_sep.extras.import_extra`
when first needed, so a missing one is one line naming the extra to install.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import numpy as np

from unet_sep.extras import MissingExtraError, import_extra

__all__ = [
    "FFMPEG_PROGRAMS",
    "FFmpegMissingError",
    "ffmpeg_missing_message",
    "import_museval",
    "import_musdb",
    "import_stempeg",
    "missing_ffmpeg_programs",
    "musdb_setup",
    "read_stem_stream",
]

logger = logging.getLogger(__name__)

FFMPEG_PROGRAMS = ("ffmpeg", "ffprobe")
_import_lock = threading.Lock()


class FFmpegMissingError(RuntimeError):
    """A MUSDB18 ``.stem.mp4`` was to be read (through stempeg) without the ffmpeg/ffprobe programs."""


def missing_ffmpeg_programs() -> list[str]:
    """The programs of :data:`FFMPEG_PROGRAMS` that are not on ``PATH`` (found as stempeg looks for them)."""
    return [program for program in FFMPEG_PROGRAMS if shutil.which(program) is None]


def ffmpeg_missing_message(missing: list[str] | tuple[str, ...] = FFMPEG_PROGRAMS) -> str:
    """The one-line reason given when a ``.stem.mp4`` cannot be read because ``missing`` programs are absent."""
    return (
        f"reading MUSDB18 .stem.mp4 files needs the ffmpeg and ffprobe programs ({' and '.join(missing)} not "
        "found on PATH); MUSDB18-HQ (--is-wav), stem folders and MIR-1K do not"
    )


class _StempegStandIn(ModuleType):
    """``sys.modules["stempeg"]`` on a machine without ffmpeg/ffprobe: any public attribute raises."""

    def __init__(self, message: str) -> None:
        super().__init__("stempeg", f"Stand-in for stempeg registered by {__name__}: {message}")
        self.unet_sep_message = message

    def __getattr__(self, name: str) -> NoReturn:
        if name.startswith("_"):  # __path__, __file__, ... : what import machinery and introspection probe
            raise AttributeError(f"module 'stempeg' (stand-in) has no attribute {name!r}")
        raise FFmpegMissingError(self.unet_sep_message)


def import_stempeg() -> ModuleType:
    """stempeg, or (without ffmpeg/ffprobe on PATH) a stand-in whose public attributes raise
    :class:`FFmpegMissingError`; the result is ``sys.modules["stempeg"]``, so musdb imports it too."""
    with _import_lock:
        module = sys.modules.get("stempeg")
        if module is not None:
            return module
        missing = missing_ffmpeg_programs()
        if not missing:
            return import_extra("stempeg", "train,eval", "reading MUSDB18 .stem.mp4 files")
        message = ffmpeg_missing_message(missing)
        logger.debug("stempeg not imported: %s", message)
        module = _StempegStandIn(message)
        sys.modules["stempeg"] = module
        return module


def import_musdb() -> ModuleType:
    """The ``musdb`` package, importable without ffmpeg (see :func:`import_stempeg`)."""
    _stempeg_if_installed()
    return import_extra("musdb", "train,eval", "reading MUSDB18")


def import_museval() -> ModuleType:
    """The ``museval`` package (BSSEval v4 scoring and its JSON stores), importable without ffmpeg."""
    _stempeg_if_installed()
    return import_extra("museval", "eval", "scoring with BSS Eval (museval)")


def _stempeg_if_installed() -> None:
    """:func:`import_stempeg` before musdb or museval import it; when stempeg is absent, so is musdb (stempeg
    comes with it), and the import that follows names the package to install."""
    try:
        import_stempeg()
    except MissingExtraError:
        pass


@functools.lru_cache(maxsize=None)
def musdb_setup() -> dict[str, Any]:
    """musdb's data set description (its ``configs/mus.yaml``, what ``musdb.DB`` reads): ``sources`` (source ->
    file name in MUSDB18-HQ), ``mixture``, ``stem_ids`` (source -> stream of a ``.stem.mp4``) and
    ``validation_tracks`` (the official validation split of the training subset)."""
    musdb = import_musdb()
    import yaml  # a dependency of musdb

    path = Path(musdb.__path__[0]) / "configs" / "mus.yaml"
    with path.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def read_stem_stream(path: Path, stream: int) -> tuple[np.ndarray, int]:
    """Stream ``stream`` of a multi-stream ``.stem.mp4`` as float32 ``[channels, samples]`` and its rate, read
    through stempeg (ffmpeg) as musdb reads it. Raises :class:`FFmpegMissingError` without ffmpeg/ffprobe, and
    whatever stempeg or ffmpeg raise on a file they cannot decode."""
    stempeg = import_stempeg()
    audio, rate = stempeg.read_stems(
        str(path), stem_id=stream, dtype=np.float32, ffmpeg_format="f32le", always_3d=True
    )
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim == 3:
        audio = audio[0]
    return np.ascontiguousarray(audio.T), int(round(float(rate)))
