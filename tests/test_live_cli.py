"""``unet-sep live`` (unet_sep.cli.live, unet_sep.live): standard input and output through real pipes (WAV streams
of unknown length and raw PCM), the mix with gains checked against the API's live stems, files written as they
come, a file at its real pace, the ways a run ends (a closed pipe, SIGTERM) and one-line errors."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from conftest import music_like
from test_bad_inputs import check_no_leftovers
from unet_sep.audio.wav_stream import PcmFormat, PcmStreamWriter, decode_pcm, encode_pcm, pcm_blocks, read_wav_header
from unet_sep.dsp.measures import snr_db

COMMAND = [sys.executable, "-m", "unet_sep", "live"]
RATE = 22050  # not the bundled model's 16 kHz: the session resamples in and out
LATENCY = 0.5


@pytest.fixture(scope="module")
def song() -> np.ndarray:
    """3 s of stereo music-like audio at RATE."""
    return music_like(3.0, RATE, channels=2, seed=5)


@pytest.fixture(scope="module")
def live_stems(bundled, song) -> np.ndarray:
    """The API's live stems of ``song`` ([stems, channels, n]), lined up with it (the delay dropped)."""
    from unet_sep.separate.separator import Separator

    separator = Separator.from_pretrained(bundled, device="cpu")
    session = separator.live_session(RATE, 2, LATENCY)
    blocks = [session.process(song[:, i:i + 1000]) for i in range(0, song.shape[1], 1000)] + [session.flush()]
    return np.concatenate(blocks, axis=-1)[..., session.latency_samples:]


def wav_stream(audio: np.ndarray, sample_format: str = "s16") -> bytes:
    """``audio`` as a WAV stream of unknown length, as ``ffmpeg -f wav -`` writes it."""
    pipe = io.BytesIO()
    PcmStreamWriter(pipe, PcmFormat(RATE, audio.shape[0], sample_format), wav=True).write(audio)
    return pipe.getvalue()


def run_live(args: list[str], stdin: bytes = b"", timeout: float = 300) -> subprocess.CompletedProcess:
    """The command with ``stdin`` written to it through a pipe, its stdout as bytes, stderr as text."""
    result = subprocess.run(COMMAND + args, input=stdin, capture_output=True, timeout=timeout)
    result.stderr = result.stderr.decode("utf-8", "replace")
    return result


def read_stdout_wav(data: bytes) -> tuple[PcmFormat, np.ndarray]:
    stream = io.BytesIO(data)
    fmt, size = read_wav_header(stream)
    assert size is None  # written with unknown sizes, as to a pipe
    return fmt, np.concatenate(list(pcm_blocks(stream, fmt, 1 << 16)), axis=1)


def test_wav_stream_in_mix_with_gains_out(bundled, song, live_stems):
    """vocals=0 gives the accompaniment: the API's, to float precision, and each sample lined up with the input."""
    result = run_live(["-", "--model", str(bundled), "--device", "cpu", "--latency", str(LATENCY), "--gains",
                       "vocals=0,accompaniment=1", "--sample-format", "f32"], wav_stream(song, "f32"))
    assert result.returncode == 0, result.stderr
    fmt, out = read_stdout_wav(result.stdout)
    assert fmt == PcmFormat(RATE, 2, "f32")
    assert out.shape == song.shape
    assert snr_db(live_stems[1], out) > 100
    assert "3.00 s separated" in result.stderr and "0.00 s of input dropped" in result.stderr
    halved = run_live(["-", "--model", str(bundled), "--latency", str(LATENCY), "--gains", "vocals=0.5",
                       "--sample-format", "f32", "--stdout-format", "raw"], wav_stream(song, "f32"))
    mix = decode_pcm(halved.stdout, PcmFormat(RATE, 2, "f32"))
    assert snr_db(0.5 * live_stems[0] + live_stems[1], mix) > 100


def test_raw_pcm_in_one_stem_out(bundled, song, live_stems):
    result = run_live(["-", "--rate", str(RATE), "--channels", "2", "--sample-format", "s16", "--stdout-format",
                       "raw", "--stems", "vocals", "--model", str(bundled), "--latency", str(LATENCY)],
                      encode_pcm(song, "s16"))
    assert result.returncode == 0, result.stderr
    out = decode_pcm(result.stdout, PcmFormat(RATE, 2, "s16"))
    assert out.shape == song.shape
    assert snr_db(live_stems[0], out) > 35  # 16-bit samples in and out
    assert float(np.sqrt(np.mean(out ** 2))) > 0.01


def test_files_written_from_a_file(tmp_path, bundled, song, live_stems):
    source = tmp_path / "song.wav"
    sf.write(source, song.T, RATE, subtype="FLOAT")
    out = tmp_path / "stems"
    result = run_live([str(source), "--no-pace", "--out", str(out), "--model", str(bundled), "--latency",
                       str(LATENCY)])
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""  # with --out, standard output carries nothing unless --stdout asks
    for index, stem in enumerate(("vocals", "accompaniment")):
        audio, rate = sf.read(out / f"{stem}.wav", dtype="float32", always_2d=True)
        assert rate == RATE and audio.shape == (song.shape[1], 2)
        assert snr_db(live_stems[index], audio.T) > 100
    check_no_leftovers(out)


def test_a_file_at_its_real_pace(tmp_path, bundled, song):
    source = tmp_path / "short.wav"
    sf.write(source, song[:, :RATE * 3 // 2].T, RATE)  # 1.5 s
    out = tmp_path / "stems"
    started = time.monotonic()
    result = run_live([str(source), "--out", str(out), "--stems", "accompaniment", "--model", str(bundled),
                       "--latency", "1"])
    assert result.returncode == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("live: 1.50 s separated in ")
    wall = float(summary.split(" separated in ")[1].split(" s")[0])
    assert 1.5 <= wall < time.monotonic() - started  # played at its pace: no faster than the audio lasts
    assert " blocks late" in summary and "0.00 s of input dropped" in summary
    assert sorted(p.name for p in out.iterdir()) == ["accompaniment.wav"]
    assert sf.info(out / "accompaniment.wav").frames == RATE * 3 // 2


def test_closed_output_pipe_ends_quietly_with_files_finished(tmp_path, bundled, song):
    """The reader of standard output goes away: exit 141 as SIGPIPE, no traceback, the files finished."""
    out = tmp_path / "stems"
    command = " ".join(COMMAND) + f" - --model {bundled} --latency {LATENCY} --out {out} --stdout | head -c 1000"
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {command} >/dev/null; exit ${{PIPESTATUS[0]}}"],
                            input=wav_stream(np.tile(song, 10)), capture_output=True, timeout=300)
    stderr = result.stderr.decode()
    assert result.returncode == 141, stderr
    assert "Traceback" not in stderr and "stopped: standard output was closed" in stderr
    frames = [sf.info(out / f"{stem}.wav").frames for stem in ("vocals", "accompaniment")]
    assert frames[0] == frames[1] and 0 < frames[0] < 10 * song.shape[1]
    check_no_leftovers(out)


def test_sigterm_finishes_the_files_so_far(tmp_path, bundled, song, live_stems):
    """SIGTERM while the command waits for more input: exit 143, each file finished with the stems so far."""
    out = tmp_path / "stems"
    process = subprocess.Popen(COMMAND + ["-", "--out", str(out), "--model", str(bundled), "--latency", str(LATENCY)],
                               stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(wav_stream(song, "f32"))  # 3 s, and the pipe stays open
        process.stdin.flush()
        deadline = time.monotonic() + 240
        while not any(p.stat().st_size > 8 * RATE for p in out.glob(".vocals*.partial.wav")):
            assert time.monotonic() < deadline and process.poll() is None, "no stems were written"
            time.sleep(0.2)
        time.sleep(1.0)  # the rest of the 3 s goes through, then the command waits on standard input
        process.send_signal(signal.SIGTERM)
        stderr = process.communicate(timeout=120)[1].decode()
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, stderr
    assert "Traceback" not in stderr and "stopped: interrupted (SIGTERM)" in stderr
    vocals, rate = sf.read(out / "vocals.wav", dtype="float32", always_2d=True)
    accompaniment = sf.read(out / "accompaniment.wav", dtype="float32", always_2d=True)[0]
    assert 0 < vocals.shape[0] == accompaniment.shape[0] <= song.shape[1]
    kept = vocals.shape[0]
    assert snr_db(live_stems[0][:, :kept], vocals.T) > 100 and snr_db(live_stems[1][:, :kept], accompaniment.T) > 100
    check_no_leftovers(out)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_the_readme_pipeline(tmp_path, bundled, song, live_stems):
    """ffmpeg -i SONG -f wav - | unet-sep live - --stems accompaniment | (a player reading a WAV stream)."""
    source = tmp_path / "song.flac"
    sf.write(source, song.T, RATE, subtype="PCM_24")
    result = subprocess.run(
        ["bash", "-c", f"set -o pipefail; ffmpeg -loglevel error -i {source} -f wav - | {' '.join(COMMAND)} - "
                       f"--stems accompaniment --model {bundled} --latency {LATENCY} | ffmpeg -loglevel error "
                       f"-f wav -i - -c:a pcm_f32le {tmp_path / 'played.wav'}"], capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode()
    played, rate = sf.read(tmp_path / "played.wav", dtype="float32", always_2d=True)
    assert rate == RATE and played.shape == (song.shape[1], 2)
    assert snr_db(live_stems[1], played.T) > 35  # 16-bit in the pipes


@pytest.mark.parametrize("args,stdin,expected", [
    (["-"], b"ID3\x04not a wav at all", "error: -: not a WAV stream (no RIFF/WAVE header)"),
    (["-", "--gains", "drums=0"], None, "error: --gains: unknown stem 'drums'; the model's stems are vocals, "
                                        "accompaniment"),
    (["-", "--gains", "vocals"], None, "error: --gains: 'vocals' is not STEM=GAIN"),
    (["-", "--stems", "bass"], None, "error: --stems: unknown stem 'bass'"),
    (["-", "--output-device", "drums=0"], None, "error: --output-device: unknown stem 'drums' in 'drums=0'"),
    (["-", "--latency", "0.01"], None, "error: --latency: 0.01 s is below the least latency this model allows"),
    (["-", "--latency", "-1"], None, "error: --latency: must be a number of seconds above 0"),
    (["-", "--channels", "2"], None, "error: --channels: raw PCM on standard input needs --rate too"),
    (["-", "--rate", "7"], None, "error: --rate: must be a whole number of Hz from 8000"),
    (["-", "--sample-format", "u8"], None, "error: --sample-format: must be one of s16, s24, s32, f32"),
    (["-", "--stdout-format", "mp3"], None, "error: --stdout-format: must be wav or raw"),
    (["missing.wav"], None, "error: missing.wav: "),
])
def test_one_line_errors(tmp_path, bundled, song, args, stdin, expected):
    result = subprocess.run(COMMAND + args + ["--model", str(bundled)], capture_output=True, timeout=300,
                            input=wav_stream(song[:, :RATE]) if stdin is None else stdin, cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith(expected) and stderr.count("\n") == 1, stderr
    assert result.stdout == b""


def test_a_file_option_for_standard_input_only(tmp_path, bundled, song):
    source = tmp_path / "song.wav"
    sf.write(source, song.T, RATE)
    result = run_live([str(source), "--rate", "16000", "--out", str(tmp_path / "o")])
    assert result.returncode == 2 and result.stderr == ("error: --rate: is for standard input and devices; a file has "
                                                        "its own\n")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("end,expected", [
    ("stdout", "error: --stdout: is a terminal: pipe it (| ffplay -) or write files with --out\n"),
    ("stdin", "error: -: standard input is a terminal: pipe audio into it (ffmpeg -i URL -f wav - | unet-sep live "
              "-)\n"),
])
def test_a_terminal_for_audio_is_refused(tmp_path, bundled, song, end, expected):
    """Audio bytes to or from a terminal are never what was meant: one line saying how to pipe them."""
    import pty

    leader, follower = pty.openpty()
    try:
        streams = {"stdout": follower} if end == "stdout" else {"stdin": follower, "stdout": subprocess.PIPE}
        if end == "stdout":
            streams["input"] = wav_stream(song[:, :RATE])
        result = subprocess.run(COMMAND + ["-", "--model", str(bundled)], stderr=subprocess.PIPE, timeout=300,
                                **streams)
    finally:
        os.close(follower)
        os.close(leader)
    assert result.returncode == 2
    assert result.stderr.decode() == expected


def test_file_sink_sizes_and_a_full_disk(tmp_path, monkeypatch):
    """Finished files carry their exact sizes; a write that fails names the stem's file and abort leaves nothing."""
    import errno
    import struct

    from unet_sep.audio.wav_stream import PcmStreamWriter
    from unet_sep.errors import FileError
    from unet_sep.live.sinks import FileSink

    stems = np.random.default_rng(2).uniform(-1, 1, (2, 2, 1000)).astype(np.float32)
    sink = FileSink(tmp_path / "ok", ["vocals", "accompaniment"], ["accompaniment"], RATE, 2)
    sink.write(stems[..., :400])
    sink.write(stems[..., 400:])
    sink.finish()
    data = (tmp_path / "ok" / "accompaniment.wav").read_bytes()
    assert struct.unpack("<I", data[4:8])[0] == len(data) - 8
    assert struct.unpack("<I", data[data.index(b"data") + 4:][:4])[0] == 1000 * 2 * 4
    np.testing.assert_array_equal(sf.read(tmp_path / "ok" / "accompaniment.wav", dtype="float32")[0], stems[1].T)
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["accompaniment.wav"]
    empty = FileSink(tmp_path / "empty", ["vocals"], None, RATE, 1)  # ended before any stems came
    empty.finish()
    assert list((tmp_path / "empty").iterdir()) == []  # no file without samples

    write = PcmStreamWriter.write

    def full(writer, block):
        if "vocals" in writer.stream.name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(writer, block)

    monkeypatch.setattr(PcmStreamWriter, "write", full)
    sink = FileSink(tmp_path / "full", ["vocals", "accompaniment"], None, RATE, 2)
    with pytest.raises(FileError) as caught:
        sink.write(stems)
    sink.abort()
    assert str(caught.value) == f"{tmp_path / 'full' / 'vocals.wav'}: cannot write: No space left on device"
    assert list((tmp_path / "full").iterdir()) == []


class _FailingStream(io.RawIOBase):
    """A stream that gives ``data`` and then fails as a broken device or a network file system does."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self.data.read(len(buffer))
        if not chunk:
            import errno

            raise OSError(errno.EIO, os.strerror(errno.EIO))
        buffer[:len(chunk)] = chunk
        return len(chunk)


def test_a_read_error_on_standard_input_is_one_line_naming_it(tmp_path):
    """An input stream whose read fails (not its end) is a FileError naming it, which the command prints as one
    line with exit 1 and its files aborted; before, the OSError went up as a traceback."""
    from unet_sep.errors import FileError
    from unet_sep.live.sources import PipeSource

    fmt = PcmFormat(RATE, 1, "s16")
    source = PipeSource(io.BufferedReader(_FailingStream(encode_pcm(np.zeros((1, 3000), np.float32), "s16"))),
                        0.05, raw=fmt)
    blocks = source.blocks()
    assert next(blocks).shape == (1, round(0.05 * RATE))
    with pytest.raises(FileError) as caught:
        list(blocks)
    assert str(caught.value) == "-: cannot be read: Input/output error"

    with pytest.raises(FileError) as header:  # the WAV header's read fails the same way
        PipeSource(io.BufferedReader(_FailingStream(b"RIFF")), 0.05)
    assert str(header.value) == "-: cannot be read: Input/output error"
