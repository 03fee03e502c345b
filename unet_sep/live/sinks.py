"""Where live stems go: blocks ``[stems, channels, n]`` in, each sink takes what it needs.

:class:`PipeSink` writes one mix of the stems (a chosen stem, or per-stem gains) to standard output as a WAV
stream or raw PCM; :class:`FileSink` writes each chosen stem to a file as it comes, under a temporary name renamed
when it is finished (or removed when the run fails); :class:`DeviceSink` plays a mix on a sound device. A sink
whose reader went away (a closed pipe) raises :class:`SinkClosed`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import BinaryIO

import numpy as np

from unet_sep.atomic import temporary_path
from unet_sep.audio.wav_stream import MAX_WAV_BYTES, PcmFormat, PcmStreamWriter, wav_header
from unet_sep.errors import FileError, SettingError
from unet_sep.live.devices import check_device, device_id, sounddevice_module

logger = logging.getLogger(__name__)


class SinkClosed(Exception):
    """The sink's reader went away (a pipe closed): the run ends, keeping what the other sinks hold."""


def mix_weights(stems: list[str], chosen: list[str] | None, gains: dict[str, float] | None) -> np.ndarray:
    """One linear gain per stem: 1 for the ``chosen`` stems (all when None) and 0 for the others, times ``gains``
    (stems it does not name keep theirs). Unknown stem names are a :class:`SettingError` of ``stems`` or
    ``gains`` naming the model's stems."""
    for setting, names in (("stems", chosen or []), ("gains", list(gains or {}))):
        unknown = [name for name in names if name not in stems]
        if unknown:
            raise SettingError(setting, f"unknown stem {unknown[0]!r}; the model's stems are {', '.join(stems)}")
    weights = np.array([1.0 if chosen is None or stem in chosen else 0.0 for stem in stems], dtype=np.float32)
    for index, stem in enumerate(stems):
        weights[index] *= (gains or {}).get(stem, 1.0)
    return weights


def mixed(block: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``[stems, channels, n]`` -> ``[channels, n]``: the stems summed with their ``weights``."""
    return np.tensordot(weights, block, axes=1).astype(np.float32, copy=False)


class Sink:
    """Takes blocks of stems ``[stems, channels, n]``; :meth:`finish` at the end, :meth:`abort` on failure."""

    def write(self, block: np.ndarray) -> None:
        raise NotImplementedError

    def finish(self) -> None:
        """All was written: complete the output."""

    def abort(self) -> None:
        """The run failed: leave nothing partial behind."""
        self.finish()


class PipeSink(Sink):
    """A mix of the stems to a binary stream (standard output), as a WAV stream of unknown length or raw PCM."""

    def __init__(self, stream: BinaryIO, weights: np.ndarray, fmt: PcmFormat, wav: bool = True) -> None:
        self._writer = PcmStreamWriter(stream, fmt, wav)
        self._weights = weights

    def write(self, block: np.ndarray) -> None:
        try:
            self._writer.write(mixed(block, self._weights))
        except (BrokenPipeError, ConnectionResetError) as error:
            raise SinkClosed("standard output was closed") from error


class FileSink(Sink):
    """Each chosen stem to ``folder/<stem>.wav`` (float32 WAV), written as blocks come under a temporary name;
    :meth:`finish` writes the sizes into the header and renames it onto the final name (a file over 4 GiB keeps
    the "unknown" sizes of a stream, which ffmpeg and unet-sep read to the end; one without samples is removed),
    :meth:`abort` removes it. A write
    that fails is a :class:`~unet_sep.errors.FileError` naming the stem's file."""

    def __init__(self, folder: str | Path, stems: list[str], chosen: list[str] | None, sample_rate: int,
                 channels: int) -> None:
        folder = Path(folder)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise SettingError("out", f"cannot make the folder {str(folder)!r}: {error.strerror}") from None
        self._format = PcmFormat(sample_rate, channels, "f32")
        self._indices = [index for index, stem in enumerate(stems) if chosen is None or stem in chosen]
        self.paths = [folder / f"{stems[index]}.wav" for index in self._indices]
        self._files: list[tuple[Path, Path, BinaryIO, PcmStreamWriter]] = []
        try:
            for path in self.paths:
                temporary = temporary_path(path, ".partial.wav")
                handle = open(temporary, "xb")
                self._files.append((path, temporary, handle, PcmStreamWriter(handle, self._format, wav=False)))
                handle.write(wav_header(self._format))  # sizes unknown until finish()
        except OSError as error:
            self.abort()
            raise SettingError("out", f"cannot write in {str(folder)!r}: {error.strerror}") from None

    def write(self, block: np.ndarray) -> None:
        for (path, _, _, writer), index in zip(self._files, self._indices, strict=True):
            try:
                writer.write(block[index])
            except OSError as error:
                raise FileError(f"cannot write: {error.strerror or error}", path) from None

    def finish(self) -> None:
        header = len(wav_header(self._format))
        for path, temporary, handle, _ in self._files:
            data_bytes = handle.tell() - header
            if not data_bytes:  # ended before any stems came: no empty file
                handle.close()
                temporary.unlink()
                continue
            if header - 8 + data_bytes <= MAX_WAV_BYTES:
                handle.seek(0)
                handle.write(wav_header(self._format, data_bytes))
            else:
                logger.warning("%s: over 4 GiB, so its sizes stay unknown, as in a stream", path)
            handle.close()
            os.replace(temporary, path)
            logger.info("wrote %s", path)
        self._files = []

    def abort(self) -> None:
        for _, temporary, handle, _ in self._files:
            handle.close()
            temporary.unlink(missing_ok=True)
        self._files = []


class DeviceSink(Sink):
    """A mix of the stems played on a PortAudio output device (blocking writes: the device's clock paces them);
    :attr:`underflows` counts the times it ran out of samples."""

    def __init__(self, device: str, weights: np.ndarray, sample_rate: int, channels: int,
                 setting: str = "output_device") -> None:
        sd = sounddevice_module(setting)
        described = check_device(device, "output", setting)
        self._weights = weights
        self._channels = channels
        self._device_channels = min(int(described["max_output_channels"]), max(channels, 2))
        self.underflows = 0
        try:
            self._stream = sd.OutputStream(device=device_id(device), samplerate=sample_rate,
                                           channels=self._device_channels, dtype="float32")
            self._stream.start()
        except sd.PortAudioError as error:
            raise SettingError(setting, f"cannot open {device!r} at {sample_rate} Hz: "
                                        f"{' '.join(str(error).split())}") from None

    def write(self, block: np.ndarray) -> None:
        audio = mixed(block, self._weights)
        if audio.shape[0] != self._device_channels:  # mono to both sides, or the first channels of many
            audio = np.resize(audio, (self._device_channels, audio.shape[1]))
        if self._stream.write(np.ascontiguousarray(audio.T)):
            self.underflows += 1

    def finish(self) -> None:
        self._stream.stop()
        self._stream.close()
