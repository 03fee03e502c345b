"""The PortAudio path of ``unet-sep live`` (unet_sep.live.sources.DeviceSource, sinks.DeviceSink) against a JACK
server on its dummy backend, which Debian's jackd2 provides: samples really flow from a device into the stems and
from the stems to a device, and compute that falls behind is said once and counted.

The test process plays and records through its own JACK ports, wired to the command's with jack_connect. Skipped
with the reason where jackd, jack_connect, sounddevice or PortAudio's JACK support is missing or the server does
not start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import music_like

RATE = 16000  # the server's rate, the bundled model's
PERIOD = 512
COMMAND = [sys.executable, "-m", "unet_sep", "live"]


def _jack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def jack_server():
    """A JACK server of its own name on the dummy backend, and sounddevice restarted to see it; the server's name."""
    for tool in ("jackd", "jack_lsp", "jack_connect", "jack_disconnect"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (Debian: apt-get install jackd2)")
    try:
        import sounddevice as sd
    except (ImportError, OSError) as error:
        pytest.skip(f"sounddevice or the PortAudio library is missing: {error}")
    name = f"unet-sep-test-{os.getpid()}"
    previous = os.environ.get("JACK_DEFAULT_SERVER")
    os.environ["JACK_DEFAULT_SERVER"] = name
    server = subprocess.Popen(["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", str(RATE), "-p",
                               str(PERIOD), "-C", "2", "-P", "2"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    try:
        deadline = time.monotonic() + 15
        while _jack("jack_lsp").returncode != 0 or "system:capture_1" not in _jack("jack_lsp").stdout:
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"the JACK dummy server did not start: {' '.join(server.communicate()[0].split())[-300:]}")
            time.sleep(0.2)
        sd._terminate()  # PortAudio lists host APIs when it starts: again, now that the server runs
        sd._initialize()
        if not any(api["name"] == "JACK Audio Connection Kit" for api in sd.query_hostapis()):
            pytest.skip("this PortAudio library was built without JACK support")
        yield name
    finally:
        sd._terminate()  # PortAudio's JACK client goes before its server does (libjack aborts otherwise)
        server.terminate()
        server.wait(timeout=30)
        if previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = previous
        sd._initialize()


def _ports() -> set[str]:
    return set(_jack("jack_lsp").stdout.split())


def _rewire(source_ports: list[str], target_ports: list[str]) -> None:
    """Connect each source port to the target port of the same number, cutting the targets from system's ports."""
    for source, target in zip(source_ports, target_ports, strict=True):
        for system in ("system:capture_1", "system:capture_2", "system:playback_1", "system:playback_2"):
            _jack("jack_disconnect", system, target)
            _jack("jack_disconnect", source, system)
        assert _jack("jack_connect", source, target).returncode == 0, (source, target)


def _rms_db(audio: np.ndarray) -> float:
    return 10 * np.log10(float(np.mean(np.square(audio, dtype=np.float64))) + 1e-20)


def test_device_in_stems_out_to_a_device_and_files(tmp_path, jack_server, bundled):
    """The command reads JACK's inputs, which this test feeds with music; the stems add up to that music in the
    files, and what the command plays reaches this test's recorder."""
    import sounddevice as sd

    music = music_like(2.0, RATE, channels=2, seed=9)
    played_at = [0]

    def play(outdata, frames, timing, status):
        index = (played_at[0] + np.arange(frames)) % music.shape[1]
        outdata[:] = music[:, index].T
        played_at[0] += frames

    recorded: list[np.ndarray] = []
    ours = _ports()
    with sd.OutputStream(device="system", samplerate=RATE, channels=2, callback=play), \
            sd.InputStream(device="system", samplerate=RATE, channels=2,
                           callback=lambda data, frames, timing, status: recorded.append(data.copy())):
        player = sorted(p for p in _ports() - ours if ":out_" in p)
        recorder = sorted(p for p in _ports() - ours if ":in_" in p)
        mine = _ports()
        out = tmp_path / "stems"
        process = subprocess.Popen(COMMAND + ["device:system", "--rate", str(RATE), "--channels", "2",
                                              "--output-device", "system", "--out", str(out), "--duration", "8",
                                              "--model", str(bundled), "--latency", "1"],
                                   stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 240
            while len(theirs := sorted(_ports() - mine)) < 4:
                assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
                time.sleep(0.1)
            _rewire(player, [p for p in theirs if ":in_" in p])
            _rewire([p for p in theirs if ":out_" in p], recorder)
            stderr = process.communicate(timeout=240)[1]
        finally:
            process.kill()
    assert process.returncode == 0, stderr
    assert "live: device:system at 16000 Hz, 2 channel(s)" in stderr
    vocals, rate = sf.read(out / "vocals.wav", dtype="float32", always_2d=True)
    accompaniment = sf.read(out / "accompaniment.wav", dtype="float32", always_2d=True)[0]
    assert rate == RATE and vocals.shape == accompaniment.shape and vocals.shape[0] > 4 * RATE
    last = (vocals + accompaniment)[-RATE:]  # the last second: music for some seconds by then
    assert abs(_rms_db(last) - _rms_db(music)) < 3.0, (_rms_db(last), _rms_db(music))
    heard = np.concatenate(recorded)
    loudest = max(_rms_db(heard[i:i + RATE // 2]) for i in range(0, heard.shape[0] - RATE // 2, RATE // 4))
    assert abs(loudest - _rms_db(music)) < 3.0, (loudest, _rms_db(music))


class SlowSession:
    """A real live session whose compute takes ``delay`` seconds more per block: a machine that cannot keep up."""

    def __init__(self, session, delay: float) -> None:
        self._session, self._delay = session, delay
        for name in ("sample_rate", "channels", "stems", "latency_samples"):
            setattr(self, name, getattr(session, name))

    def process(self, block: np.ndarray) -> np.ndarray:
        time.sleep(self._delay)
        return self._session.process(block)

    def flush(self) -> np.ndarray:
        return self._session.flush()


def test_compute_behind_a_device_is_said_once_and_counted(tmp_path, jack_server, bundled):
    from unet_sep.live.loop import run_live
    from unet_sep.live.sinks import FileSink
    from unet_sep.live.sources import DeviceSource
    from unet_sep.separate.separator import Separator

    session = Separator.from_pretrained(bundled, device="cpu").live_session(RATE, 2, 1.0)
    source = DeviceSource("system", 0.032, RATE, 2, queue_seconds=0.25)
    sink = FileSink(tmp_path, session.stems, None, RATE, 2)
    warnings: list[str] = []
    try:
        report = run_live(SlowSession(session, 0.07), source, [sink], allowance=0.1, max_frames=2 * RATE,
                          warn=warnings.append)
    finally:
        source.close()
        sink.finish()
    assert len(warnings) == 1 and warnings[0].startswith("compute falls behind")
    assert report.late_blocks > report.blocks // 2  # each 32 ms block takes 70 ms and more
    assert report.dropped_frames > 0  # the device's queue (0.25 s) ran over: input dropped, counted
    assert report.frames_in == 2 * RATE
    assert sf.info(Path(tmp_path) / "vocals.wav").frames == report.frames_out == report.frames_in
    summary = report.summary()
    assert f"{report.late_blocks} of {report.blocks} blocks late" in summary
    assert f"{report.dropped_frames / RATE:.2f} s of input dropped" in summary


@pytest.mark.parametrize("args,expected", [
    (["device:no-such-card", "--out", "stems"], "error: device:no-such-card: no input sound device 'no-such-card': "),
    (["-", "--output-device", "no-such-card", "--out", "stems"],
     "error: --output-device: no output sound device 'no-such-card': "),
])
def test_an_unknown_sound_device_is_one_line(tmp_path, bundled, args, expected):
    pytest.importorskip("sounddevice", reason="sounddevice (unet-sep[live]) or the PortAudio library is missing",
                        exc_type=ImportError)
    wav = b"RIFF\xff\xff\xff\xffWAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00\x80>\x00\x00\x00}\x00\x00\x02\x00\x10\x00"
    result = subprocess.run(COMMAND + args + ["--model", str(bundled)], input=wav + b"data\xff\xff\xff\xff",
                            capture_output=True, timeout=300, cwd=tmp_path)
    stderr = result.stderr.decode()
    assert result.returncode == 2 and stderr.startswith(expected) and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "stems").exists() and result.stdout == b""
