"""Truncated and damaged files (issue 16, item 6).

A file whose container announces more audio than it holds is an error for that file, found when it is
probed: WAV (RIFF, RIFX, WAVE_FORMAT_EXTENSIBLE, RF64) and AIFF/AIFC by their header chunks, FLAC by its
STREAMINFO total, Ogg (Vorbis, Opus) by its missing end-of-stream page; MP3 while it is decoded. Files that
only look odd (a chunk after the data, an odd data size with its pad byte, the size placeholders of
streaming writers) still decode in full.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import make_model
from unet_sep.audio.decode import AudioDecodeError, open_audio, read_audio

RATE = 44100
SECONDS = 3.0
ANNOUNCES = re.compile(r"^file is truncated: its header announces (\d+) samples but it holds (\d+)$")

# name: (file name, soundfile format, subtype, endian, sample rate, whether the header announces a length)
FORMATS = {
    "wav": ("x.wav", "WAV", "PCM_16", "FILE", RATE, True),
    "wav-rifx": ("x.wav", "WAV", "PCM_16", "BIG", RATE, True),
    "wav-extensible": ("x.wav", "WAVEX", "PCM_24", "FILE", RATE, True),
    "rf64": ("x.wav", "RF64", "PCM_16", "FILE", RATE, True),
    "aiff": ("x.aiff", "AIFF", "PCM_16", "FILE", RATE, True),
    "aifc-float": ("x.aifc", "AIFF", "FLOAT", "FILE", RATE, True),
    "flac": ("x.flac", "FLAC", "PCM_16", "FILE", RATE, True),
    "ogg-vorbis": ("x.ogg", "OGG", "VORBIS", "FILE", RATE, False),
    "ogg-opus": ("x.opus", "OGG", "OPUS", "FILE", 48000, False),
}


def noise(frames: int, channels: int = 2, seed: int = 0) -> np.ndarray:
    """float32 ``[frames, channels]`` noise, as soundfile writes it."""
    return np.random.default_rng(seed).uniform(-0.3, 0.3, (frames, channels)).astype(np.float32)


def write_format(folder: Path, case: str) -> tuple[Path, int]:
    """A few seconds of stereo noise in ``case``'s format: ``(path, frames)``."""
    name, fmt, subtype, endian, rate, _ = FORMATS[case]
    path = folder / name
    frames = int(SECONDS * rate)
    sf.write(str(path), noise(frames), rate, format=fmt, subtype=subtype, endian=endian)
    return path, frames


def cut(path: Path, keep: int | None = None) -> Path:
    """A copy of ``path`` holding its first ``keep`` bytes (half of them by default)."""
    data = path.read_bytes()
    target = path.with_name("cut_" + path.name)
    target.write_bytes(data[: len(data) // 2 if keep is None else keep])
    return target


def one_line_error(call, path: Path) -> str:
    with pytest.raises(AudioDecodeError) as caught:
        call(path)
    message = caught.value.reason
    assert str(caught.value) == f"{path}: {message}"  # the error names the file
    assert "\n" not in message and "truncated" in message, message
    return message


# ---- files cut short --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(FORMATS))
def test_file_cut_in_half_is_reported_at_probe(tmp_path, case):
    whole, frames = write_format(tmp_path, case)
    half = cut(whole)

    message = one_line_error(open_audio, half)

    assert one_line_error(read_audio, half) == message
    if FORMATS[case][5]:
        match = ANNOUNCES.match(message)
        assert match, message
        announced, held = map(int, match.groups())
        assert announced == frames
        assert 0.35 * frames < held < 0.55 * frames, message
        if case != "flac":  # what libsndfile would have read for the whole file
            assert held == sf.info(str(half)).frames
    else:
        assert message == (
            f"file is truncated: its Ogg stream stops after {sf.info(str(half)).frames} samples"
            " without an end-of-stream page"
        )


@pytest.mark.parametrize("case", list(FORMATS))
def test_intact_file_decodes_in_full(tmp_path, case):
    whole, frames = write_format(tmp_path, case)
    audio, rate = read_audio(whole)
    assert rate == FORMATS[case][4] and audio.shape == (2, frames)


@pytest.mark.parametrize("missing", [1, 10, 1000])
def test_flac_cut_inside_its_last_frame(tmp_path, missing):
    whole, frames = write_format(tmp_path, "flac")
    short = cut(whole, whole.stat().st_size - missing)

    match = ANNOUNCES.match(one_line_error(open_audio, short))

    assert match and int(match[1]) == frames and int(match[2]) < frames


def test_ogg_cut_at_a_page_boundary(tmp_path):
    """A whole number of pages but no end-of-stream page: still truncated."""
    whole, _ = write_format(tmp_path, "ogg-vorbis")
    data = whole.read_bytes()
    last_page = data.rfind(b"OggS")
    short = cut(whole, last_page)
    assert short.read_bytes().endswith(data[last_page - 16 : last_page])
    one_line_error(open_audio, short)


def test_wav_holding_only_its_header(tmp_path):
    whole, frames = write_format(tmp_path, "wav")
    message = one_line_error(open_audio, cut(whole, 44))
    assert message == f"file is truncated: its header announces {frames} samples but it holds 0"


def test_truncated_mp3_is_reported_while_decoding(tmp_path, example_mp3):
    """MP3 frame counts are estimates: the probe lets it through, decoding finds the end missing."""
    data = example_mp3.read_bytes()
    short = tmp_path / "cutshort.mp3"
    short.write_bytes(data[: int(len(data) * 0.45)])
    announced = sf.info(str(example_mp3)).frames

    assert open_audio(short).info.frames == announced  # the Xing header still announces the whole song
    match = ANNOUNCES.match(one_line_error(read_audio, short))

    assert match and int(match[1]) == announced and int(match[2]) < 0.5 * announced


# ---- files that only look odd: decoded in full --------------------------------------------------------


def handmade_wav(path: Path, data: bytes, channels: int, bits: int, *, data_size: int | None = None,
                 riff_size: int | None = None, pad: bool = True, after: bytes = b"") -> Path:
    """A PCM WAV written byte by byte, with chosen size fields and chunks after the data chunk."""
    block_align = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, RATE, RATE * block_align, block_align, bits)
    size = len(data) if data_size is None else data_size
    padding = b"\0" if pad and len(data) % 2 else b""
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", size) + data + padding
    body += after
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body)
    return path


def pcm16(frames: int, channels: int = 2, seed: int = 1) -> np.ndarray:
    return (noise(frames, channels, seed) * 32767).astype("<i2")


LIST_CHUNK = b"LIST" + struct.pack("<I", 16) + b"INFOISFT" + struct.pack("<I", 4) + b"abc\0"

ODD_WAVS = {
    "list-after-data": dict(after=LIST_CHUNK),
    "riff-and-data-size-ffffffff": dict(data_size=0xFFFFFFFF, riff_size=0xFFFFFFFF),
    "data-size-ffffffff": dict(data_size=0xFFFFFFFF),
    "data-size-0": dict(data_size=0, riff_size=0),
    "sox-unspecified-size": dict(data_size=0x7FFFF000 // 4 * 4, riff_size=0x7FFFF000 // 4 * 4 + 36),
}


@pytest.mark.parametrize("case", list(ODD_WAVS))
def test_odd_but_whole_wav_decodes_in_full(tmp_path, case):
    samples = pcm16(int(SECONDS * RATE))
    path = handmade_wav(tmp_path / "odd.wav", samples.tobytes(), 2, 16, **ODD_WAVS[case])

    audio, rate = read_audio(path)

    assert rate == RATE
    np.testing.assert_allclose(audio, samples.T / 32768.0, atol=1e-6)


@pytest.mark.parametrize("pad", [True, False])
def test_odd_data_size_decodes_in_full(tmp_path, pad):
    """8-bit mono with an odd number of samples: the data chunk has an odd size (and, by the spec, a pad byte)."""
    samples = np.random.default_rng(2).integers(0, 256, 1001, dtype=np.uint8)
    path = handmade_wav(tmp_path / "odd.wav", samples.tobytes(), 1, 8, pad=pad, after=LIST_CHUNK if pad else b"")

    audio, _ = read_audio(path)

    np.testing.assert_allclose(audio[0], (samples.astype(np.float32) - 128) / 128, atol=1e-6)


def test_streamed_wav_with_nothing_after_its_header_holds_no_samples(tmp_path):
    path = handmade_wav(tmp_path / "empty.wav", b"", 2, 16, data_size=0, riff_size=0)
    with pytest.raises(AudioDecodeError, match="holds no audio samples"):
        open_audio(path)


# ---- through the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("truncated-model") / "tiny")


def test_cut_wav_beside_a_good_one(tmp_path, model):
    inputs = tmp_path / "in"
    inputs.mkdir()
    good, frames = write_format(inputs, "wav")
    good = good.rename(inputs / "good.wav")
    half = cut(good)
    out = tmp_path / "out"

    result = subprocess.run(
        [sys.executable, "-m", "unet_sep", "separate", str(good), str(half), "--out", str(out), "--model", str(model),
         "--quiet"],
        capture_output=True, text=True, timeout=300,
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    naming = [line for line in result.stderr.splitlines() if str(half) in line]
    held = sf.info(str(half)).frames  # what libsndfile would have read: the whole 16-bit frames there
    assert naming == [f"error: {half}: file is truncated: its header announces {frames} samples but it holds {held}"]
    assert [line for line in result.stderr.splitlines() if line.startswith("error: ")] == naming, result.stderr
    stems = sorted(p.name for p in (out / "good").iterdir())
    assert stems == ["accompaniment.wav", "vocals.wav"]
    for stem in stems:
        assert sf.info(str(out / "good" / stem)).frames == frames
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["good", *(f"good/{s}" for s in stems)]


def _ogg_crc(page: bytes) -> int:
    """The Ogg page checksum: CRC-32, polynomial 0x04c11db7, no reflection, over the page with its CRC zeroed."""
    crc = 0
    for byte in page:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def announce_more(path: Path, extra: int) -> Path:
    """A copy of an Ogg file whose last page's granule position (the stream's announced length) is ``extra``
    samples past what its packets decode to, with a valid page checksum: as in Debian's warzone2100 Opus tracks."""
    data = bytearray(path.read_bytes())
    start = data.rfind(b"OggS")
    granule = struct.unpack_from("<q", data, start + 6)[0]
    struct.pack_into("<q", data, start + 6, granule + extra)
    struct.pack_into("<I", data, start + 22, 0)
    struct.pack_into("<I", data, start + 22, _ogg_crc(bytes(data[start:])))
    target = path.with_name("long_" + path.name)
    target.write_bytes(bytes(data))
    return target


@pytest.mark.parametrize("case", ["ogg-vorbis", "ogg-opus"])
def test_an_ogg_stream_announcing_a_few_samples_more_than_it_decodes_is_whole(tmp_path, case):
    """Up to one codec block of end trimming is not truncation (the stream has its end-of-stream page); the file
    decodes to every sample it holds. A stream announcing far more than it holds is still truncated."""
    whole, frames = write_format(tmp_path, case)
    slightly = announce_more(whole, 3000)  # past the last packet's padding, which end trimming would cut
    assert sf.info(str(slightly)).frames == frames + 3000  # the announced length libsndfile reports
    audio, _ = read_audio(slightly)
    assert frames <= audio.shape[1] < frames + 3000 and audio.shape[0] == 2  # all the stream holds
    far = announce_more(whole, 20000)
    assert ANNOUNCES.match(one_line_error(read_audio, far))
