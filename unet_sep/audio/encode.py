"""Writing stems: what each output format can hold (:data:`FORMAT_LIMITS`, checked before any work), incremental
encoding to a temporary name in the target folder that is renamed when complete, and the one wording of every
failure to write (:func:`write_failure`), which never names a temporary file."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Iterator

import numpy as np
import soundfile as sf

from unet_sep.atomic import temporary_path
from unet_sep.errors import AdvisedError, FileError, SettingError, one_line

logger = logging.getLogger(__name__)

# format name -> (libsndfile container, {bit depth -> subtype}); lossy formats have no bit depth to choose
OUTPUT_FORMATS: dict[str, tuple[str, dict[str, str]]] = {
    "wav": ("WAV", {"16": "PCM_16", "24": "PCM_24", "float": "FLOAT"}),
    "flac": ("FLAC", {"16": "PCM_16", "24": "PCM_24"}),
    "ogg": ("OGG", {}),
    "mp3": ("MP3", {}),
}
LOSSY_SUBTYPES = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}
_SAMPLE_BYTES = {"PCM_16": 2, "PCM_24": 3, "FLOAT": 4}
# Input sample types that 16-bit PCM holds exactly.
_SIXTEEN_BIT_OR_LESS = {"PCM_S8", "PCM_U8", "PCM_16", "ULAW", "ALAW", "DWVW_12", "DWVW_16", "DPCM_8", "DPCM_16",
                        "IMA_ADPCM", "MS_ADPCM", "G721_32", "G723_24", "G723_40", "GSM610", "VOX_ADPCM"}
# MP3 constant bit rates (kbit/s) by MPEG version, which the sample rate decides; libsndfile maps its compression
# level linearly from the highest (0.0) to the lowest (1.0) of the version's range and LAME takes the nearest.
_MP3_BITRATES = {
    (32000, 44100, 48000): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (16000, 22050, 24000): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (8000, 11025, 12000): (8, 16, 24, 32, 40, 48, 56, 64),
}
MP3_RATES = tuple(sorted(rate for rates in _MP3_BITRATES for rate in rates))
_MP3_ANY_BITRATE = tuple(sorted({bitrate for bitrates in _MP3_BITRATES.values() for bitrate in bitrates}))
# Ogg Vorbis nominal bit rates (kbit/s, stereo 44.1 kHz) at qualities 0.0, 0.1, ..., 1.0 (libvorbis's table); a
# bit rate between two is the quality interpolated between theirs.
_VORBIS_NOMINAL = (64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 500)
# The largest sample 16-bit PCM holds (libsndfile scales by 32768 and clips above 32767): the peak of rescaled stems.
FULL_SCALE = 32767 / 32768
# What to do with stem samples beyond full scale (see :func:`rescale_gain` and AtomicAudioWriter's ``clamp``).
CLIP_MODES = ("rescale", "clamp", "none")


@dataclass(frozen=True)
class FormatLimits:
    """What one output format holds as libsndfile 1.2 writes it, found by trying (tests/test_audio_encode.py
    checks this table against libsndfile).

    ``rates``: the sample rates it takes (None: every rate unet-sep reads, 8 to 192 kHz); ``channels``: the most
    channels; ``data_bytes``: the most bytes of samples one file holds (None: only the file system's limit).
    """

    rates: tuple[int, ...] | None
    channels: int
    data_bytes: int | None = None


FORMAT_LIMITS = {
    # RIFF sizes are 32-bit: libsndfile writes a larger WAV without a word, and its header then reads back short.
    "wav": FormatLimits(None, 1024, data_bytes=2**32 - 2**20),
    "flac": FormatLimits(None, 8),
    "ogg": FormatLimits(None, 255),  # libvorbis at 256 channels or above 200 kHz crashes the process
    "mp3": FormatLimits(MP3_RATES, 2),
}


class AudioEncodeError(FileError):
    """A stem that cannot be written; the reason is one line meant for the user."""


class OutputFolderError(AudioEncodeError):
    """The output folder can take no more (full disk, quota, read-only file system): every later input of the run
    would fail the same way, so the file pipeline stops early."""


class EncoderLimitError(AudioEncodeError, AdvisedError):
    """Stems the chosen format cannot hold (a rate, a channel count, a bit rate, a size), found before any work;
    ``advice`` names settings that would hold them (:class:`~unet_sep.errors.AdvisedError`)."""


def subtype_for(fmt: str, bit_depth: str | None) -> tuple[str, str]:
    """(container, subtype) for an output format and bit depth (None: 16-bit PCM where there is a choice).

    Raises :class:`~unet_sep.errors.SettingError` naming ``fmt`` or ``bit_depth`` and the allowed values.
    """
    if fmt not in OUTPUT_FORMATS:
        raise SettingError("fmt", f"unknown output format {fmt!r}; choose from {', '.join(OUTPUT_FORMATS)}")
    container, subtypes = OUTPUT_FORMATS[fmt]
    if not subtypes:
        if bit_depth is not None:
            raise SettingError("bit_depth", f"{fmt} has no bit depth to choose (it applies to wav and flac)")
        return container, LOSSY_SUBTYPES[fmt]
    depth = "16" if bit_depth is None else str(bit_depth)
    if depth not in subtypes:
        raise SettingError("bit_depth", f"{fmt} cannot store bit depth {depth}; choose from {', '.join(subtypes)}")
    return container, subtypes[depth]


def check_encoding(fmt: str, bit_depth: str | None, bitrate: int | None) -> tuple[str, str]:
    """(container, subtype) as :func:`subtype_for`, or :class:`~unet_sep.errors.SettingError` for a format, bit
    depth or bit rate that cannot be written at any sample rate (see :func:`check_output` for one rate)."""
    encoding = subtype_for(fmt, bit_depth)
    if bitrate is None:
        return encoding
    if fmt not in LOSSY_SUBTYPES:
        raise SettingError("bitrate", f"applies to mp3 and ogg, not {fmt}")
    if fmt == "ogg" and not _VORBIS_NOMINAL[0] <= bitrate <= _VORBIS_NOMINAL[-1]:
        raise SettingError("bitrate", f"ogg takes {_VORBIS_NOMINAL[0]} to {_VORBIS_NOMINAL[-1]} kbit/s, not {bitrate}")
    if fmt == "mp3" and bitrate not in _MP3_ANY_BITRATE:
        raise SettingError("bitrate", f"{bitrate} kbit/s is not offered; choose from "
                                      f"{', '.join(map(str, _MP3_ANY_BITRATE))}")
    return encoding


def default_bit_depth(fmt: str, input_subtype: str) -> str | None:
    """The bit depth of ``fmt`` when none is asked for (None where the format has no choice).

    WAV: float, whatever the input's depth: the stems are float results, which the input's depth does not bound
    (a loud 16-bit master gives stems beyond full scale), and float keeps them whole, so they add up to the
    input. FLAC, which has no float: the input's depth, 16 bits for 16-bit (or smaller) PCM, else 24; samples
    beyond full scale are then handled by the clip mode (:func:`rescale_gain`).
    """
    if fmt == "wav":
        return "float"
    if fmt != "flac":
        return None
    return "16" if input_subtype.upper() in _SIXTEEN_BIT_OR_LESS else "24"


def holds_beyond_full_scale(fmt: str, bit_depth: str | None) -> bool:
    """Whether ``fmt`` at ``bit_depth`` (None: the default) keeps samples beyond [-1, 1]: float WAV does, and so
    do mp3 and ogg (their encoders take floats, and a float decoder reads the values back); integer PCM does not."""
    depth = bit_depth if bit_depth is not None else default_bit_depth(fmt, "")
    return fmt in LOSSY_SUBTYPES or depth == "float"


def rescale_gain(peak: float) -> float:
    """The one gain for a song's stems whose largest sample is ``peak``: 1 where they fit, else the gain that
    brings the peak to :data:`FULL_SCALE` (so the stems still add up to gain x the input)."""
    return 1.0 if peak <= FULL_SCALE else FULL_SCALE / peak


def mp3_bitrates(sample_rate: int) -> tuple[int, ...]:
    """The constant bit rates (kbit/s) mp3 offers at ``sample_rate`` (one of :data:`MP3_RATES`)."""
    return next(bitrates for rates, bitrates in _MP3_BITRATES.items() if sample_rate in rates)


def _mp3_rate_for(sample_rate: int) -> int:
    """The mp3 rate to resample ``sample_rate`` to: one of 32, 44.1 and 48 kHz that divides it, else the highest
    below it (the lowest where none is)."""
    dividing = [rate for rate in MP3_RATES[-3:] if rate <= sample_rate and sample_rate % rate == 0]
    below = [rate for rate in MP3_RATES if rate <= sample_rate]
    return max(dividing or below or [MP3_RATES[0]])


def _mp3_rate_offering(bitrate: int, sample_rate: int) -> int:
    """The mp3 rate nearest ``sample_rate`` (preferring whole ratios, 11025 -> 44100) that offers ``bitrate``."""
    offering = [rate for rate in MP3_RATES if bitrate in mp3_bitrates(rate)]
    whole = [rate for rate in offering if max(rate, sample_rate) % min(rate, sample_rate) == 0]
    return min(whole or offering, key=lambda rate: (abs(np.log(rate / sample_rate)), -rate))


def _fitting_formats(channels: int, exclude: str) -> list[tuple[str, object]]:
    """Advice: the first lossless format that holds ``channels`` (flac where it can), if any does."""
    fitting = [fmt for fmt in ("flac", "wav") if fmt != exclude and FORMAT_LIMITS[fmt].channels >= channels]
    return [("fmt", fitting[0])] if fitting else []


def rate_problem(fmt: str, sample_rate: int, bitrate: int | None) -> tuple[str, EncoderLimitError] | None:
    """Why ``fmt`` cannot be written at ``sample_rate`` Hz (with ``bitrate``), as (the setting at fault, the error),
    or None where it can."""
    limits = FORMAT_LIMITS[fmt]
    if limits.rates is not None and sample_rate not in limits.rates:
        rates = ", ".join(map(str, limits.rates))
        return "sample_rate", EncoderLimitError(
            f"{fmt} cannot be written at {sample_rate} Hz (it takes {rates} Hz)",
            [("sample_rate", _mp3_rate_for(sample_rate)), ("fmt", "flac")])
    if fmt == "mp3" and bitrate is not None and bitrate not in mp3_bitrates(sample_rate):
        offered = mp3_bitrates(sample_rate)
        nearest = min(offered, key=lambda rate: abs(rate - bitrate))
        return "bitrate", EncoderLimitError(
            f"mp3 at {sample_rate} Hz offers {', '.join(map(str, offered))} kbit/s, not {bitrate}",
            [("bitrate", nearest), ("sample_rate", _mp3_rate_offering(bitrate, sample_rate))])
    return None


def check_output(fmt: str, sample_rate: int, channels: int, bitrate: int | None = None, frames: int = 0,
                 subtype: str = "") -> None:
    """Raise :class:`EncoderLimitError` where stems of ``sample_rate`` Hz and ``channels`` (``frames`` long, stored
    as ``subtype``) cannot be written as ``fmt`` with ``bitrate``; its advice names settings that would work."""
    limits = FORMAT_LIMITS[fmt]
    problem = rate_problem(fmt, sample_rate, bitrate)
    if problem is not None:
        raise problem[1]
    if channels > limits.channels:
        raise EncoderLimitError(f"{fmt} holds at most {limits.channels} channels; these stems have {channels}",
                                _fitting_formats(channels, fmt))
    check_size(fmt, sample_rate, channels, frames, subtype)


def check_size(fmt: str, sample_rate: int, channels: int, frames: int, subtype: str) -> None:
    """Raise :class:`EncoderLimitError` where ``frames`` of ``channels`` stored as ``subtype`` outgrow what one
    ``fmt`` file holds (:attr:`FormatLimits.data_bytes`)."""
    limits = FORMAT_LIMITS[fmt]
    width = channels * _SAMPLE_BYTES.get(subtype, 0)
    if limits.data_bytes is not None and width and frames * width > limits.data_bytes:
        fits = limits.data_bytes // width / sample_rate
        advice: list[tuple[str, object]] = [("duration", int(fits))]
        if channels <= FORMAT_LIMITS["flac"].channels:
            advice.insert(0, ("fmt", "flac"))
        raise EncoderLimitError(f"{fmt} holds at most {limits.data_bytes / 2**30:.1f} GiB of samples per file, "
                                f"{fits:.0f} s of these stems", advice)


# What each errno says about a failed write; {path} is the stem's file, {folder} its folder, {name} its name.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device in {folder}",
    errno.EDQUOT: "disk quota exceeded in {folder}",
    errno.EROFS: "{folder} is on a read-only file system",
    errno.EIO: "input/output error writing {path} (the disk or network share failed)",
    errno.EFBIG: "{path} grew past the largest file allowed here (the file size limit, ulimit -f, or the file "
                 "system's)",
    errno.ENOENT: "the output folder {folder} was removed while {name} was written",
    errno.EACCES: "permission denied writing {path}",
    errno.EPERM: "permission denied writing {path}",
    errno.EISDIR: "{path} is a folder",
}
# Failures that every later input of the run would meet too (see OutputFolderError).
_RUN_STOPPING = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})
_LIBSNDFILE_SYSTEM_ERROR = 2  # SFE_SYSTEM: the operating system refused a read or write; errno says why


def _errno_of(error: BaseException) -> int | None:
    if isinstance(error, OSError) and error.errno:
        return error.errno
    if isinstance(error, sf.LibsndfileError) and error.code == _LIBSNDFILE_SYSTEM_ERROR:
        # libsndfile only says "System error."; the errno of its failed call is still this thread's
        code = getattr(getattr(sf, "_ffi", None), "errno", 0)
        return code or None
    return None


def write_failure(target: Path, error: BaseException, temporary: Path | None = None) -> AudioEncodeError:
    """The one error text for a failure to write ``target`` (through ``temporary``): the errno's own words for the
    operating system's refusals (:class:`OutputFolderError` for those every later input would meet too), else the
    library's message; never the temporary file's name, which means nothing to the user."""
    if isinstance(error, AudioEncodeError):
        return error
    target = Path(target)
    code = _errno_of(error)
    if code in _WRITE_ERRORS:
        reason = _WRITE_ERRORS[code].format(path=target, folder=target.parent, name=target.name)
        return (OutputFolderError if code in _RUN_STOPPING else AudioEncodeError)(reason)
    detail = os.strerror(code) if code else one_line(error)
    if temporary is not None:
        detail = detail.replace(f"Error opening {str(temporary)!r}: ", "")
        detail = detail.replace(str(temporary), str(target)).replace(temporary.name, target.name)
    return AudioEncodeError(f"cannot write {target}: {detail}")


@contextlib.contextmanager
def reported_as(target: Path, temporary: Path | None = None) -> Iterator[None]:
    """Any exception in the block leaves as :func:`write_failure`'s error for ``target``."""
    try:
        yield
    except Exception as error:
        raise write_failure(target, error, temporary) from error


def _compression_level(fmt: str, bitrate: int, sample_rate: int) -> float:
    """libsndfile's compression level for ``bitrate`` kbit/s (checked by :func:`check_output`) at ``sample_rate``."""
    if fmt == "mp3":
        rates = mp3_bitrates(sample_rate)
        return min((rates[-1] - bitrate) / (rates[-1] - rates[0]), 0.9999)  # libsndfile refuses exactly 1.0
    return 1.0 - float(np.interp(bitrate, _VORBIS_NOMINAL, np.linspace(0.0, 1.0, len(_VORBIS_NOMINAL))))


class AtomicAudioWriter:
    """Writes ``[channels, n]`` float32 blocks to a hidden temporary file beside ``path``, named by
    :func:`unet_sep.atomic.temporary_path` (so a killed run's leftover is one that
    :func:`unet_sep.atomic.remove_stale_temporaries` removes).

    ``bit_depth`` picks the PCM depth of wav and flac (see :data:`OUTPUT_FORMATS`); ``bitrate`` (kbit/s) the
    constant bit rate of mp3 or the Vorbis quality whose nominal rate it is (ogg), else the encoder's default.
    Samples beyond [-1, 1] are clipped (and counted in a warning) where the file cannot hold them (integer PCM)
    and, with ``clamp``, in every format. A format that cannot hold the stems at all (:func:`check_output`) is
    refused when the writer is made, and a WAV that would outgrow its 4 GiB before it does. Every failure is an
    :class:`AudioEncodeError` from :func:`write_failure`.

    :meth:`commit` (or :meth:`finish`, then :meth:`publish`) renames it to ``path``; :meth:`abort` (or leaving a
    ``with`` block by an exception) deletes it, so no partial file is ever left under the final name.
    """

    def __init__(self, path: Path, sample_rate: int, channels: int, fmt: str = "wav", bit_depth: str | None = None,
                 bitrate: int | None = None, clamp: bool = False) -> None:
        self.path = Path(path)
        container, self.subtype = check_encoding(fmt, bit_depth, bitrate)
        check_output(fmt, sample_rate, channels, bitrate)
        self.fmt, self.sample_rate, self.channels = fmt, sample_rate, channels
        self._clamp = clamp or self.subtype.startswith("PCM")
        # Integer PCM: samples are rounded to its steps here, since libsndfile's WAV writer truncates them (a DC
        # offset of half a step, and 6 dB more noise than its FLAC writer, which rounds).
        self._steps = 2.0 ** (8 * _SAMPLE_BYTES[self.subtype] - 1) if self.subtype.startswith("PCM") else None
        self.tmp_path = temporary_path(self.path)
        self.clipped = 0
        self.frames = 0
        compression: dict[str, object] = {}
        if bitrate is not None:
            compression = {"compression_level": _compression_level(fmt, bitrate, sample_rate),
                           "bitrate_mode": "CONSTANT" if fmt == "mp3" else None}
        try:
            with self._reported():
                self._file = sf.SoundFile(os.fsencode(self.tmp_path), mode="w", samplerate=sample_rate,
                                          channels=channels, format=container, subtype=self.subtype, **compression)
        except AudioEncodeError:
            self._remove_tmp()
            raise

    def _reported(self) -> contextlib.AbstractContextManager[None]:
        return reported_as(self.path, self.tmp_path)

    def write(self, block: np.ndarray) -> None:
        data = np.ascontiguousarray(block.T, dtype=np.float32)
        check_size(self.fmt, self.sample_rate, self.channels, self.frames + data.shape[0], self.subtype)
        if self._clamp:
            over = np.abs(data) > 1.0
            if over.any():
                self.clipped += int(over.sum())
                data = np.clip(data, -1.0, 1.0)
        if self._steps is not None:
            data = np.round(data * np.float32(self._steps)) / np.float32(self._steps)
        with self._reported():
            self._file.write(data)
        self.frames += data.shape[0]

    def finish(self) -> None:
        """Complete the encoding (its last writes, where a full disk shows too); the file keeps its temporary name."""
        with self._reported():
            self._file.close()

    def publish(self) -> Path:
        """Move the finished file to its final name."""
        with self._reported():
            os.replace(self.tmp_path, self.path)
        if self.clipped:
            logger.warning("%s: %d samples clipped to [-1, 1] for %s", self.path, self.clipped, self.subtype)
        return self.path

    def commit(self) -> Path:
        """Close and move the file to its final name."""
        self.finish()
        return self.publish()

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
