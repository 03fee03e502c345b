"""WAV and raw PCM as streams, with the standard library: a WAV read from a pipe whose sizes are unknown (0 or
0xFFFFFFFF, as ``ffmpeg ... -f wav -`` writes them) and one written to a pipe the same way; raw little-endian PCM
in and out. Samples enter and leave as float32 blocks ``[channels, n]``."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import numpy as np

from unet_sep.audio.resample import check_sample_rate
from unet_sep.errors import FileError, SettingError

# Raw sample formats: name -> (bytes per sample, is float). Little-endian, interleaved, as ffmpeg's s16le/f32le.
SAMPLE_FORMATS = {"s16": (2, False), "s24": (3, False), "s32": (4, False), "f32": (4, True)}
MAX_CHANNELS = 64
# A data size that says "unknown": what a writer that cannot seek back puts in the RIFF and data headers.
UNKNOWN_SIZES = (0, 0xFFFFFFFF)
# The most bytes a RIFF size can count (what follows "RIFF" and the size: "WAVE", the chunks, the samples).
MAX_WAV_BYTES = 0xFFFFFFFE
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
# Bytes of header chunks (fmt, LIST, ...) read at most before "data": a stream that never reaches it is not a WAV.
_MAX_HEADER_BYTES = 1 << 20


class WavStreamError(FileError):
    """A stream that is not a WAV this module reads: ``str()`` names the stream (``-`` for standard input)."""


def check_sample_format(name: object, setting: str = "sample_format") -> str:
    """``name`` if it is one of :data:`SAMPLE_FORMATS`; else a :class:`SettingError` naming ``setting``."""
    if name not in SAMPLE_FORMATS:
        raise SettingError(setting, f"must be one of {', '.join(SAMPLE_FORMATS)}, got {name!r}")
    return str(name)


@dataclass(frozen=True)
class PcmFormat:
    """How samples travel: their rate, channels and :data:`SAMPLE_FORMATS` name."""

    sample_rate: int
    channels: int
    sample_format: str = "s16"

    def __post_init__(self) -> None:
        check_sample_rate(self.sample_rate, "rate")
        if isinstance(self.channels, bool) or not isinstance(self.channels, int) or \
                not 1 <= self.channels <= MAX_CHANNELS:
            raise SettingError("channels", f"must be a whole number from 1 to {MAX_CHANNELS}, got {self.channels!r}")
        check_sample_format(self.sample_format)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel."""
        return SAMPLE_FORMATS[self.sample_format][0] * self.channels


def decode_pcm(data: bytes, fmt: PcmFormat) -> np.ndarray:
    """Whole frames of interleaved little-endian PCM as float32 ``[channels, n]`` in [-1, 1]."""
    width, is_float = SAMPLE_FORMATS[fmt.sample_format]
    if is_float:
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    elif width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        samples = (values / float(1 << 23)).astype(np.float32)
    else:
        scaled = np.frombuffer(data, dtype=f"<i{width}").astype(np.float64) / float(1 << (8 * width - 1))
        samples = scaled.astype(np.float32)
    return np.ascontiguousarray(samples.reshape(-1, fmt.channels).T)


def encode_pcm(audio: np.ndarray, sample_format: str) -> bytes:
    """float32 ``[channels, n]`` as interleaved little-endian PCM; integer formats clip beyond full scale."""
    width, is_float = SAMPLE_FORMATS[sample_format]
    interleaved = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T).reshape(-1)
    if is_float:
        return interleaved.astype("<f4").tobytes()
    top = float(1 << (8 * width - 1))
    values = np.clip(np.rint(interleaved.astype(np.float64) * top), -top, top - 1).astype(np.int64)
    if width == 3:
        unsigned = (values & 0xFFFFFF).astype(np.uint32)
        return np.stack([unsigned & 0xFF, (unsigned >> 8) & 0xFF, unsigned >> 16], axis=1).astype(np.uint8).tobytes()
    return values.astype(f"<i{width}").tobytes()


def _read_exactly(stream: BinaryIO, count: int) -> bytes:
    """Up to ``count`` bytes, fewer only at the end of the stream (a pipe may give less per read)."""
    parts, held = [], 0
    while held < count:
        part = stream.read(count - held)
        if not part:
            break
        parts.append(part)
        held += len(part)
    return b"".join(parts)


def _format_chunk(body: bytes, name: str) -> PcmFormat:
    """The PCM format a ``fmt `` chunk describes (PCM 16/24/32 bits, float 32 bits, plain or extensible)."""
    if len(body) < 16:
        raise WavStreamError(f"its fmt chunk holds {len(body)} bytes, fewer than 16", name)
    tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _EXTENSIBLE and len(body) >= 26:
        tag = struct.unpack("<H", body[24:26])[0]  # the sub-format GUID starts with the plain tag
    formats = {(_PCM, 16): "s16", (_PCM, 24): "s24", (_PCM, 32): "s32", (_FLOAT, 32): "f32"}
    if (tag, bits) not in formats:
        raise WavStreamError(f"its samples are format {tag} with {bits} bits; this reads 16-, 24- or 32-bit PCM and "
                             "32-bit float", name)
    try:
        return PcmFormat(rate, channels, formats[(tag, bits)])
    except SettingError as error:
        raise WavStreamError(f"its header says {error.setting} {error.reason}", name) from None


def read_wav_header(stream: BinaryIO, name: str = "-") -> tuple[PcmFormat, int | None]:
    """Read a WAV header up to its samples; the format and the data bytes it announces (None: unknown, until the
    stream ends). Raises :class:`WavStreamError` naming ``name`` for anything else."""
    riff = _read_exactly(stream, 12)
    if len(riff) < 12 or riff[:4] not in (b"RIFF", b"RF64") or riff[8:12] != b"WAVE":
        raise WavStreamError("not a WAV stream (no RIFF/WAVE header)", name)
    fmt, seen = None, 12
    while True:
        head = _read_exactly(stream, 8)
        if len(head) < 8:
            raise WavStreamError("the stream ends before its data chunk", name)
        chunk, size = head[:4], struct.unpack("<I", head[4:])[0]
        if chunk == b"data":
            if fmt is None:
                raise WavStreamError("its data chunk comes before any fmt chunk", name)
            unknown = size in UNKNOWN_SIZES or riff[:4] == b"RF64"
            return fmt, None if unknown else size
        seen += 8 + size + (size & 1)
        if seen > _MAX_HEADER_BYTES:
            raise WavStreamError(f"no data chunk in its first {_MAX_HEADER_BYTES} bytes", name)
        body = _read_exactly(stream, size + (size & 1))
        if len(body) < size:
            raise WavStreamError(f"the stream ends inside its {chunk.decode('latin-1')!r} chunk", name)
        if chunk == b"fmt ":
            fmt = _format_chunk(body[:size], name)


def pcm_blocks(stream: BinaryIO, fmt: PcmFormat, block_frames: int,
               data_bytes: int | None = None) -> Iterator[np.ndarray]:
    """float32 blocks ``[channels, n]`` of up to ``block_frames`` from raw PCM in ``stream`` (after a WAV header,
    ``data_bytes`` bounds what is read); yields each block as soon as it is whole, the last one shorter; a broken
    last frame is dropped."""
    left = data_bytes
    while left is None or left > 0:
        count = block_frames * fmt.frame_bytes if left is None else min(block_frames * fmt.frame_bytes, left)
        data = _read_exactly(stream, count)
        if left is not None:
            left -= len(data)
        whole = len(data) - len(data) % fmt.frame_bytes
        if whole:
            yield decode_pcm(data[:whole], fmt)
        if len(data) < count:
            return


def wav_header(fmt: PcmFormat, data_bytes: int | None = None) -> bytes:
    """A WAV header for ``fmt``; with ``data_bytes`` None, the sizes say "unknown" (0xFFFFFFFF), as ffmpeg writes
    to a pipe. Float samples get format 3 (IEEE float), integers 1 (PCM); more than 2 channels or 24 bits use the
    extensible form, as players expect."""
    width, is_float = SAMPLE_FORMATS[fmt.sample_format]
    tag = _FLOAT if is_float else _PCM
    block_align = width * fmt.channels
    basic = struct.pack("<HIIHH", fmt.channels, fmt.sample_rate, fmt.sample_rate * block_align, block_align,
                        8 * width)
    if fmt.channels > 2 or width == 3:
        guid_tail = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        body = struct.pack("<H", _EXTENSIBLE) + basic + struct.pack("<HHIH", 22, 8 * width, 0, tag) + guid_tail
    else:
        body = struct.pack("<H", tag) + basic
    size = 0xFFFFFFFF if data_bytes is None else data_bytes
    riff = 0xFFFFFFFF if data_bytes is None else 4 + 8 + len(body) + 8 + data_bytes
    return (b"RIFF" + struct.pack("<I", riff) + b"WAVE" + b"fmt " + struct.pack("<I", len(body)) + body + b"data" +
            struct.pack("<I", size))


class PcmStreamWriter:
    """Writes float32 blocks to a binary stream as raw PCM, or as a WAV of unknown length (``wav=True``: the
    header first, sizes 0xFFFFFFFF)."""

    def __init__(self, stream: BinaryIO, fmt: PcmFormat, wav: bool) -> None:
        self.stream = stream
        self.fmt = fmt
        self._header = wav_header(fmt) if wav else b""

    def write(self, block: np.ndarray) -> None:
        """Write ``[channels, n]`` float32 samples (with the header before the first)."""
        data = self._header + encode_pcm(block, self.fmt.sample_format)
        self._header = b""
        self.stream.write(data)
        self.stream.flush()
