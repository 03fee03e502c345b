"""Does a file hold what its container announces? Header checks that find files cut short.

libsndfile trims the length of a WAV or AIFF whose data chunk runs past the end of the file to what is there, so
a file cut in half passes for a whole file of half the length. These checks read the container's own header (for
Ogg, its last page) and compare; MP3 is checked while decoding (``unet_sep.audio.decode``). They raise only
``OSError`` (a file that cannot be read); the decoder turns what they find into its messages.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from unet_sep.audio.native_stderr import quiet_native_stderr

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
class Extent:
    """Sample frames a container's header announces (None: a streaming writer's placeholder) and those held."""

    announced: int | None
    held: int


def container_extent(path: Path, kind: str, frames: int) -> Extent | None:
    """What a WAV, AIFF or FLAC file's header announces and what the file holds; None for other formats.

    ``kind`` is soundfile's format name (``WAV``, ``AIFF``, ``FLAC``, ...; any case), ``frames`` the sample
    frames libsndfile reports.
    """
    kind = kind.upper()
    if kind in _RIFF_FORMATS:
        return _riff_extent(path)
    if kind == "AIFF":
        return _aiff_extent(path)
    if kind == "FLAC":
        return _flac_extent(path, frames)
    return None


def is_streamed_wav(path: Path, kind: str) -> bool:
    """Whether a WAV's data size is a streaming writer's placeholder, with samples after it."""
    if kind.upper() not in _RIFF_FORMATS:
        return False
    try:
        extent = _riff_extent(path)
    except OSError:
        return False
    return extent is not None and extent.announced is None and extent.held > 0


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


def _riff_extent(path: Path) -> Extent | None:
    """A WAVE file's data chunk in sample frames: the size it declares (RF64: in ds64) against the bytes there.

    None without a fmt chunk before the data chunk or for codecs whose blocks are not single frames.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in _RIFF_MAGICS or head[8:] != b"WAVE":
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        frame_bytes: int | None = None
        data_size64: int | None = None
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
                    return Extent(None, there // frame_bytes)
                return Extent(declared // frame_bytes, min(declared, there) // frame_bytes)
    return None


def _wave_frame_bytes(fmt: bytes, endian: str) -> int | None:
    """Bytes per sample frame from a WAVE fmt chunk, for linear codecs (None for the others)."""
    if len(fmt) < 14:
        return None
    tag, _, _, _, block_align = struct.unpack(endian + "HHIIH", fmt[:14])
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(fmt) >= 26:
        (tag,) = struct.unpack(endian + "H", fmt[24:26])  # the SubFormat GUID starts with the format code
    return block_align if tag in _LINEAR_WAVE_FORMATS and block_align > 0 else None


def _aiff_extent(path: Path) -> Extent | None:
    """An AIFF/AIFC file's COMM frame count against the whole frames its SSND chunk holds.

    None without both chunks or for compressed AIFC.
    """
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"FORM" or head[8:] not in (b"AIFF", b"AIFC"):
            return None
        comm: tuple[int, int] | None = None
        sound_bytes: int | None = None
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
    return Extent(announced, sound_bytes // frame_bytes)


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


def _flac_extent(path: Path, frames: int) -> Extent | None:
    """STREAMINFO's total samples (``frames``) against those the file holds; None when STREAMINFO gives no total.

    Reading the last announced sample costs one seek (libFLAC bisects the file); only when that fails are
    the samples there counted, by decoding them.
    """
    if frames <= 0:
        return None
    if _reads_sample(path, frames - 1):
        return Extent(frames, frames)
    return Extent(frames, _decodable_frames(path))


def _reads_sample(path: Path, index: int) -> bool:
    """Whether libsndfile can seek to sample frame ``index`` and decode it."""
    import soundfile as sf

    try:
        with quiet_native_stderr():
            handle = sf.SoundFile(os.fsencode(path))  # bytes: a name need not be UTF-8
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
        with quiet_native_stderr():
            handle = sf.SoundFile(os.fsencode(path))  # bytes: a name need not be UTF-8
        with handle:
            while (block := handle.read(_FLAC_COUNT_BLOCK, dtype="float32").shape[0]) > 0:
                count += block
    except (sf.LibsndfileError, RuntimeError):
        pass  # where a cut FLAC file ends, libFLAC loses sync
    return count


def ogg_ends_cleanly(path: Path) -> bool:
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
