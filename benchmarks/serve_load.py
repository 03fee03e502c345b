"""Load check of ``unet-sep serve`` on 127.0.0.1: N clients upload short real clips at once, each then waits for the
first samples of its first stem (the pcm endpoint, as the page plays them) and for its job's end, and fetches its
stems. Prints a table: jobs completed, errors by kind, p50/p95 seconds to the first audible samples and to
completion (from the upload's start), the server's resident memory before, at its peak and after, the requests
made; and checks that nothing was lost (every job done, every stem whole, every job listed, no temporary left).

The server is a real process (``python -m unet_sep serve``) on a free port of 127.0.0.1 with a fresh data folder;
the clips are cut from ../shared's song excerpt (different offsets, so no two uploads are the same file). Requests
are bounded: each client polls at most every 50 ms, and gives up after ``--timeout`` seconds.

    python benchmarks/serve_load.py                          # 20 clients, 4 s clips
    python benchmarks/serve_load.py --clients 40 --seconds 8 --rounds 3
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import soundfile as sf
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
EXCERPT = ROOT.parent / "shared" / "data" / "mixtures" / "audio_example.mp3"
POLL_SECONDS = 0.05


@dataclass
class ClientResult:
    """What one client saw: seconds from the start of its upload, and its errors by kind."""

    job_id: str | None = None
    first_audible: float | None = None
    completed: float | None = None
    status: str | None = None
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    whole: bool = False


def make_clips(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` clips of ``seconds`` cut from the excerpt at different offsets (wrapping round it)."""
    from unet_sep.audio.decode import read_audio

    audio, rate = read_audio(EXCERPT)
    length = int(seconds * rate)
    looped = np.concatenate([audio] * (1 + length // audio.shape[1] + 1), axis=1)
    step = max(1, (audio.shape[1]) // count)
    paths = []
    for index in range(count):
        path = folder / f"clip{index:02d}.wav"
        sf.write(str(path), looped[:, index * step:index * step + length].T, rate, subtype="PCM_16")
        paths.append(path)
    return paths


def memory_mb(pid: int, key: str) -> float:
    """``VmRSS`` or ``VmHWM`` (the peak) of process ``pid``, in MB."""
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith(key + ":"))
    return int(line.split()[1]) / 1024


def start_server(data: Path, clients: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("UNET_SEP_TOKEN", None)
    process = subprocess.Popen([sys.executable, "-m", "unet_sep", "serve", "--port", str(port), "--data", str(data),
                                "--max-queued", str(clients)], env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"error: the server did not start: {process.stderr.read() if process.stderr else ''}")
        try:
            if httpx.get(url + "/api/health", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("error: the server did not answer within 300 s")


def run_client(url: str, clip: Path, frames: int, start: threading.Barrier, timeout: float,
               result: ClientResult) -> None:
    """One client: upload, wait for the first samples and the end, fetch the stems and check their length."""
    with httpx.Client(base_url=url, timeout=60) as client:
        start.wait()
        began = time.monotonic()

        def get(path: str, **params) -> httpx.Response:
            result.requests += 1
            return client.get(path, params=params)

        try:
            with clip.open("rb") as handle:
                result.requests += 1
                answer = client.post("/api/jobs", files={"file": (clip.name, handle, "audio/wav")})
            if answer.status_code != 201:
                result.errors.append(f"upload HTTP {answer.status_code}")
                return
            job = answer.json()
            result.job_id = job["id"]
            pcm_url = next(iter(job["stems"].values()))["pcm_url"]
            while time.monotonic() - began < timeout:
                if result.first_audible is None and int(get(pcm_url, start=0, count=1).headers["x-count"]) > 0:
                    result.first_audible = time.monotonic() - began
                job = get(f"/api/jobs/{job['id']}").json()
                if job["status"] in ("done", "failed"):
                    result.completed = time.monotonic() - began
                    break
                time.sleep(POLL_SECONDS)
            result.status = job["status"]
            if job["status"] == "failed":
                result.errors.append("job failed")
            elif job["status"] != "done":
                result.errors.append("timed out")
            else:
                lengths = [sf.info(_bytes(get(stem["url"]).content)).frames for stem in job["stems"].values()]
                result.whole = bool(lengths) and all(length == frames for length in lengths)
                if not result.whole:
                    result.errors.append("stem of the wrong length")
        except httpx.HTTPError as error:
            result.errors.append(f"transport {type(error).__name__}")


def _bytes(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


def percentile(values: list[float], q: float) -> str:
    return f"{np.percentile(values, q):.2f}" if values else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="clients uploading at once (default 20)")
    parser.add_argument("--seconds", type=float, default=4.0, help="seconds of audio per clip (default 4)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds a client waits at most (default 900)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of all clients at once against the same server, "
                        "one table each (the RSS after each shows whether memory keeps growing; default 1)")
    args = parser.parse_args()
    if not EXCERPT.is_file():
        raise SystemExit(f"error: {EXCERPT}: the real song excerpt is missing (../shared)")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        folder = Path(scratch)
        clips = make_clips(folder, args.clients, args.seconds)
        frames = sf.info(str(clips[0])).frames
        process, url = start_server(folder / "data", args.clients)
        try:
            lost = False
            for round_number in range(1, args.rounds + 1):
                print(f"round {round_number} of {args.rounds}")
                lost |= report(run_load(process, url, clips, frames, args), folder / "data", args)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=120)
    if lost:
        raise SystemExit(1)


def run_load(process: subprocess.Popen, url: str, clips: list[Path], frames: int, args) -> dict:
    """All clients at once; the results and the server's memory."""
    rss_before = memory_mb(process.pid, "VmRSS")
    barrier = threading.Barrier(len(clips))
    results = [ClientResult() for _ in clips]
    threads = [threading.Thread(target=run_client, args=(url, clip, frames, barrier, args.timeout, result))
               for clip, result in zip(clips, results, strict=True)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - began
    listed = {job["id"]: job["status"] for job in httpx.get(url + "/api/jobs", timeout=60).json()["jobs"]}
    return {"results": results, "wall": wall, "listed": listed, "rss_before": rss_before,
            "rss_peak": memory_mb(process.pid, "VmHWM"), "rss_after": memory_mb(process.pid, "VmRSS")}


def report(load: dict, data: Path, args) -> bool:
    """Print one round's table; whether anything was lost."""
    results: list[ClientResult] = load["results"]
    errors = collections.Counter(kind for result in results for kind in result.errors)
    done = [result for result in results if result.status == "done"]
    ids = {result.job_id for result in results if result.job_id}
    temporaries = [path for path in data.rglob("*") if ".partial" in path.name or path.suffix == ".f32"]
    lost = (len(done) != len(results) or not all(result.whole for result in done)
            or not ids <= set(load["listed"]) or any(load["listed"][job_id] != "done" for job_id in ids)
            or bool(temporaries))
    audible = [result.first_audible for result in results if result.first_audible is not None]
    completed = [result.completed for result in done if result.completed is not None]
    rows = [
        ("clients (clips of %g s, 16-bit stereo 44.1 kHz)" % args.seconds, f"{len(results)}"),
        ("jobs completed", f"{len(done)}"),
        ("errors by kind", ", ".join(f"{kind}: {count}" for kind, count in errors.items()) or "none"),
        ("first audible stem, p50 / p95 (s)", f"{percentile(audible, 50)} / {percentile(audible, 95)}"),
        ("completion, p50 / p95 (s)", f"{percentile(completed, 50)} / {percentile(completed, 95)}"),
        ("wall time (s)", f"{load['wall']:.1f}"),
        ("requests made", f"{sum(result.requests for result in results)}"),
        ("server RSS before / peak / after (MB)", f"{load['rss_before']:.0f} / {load['rss_peak']:.0f} / "
                                                  f"{load['rss_after']:.0f}"),
        ("nothing lost (all done, stems whole, all listed, no temporaries)", "no" if lost else "yes"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"unet-sep serve load, {cpu_name()}, {os.cpu_count()} cores, 127.0.0.1")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return lost


if __name__ == "__main__":
    main()
