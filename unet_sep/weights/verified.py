"""Digests of model files, remembered by the file's identity: a model is hashed once, not on every load.

Checking weights against the digest their config records costs a pass over the file (about 0.2 s for the
197 MB of spleeter:5stems). A file whose identity is unchanged since it was hashed holds the same bytes: the
identity is its device, inode, size, and modification and change times in nanoseconds (a write changes the
modification time; setting it back with ``touch`` changes the change time, which only the kernel sets). The
digest of each identity is kept in the user cache (``verified/`` under
:func:`~unet_sep.weights.entries.cache_dir`), one small file per identity, written atomically; a cache that
cannot be read or written only means hashing again.

A file modified in the last :data:`SETTLE_SECONDS` is hashed but not remembered: a write within the same tick of
the file system's clock as the hashing would leave its identity unchanged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable

from unet_sep.atomic import write_text_atomic
from unet_sep.weights.entries import cache_dir

logger = logging.getLogger(__name__)

SETTLE_SECONDS = 2.0  # coarser than any file system's timestamps (FAT: 2 s; ext4, xfs, tmpfs: a clock tick)
_DIGEST = re.compile(r"[0-9a-f]{64}")


def file_identity(path: Path) -> tuple[int, int, int, int, int]:
    """The identity of the file ``path`` (following links): device, inode, size, and modification and change
    times in nanoseconds. Any write to the file changes it."""
    status = os.stat(path)
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns


def _memo_path(path: Path, kind: str) -> tuple[Path, bool]:
    """Where the ``kind`` digest of ``path``'s current identity is remembered, and whether the file has settled
    (was last modified at least :data:`SETTLE_SECONDS` ago)."""
    identity = file_identity(path)
    settled = time.time_ns() - identity[3] >= SETTLE_SECONDS * 1e9
    key = "\0".join(map(str, (kind, *identity)))
    return cache_dir() / "verified" / hashlib.sha256(key.encode()).hexdigest()[:40], settled


def remembered_digest(path: Path, kind: str, compute: Callable[[Path], str]) -> str:
    """The ``kind`` digest (64 hex digits) of the file ``path``: the one remembered for its identity, else
    ``compute(path)``, then remembered (unless the file has not settled)."""
    memo, settled = _memo_path(path, kind)
    try:
        known = memo.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        known = ""
    if _DIGEST.fullmatch(known):
        return known
    digest = compute(path)
    if settled:
        try:
            write_text_atomic(memo, digest + "\n")
        except OSError as error:  # a read-only cache: hash again next time
            logger.debug("cannot remember the digest of %s in %s: %s", path, memo, error)
    return digest
