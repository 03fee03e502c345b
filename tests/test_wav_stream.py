"""unet_sep.audio.wav_stream: WAV streams of unknown length and raw PCM, read and written with the standard library,
checked against Python's ``wave`` module, soundfile and ffmpeg's pipe output."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import wave

import numpy as np
import pytest
import soundfile as sf

from unet_sep.audio.wav_stream import (
    PcmFormat,
    PcmStreamWriter,
    WavStreamError,
    decode_pcm,
    encode_pcm,
    pcm_blocks,
    read_wav_header,
    wav_header,
)
from unet_sep.errors import SettingError


class Trickle(io.RawIOBase):
    """A pipe that gives at most ``step`` bytes per read, as a slow writer's pipe does."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._data, self._at, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._step if size < 0 else min(size, self._step)
        part = self._data[self._at:self._at + size]
        self._at += len(part)
        return part


def _tone(channels: int = 2, frames: int = 1000) -> np.ndarray:
    t = np.arange(frames) / 16000
    return np.stack([0.5 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


def _unknown_sizes(data: bytes) -> bytes:
    """A WAV file's bytes with RIFF and data sizes 0xFFFFFFFF, as ffmpeg writes to a pipe."""
    data = bytearray(data)
    data[4:8] = b"\xff\xff\xff\xff"
    at = data.index(b"data")
    data[at + 4:at + 8] = b"\xff\xff\xff\xff"
    return bytes(data)


@pytest.mark.parametrize("width,name", [(2, "s16"), (3, "s24"), (4, "s32")])
def test_wave_module_stream_read_back_exactly(width, name):
    audio = _tone(2, 999)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(2)
        handle.setsampwidth(width)
        handle.setframerate(16000)
        handle.writeframes(encode_pcm(audio, name))
    stream = Trickle(_unknown_sizes(buffer.getvalue()))
    fmt, data_bytes = read_wav_header(stream)
    assert (fmt, data_bytes) == (PcmFormat(16000, 2, name), None)
    blocks = list(pcm_blocks(stream, fmt, 256))
    assert [b.shape for b in blocks] == [(2, 256)] * 3 + [(2, 231)]
    read = np.concatenate(blocks, axis=1)
    step = 1.0 / (1 << (8 * width - 1))
    assert np.max(np.abs(read - audio)) <= step / 2 + 1e-7


def test_known_size_stops_at_data_end_and_broken_frame_dropped():
    audio = _tone(1, 100)
    data = encode_pcm(audio, "s16")
    stream = io.BytesIO(wav_header(PcmFormat(16000, 1, "s16"), len(data)) + data + b"trailing chunk")
    fmt, size = read_wav_header(stream)
    assert size == 200
    assert np.concatenate(list(pcm_blocks(stream, fmt, 64, size)), axis=1).shape == (1, 100)
    raw = io.BytesIO(encode_pcm(_tone(2, 10), "s16") + b"\x01\x02\x03")  # 10 frames and 3 bytes of an 11th
    assert np.concatenate(list(pcm_blocks(raw, PcmFormat(16000, 2, "s16"), 4)), axis=1).shape == (2, 10)


@pytest.mark.parametrize("name,channels", [("f32", 2), ("s24", 1), ("s16", 6)])
def test_written_stream_reads_in_soundfile_and_back(tmp_path, name, channels):
    audio = _tone(channels, 500)
    pipe = io.BytesIO()
    writer = PcmStreamWriter(pipe, PcmFormat(16000, channels, name), wav=True)
    writer.write(audio[:, :123])
    writer.write(audio[:, 123:])
    assert pipe.getvalue()[4:8] == b"\xff\xff\xff\xff"
    path = tmp_path / "stream.wav"
    fmt = PcmFormat(16000, channels, name)
    path.write_bytes(wav_header(fmt, 500 * fmt.frame_bytes) + pipe.getvalue()[len(wav_header(fmt)):])
    read, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == 16000
    np.testing.assert_allclose(read.T, audio, atol=1 / 32768)
    fmt_back, _ = read_wav_header(io.BytesIO(pipe.getvalue()))
    assert fmt_back == fmt


def test_raw_round_trip_and_clipping():
    audio = np.array([[0.0, 0.5, -1.0, 1.5, -2.0]], dtype=np.float32)
    back = decode_pcm(encode_pcm(audio, "s16"), PcmFormat(8000, 1, "s16"))
    np.testing.assert_allclose(back, [[0.0, 0.5, -1.0, 32767 / 32768, -1.0]])
    np.testing.assert_array_equal(decode_pcm(encode_pcm(audio, "f32"), PcmFormat(8000, 1, "f32")), audio)


@pytest.mark.parametrize("data,reason", [
    (b"", "not a WAV stream"),
    (b"ID3\x03" + b"\x00" * 40, "not a WAV stream"),
    (b"RIFF\xff\xff\xff\xffWAVEdata\xff\xff\xff\xff", "data chunk comes before any fmt"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 2, 16000, 64000, 4, 8),
     "format 1 with 8 bits"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16),
     "channels must be"),
    (b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00" + struct.pack("<HHIIHH", 1, 2, 16000, 64000, 4, 16),
     "ends before its data chunk"),
])
def test_bad_headers_are_one_line_naming_the_stream(data, reason):
    with pytest.raises(WavStreamError) as caught:
        read_wav_header(io.BytesIO(data), "-")
    message = str(caught.value)
    assert message.startswith("-: ") and reason in message and "\n" not in message


def test_format_checked_where_it_enters():
    for args, setting in (((7, 2), "rate"), ((16000, 0), "channels"), ((16000, 2, "u8"), "sample_format")):
        with pytest.raises(SettingError) as caught:
            PcmFormat(*args)
        assert caught.value.setting == setting


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize("codec,name", [("pcm_s16le", "s16"), ("pcm_s24le", "s24"), ("pcm_f32le", "f32")])
def test_ffmpeg_pipe_output(codec, name):
    made = subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=0.5:r=22050", "-ac",
                           "2", "-c:a", codec, "-f", "wav", "-"], capture_output=True, timeout=60, check=True)
    stream = io.BytesIO(made.stdout)
    fmt, size = read_wav_header(stream)
    assert (fmt, size) == (PcmFormat(22050, 2, name), None)  # sizes unknown, a LIST chunk skipped
    audio = np.concatenate(list(pcm_blocks(stream, fmt, 4096)), axis=1)
    assert audio.shape == (2, 11025)
    peak = float(np.max(np.abs(audio)))
    assert abs(peak - 0.125 / np.sqrt(2)) < 1e-3  # ffmpeg's sine is 1/8 of full scale, upmixed to stereo at -3 dB
