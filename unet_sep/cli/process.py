"""What every ``unet-sep`` command does around its work: standard streams that cannot break a run, and the signals
that end one cleanly.

Streams. A command's work must not depend on whether its messages can be shown: stderr may be closed (``2>&-``),
full (``2>/dev/full``), a pipe whose reader has gone (``2>&1 | head -1``) or a terminal that was hung up. So both
``sys.stdout`` and ``sys.stderr`` become :class:`ForgivingStream` objects, which drop what they cannot write and
remember why; descriptors 0-2 that were closed at start are opened on ``/dev/null`` first, so no file the command
opens later takes their numbers (a native decoder's warnings on "stderr" would land in a stem). What stdout cannot
take is the command's output, so that is reported once at the end (exit 1), except a reader that stopped reading
(``unet-sep models | head -1``), which ends the command quietly with 141, as SIGPIPE ends a C program.

Signals. SIGINT (Ctrl-C), SIGTERM (``kill``, a service manager's stop, torchrun), SIGHUP (the terminal closed) and
SIGQUIT (Ctrl-\\) all raise :class:`Interrupted` in the main thread, a ``KeyboardInterrupt``, so each command's
clean-up runs (no partial output stays, a training run can be resumed); the exit status is 128 + the signal's
number, as a shell reports a process the signal killed. A signal the caller set to be ignored (``nohup`` ignores
SIGHUP) stays ignored. SIGTSTP/SIGCONT (Ctrl-Z, ``fg``) only pause the run; SIGKILL cannot be caught: the next
run removes what it left (:mod:`unet_sep.atomic`).
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import signal
import sys
from typing import Iterator

# The signals that end a run cleanly (SIGINT is Python's own KeyboardInterrupt).
ENDING_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop: clean up as for Ctrl-C, then exit with :attr:`exit_code`."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def interrupted_exit_code(error: BaseException | None) -> int:
    """The exit status for a run ended by ``error`` (or by what caused it): 128 + the signal's number; 130 (SIGINT)
    for a plain KeyboardInterrupt."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, Interrupted):
            return 128 + error.signum
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return 128 + signal.SIGINT


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted(signum)


@contextlib.contextmanager
def ending_signals_interrupt() -> Iterator[None]:
    """Within the block, :data:`ENDING_SIGNALS` raise :class:`Interrupted` (unless they are ignored); the previous
    handlers come back after it."""
    previous = {}
    for signum in ENDING_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class ForgivingStream(io.TextIOWrapper):
    """A text stream that never raises on writing: after its first failure it drops what it is given.

    :attr:`failure` is the first error (None while all went well); :attr:`attempted` whether anything was written.
    """

    failure: OSError | None = None
    attempted: bool = False

    def write(self, text: str) -> int:
        if text:
            self.attempted = True
        if self.failure is None:
            try:
                return super().write(text)
            except (OSError, ValueError) as error:
                self._failed(error)
        return len(text)

    def flush(self) -> None:
        if self.failure is None:
            try:
                super().flush()
            except (OSError, ValueError) as error:
                self._failed(error)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().close()

    def _failed(self, error: Exception) -> None:
        self.failure = error if isinstance(error, OSError) else OSError(errno.EBADF, str(error))


def _open_closed_descriptors() -> set[int]:
    """Open ``/dev/null`` on each of descriptors 0, 1 and 2 that is closed; the ones that were."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: fd itself
        if opened != fd:
            os.dup2(opened, fd)
            os.close(opened)
    return closed


def _forgiving(fd: int, like: object, closed: bool) -> ForgivingStream:
    """A :class:`ForgivingStream` on a duplicate of ``fd`` with the encoding of ``like`` (the stream it replaces)."""
    encoding = getattr(like, "encoding", None) or "utf-8"
    stream = ForgivingStream(io.FileIO(os.dup(fd), "w"), encoding=encoding, errors="backslashreplace",
                             line_buffering=True)
    if closed:
        stream.failure = OSError(errno.EBADF, "it was closed when the command started")
    return stream


def guard_standard_streams() -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` with :class:`ForgivingStream` objects (see the module's doc).

    The stderr stream writes to a duplicate of descriptor 2, so this command's own messages still reach the
    terminal while ``unet_sep.audio.native_stderr`` sends descriptor 2 to /dev/null around a native decoder. Under a
    test runner that captures the streams (no real descriptors behind them), nothing is changed.
    """
    try:
        sys.stdout.fileno()
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        if sys.stdout is not None and sys.stderr is not None:
            return
    closed = _open_closed_descriptors()
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    sys.stdout = _forgiving(1, sys.stdout, 1 in closed)
    sys.stderr = _forgiving(2, sys.stderr, 2 in closed)


def output_exit_code(code: int) -> int:
    """The exit status once the command returned ``code``: 141 when stdout's reader went away, 1 (with one line on
    stderr) when stdout could not take the command's output, else ``code``."""
    stdout = sys.stdout
    if not isinstance(stdout, ForgivingStream):
        return code
    stdout.flush()
    if stdout.failure is None or not stdout.attempted:
        return code
    if stdout.failure.errno == errno.EPIPE:
        return EXIT_BROKEN_PIPE
    sys.stderr.write(f"error: cannot write to standard output: {stdout.failure.strerror or stdout.failure}\n")
    return code or 1
