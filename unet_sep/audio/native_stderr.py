"""Muting what native decoders print straight to file descriptor 2 while they open a file.

libsndfile's MP3 decoder (libmpg123) prints e.g. "Warning: Xing stream size off by more than 1%" when opening a
truncated file; the user gets the decoder's one-line error instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from typing import Iterator

_STDERR_FD = 2  # the C library's stderr, where native decoders print (not Python's sys.stderr)


class StderrSilencer:
    """Send what native code writes to file descriptor 2 to /dev/null inside ``with silencer():``.

    File descriptor 2 belongs to the whole process, so the redirect is shared and counted: the first thread in
    redirects, the last one out restores, and threads decoding in parallel can never leave stderr pointing at
    /dev/null. Anything another thread writes to file descriptor 2 during those few milliseconds is lost, so the
    command line writes its own messages through a duplicate of it (``unet_sep.cli.main``); a program that embeds
    the package and writes to fd 2 from other threads while files are opened can do the same.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users = 0
        self._saved: int | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._users == 0:
                self._redirect()
            self._users += 1
        try:
            yield
        finally:
            with self._lock:
                self._users -= 1
                if self._users == 0:
                    self._restore()

    def _redirect(self) -> None:
        try:
            sys.stderr.flush()
            self._saved = os.dup(_STDERR_FD)
        except (AttributeError, OSError, ValueError):  # no real stderr (captured, closed): nothing to silence
            self._saved = None
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, _STDERR_FD)
        finally:
            os.close(devnull)

    def _restore(self) -> None:
        if self._saved is None:
            return
        os.dup2(self._saved, _STDERR_FD)
        os.close(self._saved)
        self._saved = None


# File descriptor 2 is one per process, so is the object that guards it.
quiet_native_stderr = StderrSilencer()
