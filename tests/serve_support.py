"""What the server's tests share: short real clips cut from ../shared's song excerpt, the stems ``unet-sep
separate`` writes for them, reading a growing WAV, and a job waited for."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]


def cut_clip(example_mp3: Path, target: Path, seconds: float, offset: float = 1.0, repeat: int = 1) -> Path:
    """``seconds`` of the real excerpt from ``offset`` (``repeat`` times over), as a 16-bit stereo WAV."""
    from unet_sep.audio.decode import read_audio

    audio, rate = read_audio(example_mp3, offset=offset, duration=seconds)
    sf.write(str(target), np.tile(audio, (1, repeat)).T, rate, subtype="PCM_16")
    return target


def cli_env() -> dict[str, str]:
    """The environment for a command of this tree (``python -m unet_sep``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def separate_cli(inputs: list[Path], out: Path, *options: str) -> subprocess.CompletedProcess:
    """``unet-sep separate INPUT... --out OUT`` with the default model, run as a user runs it."""
    return subprocess.run([sys.executable, "-m", "unet_sep", "separate", *map(str, inputs), "--out", str(out),
                           "--quiet", "--template", "{track}/{stem}.{ext}", *options],
                          capture_output=True, text=True, env=cli_env(), timeout=600)


def separated_by_cli(tmp_path_factory, clip: Path) -> Path:
    """The folder of ``unet-sep separate``'s stems of ``clip`` (default settings), made in a fresh temporary folder:
    what the server's stems are compared with."""
    out = tmp_path_factory.mktemp("cli-stems")
    result = separate_cli([clip], out)
    assert result.returncode == 0, result.stderr
    return out / clip.stem


def cli_reason(stderr: str, path: Path) -> str:
    """The reason ``unet-sep separate`` gave for ``path`` (the part of its ``error: <path>: <reason>`` line after
    the path)."""
    prefix = f"error: {path}: "
    lines = [line for line in stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, stderr
    return lines[0][len(prefix):]


def growing_wav_samples(data: bytes) -> tuple[np.ndarray, int, int]:
    """The samples of a growing WAV (a float32 WAV whose sizes are left at their largest): ``(samples [n,
    channels], rate, channels)``."""
    assert data[:4] == b"RIFF" and data[8:16] == b"WAVEfmt ", data[:16]
    fmt_size = struct.unpack("<I", data[16:20])[0]
    tag, channels, rate = struct.unpack("<HHI", data[20:28])
    assert tag == 3, tag  # IEEE float
    start = 20 + fmt_size + 8
    assert data[start - 8:start - 4] == b"data"
    samples = np.frombuffer(data[start:], dtype="<f4")
    return samples.reshape(-1, channels), rate, channels


def wait_for(client, job_id: str, statuses: tuple[str, ...] = ("done", "failed"), timeout: float = 300.0) -> dict:
    """Poll the job until its status is one of ``statuses``; its JSON."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def temporaries_under(folder: Path) -> list[Path]:
    """Files under ``folder`` named as :mod:`unet_sep.atomic`'s temporaries (``.partial``) or live samples."""
    return [path for path in folder.rglob("*") if ".partial" in path.name or path.suffix == ".f32"]


START_SECONDS = 180  # importing torch and loading the model on a loaded 2-core machine


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ServerProcess:
    """``python -m unet_sep serve`` on a free port of 127.0.0.1 with ``data`` as its folder."""

    def __init__(self, data: Path, *options: str, env: dict[str, str] | None = None) -> None:
        import httpx  # the test extra; the serve tests skip without it

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "unet_sep", "serve", "--port", str(self.port), "--data", str(data), *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or cli_env())
        self.client = httpx.Client(base_url=self.url, timeout=60, headers=self._auth(options))
        deadline = time.monotonic() + START_SECONDS
        while True:
            assert self.process.poll() is None, self.process.communicate()
            try:
                if self.client.get("/api/health").status_code in (200, 401):
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)

    @staticmethod
    def _auth(options: tuple[str, ...]) -> dict[str, str]:
        return {"Authorization": f"Bearer {options[options.index('--token') + 1]}"} if "--token" in options else {}

    def upload(self, path: Path):
        with path.open("rb") as handle:
            answer = self.client.post("/api/jobs", files={"file": (path.name, handle)})
        assert answer.status_code == 201, answer.text
        return answer.json()

    def stop(self, signum: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``signum``; the exit status and stderr."""
        self.client.close()
        self.process.send_signal(signum)
        _, stderr = self.process.communicate(timeout=120)
        return self.process.returncode, stderr
