"""The user-facing errors every entry point shares: a bad setting, a problem with one file, a bad settings file.

Both carry what they are about, so each caller can say it in its own words: the command line names the option
(``--sample-rate``) where the Python API names the argument (``sample_rate``), and every message about a file
names the file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable


class SettingError(ValueError):
    """A setting (argument or option) with a value that cannot be used.

    ``setting`` is the Python name (``"sample_rate"``); ``reason`` says what is wrong and what is allowed. ``str()``
    reads ``"sample_rate: <reason>"``.
    """

    def __init__(self, setting: str, reason: str) -> None:
        super().__init__(f"{setting}: {reason}")
        self.setting = setting
        self.reason = reason


class ConfigError(ValueError):
    """Settings read from a file (a model's config.json, a training recipe) that cannot be used; the message
    names the dotted key."""


class FileError(Exception):
    """A problem with one file; ``str()`` names it: ``"<path>: <reason>"`` (just the reason while no path is known).

    ``reason`` is one line meant for the user. Code that finds the problem without knowing the file (a check on
    samples) raises it without a path; the code that knows the file adds it with :meth:`about`.
    """

    def __init__(self, reason: str, path: str | Path | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = None if path is None else Path(path)

    def about(self, path: str | Path) -> "FileError":
        """This error, naming ``path`` unless it already names a file."""
        if self.path is None:
            self.path = Path(path)
        return self

    def __str__(self) -> str:
        return self.reason if self.path is None else f"{self.path}: {self.reason}"

    def __reduce__(self):  # keep the path when the error crosses a process boundary
        return type(self), (self.reason, self.path)


class AdvisedError(FileError):
    """A problem with one file that settings would avoid: ``problem`` says what went wrong, ``advice`` lists
    settings that would work, as (setting, value) pairs (``[("sample_rate", 48000), ("fmt", "flac")]``), which
    :meth:`spelled` writes the caller's way: the Python names by default (``sample_rate=48000``), the command
    line's options in the CLI (``--sample-rate 48000``)."""

    def __init__(self, problem: str, advice: list[tuple[str, object]], path: str | Path | None = None) -> None:
        self.problem = problem
        self.advice = advice
        super().__init__(self.spelled(lambda setting, value: f"{setting}={value!r}"), path)

    def spelled(self, spell: Callable[[str, object], str]) -> str:
        """The reason with each piece of advice written by ``spell(setting, value)``."""
        if not self.advice:
            return self.problem
        return f"{self.problem}; use {' or '.join(spell(setting, value) for setting, value in self.advice)}"

    def __reduce__(self):
        return type(self), (self.problem, self.advice, self.path)


def failure_reason(error: BaseException | None,
                   spell: Callable[[str, object], str] | None = None) -> str | None:
    """One line for a file that failed with ``error``, without the file's name (the caller names the file, in its
    own words): a :class:`FileError`'s reason (an :class:`AdvisedError`'s advice written by ``spell``, see
    :meth:`AdvisedError.spelled`), a ``ValueError``'s or ``OSError``'s message; None for any other error (a bug:
    the caller says so in its own way)."""
    if isinstance(error, AdvisedError) and spell is not None:
        return error.spelled(spell)
    if isinstance(error, FileError):
        return error.reason
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    return None


def one_line(error: object) -> str:
    """``error``'s message on one line (white space folded), or its type's name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__


# Control characters (C0, DEL, C1), line and paragraph separators, bidirectional overrides, and the lone
# surrogates by which Python holds a file name's bytes that are not UTF-8.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\udc80-\udcff]")
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match) -> str:
    char = match.group()
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8 (os.fsdecode's surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with what a terminal would not show as it is escaped, as Python writes it: a newline as ``\\n``,
    other control characters as ``\\x1b``, a file name's bytes that are not UTF-8 as ``\\xff``. A message naming
    any file stays one line, and a name cannot move the cursor or recolour the terminal."""
    return _UNPRINTABLE.sub(_escape, text)
