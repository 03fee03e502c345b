"""Decoding audio files as streams of float32 blocks ``[channels, samples]``.

soundfile (libsndfile) reads WAV, FLAC, Ogg and MP3 among others; everything else (m4a/aac/mp4/webm,
...) goes through PyAV (FFmpeg). Samples of any integer or float type come out as float32 at the file's
own rate. Blocks are read lazily, so a file of any length uses a bounded amount of memory. A file cut short
(holding less than its container announces) is an error, found when it is opened where the container tells
(:mod:`unet_sep.audio.containers`) and while decoding for MP3.

A name that is not a regular file (a named pipe, a socket, a device, a broken symbolic link or one that loops) is
refused for what it is, without being opened: a pipe with no writer would never answer. libsndfile gets names as
bytes (a name need not be UTF-8), FFmpeg as a path it cannot take for a protocol (``pipe:0.m4a``).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from unet_sep.audio.containers import container_extent, is_streamed_wav, ogg_ends_cleanly
from unet_sep.audio.native_stderr import quiet_native_stderr
from unet_sep.audio.resample import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from unet_sep.errors import FileError, one_line

logger = logging.getLogger(__name__)

# samples an Ogg stream may announce beyond what decodes: the largest Vorbis block (an Opus packet is at most 5760)
OGG_BLOCK_SLACK = 8192


class AudioDecodeError(FileError):
    """A file that cannot be read as audio: ``str()`` is ``"<path>: <one-line reason>"``."""


@dataclass
class AudioInfo:
    """What is known about a file before decoding it.

    ``frames`` is exact for soundfile formats and an estimate from the container's duration for PyAV
    ones (``frames_exact`` tells which); the decoded stream is authoritative. ``subtype`` is how samples are
    stored, in soundfile's names (``PCM_16``, ``PCM_24``, ``FLOAT``, ``VORBIS``, ``MPEG_LAYER_III``, ...; for PyAV
    files the PCM ones, else the codec's name), from which the stems' default bit depth follows.
    """

    path: Path
    sample_rate: int
    channels: int
    frames: int
    frames_exact: bool
    backend: str
    format: str
    subtype: str = ""

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate


class AudioReader:
    """A lazily decoded audio file; see :func:`open_audio`."""

    def __init__(self, info: AudioInfo) -> None:
        self.info = info

    def blocks(
        self, block_frames: int = 262144, offset: float = 0.0, duration: float | None = None
    ) -> Iterator[np.ndarray]:
        """Yield float32 blocks ``[channels, n]`` from ``offset`` seconds for ``duration`` seconds (all if None).

        Raises :class:`AudioDecodeError` naming the file if decoding fails or the file turns out truncated.
        """
        start = int(round(offset * self.info.sample_rate))
        stop = None if duration is None else start + int(round(duration * self.info.sample_rate))
        try:
            if self.info.backend == "soundfile":
                yield from self._soundfile_blocks(block_frames, start, stop)
            else:
                yield from self._pyav_blocks(block_frames, start, stop)
        except AudioDecodeError as error:
            error.about(self.info.path)
            raise

    def _soundfile_blocks(self, block_frames: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        import soundfile as sf

        declared = self.info.frames
        # MP3 frame counts are estimates unless the file has a Xing/Info header, so read to the real end
        # of the stream and only call a file truncated when clearly less came out than it announced. An Ogg
        # stream's count is its last granule position, which end trimming can put up to one codec block past
        # the samples a decoder gives (Debian's warzone2100 Opus tracks: 10 samples); a cut Ogg file is caught
        # by its missing end-of-stream page instead (_check_complete).
        container = self.info.format.upper()
        is_mp3 = container == "MP3"
        position = start
        try:
            with quiet_native_stderr():
                handle = sf.SoundFile(os.fsencode(self.info.path))
            with handle:
                if start:
                    handle.seek(start)
                while stop is None or position < stop:
                    count = block_frames if stop is None else min(block_frames, stop - position)
                    block = handle.read(count, dtype="float32", always_2d=True)
                    if block.shape[0] == 0:
                        break
                    position += block.shape[0]
                    yield np.ascontiguousarray(block.T)
        except (sf.LibsndfileError, RuntimeError) as error:
            raise AudioDecodeError(f"decoding failed after {position} samples: {one_line(error)}") from error
        expected = declared if stop is None else min(stop, declared)
        tolerance = max(4608, expected // 200) if is_mp3 else OGG_BLOCK_SLACK if container == "OGG" else 0
        if position < expected - tolerance:
            raise _truncated(declared, position)

    def _pyav_blocks(self, block_frames: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        import av

        pending: list[np.ndarray] = []
        pending_frames = 0
        position = 0  # samples decoded from the start of the stream
        try:
            with av.open(_ffmpeg_name(self.info.path)) as container:
                stream = container.streams.audio[0]
                resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
                for packet in container.demux(stream):
                    for frame in packet.decode():
                        for converted in resampler.resample(frame):
                            data = converted.to_ndarray().astype(np.float32, copy=False)
                            lo, hi = position, position + data.shape[1]
                            position = hi
                            a = max(start, lo) - lo
                            b = data.shape[1] if stop is None else max(0, min(stop, hi) - lo)
                            if b > a:
                                pending.append(data[:, a:b])
                                pending_frames += b - a
                            while pending_frames >= block_frames:
                                block, pending, pending_frames = _take(pending, block_frames)
                                yield block
                            if stop is not None and position >= stop:
                                break
                        if stop is not None and position >= stop:
                            break
                    if stop is not None and position >= stop:
                        break
        except av.error.FFmpegError as error:
            raise AudioDecodeError(f"decoding failed after {position} samples: {one_line(error)}") from error
        if pending_frames:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1))


def _library_reason(error: Exception) -> str:
    """A decoder's error without the file name it quotes (the message names the file once, first)."""
    reason = getattr(error, "error_string", None) or getattr(error, "strerror", None)  # libsndfile's, FFmpeg's
    return one_line(reason or error)


def _ffmpeg_name(path: Path) -> str:
    """``path`` as FFmpeg takes it for a file: a relative name starts with ``./``, so that a name such as
    ``pipe:1.m4a`` or ``track:2.m4a`` is not read as a protocol (FFmpeg's ``pipe:``, or an unknown one)."""
    return str(path) if path.is_absolute() else os.path.join(os.curdir, path)


def _take(pending: list[np.ndarray], count: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    joined = np.concatenate(pending, axis=1)
    rest = joined[:, count:]
    return np.ascontiguousarray(joined[:, :count]), ([rest] if rest.shape[1] else []), rest.shape[1]


def _truncated(announced: int, held: int) -> AudioDecodeError:
    return AudioDecodeError(f"file is truncated: its header announces {announced} samples but it holds {held}")


def open_audio(path: str | Path) -> AudioReader:
    """Probe ``path`` and return a reader, or raise :class:`AudioDecodeError` naming it with a one-line reason."""
    try:
        return _open_audio(Path(path))
    except AudioDecodeError as error:
        error.about(path)
        raise


# What to do with audio that is not in a file (a pipe, standard input): the decoders read a file's header and
# length before its samples, and seek.
SEEKABLE_ONLY = "unet-sep reads files it can seek in: write the audio to a file first and give that file"


def _file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be an audio file to open (one line, without the name), or None for a regular file.

    Only ``stat``: a named pipe is never opened (that would wait for a writer). A broken symbolic link or one
    that loops is named as such.
    """
    try:
        status = os.stat(path)
    except OSError as error:
        link = os.readlink(path) if os.path.islink(path) else None
        if link is not None and error.errno == errno.ENOENT:
            return f"broken symbolic link to {link}"
        if link is not None and error.errno == errno.ELOOP:
            return f"symbolic link that loops (to {link}) and never reaches a file"
        return "no such file" if error.errno == errno.ENOENT else f"cannot read: {error.strerror or one_line(error)}"
    mode = status.st_mode
    if stat.S_ISDIR(mode):
        return "is a folder, not an audio file"
    if stat.S_ISFIFO(mode):
        return f"is a named pipe (FIFO), not a file; {SEEKABLE_ONLY}"
    if stat.S_ISSOCK(mode):
        return f"is a socket, not a file; {SEEKABLE_ONLY}"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return f"is a device, not a file; {SEEKABLE_ONLY}"
    if status.st_size == 0:
        return "file is empty (0 bytes)"
    return None


def _open_audio(path: Path) -> AudioReader:
    problem = _file_problem(path)
    if problem is not None:
        raise AudioDecodeError(problem)
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise AudioDecodeError(f"cannot read: {error.strerror or one_line(error)}") from error

    reasons: list[str] = []
    info = _probe_soundfile(path, reasons)
    if info is not None and info.frames == 0 and is_streamed_wav(info.path, info.format):
        # libsndfile takes a data size left at 0 literally; FFmpeg reads such a WAV to its end.
        logger.debug("%s: WAV data size left at 0 by a streaming writer, reading it with PyAV", path)
        info = None
    if info is None:
        info = _probe_pyav(path, reasons)
    if info is None:
        raise AudioDecodeError("not a readable audio file (" + "; ".join(reasons) + ")")
    if not MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioDecodeError(
            f"sample rate {info.sample_rate} Hz is outside the supported {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz"
        )
    if info.channels < 1:
        raise AudioDecodeError("no audio channels")
    if info.backend == "soundfile":
        _check_complete(info)
    if info.frames == 0:
        raise AudioDecodeError("holds no audio samples")
    return AudioReader(info)


def _probe_soundfile(path: Path, reasons: list[str]) -> AudioInfo | None:
    import soundfile as sf

    try:
        with quiet_native_stderr():
            sf_info = sf.info(os.fsencode(path))
    except Exception as error:  # libsndfile reports unknown formats with several exception types
        reasons.append(f"soundfile: {_library_reason(error)}")
        return None
    return AudioInfo(
        path=path,
        sample_rate=int(sf_info.samplerate),
        channels=int(sf_info.channels),
        frames=int(sf_info.frames),
        frames_exact=True,
        backend="soundfile",
        format=str(sf_info.format),
        subtype=str(sf_info.subtype),
    )


# FFmpeg's PCM codecs -> soundfile's subtype names (other codecs keep their own name, e.g. "AAC").
_PYAV_PCM_SUBTYPES = {
    **{f"pcm_{kind}{endian}": subtype for kind, subtype in
       (("s16", "PCM_16"), ("s24", "PCM_24"), ("s32", "PCM_32"), ("f32", "FLOAT"), ("f64", "DOUBLE"))
       for endian in ("le", "be")},
    "pcm_u8": "PCM_U8", "pcm_s8": "PCM_S8", "pcm_alaw": "ALAW", "pcm_mulaw": "ULAW",
}


def _probe_pyav(path: Path, reasons: list[str]) -> AudioInfo | None:
    import av

    try:
        with av.open(_ffmpeg_name(path)) as container:
            if not container.streams.audio:
                reasons.append("PyAV: no audio stream")
                return None
            stream = container.streams.audio[0]
            rate = int(stream.rate or 0)
            channels = int(stream.channels or 0)
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                seconds = container.duration / 1_000_000
            else:
                seconds = math.nan
            fmt = container.format.name
            subtype = _PYAV_PCM_SUBTYPES.get(stream.codec_context.name, stream.codec_context.name.upper())
    except Exception as error:  # FFmpeg raises many error types for non-media files
        reasons.append(f"PyAV: {_library_reason(error)}")
        return None
    if rate <= 0:
        reasons.append("PyAV: audio stream without a sample rate")
        return None
    frames = int(round(seconds * rate)) if math.isfinite(seconds) else -1
    return AudioInfo(
        path=path,
        sample_rate=rate,
        channels=channels,
        frames=frames,
        frames_exact=False,
        backend="pyav",
        format=fmt,
        subtype=subtype,
    )



def _check_complete(info: AudioInfo) -> None:
    """Raise :class:`AudioDecodeError` if the file holds less audio than its container announces."""
    try:
        if info.format.upper() == "OGG":
            if not ogg_ends_cleanly(info.path):
                raise AudioDecodeError(
                    f"file is truncated: its Ogg stream stops after {info.frames} samples without an end-of-stream page"
                )
            return
        extent = container_extent(info.path, info.format, info.frames)
    except OSError as error:
        raise AudioDecodeError(f"cannot read: {error.strerror or one_line(error)}") from error
    if extent is not None and extent.announced is not None and extent.held < extent.announced:
        raise _truncated(extent.announced, extent.held)


def read_audio(path: str | Path, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole file (or an excerpt) into memory: ``(float32 [channels, samples], sample_rate)``."""
    reader = open_audio(path)
    blocks = list(reader.blocks(offset=offset, duration=duration))
    if not blocks:
        return np.zeros((reader.info.channels, 0), dtype=np.float32), reader.info.sample_rate
    return np.concatenate(blocks, axis=1), reader.info.sample_rate
