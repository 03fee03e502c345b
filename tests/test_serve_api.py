"""The server's HTTP API in-process (httpx through Starlette's TestClient, the app's lifespan running its worker):
every endpoint and every error, the event stream, the schema, the token, and the stems against ``unet-sep
separate``'s for the same input (real audio cut from ../shared's song excerpt)."""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.serve_support import cli_reason, cut_clip, separate_cli, separated_by_cli, temporaries_under, wait_for
from unet_sep.audio.encode import FULL_SCALE
from unet_sep.dsp.measures import snr_db

pytest.importorskip("starlette", reason="the serve extra is not installed (pip install 'unet-sep[serve]')")
pytest.importorskip("httpx", reason="httpx is not installed (pip install 'unet-sep[test]')")

from starlette.testclient import TestClient  # noqa: E402

from unet_sep.serve.app import create_app  # noqa: E402
from unet_sep.serve.config import ServeConfig  # noqa: E402

STEMS = ["vocals", "accompaniment"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory, example_mp3, bundled) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("clips")
    truncated = cut_clip(example_mp3, folder / "truncated.wav", 2.0)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    mp3 = example_mp3.read_bytes()
    (folder / "cutshort.mp3").write_bytes(mp3[: int(len(mp3) * 0.45)])
    (folder / "notes.mp3").write_text("these are notes, not audio\n")
    (folder / "empty.wav").write_bytes(b"")
    return {"short": cut_clip(example_mp3, folder / "short.wav", 3.0), "truncated": truncated,
            "long": cut_clip(example_mp3, folder / "long.wav", 9.0, repeat=6),
            "cutshort": folder / "cutshort.mp3", "notes": folder / "notes.mp3", "empty": folder / "empty.wav"}


@pytest.fixture(scope="module")
def client(tmp_path_factory, bundled):
    app = create_app(ServeConfig(data_dir=tmp_path_factory.mktemp("serve-data")))
    with TestClient(app) as test_client:
        yield test_client


def upload(client, path: Path, name: str | None = None, **fields: str):
    with path.open("rb") as handle:
        return client.post("/api/jobs", files={"file": (name or path.name, handle, "application/octet-stream")},
                           data=fields)


@pytest.fixture(scope="module")
def done_job(client, clips) -> dict:
    created = upload(client, clips["short"])
    assert created.status_code == 201, created.text
    return wait_for(client, created.json()["id"])


@pytest.fixture(scope="module")
def cli_stems(tmp_path_factory, clips) -> Path:
    return separated_by_cli(tmp_path_factory, clips["short"])


def test_a_job_is_queued_runs_and_answers_the_contract_shape(client, clips, done_job):
    assert done_job["status"] == "done" and done_job["error"] is None and done_job["progress"] == 1.0
    assert done_job["file_name"] == "short.wav" and done_job["model"] == "mir1k-vocals-accompaniment"
    assert done_job["sample_rate"] == 44100 and done_job["channels"] == 2
    assert done_job["duration_seconds"] == pytest.approx(3.0, abs=1e-4)
    assert done_job["available_seconds"] == pytest.approx(3.0, abs=1e-4)
    assert done_job["created"] <= done_job["started"] <= done_job["finished"]
    base = f"/api/jobs/{done_job['id']}"
    assert done_job["stems"] == {stem: {"url": f"{base}/stems/{stem}", "pcm_url": f"{base}/stems/{stem}/pcm"}
                                 for stem in STEMS}
    assert done_job["zip_url"] == f"{base}/stems.zip"
    assert client.get(base).json() == done_job


def test_a_stem_is_what_unet_sep_separate_writes(client, done_job, cli_stems):
    for stem in STEMS:
        answer = client.get(f"/api/jobs/{done_job['id']}/stems/{stem}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "audio/wav"
        served, rate = sf.read(io.BytesIO(answer.content), dtype="float32")
        written, cli_rate = sf.read(str(cli_stems / f"{stem}.wav"), dtype="float32")
        assert rate == cli_rate == 44100 and served.shape == written.shape == (3 * 44100, 2)
        assert np.array_equal(served, written), snr_db(written, served)  # bit-identical samples
        assert sf.info(io.BytesIO(answer.content)).subtype == sf.info(str(cli_stems / f"{stem}.wav")).subtype


def test_pcm_of_a_finished_stem(client, done_job, cli_stems):
    url = done_job["stems"]["vocals"]["pcm_url"]
    written, _ = sf.read(str(cli_stems / "vocals.wav"), dtype="float32")
    answer = client.get(url, params={"start": 1000, "count": 4410})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/octet-stream"
    headers = {name: answer.headers[name] for name in ("x-sample-rate", "x-channels", "x-start", "x-count",
                                                       "x-available", "x-complete")}
    assert headers == {"x-sample-rate": "44100", "x-channels": "2", "x-start": "1000", "x-count": "4410",
                       "x-available": str(3 * 44100), "x-complete": "1"}
    samples = np.frombuffer(answer.content, dtype="<f4").reshape(-1, 2)
    assert np.array_equal(samples, written[1000:5410])
    tail = client.get(url, params={"start": 3 * 44100 - 10, "count": 100})
    assert tail.headers["x-count"] == "10" and len(tail.content) == 10 * 2 * 4
    beyond = client.get(url, params={"start": 10 ** 7, "count": 100})
    assert beyond.status_code == 200 and beyond.headers["x-count"] == "0" and beyond.content == b""
    for bad in ({"start": -1}, {"count": "many"}):
        refused = client.get(url, params=bad)
        assert refused.status_code == 422 and "start and count" in refused.json()["error"]


def test_flac_and_mp3_are_encoded_on_request(client, done_job, cli_stems):
    written, _ = sf.read(str(cli_stems / "accompaniment.wav"), dtype="float32")
    url = done_job["stems"]["accompaniment"]["url"]
    flac = client.get(url, params={"format": "flac"})
    assert flac.status_code == 200 and flac.headers["content-type"] == "audio/flac"
    decoded, rate = sf.read(io.BytesIO(flac.content), dtype="float32")
    assert rate == 44100 and decoded.shape == written.shape
    gain = float(np.sum(decoded * written) / np.sum(written * written))
    assert gain == pytest.approx(min(1.0, FULL_SCALE / np.abs(written).max()), rel=1e-4)  # rescaled below full scale
    assert np.abs(decoded).max() <= 1.0 and snr_db(written * np.float32(gain), decoded) > 100  # 24-bit
    mp3 = client.get(url, params={"format": "mp3"})
    assert mp3.status_code == 200 and mp3.headers["content-type"] == "audio/mpeg"
    info = sf.info(io.BytesIO(mp3.content))
    assert info.samplerate == 44100 and info.channels == 2 and abs(info.duration - 3.0) < 0.1
    refused = client.get(url, params={"format": "ogg"})
    assert refused.status_code == 422 and refused.json() == {
        "error": "format: unknown format 'ogg'; choose from wav, flac, mp3"}


def test_the_zip_holds_each_stem_wav(client, done_job):
    answer = client.get(done_job["zip_url"])
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        assert sorted(archive.namelist()) == sorted(f"{stem}.wav" for stem in STEMS)
        for stem in STEMS:
            assert archive.read(f"{stem}.wav") == client.get(done_job["stems"][stem]["url"]).content


def test_events_stream_every_change_until_the_end(client, clips):
    job_id = upload(client, clips["short"]).json()["id"]
    with client.stream("GET", f"/api/jobs/{job_id}/events") as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        text = "".join(answer.iter_text())
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    assert all(lines[0] == "event: job" and lines[1].startswith("data: ") for lines in events), text[:400]
    jobs = [json.loads(lines[1][len("data: "):]) for lines in events]
    assert jobs[-1]["status"] == "done" and all(job["status"] != "done" for job in jobs[:-1])
    assert [job["progress"] for job in jobs] == sorted(job["progress"] for job in jobs)
    assert len({json.dumps(job) for job in jobs}) == len(jobs)  # only changes


def test_samples_can_be_read_while_the_job_runs(client, clips):
    """The first samples of every stem come before the job is done, and they are the final stem's."""
    job_id = upload(client, clips["long"]).json()["id"]
    url = f"/api/jobs/{job_id}/stems/vocals/pcm"
    early = None
    deadline = time.monotonic() + 300
    while early is None and time.monotonic() < deadline:
        answer = client.get(url, params={"start": 0, "count": 44100})
        if int(answer.headers["x-count"]) > 0 and answer.headers["x-complete"] == "0":
            early = answer
        assert client.get(f"/api/jobs/{job_id}").json()["status"] != "done" or early is not None, \
            "the job ended before any samples were seen while it ran"
        time.sleep(0.02)
    assert early is not None
    assert int(early.headers["x-available"]) < 54 * 44100
    job = wait_for(client, job_id)
    assert job["status"] == "done"
    final = client.get(url, params={"start": 0, "count": 44100})
    count = int(early.headers["x-count"])
    assert final.content[: count * 8] == early.content


def test_settings_choose_the_stems(client, clips):
    created = upload(client, clips["short"], stems="vocals", wiener_iterations="1")
    assert created.status_code == 201
    job = created.json()
    assert list(job["stems"]) == ["vocals"] and job["settings"] == {
        "stems": ["vocals"], "two_stems": None, "segmentation": "overlap", "overlap": None, "mask_extension": None,
        "wiener_iterations": 1, "wiener_window": None}
    assert wait_for(client, job["id"])["status"] == "done"
    two = upload(client, clips["short"], two_stems="vocals").json()
    assert list(two["stems"]) == ["vocals", "no_vocals"]
    assert wait_for(client, two["id"])["status"] == "done"


@pytest.mark.parametrize("fields, message", [
    ({"stems": "drums"}, "stems: unknown stem(s) drums; choose from vocals, accompaniment"),
    ({"wiener_iterations": "many"}, "wiener_iterations: must be a whole number, got 'many'"),
    ({"segmentation": "random"}, "segmentation:"),
    ({"device": "cuda"}, "device: unknown setting; a job takes stems, two_stems, segmentation"),
])
def test_a_bad_setting_is_422_naming_it(client, clips, fields, message):
    answer = upload(client, clips["short"], **fields)
    assert answer.status_code == 422 and answer.json()["error"].startswith(message), answer.text


@pytest.mark.parametrize("clip", ["notes", "empty", "truncated"])
def test_a_file_that_is_not_audio_is_422_with_the_cli_line(client, clips, clip, tmp_path):
    count = len(client.get("/api/jobs").json()["jobs"])
    answer = upload(client, clips[clip])
    cli = separate_cli([clips[clip]], tmp_path)
    assert cli.returncode == 1
    assert answer.status_code == 422 and answer.json() == {
        "error": f"{clips[clip].name}: {cli_reason(cli.stderr, clips[clip])}"}
    assert len(client.get("/api/jobs").json()["jobs"]) == count  # no job, no folder left
    assert {"notes": "not a readable audio file", "empty": "empty", "truncated": "truncated"}[clip] in \
        answer.json()["error"]


def test_a_file_found_bad_while_separating_fails_its_job_with_the_cli_line(client, clips, tmp_path):
    created = upload(client, clips["cutshort"])
    assert created.status_code == 201  # an MP3's length is an estimate: the probe lets it through
    job = wait_for(client, created.json()["id"])
    cli = separate_cli([clips["cutshort"]], tmp_path)
    assert job["status"] == "failed" and "truncated" in job["error"]
    assert job["error"] == f"cutshort.mp3: {cli_reason(cli.stderr, clips['cutshort'])}"
    assert client.get(job["stems"]["vocals"]["url"]).status_code == 409
    assert client.get(f"/api/jobs/{job['id']}/stems.zip").status_code == 409


def test_an_upload_without_one_file_is_422(client):
    answer = client.post("/api/jobs", data={"stems": "vocals"})
    assert answer.status_code == 422 and answer.json()["error"].startswith("file:")


def test_file_names_never_reach_the_filesystem(client, clips):
    answer = upload(client, clips["short"], name="../../etc/passwd.wav")
    assert answer.status_code == 201
    job = answer.json()
    assert job["file_name"] == "passwd.wav"
    folder = client.app.state.api.store.folder(job["id"])
    assert wait_for(client, job["id"])["status"] == "done"
    assert sorted(str(path.relative_to(folder)) for path in folder.rglob("*")) == [
        "input.wav", "stems", "stems/accompaniment.wav", "stems/vocals.wav"]


def test_listing_is_newest_first_and_unknown_ids_are_404(client, done_job):
    jobs = client.get("/api/jobs").json()["jobs"]
    assert [job["created"] for job in jobs] == sorted((job["created"] for job in jobs), reverse=True)
    assert done_job["id"] in [job["id"] for job in jobs]
    for path in ("/api/jobs/j_0123456789abcdef", "/api/jobs/..%2F..", "/api/jobs/j_0123456789abcdef/events",
                 "/api/jobs/j_0123456789abcdef/stems.zip", "/api/jobs/j_0123456789abcdef/stems/vocals"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.json()["error"], path
    assert client.put("/api/jobs").json() == {"error": "PUT is not allowed on /api/jobs"}
    answer = client.get(f"/api/jobs/{done_job['id']}/stems/drums")
    assert answer.status_code == 404 and answer.json() == {
        "error": f"job {done_job['id']} has no stem drums; its stems: vocals, accompaniment"}


def test_delete_removes_a_finished_job_and_cancels_a_running_one(client, clips):
    store = client.app.state.api.store
    done = wait_for(client, upload(client, clips["short"]).json()["id"])
    assert client.delete(f"/api/jobs/{done['id']}").status_code == 204
    assert not store.folder(done["id"]).exists() and client.get(f"/api/jobs/{done['id']}").status_code == 404
    running = upload(client, clips["long"]).json()
    wait_for(client, running["id"], ("running",))
    assert client.delete(f"/api/jobs/{running['id']}").status_code == 204
    assert client.get(f"/api/jobs/{running['id']}").status_code == 404
    assert not store.folder(running["id"]).exists() and temporaries_under(store.jobs_dir) == []
    assert client.delete(f"/api/jobs/{running['id']}").status_code == 404
    after = wait_for(client, upload(client, clips["short"]).json()["id"])  # the worker goes on
    assert after["status"] == "done"


def test_models_and_health(client):
    models = client.get("/api/models").json()
    assert models["loaded"] == "mir1k-vocals-accompaniment"
    loaded = next(item for item in models["models"] if item["name"] == models["loaded"])
    assert loaded == {"name": "mir1k-vocals-accompaniment", "stems": STEMS, "sample_rate": 16000}  # the model's rate
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and set(health) == {"status", "queued", "running"}
    assert health["queued"] >= 0 and health["running"] in (0, 1)


def test_the_openapi_schema_names_every_route_and_is_valid(client):
    jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed")
    from starlette.routing import Route

    schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1") and schema["info"]["title"] and schema["info"]["version"]
    served = {(route.path.replace("{job_id}", "{job_id}"), method.lower()) for route in client.app.routes
              if isinstance(route, Route) and route.path != "/" for method in route.methods - {"HEAD"}}
    documented = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert served == documented
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            assert operation["responses"] and all(code.isdigit() for code in operation["responses"]), (path, method)
            names = {param["name"] for param in operation.get("parameters", []) if param["in"] == "path"}
            assert names == set(re.findall(r"{(\w+)}", path)), (path, method)
    text = json.dumps(schema)
    for reference in set(re.findall(r'"\$ref": "#/components/schemas/(\w+)"', text)):
        jsonschema.Draft202012Validator.check_schema(schema["components"]["schemas"][reference])
    job_schema = dict(schema["components"]["schemas"]["Job"], **{"$defs": {}})
    jobs = client.get("/api/jobs").json()["jobs"]
    assert jobs
    for job in jobs:
        jsonschema.validate(job, job_schema)


def test_no_cors_headers_by_default(client):
    answer = client.get("/api/health", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in answer.headers


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, bundled):
    """An app with a token, a 1 MB limit, one job queued at most and a CORS origin; its worker not started (no
    lifespan), so jobs stay queued."""
    config = ServeConfig(data_dir=tmp_path_factory.mktemp("guarded-data"), token="s3cret", max_upload_mb=1,
                         max_queued=1, cors_origins=("https://page.example",))
    return TestClient(create_app(config))


def test_a_token_is_needed_for_every_api_request(guarded, clips):
    for path in ("/api/health", "/api/jobs", "/api/models", "/api/jobs/j_0123456789abcdef"):
        answer = guarded.get(path)
        assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer", path
        assert "token" in answer.json()["error"]
    assert guarded.get("/api/health", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert guarded.get("/api/health", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert guarded.get("/api/health", params={"token": "s3cret"}).status_code == 200
    assert guarded.get("/openapi.json").status_code == 200


def test_limits_answer_413_and_429(guarded, clips, tmp_path):
    auth = {"Authorization": "Bearer s3cret"}
    big = tmp_path / "big.wav"
    sf.write(str(big), np.zeros((400_000, 2), dtype=np.float32), 44100, subtype="FLOAT")  # 3.2 MB
    with big.open("rb") as handle:
        answer = guarded.post("/api/jobs", files={"file": ("big.wav", handle)}, headers=auth)
    assert answer.status_code == 413 and answer.json() == {"error": "the upload is over this server's limit of 1 MB"}
    with clips["short"].open("rb") as handle:
        assert guarded.post("/api/jobs", files={"file": ("a.wav", handle)}, headers=auth).status_code == 201
    with clips["short"].open("rb") as handle:
        answer = guarded.post("/api/jobs", files={"file": ("b.wav", handle)}, headers=auth)
    assert answer.status_code == 429 and int(answer.headers["retry-after"]) > 0
    assert answer.json() == {"error": "the queue is full (1 jobs waiting); try again later"}


def test_cors_only_for_the_origins_given(guarded):
    preflight = guarded.options("/api/jobs", headers={"Origin": "https://page.example",
                                                      "Access-Control-Request-Method": "POST",
                                                      "Access-Control-Request-Headers": "Authorization"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://page.example"
    other = guarded.get("/api/health", headers={"Origin": "https://other.example", "Authorization": "Bearer s3cret"})
    assert "access-control-allow-origin" not in other.headers


def test_an_upload_the_disk_cannot_take_is_507_and_leaves_nothing(client, clips, monkeypatch):
    import errno

    from unet_sep.serve import app as serve_app

    def full(source, target):
        target.parent.mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(serve_app, "save_upload", full)
    store = client.app.state.api.store
    before = sorted(path.name for path in store.jobs_dir.iterdir())
    answer = upload(client, clips["short"])
    assert answer.status_code == 507 and answer.json() == {
        "error": "the server cannot store the upload: No space left on device"}
    assert sorted(path.name for path in store.jobs_dir.iterdir()) == before
