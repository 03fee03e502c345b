"""Whole-or-nothing file writes: write beside the destination under a temporary name, then rename.

A reader (or a crash) never sees a half-written file at the destination, and a failed write leaves nothing
behind. Temporary files are created with the process's umask, like a plain ``open``, so the finished file has
the permissions any other file the user writes would have (``tempfile.mkstemp`` would make it 0600).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import socket
from pathlib import Path
from typing import Iterator

logger = logging.getLogger(__name__)

# ".<name>.<token>.<pid>@<host>.partial[.<ext>]": the writing process and its machine, so that a later run can
# tell a leftover of a killed process from a file another live process is writing. The older form
# ".<name>.<pid>.partial" (stems before 0.1.0's fix) is read as written on this machine.
# The name may hold any character but "/", a newline included (DOTALL).
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]+)\.partial(?:\.\w+)?$", re.DOTALL)
_LEGACY_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.partial$", re.DOTALL)
# The longest file name, in bytes, on Linux's file systems (ext4, XFS, Btrfs, tmpfs): NAME_MAX.
NAME_MAX = 255
# Characters of the final name a temporary name keeps at most (fewer where their bytes would not fit NAME_MAX).
_KEPT_CHARACTERS = 80


def _host_tag() -> str:
    """This machine's short host name, reduced to letters, digits and dashes."""
    return re.sub(r"[^A-Za-z0-9-]", "", socket.gethostname().split(".")[0])[:40] or "localhost"


def temporary_path(path: str | Path, suffix: str = ".partial") -> Path:
    """A fresh hidden temporary name beside ``path`` that names the writing process and machine.

    It holds at most :data:`NAME_MAX` bytes whatever ``path``'s name: the name is cut to 80 characters, and to
    fewer where their bytes would not fit.
    ``suffix`` ends it (e.g. ``".partial.png"`` for writers that pick the format by extension); names ending in
    ``.partial`` (optionally plus an extension) are the ones :func:`remove_stale_temporaries` recognises.
    """
    path = Path(path)
    tail = f".{secrets.token_hex(4)}.{os.getpid()}@{_host_tag()}{suffix}"
    kept = _name_cut(path.name[:_KEPT_CHARACTERS], NAME_MAX - 1 - len(os.fsencode(tail)))
    return path.with_name(f".{kept}{tail}")


def _name_cut(name: str, limit: int) -> str:
    """The longest start of ``name`` whose file-system bytes fit ``limit``, cut between characters (a UTF-8
    character is never split; a byte that is not UTF-8 counts one)."""
    if len(os.fsencode(name)) <= limit:
        return name
    used = 0
    for count, character in enumerate(name):
        used += len(os.fsencode(character))
        if used > limit:
            return name[:count]
    return name


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return True  # not a real writer's id: leave the file alone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def is_stale_temporary(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`temporary_path` whose writer, on this machine, has ended."""
    match = _TEMPORARY.match(name) or _LEGACY_TEMPORARY.match(name)
    if match is None:
        return False
    host = match.groupdict().get("host")
    if host is not None and host != _host_tag():
        return False  # written from another machine (a shared folder): its process cannot be checked from here
    return not _process_exists(int(match["pid"]))


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files under ``folder`` left by writers that no longer run (killed with -9, a dead
    torchrun rank), and the subfolders they leave empty; files of live processes, and of other machines, are
    never touched. Returns the removed files."""
    root = Path(folder)
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for directory, _, names in os.walk(root):
        for name in names:
            if name.startswith(".") and is_stale_temporary(name):
                with contextlib.suppress(FileNotFoundError):  # another process may have cleaned it first
                    (Path(directory) / name).unlink()
                    removed.append(Path(directory) / name)
    for path in removed:  # folders made for the files alone, now empty
        folder = path.parent
        while folder != root and root in folder.parents:
            try:
                folder.rmdir()
            except OSError:  # not empty (or already gone): stop here
                break
            folder = folder.parent
    return removed


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".partial") -> Iterator[Path]:
    """A fresh temporary path beside ``path`` to write to; renamed onto ``path`` if the block succeeds.

    ``suffix`` ends the temporary name (see :func:`temporary_path`). If the block raises, the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path, suffix)
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


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """A fresh temporary folder beside ``path`` to fill; renamed onto ``path`` if the block succeeds.

    The folder's name is one of :func:`temporary_path`. A folder already at ``path`` is removed just before the
    rename. If the block raises, the temporary folder is removed with what it holds and ``path`` is left as it
    was; :func:`remove_stale_temporary_folders` removes those of writers that were killed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    temporary.mkdir()
    try:
        yield temporary
        if path.exists():
            shutil.rmtree(path)
        os.replace(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def remove_stale_temporary_folders(folder: str | Path) -> list[Path]:
    """Delete the temporary folders of :func:`atomic_folder` directly in ``folder`` whose writer, on this machine,
    has ended, with what they hold; those of live processes and of other machines are left alone. Returns the
    removed folders."""
    root = Path(folder)
    if not root.is_dir():
        return []
    stale = [path for path in root.iterdir()
             if path.name.startswith(".") and path.is_dir() and is_stale_temporary(path.name)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)  # another process may be removing it too
    return stale
