"""Whole-or-nothing file writes: write beside the destination under a temporary name, then rename.

A reader (or a crash) never sees a half-written file at the destination, and a failed write leaves nothing
behind. Temporary files are created with the process's umask, like a plain ``open``, so the finished file has
the permissions any other file the user writes would have (``tempfile.mkstemp`` would make it 0600).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; renamed onto ``path`` if the block succeeds.

    ``suffix`` ends the temporary name (e.g. ``".partial.png"`` for writers that pick the format by extension).
    If the block raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name[:80]}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` whole or not at all (``fsync``: flush to disk before the rename)."""
    with atomic_path(path) as temporary:
        with open(temporary, "xb") as handle:
            handle.write(data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` whole or not at all."""
    write_bytes_atomic(path, text.encode("utf-8"))
