"""Downloads into the user's cache: fetched once under a temporary name, checksum-verified, then kept."""

from __future__ import annotations

import hashlib
import logging
import tarfile
import urllib.request
from pathlib import Path

from unet_sep.atomic import atomic_path
from unet_sep.weights.entries import ModelNotFoundError, cache_dir

logger = logging.getLogger(__name__)


def sha256_of(path: Path) -> str:
    """The hex sha256 of the file ``path``."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, destination: Path, sha256: str | None, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``destination`` via a temporary name, verifying ``sha256`` before the rename."""
    destination.parent.mkdir(parents=True, exist_ok=True)
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


def fetch_download(name: str, url: str, sha256: str | None, offline: bool) -> Path:
    """Model ``name``'s file from ``url`` in the cache: downloaded now if absent (unless ``offline``), else verified."""
    path = cache_dir() / "downloads" / Path(url).name
    if not path.is_file():
        if offline:
            raise ModelNotFoundError(f"{name}: not in the cache ({path}) and downloads are off")
        download(url, path, sha256)
    elif sha256 and sha256_of(path) != sha256:
        raise ModelNotFoundError(f"{path}: checksum mismatch for {name}; delete it to download again")
    return path


def extract_tar(archive: Path, destination: Path) -> None:
    """Extract a tar archive safely (no absolute paths, no links out of ``destination``)."""
    with tarfile.open(archive) as tar:
        tar.extractall(destination, filter="data")
