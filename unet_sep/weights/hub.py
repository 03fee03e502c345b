"""Models on the Hugging Face Hub: ``hf://ORG/REPO[@REVISION]`` fetched, checked, and model folders pushed.

Fetching downloads exactly ``config.json`` and ``model.safetensors`` with ``huggingface_hub`` (the optional
extra ``hub``), so its cache, its offline mode (``HF_HUB_OFFLINE``), its endpoint (``HF_ENDPOINT``) and its
token handling (``HF_TOKEN``, ``hf auth login``) apply; no token is ever printed or logged here. Both files come
from one commit. Before anything is loaded, ``config.json`` must parse as a unet-sep :class:`ModelConfig` (checked
before the weights are downloaded) and the header of ``model.safetensors`` must name exactly the tensors, with
the shapes, that this config's network has, in a file long enough to hold them, and have the sha256 the config
records (``weights_sha256``; a :class:`~unet_sep.weights.checkpoint.CheckpointError` naming both digests when
not). Weights are safetensors only: nothing is unpickled. Each problem is a :class:`HubError` in one line naming
the repository and revision.

Without network a fetch fails in seconds, not after ``huggingface_hub``'s retries (about 30 s): one request with
a short timeout (:data:`PROBE_SECONDS`) first asks the Hub for ``config.json``; when it gets no answer, the
files come from the cache only, and a model that is not there is one line saying so.

Pushing uploads a checked model folder's ``config.json`` (in the current format, recording the weights' sha256)
and ``model.safetensors`` with a generated model card (``README.md``, see :func:`model_card`) in one commit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping, Sequence

from unet_sep import __version__
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ConfigError, ModelConfig, migrate_config
from unet_sep.extras import import_extra
from unet_sep.fields import read_json
from unet_sep.weights.checkpoint import CheckpointError, expected_shapes, shape_mismatch, verify_weights
from unet_sep.weights.download import sha256_of
from unet_sep.weights.entries import ModelNotFoundError

logger = logging.getLogger(__name__)

HUB_PREFIX = "hf://"
CARD_FILE = "README.md"  # the Hub shows a repository's README.md as its model card
REQUIRED_CONFIG_KEYS = ("stems", "sample_rate")  # a model on the Hub states what it separates, and at what rate
_REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on the JSON header
_FETCH_PURPOSE = "a model on the Hugging Face Hub (hf://...)"
# Seconds the first request of a fetch waits for the Hub (at most; HF_HUB_ETAG_TIMEOUT may set less): without an
# answer the model comes from the cache only.
PROBE_SECONDS = 5.0


class HubError(ModelNotFoundError):
    """A Hub model that cannot be fetched, is not a usable unet-sep model, or cannot be pushed; ``str()`` is one
    line that names the repository (and the revision asked for)."""


@dataclass(frozen=True)
class HubModelRef:
    """A model on the Hub: its repository ``ORG/REPO`` and the revision asked for (None: the default branch)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return f"{HUB_PREFIX}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub_ref(name_or_path: str | Path) -> bool:
    """Whether ``name_or_path`` is a Hub reference (``hf://...``) rather than a registered name or a path."""
    return isinstance(name_or_path, str) and name_or_path.startswith(HUB_PREFIX)


def check_repo_id(repo_id: str) -> str:
    """``repo_id`` if it reads ``ORG/REPO`` (letters, digits, ``.``, ``_``, ``-``), else a :class:`HubError`."""
    if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id or "--" in repo_id or len(repo_id) > 96:
        raise HubError(f"{HUB_PREFIX}{repo_id}: not a Hub repository name; write hf://ORG/REPO or "
                       "hf://ORG/REPO@REVISION")
    return repo_id


def parse_hub_ref(text: str) -> HubModelRef:
    """``"hf://ORG/REPO"`` or ``"hf://ORG/REPO@REVISION"`` (a branch, tag or commit) as a :class:`HubModelRef`."""
    if not text.startswith(HUB_PREFIX):
        raise HubError(f"{text}: a Hub model is written hf://ORG/REPO or hf://ORG/REPO@REVISION")
    repo_id, at, revision = text[len(HUB_PREFIX):].partition("@")
    if at and not revision:
        raise HubError(f"{text}: no revision after '@'; write hf://ORG/REPO@REVISION (a branch, tag or commit)")
    return HubModelRef(check_repo_id(repo_id), revision or None)


def _hub_package(module: str = "huggingface_hub", purpose: str = _FETCH_PURPOSE) -> ModuleType:
    """``huggingface_hub`` (or one of its modules), or the one-line error naming the ``hub`` extra."""
    return import_extra(module, "hub", purpose)


# ---- fetching ----------------------------------------------------------------------------------------------


def fetch_hub_model(text: str, offline: bool = False) -> Path:
    """The local folder (in ``huggingface_hub``'s cache) of the Hub model ``text``, downloaded now unless cached,
    and checked to be a unet-sep model. ``offline`` (or ``HF_HUB_OFFLINE=1``) uses the cache only."""
    ref = parse_hub_ref(text)
    hub = _hub_package()
    unreachable = None if offline or _hub_offline() else _unreachable(hub, ref)
    config_path = _download(hub, ref, CONFIG_FILE, ref.revision, offline, unreachable)
    config = check_config(config_path, str(ref))
    # hf's cache keeps snapshots/<commit>/<file>: the weights are fetched from the config's commit
    commit = config_path.parent.name
    revision = commit if re.fullmatch(r"[0-9a-f]{40}", commit) else ref.revision
    weights_path = _download(hub, ref, WEIGHTS_FILE, revision, offline, unreachable)
    if weights_path.parent != config_path.parent:
        raise HubError(f"{ref}: {CONFIG_FILE} and {WEIGHTS_FILE} came from different revisions of the repository")
    check_weights(weights_path, config, str(ref))
    logger.info("%s: model folder %s", ref, config_path.parent)
    return config_path.parent


def _hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    return bool(getattr(_hub_package("huggingface_hub.constants"), "HF_HUB_OFFLINE", False))


def _unreachable(hub: ModuleType, ref: HubModelRef) -> str | None:
    """Why the Hub cannot be reached (one request for ``ref``'s ``config.json``, no retries, waiting at most
    :data:`PROBE_SECONDS`), or None when it answers, whatever the answer (hf_hub_download says what a refusal
    means)."""
    errors, constants = _hub_package("huggingface_hub.errors"), _hub_package("huggingface_hub.constants")
    timeout = min(PROBE_SECONDS, float(getattr(constants, "HF_HUB_ETAG_TIMEOUT", PROBE_SECONDS)))
    try:
        hub.get_hf_file_metadata(hub.hf_hub_url(ref.repo_id, CONFIG_FILE, revision=ref.revision), timeout=timeout,
                                 library_name="unet-sep", library_version=__version__)
    except Exception as error:  # the answers are hf's errors; no answer is a network error of its HTTP client
        if isinstance(error, errors.HfHubHTTPError):
            return None
        if isinstance(error, OSError) or type(error).__module__.startswith(("httpx", "huggingface_hub")):
            return _first_line(error)
        raise
    return None


def _download(hub: ModuleType, ref: HubModelRef, filename: str, revision: str | None, offline: bool,
              unreachable: str | None = None) -> Path:
    """One file of the repository through ``hf_hub_download`` (cache, offline mode, token: all hf's own); from
    the cache only when ``offline`` or the Hub is ``unreachable`` (why)."""
    try:
        return Path(hub.hf_hub_download(ref.repo_id, filename, revision=revision,
                                        local_files_only=offline or unreachable is not None,
                                        library_name="unet-sep", library_version=__version__))
    except Exception as error:  # every failure of the download becomes one line; hf's own types are sorted below
        raise _download_error(hub, ref, filename, error, offline, unreachable) from None


def _download_error(hub: ModuleType, ref: HubModelRef, filename: str, error: Exception, offline: bool,
                    unreachable: str | None = None) -> Exception:
    """The :class:`HubError` that says why ``filename`` of ``ref`` could not be had (or ``error`` if it is a bug)."""
    errors, constants = _hub_package("huggingface_hub.errors"), _hub_package("huggingface_hub.constants")
    if isinstance(error, errors.LocalEntryNotFoundError):
        hub_offline = bool(getattr(constants, "HF_HUB_OFFLINE", False))
        if (offline or hub_offline) and unreachable is None:
            return HubError(f"{ref}: {filename} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                            f"downloads are off{' (HF_HUB_OFFLINE)' if hub_offline else ''}")
        why = unreachable or _first_line(error.__cause__ or error)  # hf wraps the connection error it met
        return HubError(f"{ref}: cannot reach the Hub at {constants.ENDPOINT} ({why}) and {filename} is not in the "
                        f"Hugging Face cache ({constants.HF_HUB_CACHE}); run once with network to cache the model "
                        "(then HF_HUB_OFFLINE=1 uses the cache without trying the network)")
    if isinstance(error, errors.RevisionNotFoundError):
        return HubError(f"{ref}: the repository has no revision {ref.revision or 'main'!r}")
    if isinstance(error, errors.GatedRepoError):
        return HubError(f"{ref}: a gated repository: accept its conditions on the Hub, then log in "
                        "(hf auth login, or set HF_TOKEN)")
    if isinstance(error, errors.RepositoryNotFoundError):
        return HubError(f"{ref}: no such repository on the Hub, or a private one (log in with hf auth login, or "
                        "set HF_TOKEN)")
    if isinstance(error, errors.EntryNotFoundError):
        never = " (unet-sep loads safetensors only, never pickled weights)" if filename == WEIGHTS_FILE else ""
        return HubError(f"{ref}: not a unet-sep model: the repository has no {filename}{never}")
    if isinstance(error, (OSError, ValueError)) or type(error).__module__.startswith(("huggingface_hub", "httpx")):
        return HubError(f"{ref}: cannot download {filename}: {_first_line(error)}")  # HTTP, disk, proxy, bad name
    return error


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


# ---- checks ------------------------------------------------------------------------------------------------


def check_config(path: Path, where: str) -> ModelConfig:
    """The :class:`ModelConfig` in ``path``, or a :class:`HubError` saying, for ``where`` (the repository), why it
    is not one: not JSON, keys unet-sep does not know (a config from another library), keys it lacks, bad values."""
    try:
        data = read_json(path, CONFIG_FILE)
    except ConfigError as error:
        raise HubError(f"{where}: not a unet-sep model: {error}") from None
    try:
        fields = migrate_config(data)  # the keys of the format this code reads (a newer format is refused here)
    except ConfigError as error:
        raise HubError(f"{where}: not a usable unet-sep model: {CONFIG_FILE}: {error}") from None
    known = [field.name for field in dataclasses.fields(ModelConfig)]
    unknown = [key for key in fields if key not in known]
    lacking = [key for key in REQUIRED_CONFIG_KEYS if key not in fields]
    if unknown or lacking:
        parts = [f"keys unet-sep does not know: {_some(unknown)}"] if unknown else []
        parts += [f"no {' or '.join(lacking)}"] if lacking else []
        raise HubError(f"{where}: not a unet-sep model: its {CONFIG_FILE} has {'; '.join(parts)}")
    try:
        return ModelConfig.from_dict(data)
    except (ConfigError, TypeError) as error:
        raise HubError(f"{where}: not a usable unet-sep model: {CONFIG_FILE}: {error}") from None


def _some(names: Sequence[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def safetensors_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes in the header of the safetensors file ``path``, read without loading any tensor.

    A ``ValueError`` says why the file is not a complete safetensors file: too short for its header, a header that
    is not safetensors' JSON, or tensors that run past the end of the file (a truncated file).
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ValueError(f"truncated: {size} bytes, too short for a safetensors header")
        header_bytes = int.from_bytes(prefix, "little")
        if header_bytes > _MAX_HEADER_BYTES:
            raise ValueError(f"not a safetensors file (its first 8 bytes give a {header_bytes}-byte header)")
        if 8 + header_bytes > size:
            raise ValueError(f"truncated: its header needs {8 + header_bytes} bytes, the file has {size}")
        try:
            header = json.loads(handle.read(header_bytes))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError("not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    shapes, end = {}, 0
    for name, entry in header.items():
        try:
            shapes[name] = tuple(int(n) for n in entry["shape"])
            end = max(end, int(entry["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError):
            raise ValueError(f"not a safetensors file (bad header entry {name!r})") from None
    if 8 + header_bytes + end > size:
        raise ValueError(f"truncated: its header describes {8 + header_bytes + end} bytes, the file has {size}")
    return shapes


def check_weights(path: Path, config: ModelConfig, where: str) -> None:
    """A :class:`HubError` for ``where`` unless the safetensors file ``path`` is complete and holds exactly the
    tensors of ``config``'s network, with their shapes (read from its header: nothing is loaded); a
    :class:`~unet_sep.weights.checkpoint.CheckpointError` naming both digests unless its sha256 is the one
    ``config`` records (a config that records none is left to the loader's note)."""
    expected = expected_shapes(config)
    try:
        mismatch = shape_mismatch(safetensors_shapes(path), expected)
    except (OSError, ValueError) as error:
        raise HubError(f"{where}: {WEIGHTS_FILE} is not a usable safetensors file: {error}") from None
    if mismatch:
        raise HubError(f"{where}: {WEIGHTS_FILE} {mismatch}")
    if config.weights_sha256:
        try:
            verify_weights(path, config, path.with_name(CONFIG_FILE))
        except CheckpointError as error:
            message = str(error)
            raise CheckpointError(message if message.startswith(where) else f"{where}: {message}") from None


def check_model_folder(folder: Path, where: str) -> ModelConfig:
    """The config of the model folder ``folder`` once its config and weights pass the checks a download passes."""
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise HubError(f"{where}: not a model folder (no {name}; a model folder holds {CONFIG_FILE} and "
                           f"{WEIGHTS_FILE})")
    config = check_config(folder / CONFIG_FILE, where)
    check_weights(folder / WEIGHTS_FILE, config, where)
    return config


# ---- pushing -----------------------------------------------------------------------------------------------

CARD_TAGS = ("audio", "audio-source-separation", "music-source-separation", "spectrogram-unet", "unet-sep")


def model_card(config: ModelConfig, repo_id: str, training_data: Sequence[str] = (),
               scores: Sequence[Mapping[str, str]] = (), scores_source: str = "", notes: str = "") -> str:
    """The Hub model card (``README.md``) of a unet-sep model: YAML front matter (library, tags), what it separates
    (stems, rate, channels, band), how to load it, its training data (the config's ``provenance["data"]``, then
    the lines of ``training_data``), ``scores`` (the rows of an evaluation's ``summary.csv``, from
    ``scores_source``), the rest of the provenance, and ``notes`` (the folder's own ``MODEL_CARD.md``) last."""
    name = config.name or repo_id.split("/")[-1]
    description = str(config.provenance.get("description", "")).strip()
    channels = {1: "mono", 2: "stereo"}.get(config.n_channels, f"{config.n_channels} channels")
    lines = ["---", "library_name: unet-sep", "tags:", *(f"- {tag}" for tag in CARD_TAGS),
             "pipeline_tag: audio-to-audio", "---", "", f"# {name}", ""]
    lines += [description, ""] if description else []
    lines += [
        f"A [unet-sep](https://pypi.org/project/unet-sep/) model that separates music into {len(config.stems)} "
        f"stems: **{', '.join(config.stems)}**, at **{config.sample_rate} Hz** ({channels}; other rates and "
        "channel counts are converted on the way in and back on the way out). Its U-Nets see "
        f"0-{config.band_hz / 1000:.1f} kHz (STFT {config.stft.n_fft} / hop {config.stft.hop_length}, "
        f"{config.frequency_bins} bins, {config.mask_activation} masks); above that the masks are extended "
        f"({config.mask_extension}). {_wiener_sentence(config.wiener_iterations)}", "",
        "## Use", "", "```bash", "pip install 'unet-sep[hub]'",
        f"unet-sep separate song.mp3 --model hf://{repo_id} --out stems/", "```", "",
        "```python", "from unet_sep import Separator", "",
        f'separator = Separator.from_pretrained("hf://{repo_id}")', "```", "",
        "The weights are a safetensors file: loading checks the config and the tensor names and shapes first, "
        "and never unpickles anything.", "",
        "## Training data", "",
    ]
    data = [str(config.provenance["data"])] if config.provenance.get("data") else []
    lines += [f"- {_one_line(line)}" for line in [*data, *training_data]] or ["Not stated."]
    lines += ["", "## Scores", ""]
    if scores:
        lines += [f"From `{scores_source}` (`unet-sep evaluate`; dB, medians as museval reports them):", "",
                  *_markdown_table(scores)]
    else:
        lines += ["No evaluation came with this upload."]
    facts = {key: value for key, value in config.provenance.items() if key not in ("description", "data")}
    if facts:
        lines += ["", "## Provenance", "", *(f"- {key}: {_one_line(str(value))}" for key, value in facts.items())]
    if notes.strip():
        lines += ["", "---", "", notes.strip()]
    return "\n".join(lines) + "\n"


def _wiener_sentence(iterations: int) -> str:
    """What the card says of the model's default multichannel Wiener filter (``--wiener-iterations``)."""
    if iterations == 0:
        return ("By default the stems are the ratio-masked mixture; `--wiener-iterations N` adds a multichannel "
                "Wiener filter.")
    return (f"By default a multichannel Wiener filter refines the masked stems ({iterations} EM iteration"
            f"{'s' if iterations > 1 else ''}; `--wiener-iterations 0` turns it off).")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _markdown_table(rows: Sequence[Mapping[str, str]]) -> list[str]:
    columns = list(rows[0])

    def cells(values: Sequence[Any]) -> str:
        return "| " + " | ".join(_one_line(str(v if v is not None else "")).replace("|", "\\|") for v in values) + " |"

    return [cells(columns), cells(["---"] * len(columns)), *(cells([row.get(c) for c in columns]) for row in rows)]


def push_model(folder: Path, repo_id: str, card: str, revision: str | None = None, private: bool = False,
               message: str = "Upload a unet-sep model") -> str:
    """Upload ``folder``'s ``config.json`` and ``model.safetensors`` and ``card`` as ``README.md`` to the Hub
    repository ``repo_id`` (created if absent; ``revision``: a branch, created if absent) in one commit, after the
    checks a download makes; the commit's URL. The token is ``huggingface_hub``'s (``HF_TOKEN``, ``hf auth
    login``)."""
    where = f"{HUB_PREFIX}{check_repo_id(repo_id)}"
    config = check_model_folder(folder, str(folder))
    hub = _hub_package(purpose="pushing a model to the Hugging Face Hub")
    # the config as loading reads it, recording the weights' digest (a folder written before gets one here)
    recorded = dataclasses.replace(config, weights_sha256=config.weights_sha256 or sha256_of(folder / WEIGHTS_FILE))
    files: dict[str, str | bytes] = {CONFIG_FILE: recorded.to_json().encode("utf-8"),
                                     WEIGHTS_FILE: str(folder / WEIGHTS_FILE), CARD_FILE: card.encode("utf-8")}
    operations = [hub.CommitOperationAdd(path_in_repo=name, path_or_fileobj=source) for name, source in files.items()]
    api = hub.HfApi(library_name="unet-sep", library_version=__version__)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision:
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.create_commit(repo_id, operations, commit_message=message, revision=revision)
    except Exception as error:  # every failure of the upload becomes one line; a bug in our code is re-raised
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubError(f"{where}: the Hub refused the upload ({status}): log in with a token that may write "
                           "to this repository (hf auth login, or set HF_TOKEN)") from None
        if isinstance(error, (OSError, ValueError)) or type(error).__module__.startswith(("huggingface_hub", "httpx")):
            raise HubError(f"{where}: upload failed: {_first_line(error)}") from None
        raise
    return str(getattr(commit, "commit_url", commit))
