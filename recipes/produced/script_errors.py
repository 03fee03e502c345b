"""How the produced recipes' scripts (build_testset.py, vocals_leakage.py) end on an error: one line naming the
file, and an exit status, never a traceback."""

from __future__ import annotations

from pathlib import Path

from unet_sep.cli.common import print_error
from unet_sep.data.tracks import DatasetError
from unet_sep.errors import ConfigError, FileError


def exit_status(error: BaseException, out: str | Path, interrupted: str) -> int | None:
    """Print ``error``'s one line and give the exit status: 1 for bad data or a failed write (an ``OSError``
    without a file name is said of ``out``), 130 for Ctrl-C (``interrupted`` is its line); None for any other
    error, which the caller raises again (a bug)."""
    if isinstance(error, (ConfigError, DatasetError, FileError)):
        print_error(str(error))
        return 1
    if isinstance(error, OSError):
        print_error(f"{error.filename or out}: {error.strerror or error}")
        return 1
    if isinstance(error, KeyboardInterrupt):
        print_error(interrupted)
        return 130
    return None
