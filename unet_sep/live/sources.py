"""Where live samples come from: float32 blocks ``[channels, n]`` at a known rate.

A real-time source (a file played at its real pace, a sound device) delivers samples on a clock, so the loop can
tell when compute falls behind; :attr:`Source.started` is that clock's zero (``time.monotonic``) and
:attr:`Source.dropped_frames` counts the samples it had to drop because nobody took them in time. Standard input
is not real time: it is read as fast as it comes.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import time
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from unet_sep.audio.decode import open_audio
from unet_sep.audio.wav_stream import PcmFormat, WavStreamError, pcm_blocks, read_wav_header
from unet_sep.errors import SettingError
from unet_sep.live.devices import check_device, device_id, sounddevice_module

logger = logging.getLogger(__name__)

# What INPUT starts with to name a sound device: "device:" (the default input), "device:3", "device:USB".
DEVICE_PREFIX = "device:"


def block_frames(sample_rate: int, block_seconds: float) -> int:
    """Samples per block of ``block_seconds`` at ``sample_rate`` (at least 16)."""
    return max(16, round(sample_rate * block_seconds))


class Source:
    """A stream of float32 blocks ``[channels, n]`` at :attr:`sample_rate`; close it when done."""

    name: str
    sample_rate: int
    channels: int
    realtime: bool = False
    started: float | None = None
    dropped_frames: int = 0

    def blocks(self) -> Iterator[np.ndarray]:
        """The blocks, until the input ends (a real-time device source ends only when the caller stops)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the source holds (a device stream)."""


class FileSource(Source):
    """An audio file decoded in blocks, each one given when its last sample would be playing (``paced``), or as
    fast as it decodes."""

    def __init__(self, path: str | Path, block_seconds: float, paced: bool = True) -> None:
        self._reader = open_audio(path)  # AudioDecodeError naming the file if it is not audio
        self.name = str(path)
        self.sample_rate = self._reader.info.sample_rate
        self.channels = self._reader.info.channels
        self.realtime = paced
        self._block_frames = block_frames(self.sample_rate, block_seconds)

    def blocks(self) -> Iterator[np.ndarray]:
        self.started = time.monotonic()
        played = 0
        for block in self._reader.blocks(self._block_frames):
            played += block.shape[1]
            if self.realtime:
                wait = self.started + played / self.sample_rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            yield block


class PipeSource(Source):
    """Standard input (or any binary stream): a WAV stream, or raw PCM of a given :class:`PcmFormat`. The WAV
    header is read when the source is made, so its rate and channels are known before the first block."""

    def __init__(self, stream: BinaryIO, block_seconds: float, raw: PcmFormat | None = None,
                 name: str = "-") -> None:
        self.name = name
        self._stream = stream
        self._data_bytes: int | None = None
        if raw is None:
            with self._reading():
                self.format, self._data_bytes = read_wav_header(stream, name)  # WavStreamError naming the stream
        else:
            self.format = raw
        self.sample_rate = self.format.sample_rate
        self.channels = self.format.channels
        self._block_frames = block_frames(self.sample_rate, block_seconds)

    def blocks(self) -> Iterator[np.ndarray]:
        with self._reading():
            yield from pcm_blocks(self._stream, self.format, self._block_frames, self._data_bytes)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """A read that fails (an I/O error, not the end of the stream) as a :class:`WavStreamError` naming it."""
        try:
            yield
        except OSError as error:
            raise WavStreamError(f"cannot be read: {error.strerror or error}", self.name) from error


class DeviceSource(Source):
    """A PortAudio input device. Its callback hands blocks to a queue that holds at most ``queue_seconds`` of
    audio: when the loop falls further behind, new blocks are dropped and counted (never a growing delay)."""

    realtime = True

    def __init__(self, device: str, block_seconds: float, sample_rate: int | None = None,
                 channels: int | None = None, queue_seconds: float = 2.0) -> None:
        self._sd = sounddevice_module("input")
        described = check_device(device, "input", "input")
        self.name = f"{DEVICE_PREFIX}{device}"
        self.sample_rate = int(sample_rate or described["default_samplerate"])
        self.channels = channels or min(2, int(described["max_input_channels"]))
        if self.channels > described["max_input_channels"]:
            raise SettingError("channels", f"the input device {described['name']!r} has "
                                           f"{described['max_input_channels']} channels, fewer than {self.channels}")
        frames = block_frames(self.sample_rate, block_seconds)
        self._blocks: queue.Queue = queue.Queue(maxsize=max(2, int(queue_seconds * self.sample_rate / frames)))
        self.overflows = 0  # times PortAudio itself lost input (status.input_overflow)
        try:
            self._stream = self._sd.InputStream(device=device_id(device), samplerate=self.sample_rate,
                                                channels=self.channels, blocksize=frames, dtype="float32",
                                                callback=self._callback)
        except self._sd.PortAudioError as error:
            raise SettingError("input", f"cannot open {device!r} at {self.sample_rate} Hz with {self.channels} "
                                        f"channels: {' '.join(str(error).split())}") from None

    def _callback(self, indata: np.ndarray, frames: int, timing, status) -> None:
        if self.started is None:
            self.started = time.monotonic() - frames / self.sample_rate
        if status.input_overflow:
            self.overflows += 1
        try:
            self._blocks.put_nowait(np.ascontiguousarray(indata.T, dtype=np.float32))
        except queue.Full:
            self.dropped_frames += frames

    def blocks(self) -> Iterator[np.ndarray]:
        self._stream.start()
        while True:
            try:  # a timeout, so that a signal's handler runs while nothing comes
                yield self._blocks.get(timeout=0.5)
            except queue.Empty:
                continue

    def close(self) -> None:
        self._stream.stop()
        self._stream.close()


def open_source(spelled: str, block_seconds: float, raw: PcmFormat | None, stdin: BinaryIO, paced: bool = True,
                sample_rate: int | None = None, channels: int | None = None) -> Source:
    """The source INPUT names: ``-`` standard input (a WAV stream, or ``raw`` PCM), ``device:[NAME]`` a sound
    device (``device:`` the default input), else an audio file played at its real pace (``paced``)."""
    if spelled == "-":
        return PipeSource(stdin, block_seconds, raw)
    if spelled.startswith(DEVICE_PREFIX):
        name = spelled[len(DEVICE_PREFIX):]
        return DeviceSource(name or _default_input(), block_seconds, sample_rate, channels)
    return FileSource(spelled, block_seconds, paced)


def _default_input() -> str:
    """The index of PortAudio's default input device."""
    sd = sounddevice_module("input")
    index = sd.default.device[0]
    if index is None or index < 0:
        raise SettingError("input", "there is no default input sound device; name one, device:NAME (list them with "
                                    "python -m sounddevice)")
    return str(index)
