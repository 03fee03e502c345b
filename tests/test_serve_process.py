"""``unet-sep serve`` as a real process on 127.0.0.1 (uvicorn, a free port): a growing WAV read while its job runs,
kill -9 and a restart (queued jobs run, the running one again from the start, finished ones still served, no
temporary left), SIGTERM, the token, and the refusals at start."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.serve_support import (
    ServerProcess,
    cli_env,
    cut_clip,
    growing_wav_samples,
    separated_by_cli,
    temporaries_under,
    wait_for,
)

httpx = pytest.importorskip("httpx", reason="httpx is not installed (pip install 'unet-sep[test]')")
pytest.importorskip("uvicorn", reason="the serve extra is not installed (pip install 'unet-sep[serve]')")






@pytest.fixture(scope="module")
def clips(tmp_path_factory, example_mp3, bundled) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    return {"short": cut_clip(example_mp3, folder / "short.wav", 3.0),
            "long": cut_clip(example_mp3, folder / "long.wav", 9.0, repeat=6)}


@pytest.fixture(scope="module")
def cli_long(tmp_path_factory, clips) -> Path:
    return separated_by_cli(tmp_path_factory, clips["long"])


def test_a_growing_wav_is_audible_before_the_job_ends_and_ends_as_the_stem(tmp_path, clips, cli_long):
    server = ServerProcess(tmp_path / "data")
    try:
        job = server.upload(clips["long"])
        received = b""
        status_at_first_samples = None
        with server.client.stream("GET", job["stems"]["vocals"]["url"]) as answer:
            assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
            for chunk in answer.iter_bytes():
                received += chunk
                if status_at_first_samples is None and len(received) > 44:
                    status_at_first_samples = server.client.get(f"/api/jobs/{job['id']}").json()["status"]
        assert status_at_first_samples in ("queued", "running")  # audible while the job was not done
        samples, rate, channels = growing_wav_samples(received)
        final, final_rate = sf.read(str(cli_long / "vocals.wav"), dtype="float32")
        assert (rate, channels) == (final_rate, 2) and np.array_equal(samples, final)
        assert wait_for(server.client, job["id"])["status"] == "done"
        served = server.client.get(job["stems"]["vocals"]["url"])  # done: the file itself
        assert served.content == (tmp_path / "data" / "jobs" / job["id"] / "stems" / "vocals.wav").read_bytes()
    finally:
        code, stderr = server.stop()
    assert code == 128 + signal.SIGTERM and "stopped" in stderr, stderr


def test_after_kill_9_a_restart_runs_every_job_and_serves_the_finished(tmp_path, clips, cli_long):
    data = tmp_path / "data"
    server = ServerProcess(data)
    finished = wait_for(server.client, server.upload(clips["short"])["id"])
    finished_zip = server.client.get(finished["zip_url"]).content
    running = server.upload(clips["long"])
    queued = server.upload(clips["short"])
    wait_for(server.client, running["id"], ("running",))
    while server.client.get(running["stems"]["vocals"]["pcm_url"], params={"count": 1}).headers["x-count"] == "0":
        time.sleep(0.05)  # some stems written: temporaries and partial samples on disk
    assert temporaries_under(data / "jobs" / running["id"])
    server.process.kill()
    server.process.communicate(timeout=60)
    assert server.process.returncode == -signal.SIGKILL

    again = ServerProcess(data)
    try:
        assert wait_for(again.client, running["id"])["status"] == "done"
        assert wait_for(again.client, queued["id"])["status"] == "done"
        rerun = again.client.get(f"/api/jobs/{running['id']}").json()
        for stem in ("vocals", "accompaniment"):  # run again from the start: the whole stem, as separate writes it
            served, _ = sf.read(str(data / "jobs" / running["id"] / "stems" / f"{stem}.wav"), dtype="float32")
            written, _ = sf.read(str(cli_long / f"{stem}.wav"), dtype="float32")
            assert np.array_equal(served, written)
        assert rerun["available_seconds"] == pytest.approx(54.0, abs=1e-3)
        assert again.client.get(finished["zip_url"]).content == finished_zip
        assert [job["id"] for job in again.client.get("/api/jobs").json()["jobs"]] == \
            [queued["id"], running["id"], finished["id"]]
        assert temporaries_under(data) == []
    finally:
        again.stop()


def test_sigterm_during_a_job_stops_cleanly_and_the_job_runs_at_the_next_start(tmp_path, clips):
    data = tmp_path / "data"
    server = ServerProcess(data)
    job = server.upload(clips["long"])
    wait_for(server.client, job["id"], ("running",))
    listener = httpx.Client(base_url=server.url, timeout=120)  # an event stream open: it must not hold the stop up
    events = listener.stream("GET", f"/api/jobs/{job['id']}/events").__enter__()
    assert events.status_code == 200
    began = time.monotonic()
    code, stderr = server.stop(signal.SIGTERM)
    assert time.monotonic() - began < 60, "the stop waited for the event stream's job"
    listener.close()
    assert code == 128 + signal.SIGTERM and stderr.strip().endswith("unet-sep serve: stopped"), stderr
    assert "Traceback" not in stderr and temporaries_under(data) == []
    again = ServerProcess(data)
    try:
        assert wait_for(again.client, job["id"])["status"] == "done"
    finally:
        again.stop(signal.SIGINT)


def test_a_token_from_the_environment_guards_the_api(tmp_path):
    env = dict(cli_env(), UNET_SEP_TOKEN="from-env")
    server = ServerProcess(tmp_path / "data", env=env)
    try:
        assert server.client.get("/api/health").status_code == 401
        assert server.client.get("/api/health", headers={"Authorization": "Bearer from-env"}).json()["status"] == "ok"
    finally:
        server.stop()


@pytest.mark.parametrize("options, message", [
    (["--host", "0.0.0.0"], "error: --token: binding 0.0.0.0, which other machines can reach, needs a token "
                            "(--token or UNET_SEP_TOKEN); or bind 127.0.0.1"),
    (["--max-upload-mb", "0"], "error: --max-upload-mb: must be a number of megabytes > 0, got 0.0"),
    (["--model", "no-such-model"], "error: no-such-model: no such model folder and not a registered name"),
])
def test_a_start_that_cannot_work_is_one_line_and_exit_2(tmp_path, options, message):
    env = {key: value for key, value in cli_env().items() if key != "UNET_SEP_TOKEN"}
    result = subprocess.run([sys.executable, "-m", "unet_sep", "serve", "--data", str(tmp_path), *options],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "unet_sep", "serve", "--port", str(port), "--data",
                                 str(tmp_path)], capture_output=True, text=True, env=cli_env(), timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: could not listen on 127.0.0.1:{port}: Address already in use\n"
    assert not (tmp_path / "jobs").exists()  # refused before anything else
