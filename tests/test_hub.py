"""Models on the Hugging Face Hub (``hf://ORG/REPO[@REVISION]``, :mod:`unet_sep.weights.hub`) and
``unet-sep models push``, against a stand-in Hub on 127.0.0.1 (:mod:`fake_hub`).

In this process huggingface_hub is pointed at it by setting the module constants it reads its environment into
when first imported (endpoint, cache, offline mode, token file); the command-line tests run ``unet-sep`` in a
subprocess with the environment variables themselves (``HF_ENDPOINT``, ``HF_HOME``, ``HF_HUB_OFFLINE``,
``HF_TOKEN``)."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import make_model, music_like
from fake_hub import FakeHub, serve
from unet_sep.cli import app
from unet_sep.config import CONFIG_FILE, FORMAT_KEY, FORMAT_VERSION, WEIGHTS_FILE, UNetConfig
from unet_sep.separate.separator import Separator
from unet_sep.weights.checkpoint import CheckpointError
from unet_sep.weights.entries import ModelNotFoundError
from unet_sep.weights.hub import HubError, model_card, parse_hub_ref
from unet_sep.weights.registry import resolve_model

TOKEN = "hf_fakeTokenThatMustNeverBePrinted0123"
# A config.json that transformers writes: what a repository of another library holds.
TRANSFORMERS_CONFIG = {"architectures": ["BertModel"], "model_type": "bert", "hidden_size": 768,
                       "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 30522,
                       "transformers_version": "4.40.0"}


def _files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}


@pytest.fixture
def fake_hub():
    hub = FakeHub()
    server = serve(hub)
    yield hub
    server.shutdown()
    server.server_close()


@pytest.fixture
def hub_home(fake_hub, tmp_path, monkeypatch) -> dict[str, str]:
    """huggingface_hub in this process pointed at the fake Hub, its cache and token file under ``tmp_path``, no
    token, online; the environment for a ``unet-sep`` subprocess that does the same (with :data:`TOKEN`)."""
    pytest.importorskip("huggingface_hub", reason="the hub extra (huggingface_hub) is not installed")
    constants = importlib.import_module("huggingface_hub.constants")
    home = tmp_path / "hf-home"
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        fake_hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    environment.update(HF_ENDPOINT=fake_hub.endpoint, HF_HOME=str(home), HF_TOKEN=TOKEN,
                       HF_HUB_DISABLE_TELEMETRY="1")
    return environment


def _unet_sep(environment: dict[str, str], *args: object, offline: bool = False) -> subprocess.CompletedProcess:
    env = dict(environment, **({"HF_HUB_OFFLINE": "1"} if offline else {}))
    return subprocess.run([sys.executable, "-m", "unet_sep", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300)


# ---- loading -------------------------------------------------------------------------------------------------


def test_a_hub_model_separates_exactly_as_its_folder(hub_home, fake_hub, tiny_model):
    commit = fake_hub.add("org/tiny", _files(tiny_model))
    from_hub = Separator.from_pretrained("hf://org/tiny", device="cpu")
    from_folder = Separator.from_pretrained(tiny_model, device="cpu")
    song = music_like(3.0, 44100)

    hub_stems, folder_stems = from_hub.separate(song, 44100), from_folder.separate(song, 44100)

    assert list(hub_stems) == ["vocals", "accompaniment"]
    for stem in hub_stems:
        assert np.array_equal(hub_stems[stem], folder_stems[stem]), stem
    folder = resolve_model("hf://org/tiny")
    assert folder.name == commit and _files(folder) == _files(tiny_model)
    # the config is fetched and checked before the weights; each file once (the second look-up finds the cache)
    gets = [path.rsplit("/", 1)[-1] for method, path, _ in fake_hub.file_requests() if method == "GET"]
    assert gets == [CONFIG_FILE, WEIGHTS_FILE]


def test_a_revision_is_a_branch_or_a_commit(hub_home, fake_hub, tiny_model, tmp_path):
    older = make_model(tmp_path / "older", seed=1)
    first = fake_hub.add("org/tiny", _files(older), branch="v1")
    latest = fake_hub.add("org/tiny", _files(tiny_model))

    assert resolve_model("hf://org/tiny").name == latest
    assert _files(resolve_model("hf://org/tiny@v1")) == _files(older)
    assert resolve_model(f"hf://org/tiny@{first}") == resolve_model("hf://org/tiny@v1")
    assert parse_hub_ref("hf://org/tiny@refs/pr/1").revision == "refs/pr/1"


def _bad_repository(case: str, fake_hub: FakeHub, tiny_model: Path, tmp_path: Path) -> tuple[str, str]:
    """Publish the repository of ``case``; (the model to ask for, the error it must give)."""
    good = _files(tiny_model)
    if case == "no config.json":
        fake_hub.add("org/bad", {WEIGHTS_FILE: good[WEIGHTS_FILE]})
        return "hf://org/bad", "hf://org/bad: not a unet-sep model: the repository has no config.json"
    if case == "a config of another library":
        fake_hub.add("org/bad", {CONFIG_FILE: json.dumps(TRANSFORMERS_CONFIG).encode(),
                                 WEIGHTS_FILE: good[WEIGHTS_FILE]})
        return "hf://org/bad", ("hf://org/bad: not a unet-sep model: its config.json has keys unet-sep does not "
                                "know: architectures, model_type, hidden_size, num_attention_heads, "
                                "num_hidden_layers and 2 more; no stems or sample_rate")
    if case == "pickled weights only":
        fake_hub.add("org/bad", {CONFIG_FILE: good[CONFIG_FILE], "pytorch_model.bin": b"\x80\x04pickle"})
        return "hf://org/bad", ("hf://org/bad: not a unet-sep model: the repository has no model.safetensors "
                                "(unet-sep loads safetensors only, never pickled weights)")
    if case == "truncated safetensors":
        size = len(good[WEIGHTS_FILE])
        fake_hub.add("org/bad", {CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: good[WEIGHTS_FILE][: size // 2]})
        return "hf://org/bad", (f"hf://org/bad: model.safetensors is not a usable safetensors file: truncated: its "
                                f"header describes {size} bytes, the file has {size // 2}")
    if case == "weights of another shape":
        wider = make_model(tmp_path / "wider", unet=UNetConfig(filters=[8, 8, 16, 32, 64, 128]))
        fake_hub.add("org/bad", {CONFIG_FILE: good[CONFIG_FILE], WEIGHTS_FILE: _files(wider)[WEIGHTS_FILE]})
        return "hf://org/bad@main", ("hf://org/bad@main: model.safetensors tensor unets.0.encoder.0.conv.weight has "
                                     "shape (8, 2, 5, 5), the config needs (4, 2, 5, 5)")
    if case == "a revision that does not exist":
        fake_hub.add("org/bad", good)
        return "hf://org/bad@v9", "hf://org/bad@v9: the repository has no revision 'v9'"
    assert case == "no such repository"
    return "hf://org/none", "hf://org/none: no such repository on the Hub, or a private one"


BAD_CASES = ["no config.json", "a config of another library", "pickled weights only", "truncated safetensors",
             "weights of another shape", "a revision that does not exist", "no such repository"]


@pytest.mark.parametrize("case", BAD_CASES)
def test_a_bad_hub_model_is_one_clear_exception(hub_home, fake_hub, tiny_model, tmp_path, case):
    name, message = _bad_repository(case, fake_hub, tiny_model, tmp_path)

    with pytest.raises(HubError) as caught:
        Separator.from_pretrained(name, device="cpu")

    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)
    assert isinstance(caught.value, ModelNotFoundError)  # what every entry point maps to its one-line error
    if case == "a config of another library":
        assert fake_hub.downloads(WEIGHTS_FILE) == 0  # refused before its weights are downloaded


def test_offline_mode_uses_the_cache_and_says_what_is_missing(hub_home, fake_hub, tiny_model, monkeypatch):
    fake_hub.add("org/tiny", _files(tiny_model))
    fake_hub.add("org/other", _files(tiny_model))
    online = resolve_model("hf://org/tiny")
    fake_hub.requests.clear()

    assert resolve_model("hf://org/tiny", offline=True) == online  # train.init_from looks up the cache only
    with pytest.raises(HubError, match=r"^hf://org/other: config.json is not in the Hugging Face cache \(.*\) and "
                                       r"downloads are off$"):
        resolve_model("hf://org/other", offline=True)
    monkeypatch.setattr(importlib.import_module("huggingface_hub.constants"), "HF_HUB_OFFLINE", True)
    assert Separator.from_pretrained("hf://org/tiny", device="cpu").stems == ["vocals", "accompaniment"]
    with pytest.raises(HubError, match=r"^hf://org/other: config.json is not in the Hugging Face cache \(.*\) and "
                                       r"downloads are off \(HF_HUB_OFFLINE\)$"):
        Separator.from_pretrained("hf://org/other")
    assert fake_hub.file_requests() == []


@pytest.mark.parametrize("name, message", [
    ("hf://tiny", "hf://tiny: not a Hub repository name; write hf://ORG/REPO or hf://ORG/REPO@REVISION"),
    ("hf://org/ti ny", "hf://org/ti ny: not a Hub repository name"),
    ("hf://org/tiny@", "hf://org/tiny@: no revision after '@'"),
])
def test_a_malformed_hub_reference_is_refused_before_any_request(name, message):
    with pytest.raises(HubError) as caught:
        resolve_model(name)
    assert str(caught.value).startswith(message)


# ---- the command line -------------------------------------------------------------------------------------


def test_separate_with_a_hub_model_then_offline(hub_home, fake_hub, tiny_model, tmp_path):
    fake_hub.add("org/tiny", _files(tiny_model))
    sf.write(tmp_path / "song.wav", music_like(2.0, 44100).T, 44100, subtype="FLOAT")
    base = ["separate", tmp_path / "song.wav", "--device", "cpu", "--quiet"]
    local = CliRunner().invoke(app, [str(a) for a in [*base, "--model", tiny_model, "--out", tmp_path / "local"]])
    assert local.exit_code == 0, local.output

    for run, offline in (("online", False), ("offline", True)):
        before = len(fake_hub.file_requests())
        result = _unet_sep(hub_home, *base, "--model", "hf://org/tiny", "--out", tmp_path / run, offline=offline)
        assert result.returncode == 0, result.stderr
        assert TOKEN not in result.stdout + result.stderr
        for stem in ("vocals", "accompaniment"):
            assert np.array_equal(sf.read(tmp_path / run / "song" / f"{stem}.wav")[0],
                                  sf.read(tmp_path / "local" / "song" / f"{stem}.wav")[0]), (run, stem)
        if offline:
            assert len(fake_hub.file_requests()) == before  # the cache only
    # huggingface_hub's own token handling sent HF_TOKEN with each request
    assert fake_hub.file_requests() and all(auth == f"Bearer {TOKEN}" for _, _, auth in fake_hub.file_requests())


@pytest.mark.parametrize("case", ["no config.json", "a config of another library", "truncated safetensors",
                                  "a revision that does not exist", "offline without the cache"])
def test_separate_with_a_bad_hub_model_exits_2_with_one_line(hub_home, fake_hub, tiny_model, tmp_path, case):
    if case == "offline without the cache":
        fake_hub.add("org/tiny", _files(tiny_model))
        name, message = "hf://org/tiny", "hf://org/tiny: config.json is not in the Hugging Face cache"
    else:
        name, message = _bad_repository(case, fake_hub, tiny_model, tmp_path)
    sf.write(tmp_path / "song.wav", music_like(1.0, 44100).T, 44100)

    result = _unet_sep(hub_home, "separate", tmp_path / "song.wav", "--out", tmp_path / "out", "--model", name,
                       "--device", "cpu", offline=case == "offline without the cache")

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"error: {message}"), result.stderr
    assert TOKEN not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists()


def _closed_port() -> str:
    """An endpoint on 127.0.0.1 that refuses connections at once (a port nothing listens on)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("endpoint", ["refuses connections", "never answers"])
def test_without_network_a_hub_model_fails_in_seconds_with_one_line(hub_home, tmp_path, endpoint):
    sf.write(tmp_path / "song.wav", music_like(1.0, 44100).T, 44100)
    with contextlib.ExitStack() as stack:
        if endpoint == "never answers":  # connections are queued by the kernel, never accepted: no answer comes
            silent = stack.enter_context(socket.create_server(("127.0.0.1", 0), backlog=16))
            url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        else:
            url = _closed_port()
        environment = dict(hub_home, HF_ENDPOINT=url, HF_HUB_ETAG_TIMEOUT="1")
        started = time.monotonic()
        result = _unet_sep(environment, "separate", tmp_path / "song.wav", "--out", tmp_path / "out", "--model",
                           "hf://org/tiny", "--device", "cpu")
        seconds = time.monotonic() - started

    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()  # huggingface_hub's retries printed 11 lines before this one
    assert line.startswith(f"error: hf://org/tiny: cannot reach the Hub at {url} ("), line
    assert line.endswith(f") and config.json is not in the Hugging Face cache ({tmp_path / 'hf-home' / 'hub'}); run "
                         "once with network to cache the model (then HF_HUB_OFFLINE=1 uses the cache without trying "
                         "the network)"), line
    assert seconds < 15, seconds  # the retries took 26 s (and more for an endpoint that never answers)
    assert not (tmp_path / "out").exists()


def test_a_cached_hub_model_separates_without_network_at_once(hub_home, fake_hub, tiny_model, tmp_path):
    fake_hub.add("org/tiny", _files(tiny_model))
    resolve_model("hf://org/tiny")  # cached while the Hub answers (this process shares hub_home's cache)
    sf.write(tmp_path / "song.wav", music_like(1.0, 44100).T, 44100)

    result = _unet_sep(dict(hub_home, HF_ENDPOINT=_closed_port()), "separate", tmp_path / "song.wav", "--out",
                       tmp_path / "out", "--model", "hf://org/tiny", "--device", "cpu", "--quiet")

    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("separated 1 file(s)"), result.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "song").iterdir()) == ["accompaniment.wav", "vocals.wav"]


def test_hub_weights_that_are_not_the_configs_are_refused_naming_both_digests(hub_home, fake_hub, tiny_model,
                                                                              tmp_path):
    other = _files(make_model(tmp_path / "other", seed=1))  # the same shapes: only the digest tells them apart
    fake_hub.add("org/mixed", {CONFIG_FILE: _files(tiny_model)[CONFIG_FILE], WEIGHTS_FILE: other[WEIGHTS_FILE]})
    recorded = hashlib.sha256(_files(tiny_model)[WEIGHTS_FILE]).hexdigest()
    actual = hashlib.sha256(other[WEIGHTS_FILE]).hexdigest()

    with pytest.raises(CheckpointError) as caught:
        Separator.from_pretrained("hf://org/mixed", device="cpu")

    message = str(caught.value)
    assert message.startswith("hf://org/mixed: ") and "\n" not in message
    assert message.endswith(f"{WEIGHTS_FILE}: corrupted or changed: its sha256 is {actual}, but {CONFIG_FILE} "
                            f"records {recorded}"), message


def test_a_hub_model_without_the_hub_extra_is_one_line_naming_it(tmp_path, tiny_model):
    blocker = ("import importlib.abc, sys\n"
               "class NotInstalled(importlib.abc.MetaPathFinder):\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.partition('.')[0] == 'huggingface_hub':\n"
               "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
               "sys.meta_path.insert(0, NotInstalled())\n")
    sf.write(tmp_path / "song.wav", music_like(1.0, 44100).T, 44100)
    argv = ["unet-sep", "separate", str(tmp_path / "song.wav"), "--out", str(tmp_path / "out"), "--model",
            "hf://org/tiny"]
    code = blocker + f"sys.argv = {argv!r}\nfrom unet_sep.cli import main\nmain()\n"

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: a model on the Hugging Face Hub (hf://...) needs huggingface_hub, which is not installed: "
        "pip install 'unet-sep[hub]'"], result.stderr


# ---- models push ------------------------------------------------------------------------------------------


@pytest.fixture
def uploads(hub_home, fake_hub, monkeypatch) -> list[tuple]:
    """HfApi's repository and commit calls recorded instead of sent; a commit lands in the fake Hub."""
    hf = importlib.import_module("huggingface_hub")
    calls: list[tuple] = []

    def create_repo(self, repo_id, **options):
        calls.append(("create_repo", repo_id, options))

    def create_branch(self, repo_id, **options):
        calls.append(("create_branch", repo_id, options))

    def create_commit(self, repo_id, operations, **options):
        files = {}
        for operation in operations:
            with operation.as_file() as handle:
                files[operation.path_in_repo] = handle.read()
        calls.append(("create_commit", repo_id, options, files))
        commit = fake_hub.add(repo_id, files, branch=options.get("revision") or "main")
        return SimpleNamespace(commit_url=f"{fake_hub.endpoint}/{repo_id}/commit/{commit}", oid=commit)

    for name, method in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("create_commit", create_commit)):
        monkeypatch.setattr(hf.HfApi, name, method)
    return calls


def _training_run(tiny_model: Path, folder: Path) -> Path:
    """A training run's folder: the model, its recipe.json, an evaluation's summary.csv under eval/."""
    folder.mkdir()
    for name, data in _files(tiny_model).items():
        (folder / name).write_bytes(data)
    recipe = {"data": {"kind": "musdb", "root": "/home/someone/data/musdb18hq", "train_split": "train",
                       "targets": ["vocals", "accompaniment"]},
              "train": {"steps": 1200, "batch_size": 8, "loss": "l1", "seed": 3, "init_from": None}}
    (folder / "recipe.json").write_text(json.dumps(recipe))
    (folder / "eval").mkdir()
    (folder / "eval" / "summary.csv").write_text("method,stem,tracks,SDR,SIR,SAR,ISR\n"
                                                 "run,vocals,50,6.12000,13.1,6.5,12.0\n"
                                                 "run,accompaniment,50,12.40000,16.2,14.1,21.3\n")
    return folder


def test_push_uploads_config_weights_and_card_and_the_model_loads_back(uploads, fake_hub, tiny_model, tmp_path):
    run = _training_run(tiny_model, tmp_path / "run")

    result = CliRunner().invoke(app, ["models", "push", str(run), "org/pushed", "--revision", "v2", "--private"])

    assert result.exit_code == 0, result.output
    assert [call[:2] for call in uploads] == [("create_repo", "org/pushed"), ("create_branch", "org/pushed"),
                                              ("create_commit", "org/pushed")]
    assert uploads[0][2]["private"] is True and uploads[0][2]["exist_ok"] is True
    assert uploads[1][2] == {"branch": "v2", "exist_ok": True}
    files = uploads[2][3]
    assert list(files) == [CONFIG_FILE, WEIGHTS_FILE, "README.md"] and uploads[2][2]["revision"] == "v2"
    assert {name: files[name] for name in (CONFIG_FILE, WEIGHTS_FILE)} == _files(tiny_model)
    card = files["README.md"].decode()
    assert card.startswith("---\nlibrary_name: unet-sep\ntags:\n- audio\n- audio-source-separation\n")
    for fact in ("stems: **vocals, accompaniment**, at **44100 Hz** (stereo;",
                 "unet-sep separate song.mp3 --model hf://org/pushed --out stems/",
                 'Separator.from_pretrained("hf://org/pushed")',
                 "- recipe.json: data.kind musdb, data set folder musdb18hq, training split train, targets vocals, "
                 "accompaniment",
                 "- recipe.json: 1200 steps of batch 8, loss l1, seed 3\n",
                 "From `summary.csv` (`unet-sep evaluate`",
                 "| method | stem | tracks | SDR | SIR | SAR | ISR |\n| --- | --- | --- | --- | --- | --- | --- |\n"
                 "| run | vocals | 50 | 6.12000 | 13.1 | 6.5 | 12.0 |"):
        assert fact in card, fact
    assert "/home/someone" not in card  # no local paths in a public card
    assert "hf://org/pushed@v2" in result.output

    pushed = Separator.from_pretrained("hf://org/pushed@v2", device="cpu")
    song = music_like(1.0, 44100)
    assert np.array_equal(pushed.separate(song, 44100)["vocals"],
                          Separator.from_pretrained(tiny_model, device="cpu").separate(song, 44100)["vocals"])


@pytest.mark.parametrize("case, message", [
    ("not a model folder", "not a model folder (no config.json;"),
    ("a bad repository name", "hf://org: not a Hub repository name"),
    ("several evaluations", "several evaluations"),
    ("scores that are not a summary", "not an evaluation's summary.csv"),
])
def test_push_of_something_unusable_exits_2_and_uploads_nothing(uploads, tiny_model, tmp_path, case, message):
    run = _training_run(tiny_model, tmp_path / "run")
    args = ["models", "push", str(run), "org/pushed"]
    if case == "not a model folder":
        args[2] = str(tmp_path)
    elif case == "a bad repository name":
        args[3] = "org"
    elif case == "several evaluations":
        (run / "eval-2").mkdir()
        (run / "eval-2" / "summary.csv").write_text((run / "eval" / "summary.csv").read_text())
    else:
        (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
        args += ["--scores", str(tmp_path / "notes.csv")]

    result = CliRunner().invoke(app, args)

    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert uploads == []


def test_push_the_hub_refuses_exits_1_with_one_line(hub_home, tiny_model, monkeypatch):
    hf = importlib.import_module("huggingface_hub")
    httpx = pytest.importorskip("httpx2")  # huggingface_hub 2's HTTP client

    def refuse(self, repo_id, **options):
        response = httpx.Response(401, request=httpx.Request("POST", "http://127.0.0.1/api/repos/create"))
        raise importlib.import_module("huggingface_hub.errors").HfHubHTTPError("401 Unauthorized",
                                                                                response=response)

    monkeypatch.setattr(hf.HfApi, "create_repo", refuse)
    result = CliRunner().invoke(app, ["models", "push", str(tiny_model), "org/pushed"])

    assert result.exit_code == 1
    assert result.output == ("error: hf://org/pushed: the Hub refused the upload (401): log in with a token that "
                             "may write to this repository (hf auth login, or set HF_TOKEN)\n")


def test_push_records_the_weights_digest_and_refuses_weights_that_are_not_the_configs(uploads, tiny_model,
                                                                                     tmp_path):
    old = tmp_path / "old"  # a folder written before config.json recorded the digest
    old.mkdir()
    for name, data in _files(tiny_model).items():
        (old / name).write_bytes(data)
    config = json.loads((old / CONFIG_FILE).read_text())
    del config["weights_sha256"]
    (old / CONFIG_FILE).write_text(json.dumps({**config, FORMAT_KEY: 2}))

    result = CliRunner().invoke(app, ["models", "push", str(old), "org/old"])

    assert result.exit_code == 0, result.output
    uploaded = json.loads(uploads[-1][3][CONFIG_FILE])
    assert uploaded[FORMAT_KEY] == FORMAT_VERSION
    assert uploaded["weights_sha256"] == hashlib.sha256((old / WEIGHTS_FILE).read_bytes()).hexdigest()
    assert uploads[-1][3][WEIGHTS_FILE] == (old / WEIGHTS_FILE).read_bytes()

    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / CONFIG_FILE).write_bytes(_files(tiny_model)[CONFIG_FILE])
    (changed / WEIGHTS_FILE).write_bytes(_files(make_model(tmp_path / "other", seed=1))[WEIGHTS_FILE])
    count = len(uploads)

    result = CliRunner().invoke(app, ["models", "push", str(changed), "org/changed"])

    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: {changed / WEIGHTS_FILE}: corrupted or changed: its sha256 is ")
    assert len(result.output.splitlines()) == 1 and len(uploads) == count


def test_dry_run_prints_the_card_and_uploads_nothing(uploads, tiny_model, tmp_path):
    (tmp_path / "model").mkdir()
    for name, data in _files(tiny_model).items():
        (tmp_path / "model" / name).write_bytes(data)
    (tmp_path / "model" / "MODEL_CARD.md").write_text("# tiny\n\nNotes by the author.\n")

    result = CliRunner().invoke(app, ["models", "push", str(tmp_path / "model"), "hf://org/tiny", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "# tiny-random\n" in result.output and "Not stated." in result.output
    assert "No evaluation came with this upload." in result.output
    assert result.output.rstrip().endswith("---\n\n# tiny\n\nNotes by the author.\n"
                                           "would upload config.json, model.safetensors, README.md to hf://org/tiny")
    assert uploads == []


def test_the_card_states_provenance_and_its_data(tiny_model):
    from unet_sep.weights.checkpoint import load_model

    config, _ = load_model(tiny_model)
    config.provenance = {"description": "A tiny test model.", "data": "MIR-1K, singers split", "steps": 10}

    card = model_card(config, "org/tiny")

    assert "# tiny-random\n\nA tiny test model.\n" in card
    assert "## Training data\n\n- MIR-1K, singers split\n" in card
    assert "## Provenance\n\n- steps: 10\n" in card
    assert "the ratio-masked mixture; `--wiener-iterations N` adds a multichannel Wiener filter." in card
    config.wiener_iterations = 2
    assert "a multichannel Wiener filter refines the masked stems (2 EM iterations;" in model_card(config, "org/tiny")
