"""Named models: bundled with the package, or downloaded once (checksum-verified) into the user's cache.

A name resolves to a model folder (``config.json`` + ``model.safetensors``). Anything that is not a
registered name is treated as a path to such a folder.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from unet_sep.atomic import atomic_path
from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ModelConfig

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent.parent
CACHE_ENV = "UNET_SEP_CACHE"


class ModelNotFoundError(Exception):
    """Neither a registered name nor a model folder."""


@dataclass(frozen=True)
class ModelEntry:
    """A registered model.

    ``bundled`` is a folder inside the package; otherwise ``url`` is fetched, checked against ``sha256`` and
    turned into a model folder by ``convert(archive_path, destination_folder)``.
    """

    name: str
    description: str
    stems: tuple[str, ...]
    sample_rate: int
    band_hz: float = 0.0  # the top of the band the U-Nets see (frequency_bins x sample_rate / n_fft)
    bundled: str | None = None
    url: str | None = None
    sha256: str | None = None
    convert: Callable[[Path, Path], None] | None = field(default=None, compare=False, repr=False)

    @property
    def source(self) -> str:
        if self.bundled is not None:
            return f"bundled ({self.bundled})"
        return self.url or "?"

    def local_folder(self) -> Path | None:
        """The model folder if it is on disk already (bundled, or downloaded and converted before), else None."""
        if self.bundled is not None:
            return PACKAGE_DIR / self.bundled
        folder = _cache_folder(self)
        return folder if (folder / CONFIG_FILE).is_file() and (folder / WEIGHTS_FILE).is_file() else None


def registered_models() -> dict[str, ModelEntry]:
    """All registered model names, in display order."""
    entries: list[ModelEntry] = []
    bundled_root = PACKAGE_DIR / "pretrained"
    if bundled_root.is_dir():
        for folder in sorted(p for p in bundled_root.iterdir() if (p / CONFIG_FILE).is_file()):
            entries.append(_bundled_entry(folder))
    try:  # optional providers (e.g. Spleeter's releases) register themselves here
        from unet_sep.weights import spleeter  # noqa: F401

        entries.extend(spleeter.registry_entries())
    except ImportError:
        pass
    return {entry.name: entry for entry in entries}


def _bundled_entry(folder: Path) -> ModelEntry:
    config = ModelConfig.load(folder / CONFIG_FILE)
    return ModelEntry(
        name=config.name or folder.name,
        description=str(config.provenance.get("description", "")),
        stems=tuple(config.stems),
        sample_rate=config.sample_rate,
        band_hz=config.band_hz,
        bundled=str(folder.relative_to(PACKAGE_DIR)),
    )


def default_model_name() -> str | None:
    """The bundled model used when no ``--model`` is given, if the package ships one."""
    for entry in registered_models().values():
        if entry.bundled is not None:
            return entry.name
    return None


def cache_dir() -> Path:
    """Where downloaded models live: ``$UNET_SEP_CACHE`` or the platform's user cache folder."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("unet-sep"))


def resolve_model(name_or_path: str | Path, offline: bool = False) -> Path:
    """The model folder for a registered name or a path; downloads (once) when needed and allowed."""
    text = str(name_or_path)
    entries = registered_models()
    if text in entries:
        return _materialize(entries[text], offline)
    path = Path(text).expanduser()
    if path.is_file() and path.name == CONFIG_FILE:
        path = path.parent
    if path.is_dir():
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise ModelNotFoundError(f"{path}: not a model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        return path
    names = ", ".join(entries) or "none"
    raise ModelNotFoundError(f"{text}: no such model folder and not a registered name (registered: {names})")


def _materialize(entry: ModelEntry, offline: bool) -> Path:
    local = entry.local_folder()
    if local is not None:
        return local
    target = _cache_folder(entry)
    if entry.url is None or entry.convert is None:
        raise ModelNotFoundError(f"{entry.name}: has no download source")
    archive = cache_dir() / "downloads" / Path(entry.url).name
    if not archive.is_file():
        if offline:
            raise ModelNotFoundError(f"{entry.name}: not in the cache ({archive}) and downloads are off")
        download(entry.url, archive, entry.sha256)
    elif entry.sha256 and sha256_of(archive) != entry.sha256:
        raise ModelNotFoundError(f"{archive}: checksum mismatch for {entry.name}; delete it to download again")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=_ensure(target.parent)))
    try:
        entry.convert(archive, staging)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _cache_folder(entry: ModelEntry) -> Path:
    return cache_dir() / "models" / entry.name.replace(":", "_")


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``destination`` via a temporary name, verifying ``sha256`` before the rename."""
    _ensure(destination.parent)
    digest = hashlib.sha256()
    logger.info("downloading %s", url)
    try:
        with atomic_path(destination) as temporary:
            with open(temporary, "xb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                for chunk in iter(lambda: response.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if sha256 and digest.hexdigest() != sha256:
                raise ModelNotFoundError(
                    f"{url}: checksum mismatch (expected {sha256}, got {digest.hexdigest()}); nothing was kept"
                )
    except OSError as error:
        raise ModelNotFoundError(f"{url}: download failed ({error})") from error
    return destination


def extract_tar(archive: Path, destination: Path) -> None:
    """Extract a tar archive safely (no absolute paths, no links out of ``destination``)."""
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
