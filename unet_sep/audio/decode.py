"""Decoding audio files as streams of float32 blocks ``[channels, samples]``.

soundfile (libsndfile) reads WAV, FLAC, Ogg and MP3 among others; everything else (m4a/aac/mp4/webm,
...) goes through PyAV (FFmpeg). Samples of any integer or float type come out as float32 at the file's
own rate. Blocks are read lazily, so a file of any length uses a bounded amount of memory. A file cut short
(holding less than its container announces) is an error, found when it is opened where the container tells.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from unet_sep.errors import FileError

logger = logging.getLogger(__name__)

MIN_SAMPLE_RATE = 8000
MAX_SAMPLE_RATE = 192000


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
            raise error.about(self.info.path)

    def _soundfile_blocks(self, block_frames: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        import soundfile as sf

        declared = self.info.frames
        # MP3 frame counts are estimates unless the file has a Xing/Info header, so read to the real end
        # of the stream and only call a file truncated when clearly less came out than it announced.
        is_mp3 = self.info.format.upper() == "MP3"
        position = start
        try:
            with _quiet_native_stderr():
                handle = sf.SoundFile(str(self.info.path))
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
            raise AudioDecodeError(f"decoding failed after {position} samples: {_one_line(error)}") from error
        expected = declared if stop is None else min(stop, declared)
        tolerance = max(4608, expected // 200) if is_mp3 else 0
        if position < expected - tolerance:
            raise _truncated(declared, position)

    def _pyav_blocks(self, block_frames: int, start: int, stop: int | None) -> Iterator[np.ndarray]:
        import av

        pending: list[np.ndarray] = []
        pending_frames = 0
        position = 0  # samples decoded from the start of the stream
        try:
            with av.open(str(self.info.path)) as container:
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
            raise AudioDecodeError(f"decoding failed after {position} samples: {_one_line(error)}") from error
        if pending_frames:
            yield np.ascontiguousarray(np.concatenate(pending, axis=1))


def _take(pending: list[np.ndarray], count: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    joined = np.concatenate(pending, axis=1)
    rest = joined[:, count:]
    return np.ascontiguousarray(joined[:, :count]), ([rest] if rest.shape[1] else []), rest.shape[1]


class _StderrSilencer:
    """Send what native decoders print straight to file descriptor 2 to /dev/null while files are opened.

    libsndfile's MP3 decoder (libmpg123) prints e.g. "Warning: Xing stream size off by more than 1%"
    when opening a truncated file; the user gets our one-line error instead. File descriptor 2 belongs to
    the whole process, so the redirect is shared and counted: the first thread in redirects, the last one
    out restores, and threads decoding in parallel can never leave stderr pointing at /dev/null. Anything
    another thread writes to file descriptor 2 during those few milliseconds is lost, so the command line
    writes its own messages through a duplicate of it (``unet_sep.cli.main``); a program that embeds the
    package and writes to fd 2 from other threads while files are opened can do the same.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None
        self._fd = -1

    @contextlib.contextmanager
    def __call__(self):
        with self._lock:
            if self._users == 0:
                self._redirect()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._restore()

    def _redirect(self) -> None:
        try:
            self._fd = 2  # the C library's stderr, where native decoders print (not Python's sys.stderr)
            sys.stderr.flush()
            self._saved = os.dup(self._fd)
        except (AttributeError, OSError, ValueError):  # no real stderr (captured, closed): nothing to silence
            self._saved = None
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._fd)
        finally:
            os.close(devnull)

    def _restore(self) -> None:
        if self._saved is None:
            return
        os.dup2(self._saved, self._fd)
        os.close(self._saved)
        self._saved = None


# File descriptor 2 is one per process, so is the object that guards it.
_quiet_native_stderr = _StderrSilencer()


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _truncated(announced: int, held: int) -> AudioDecodeError:
    return AudioDecodeError(f"file is truncated: its header announces {announced} samples but it holds {held}")


def open_audio(path: str | Path) -> AudioReader:
    """Probe ``path`` and return a reader, or raise :class:`AudioDecodeError` naming it with a one-line reason."""
    try:
        return _open_audio(Path(path))
    except AudioDecodeError as error:
        raise error.about(path)


def _open_audio(path: Path) -> AudioReader:
    if not path.exists():
        raise AudioDecodeError("no such file")
    if path.is_dir():
        raise AudioDecodeError("is a folder, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise AudioDecodeError(f"cannot read: {_one_line(error)}") from error
    if size == 0:
        raise AudioDecodeError("file is empty (0 bytes)")
    try:
        with path.open("rb"):
            pass
    except OSError as error:
        raise AudioDecodeError(f"cannot read: {error.strerror or _one_line(error)}") from error

    reasons = []
    info = _probe_soundfile(path, reasons)
    if info is not None and info.frames == 0 and _is_streamed_wav(info):
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
        with _quiet_native_stderr():
            sf_info = sf.info(str(path))
    except Exception as error:  # libsndfile reports unknown formats with several exception types
        reasons.append(f"soundfile: {_one_line(error)}")
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
        with av.open(str(path)) as container:
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
        reasons.append(f"PyAV: {_one_line(error)}")
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


# ---- does the file hold what its container announces? -------------------------------------------------
# libsndfile trims the length of a WAV or AIFF whose data chunk runs past the end of the file to what is
# there, so a file cut in half passes for a whole file of half the length. These checks read the
# container's own header (for Ogg, its last page) and compare; MP3 is checked while decoding.

_RIFF_FORMATS = ("WAV", "WAVEX", "RF64")  # soundfile's names for RIFF WAVE files
_RIFF_MAGICS = (b"RIFF", b"RIFX", b"RF64", b"BW64")
_SIZE_PLACEHOLDERS = (0, 0xFFFFFFFF)  # data sizes left by writers that cannot seek back (ffmpeg to a pipe)
_SOX_UNSPECIFIED = 0x7FFFF000  # SoX's placeholder, rounded down to whole frames
_LINEAR_WAVE_FORMATS = (1, 3, 6, 7)  # PCM, IEEE float, A-law, mu-law: one block per sample frame
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_AIFC_LINEAR = (b"NONE", b"twos", b"sowt", b"raw ", b"in24", b"in32", b"fl32", b"FL32", b"fl64", b"FL64")
_AIFC_ONE_BYTE = (b"ulaw", b"alaw", b"ULAW", b"ALAW")
_OGG_MAX_PAGE = 27 + 255 + 255 * 255  # page header, segment table, body
_OGG_END_OF_STREAM = 0x04
_FLAC_COUNT_BLOCK = 4096  # a failed read loses its whole block: count in small ones


@dataclass(frozen=True)
class _Extent:
    """Sample frames a container's header announces (None: a streaming writer's placeholder) and those held."""

    announced: int | None
    held: int


def _check_complete(info: AudioInfo) -> None:
    """Raise :class:`AudioDecodeError` if the file holds less audio than its container announces."""
    try:
        if info.format.upper() == "OGG":
            if not _ogg_ends_cleanly(info.path):
                raise AudioDecodeError(
                    f"file is truncated: its Ogg stream stops after {info.frames} samples without an end-of-stream page"
                )
            return
        extent = _container_extent(info)
    except OSError as error:
        raise AudioDecodeError(f"cannot read: {error.strerror or _one_line(error)}") from error
    if extent is not None and extent.announced is not None and extent.held < extent.announced:
        raise _truncated(extent.announced, extent.held)


def _is_streamed_wav(info: AudioInfo) -> bool:
    """Whether a WAV's data size is a streaming writer's placeholder, with samples after it."""
    if info.format.upper() not in _RIFF_FORMATS:
        return False
    try:
        extent = _riff_extent(info.path)
    except OSError:
        return False
    return extent is not None and extent.announced is None and extent.held > 0


def _container_extent(info: AudioInfo) -> _Extent | None:
    """What a WAV, AIFF or FLAC file's header announces and what the file holds; None for other formats."""
    kind = info.format.upper()
    if kind in _RIFF_FORMATS:
        return _riff_extent(info.path)
    if kind == "AIFF":
        return _aiff_extent(info.path)
    if kind == "FLAC":
        return _flac_extent(info)
    return None


def _chunks(handle: BinaryIO, endian: str, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """Walk RIFF/IFF chunks from byte ``start``: yield ``(id, declared size, offset of the body)`` with the
    handle at the body. Bodies are padded to an even size; the walk stops at the end of the file."""
    position = start
    while position + 8 <= end:
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:  # the file shrank while being read
            return
        chunk_id, size = struct.unpack(endian + "4sI", header)
        yield chunk_id, size, position + 8
        position += 8 + size + (size & 1)


def _riff_extent(path: Path) -> _Extent | None:
    """A WAVE file's data chunk in sample frames: the size it declares (RF64: in ds64) against the bytes there.

    None without a fmt chunk before the data chunk or for codecs whose blocks are not single frames.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in _RIFF_MAGICS or head[8:] != b"WAVE":
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        frame_bytes = data_size64 = None
        for chunk_id, declared, body in _chunks(handle, endian, 12, size):
            if chunk_id == b"ds64":
                fields = handle.read(16)
                data_size64 = struct.unpack("<QQ", fields)[1] if len(fields) == 16 else None
            elif chunk_id == b"fmt ":
                frame_bytes = _wave_frame_bytes(handle.read(min(declared, 40)), endian)
            elif chunk_id == b"data":
                if frame_bytes is None:
                    return None
                if declared == 0xFFFFFFFF and data_size64 is not None:
                    declared = data_size64
                there = size - body
                if declared in _SIZE_PLACEHOLDERS or declared == _SOX_UNSPECIFIED // frame_bytes * frame_bytes:
                    return _Extent(None, there // frame_bytes)
                return _Extent(declared // frame_bytes, min(declared, there) // frame_bytes)
    return None


def _wave_frame_bytes(fmt: bytes, endian: str) -> int | None:
    """Bytes per sample frame from a WAVE fmt chunk, for linear codecs (None for the others)."""
    if len(fmt) < 14:
        return None
    tag, _, _, _, block_align = struct.unpack(endian + "HHIIH", fmt[:14])
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        (tag,) = struct.unpack(endian + "H", fmt[24:26])  # the SubFormat GUID starts with the format code
    return block_align if tag in _LINEAR_WAVE_FORMATS and block_align > 0 else None


def _aiff_extent(path: Path) -> _Extent | None:
    """An AIFF/AIFC file's COMM frame count against the whole frames its SSND chunk holds.

    None without both chunks or for compressed AIFC.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"FORM" or head[8:] not in (b"AIFF", b"AIFC"):
            return None
        comm = sound_bytes = None
        for chunk_id, declared, body in _chunks(handle, ">", 12, size):
            if chunk_id == b"COMM":
                comm = _aiff_comm(handle.read(min(declared, 22)), aifc=head[8:] == b"AIFC")
            elif chunk_id == b"SSND":
                fields = handle.read(4)  # the offset of the first sample, after the chunk's 8 bytes of fields
                skip = 8 + (struct.unpack(">I", fields)[0] if len(fields) == 4 else 0)
                sound_bytes = max(0, min(declared, size - body) - skip)
    if comm is None or sound_bytes is None:
        return None
    announced, frame_bytes = comm
    return _Extent(announced, sound_bytes // frame_bytes)


def _aiff_comm(comm: bytes, aifc: bool) -> tuple[int, int] | None:
    """``(sample frames, bytes per frame)`` from an AIFF COMM chunk; None for compressed AIFC or a short chunk."""
    if len(comm) < (22 if aifc else 18):
        return None
    channels, frames, bits = struct.unpack(">HIH", comm[:8])
    compression = comm[18:22] if aifc else b"NONE"
    if compression in _AIFC_LINEAR:
        width = (bits + 7) // 8
    elif compression in _AIFC_ONE_BYTE:
        width = 1
    else:
        return None
    return (frames, channels * width) if channels * width > 0 else None


def _flac_extent(info: AudioInfo) -> _Extent | None:
    """STREAMINFO's total samples against those the file holds; None when STREAMINFO gives no total.

    Reading the last announced sample costs one seek (libFLAC bisects the file); only when that fails are
    the samples there counted, by decoding them.
    """
    if info.frames <= 0:
        return None
    if _reads_sample(info.path, info.frames - 1):
        return _Extent(info.frames, info.frames)
    return _Extent(info.frames, _decodable_frames(info.path))


def _reads_sample(path: Path, index: int) -> bool:
    """Whether libsndfile can seek to sample frame ``index`` and decode it."""
    import soundfile as sf

    try:
        with _quiet_native_stderr():
            handle = sf.SoundFile(str(path))
        with handle:
            handle.seek(index)
            return handle.read(1, dtype="float32").shape[0] == 1
    except (sf.LibsndfileError, RuntimeError):
        return False


def _decodable_frames(path: Path) -> int:
    """How many sample frames libsndfile decodes from the start before the stream ends or breaks off."""
    import soundfile as sf

    count = 0
    try:
        with _quiet_native_stderr():
            handle = sf.SoundFile(str(path))
        with handle:
            while (block := handle.read(_FLAC_COUNT_BLOCK, dtype="float32").shape[0]) > 0:
                count += block
    except (sf.LibsndfileError, RuntimeError):
        pass  # where a cut FLAC file ends, libFLAC loses sync
    return count


def _ogg_ends_cleanly(path: Path) -> bool:
    """Whether an Ogg file's last page is whole and flagged end-of-stream; reads only the last 64 KiB.

    Ogg declares no total length, but a writer that finishes the stream flags its last page: a cut file
    lacks that page and usually ends inside a partial one.
    """
    with path.open("rb") as handle:
        size = handle.seek(0, os.SEEK_END)
        handle.seek(max(0, size - _OGG_MAX_PAGE))
        tail = handle.read()
    start = tail.rfind(b"OggS")
    while start >= 0 and len(tail) - start >= 6 and (tail[start + 4] != 0 or tail[start + 5] > 7):
        start = tail.rfind(b"OggS", 0, start)  # the capture pattern inside compressed data, not a page header
    if start < 0 or len(tail) - start < 27:
        return False
    flags, segments = tail[start + 5], tail[start + 26]
    table = tail[start + 27 : start + 27 + segments]
    end = start + 27 + segments + sum(table)
    return len(table) == segments and end <= len(tail) and bool(flags & _OGG_END_OF_STREAM)


def read_audio(path: str | Path, offset: float = 0.0, duration: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a whole file (or an excerpt) into memory: ``(float32 [channels, samples], sample_rate)``."""
    reader = open_audio(path)
    blocks = list(reader.blocks(offset=offset, duration=duration))
    if not blocks:
        return np.zeros((reader.info.channels, 0), dtype=np.float32), reader.info.sample_rate
    return np.concatenate(blocks, axis=1), reader.info.sample_rate
