"""Writing stems: incremental, to a temporary name in the target folder, renamed when complete."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf

from unet_sep.atomic import temporary_path
from unet_sep.errors import FileError, SettingError, one_line

logger = logging.getLogger(__name__)

# format name -> (libsndfile container, {bit depth -> subtype}); lossy formats have no bit depth to choose
OUTPUT_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    "wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}),
    "flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}),
    "ogg": ("OGG", {}),
    "mp3": ("MP3", {}),
}
LOSSY_SUBTYPES = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
# Input sample types that 16-bit PCM holds exactly; 24-bit PCM holds these and PCM_24.
_SIXTEEN_BIT_OR_LESS = {"PCM_S8", "PCM_U8", "PCM_16", "ULAW", "ALAW", "DWVW_12", "DWVW_16", "DPCM_8", "DPCM_16",
                        "IMA_ADPCM", "MS_ADPCM", "G721_32", "G723_24", "G723_40", "GSM610", "VOX_ADPCM"}
# MP3 constant bit rates (kbit/s) by MPEG version, which the sample rate decides; libsndfile maps its compression
# level linearly from the highest (0.0) to the lowest (1.0) of the version's range and LAME takes the nearest.
_MP3_BITRATES = {
    (32000, 44100, 48000): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (16000, 22050, 24000): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (8000, 11025, 12000): (8, 16, 24, 32, 40, 48, 56, 64),
}
# Ogg Vorbis nominal bit rates (kbit/s, stereo 44.1 kHz) at qualities 0.0, 0.1, ..., 1.0 (libvorbis's table).
_VORBIS_NOMINAL = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)
BITRATES = sorted({rate for rates in _MP3_BITRATES.values() for rate in rates} | set(_VORBIS_NOMINAL))


class AudioEncodeError(FileError):
    """A stem that cannot be written; the reason is one line meant for the user."""


def subtype_for(fmt: str, bit_depth: str | None) -> tuple[str, str]:
    """(container, subtype) for an output format and bit depth (None: 16-bit PCM where there is a choice).

    Raises :class:`~unet_sep.errors.SettingError` naming ``fmt`` or ``bit_depth`` and the allowed values.
    """
    if fmt not in OUTPUT_FORMATS:
        raise SettingError("fmt", f"unknown output format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    container, subtypes = OUTPUT_FORMATS[fmt]
    if not subtypes:
        return container, LOSSY_SUBTYPES[fmt]
    depth = "16" if bit_depth is None else str(bit_depth)
    if depth not in subtypes:
        raise SettingError("bit_depth", f"{fmt} cannot store bit depth {depth}; choose from {', '.join(subtypes)}")
    return container, subtypes[depth]


def check_encoding(fmt: str, bit_depth: str | None, bitrate: int | None) -> tuple[str, str]:
    """(container, subtype) as :func:`subtype_for`, or :class:`~unet_sep.errors.SettingError` for a format, bit
    depth or bit rate that cannot be written."""
    encoding = subtype_for(fmt, bit_depth)
    if bitrate is None:
        return encoding
    if fmt not in LOSSY_SUBTYPES:
        raise SettingError("bitrate", f"applies to mp3 and ogg, not {fmt}")
    if bitrate not in BITRATES:
        raise SettingError("bitrate", f"{bitrate} kbit/s is not offered; choose from {', '.join(map(str, BITRATES))}")
    return encoding


def default_bit_depth(fmt: str, input_subtype: str) -> str | None:
    """The bit depth that keeps an input's samples as they are, where ``fmt`` has a choice (else None).

    16- and 24-bit PCM inputs keep their depth. Everything else (32-bit or float PCM, lossy formats such as MP3,
    whose decoded samples may exceed full scale) is written as float WAV, so the stems add up to the input
    without clipping; FLAC, which has no float, gets 24 bits.
    """
    depths = OUTPUT_FORMATS[fmt][1] if fmt in OUTPUT_FORMATS else {}
    if not depths:
        return None
    subtype = input_subtype.upper()
    if subtype in _SIXTEEN_BIT_OR_LESS:
        return "16"
    if subtype == "PCM_24" or "float" not in depths:
        return "24"
    return "float"


def _compression_level(fmt: str, bitrate: int, sample_rate: int) -> tuple[float, int]:
    """libsndfile's compression level for ``bitrate`` kbit/s, and the bit rate it gives at ``sample_rate``."""
    if fmt == "mp3":
        rates = next((r for k, r in _MP3_BITRATES.items() if sample_rate in k), _MP3_BITRATES[(32000, 44100, 48000)])
        chosen = min(rates, key=lambda r: (abs(r - bitrate), -r))
        level = (rates[-1] - chosen) / (rates[-1] - rates[0])
        return min(level, 0.9999), chosen  # libsndfile refuses exactly 1.0
    quality = float(np.interp(bitrate, _VORBIS_NOMINAL, np.linspace(0.0, 1.0, len(_VORBIS_NOMINAL))))
    return 1.0 - quality, bitrate


class AtomicAudioWriter:
    """Writes ``[channels, n]`` float32 blocks to a hidden temporary file beside ``path``, named by
    :func:`unet_sep.atomic.temporary_path` (so a killed run's leftover is one that
    :func:`unet_sep.atomic.remove_stale_temporaries` removes).

    ``bit_depth`` picks the PCM depth of wav and flac (see :data:`OUTPUT_FORMATS`); ``bitrate`` (kbit/s) the
    constant bit rate of mp3 or the Vorbis quality whose nominal rate it is (ogg), else the encoder's default.

    :meth:`commit` renames it to ``path``; :meth:`abort` (or leaving a ``with`` block by an exception)
    deletes it, so no partial file is ever left under the final name.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, fmt: str = "wav", bit_depth: str | None = None,
                 bitrate: int | None = None) -> None:
        self.path = Path(path)
        container, self.subtype = check_encoding(fmt, bit_depth, bitrate)
        self._integer = self.subtype.startswith("PCM")
        self.tmp_path = temporary_path(self.path)
        self.clipped = 0
        self.frames = 0
        compression: dict[str, object] = {}
        if bitrate is not None:
            level, actual = _compression_level(fmt, bitrate, sample_rate)
            compression = {"compression_level": level, "bitrate_mode": "CONSTANT" if fmt == "mp3" else None}
            if actual != bitrate:
                logger.warning("%s: mp3 at %d Hz offers no %d kbit/s; writing %d kbit/s", self.path, sample_rate,
                               bitrate, actual)
        try:
            self._file = sf.SoundFile(
                os.fsencode(self.tmp_path), mode="w", samplerate=sample_rate, channels=channels,
                format=container, subtype=self.subtype, **compression,
            )
        except Exception as error:
            self._remove_tmp()
            raise AudioEncodeError(f"cannot write {self.path}: {one_line(error)}") from error

    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block.T, dtype=np.float32)
        if self._integer:
            over = np.abs(data) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                data = np.clip(data, -1.0, 1.0)
        try:
            self._file.write(data)
        except Exception as error:
            raise AudioEncodeError(f"cannot write {self.path}: {one_line(error)}") from error
        self.frames += data.shape[0]

    def commit(self) -> Path:
        """Close and move the file to its final name."""
        self._file.close()
        os.replace(self.tmp_path, self.path)
        if self.clipped:
            logger.warning("%s: %d samples clipped to [-1, 1] for %s", self.path, self.clipped, self.subtype)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._file.close()
        except Exception:  # closing a half-written file may fail; the file is deleted anyway
            pass
        self._remove_tmp()

    def _remove_tmp(self) -> None:
        self.tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> AtomicAudioWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self.abort()
