"""What to separate: files, folders (searched recursively) and glob patterns, turned into a list of inputs.

Each input remembers the folder it was found under (:attr:`InputFile.folder`), so an output template can keep
songs of different folders apart (``{dir}``), and folders or globs never pick up the run's own outputs.

Each real file is listed once, however many names reach it (``a.wav``, ``./a.wav``, ``$PWD/a.wav``, a symbolic
link, a folder that holds it): under the first name given, the others counted in
:attr:`ExpandedInputs.repeated`. Folders and ``**`` follow a symbolic link to a folder, after the real folders,
unless it leads to a folder already searched or to one the link lies in (a loop such as ``loop -> .``): each real
folder is searched once and every search ends. Audio names that are not regular files (a broken symbolic link,
one that loops, a named pipe) are listed too, so that opening them says why they cannot be read
(:func:`unet_sep.audio.decode.open_audio`).
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from unet_sep.audio.decode import SEEKABLE_ONLY
from unet_sep.audio.formats import AUDIO_EXTENSIONS

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputFile:
    """One input file.

    ``folder`` is the file's folder relative to the folder (or the fixed part of the glob pattern) it was found
    under, "" for a file named directly or found at the top: the ``{dir}`` field of output templates.
    """

    path: Path
    folder: str = ""

    @classmethod
    def of(cls, item: "str | Path | InputFile") -> "InputFile":
        """An :class:`InputFile` for a path (found at the top) or the input itself."""
        return item if isinstance(item, InputFile) else cls(Path(item))


class ExpandedInputs(NamedTuple):
    """What :func:`expand_inputs` found: the ``files`` to separate, one line per item that gave none or could not
    be searched (``errors``), and ``(name, kept)`` for every further name of a file listed as ``kept``
    (``repeated``)."""

    files: list[InputFile]
    errors: list[str]
    repeated: list[tuple[Path, Path]]


def expand_inputs(items: Iterable[str], exclude: Iterable[Path] = ()) -> ExpandedInputs:
    """Inputs from paths, folders (searched recursively for audio files) and globs; plus one error per bad item.

    Files under a folder of ``exclude`` (e.g. the output folder, which may lie inside an input folder) are left
    out of folder and glob results; a file named directly is always kept. Each real file is listed once (see the
    module's doc); ``-`` (standard input) is refused with what to do instead.
    """
    excluded = [real_path(Path(folder).expanduser()) for folder in exclude]
    found: list[InputFile] = []
    errors: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            found.extend(_from_folder(item, path, excluded, errors))
        elif os.path.lexists(path):  # a file, or a name that is not one (a broken link, a pipe): opening says which
            found.append(InputFile(path))
        elif glob.has_magic(item):
            found.extend(_from_pattern(item, path, excluded, errors))
        elif item == "-":
            errors.append(f"-: standard input is not read; {SEEKABLE_ONLY}")
        else:
            errors.append(f"{item}: no such file or folder")
    return _distinct(found, errors)


def _from_folder(item: str, folder: Path, excluded: list[Path], errors: list[str]) -> list[InputFile]:
    reported = len(errors)
    audio = [p for p in _Search(folder, ("**", "*"), errors, hidden_folders=True).run()
             if p.suffix.lower() in AUDIO_EXTENSIONS]
    files = [p for p in audio if not _is_under(p, excluded)]
    if not audio and len(errors) == reported:
        names = ", ".join(sorted(e[1:] for e in AUDIO_EXTENSIONS))
        errors.append(f"{item}: folder holds no audio files ({names})")
    elif audio and not files:
        errors.append(f"{item}: folder holds audio files only under the output folder")
    return [_found_under(folder, p) for p in files]


def _from_pattern(item: str, pattern: Path, excluded: list[Path], errors: list[str]) -> list[InputFile]:
    parts = pattern.parts
    fixed = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    reported = len(errors)
    files = [p for p in _Search(root, _normalised_pattern(parts[fixed:]), errors).run() if not _is_under(p, excluded)]
    if not files and len(errors) == reported:
        errors.append(f"{item}: pattern matches no files")
    return [_found_under(root, p) for p in files]


def _normalised_pattern(parts: Sequence[str]) -> tuple[str, ...]:
    """Glob parts with repeated ``**`` merged, and ``*`` after a final ``**`` (which matches files at any depth)."""
    merged: list[str] = []
    for part in parts:
        if not (part == "**" and merged and merged[-1] == "**"):
            merged.append(part)
    return (*merged, "*") if merged[-1] == "**" else tuple(merged)


@dataclass
class _Search:
    """The names under ``root`` that match glob ``parts`` (``*``, ``?`` and ``[...]`` within a name, ``**`` for
    any folders, hidden names only where the part starts with ``.``) and are not folders; ``hidden_folders``: ``**``
    enters hidden folders too. Each real folder is searched once per part: the real ones first, then those reached
    through symbolic links, except links back to a folder they lie in (see the module's doc)."""

    root: Path
    parts: Sequence[str]
    errors: list[str]
    hidden_folders: bool = False
    matches: list[Path] = field(default_factory=list)
    _searched: set[tuple[int, int, int]] = field(default_factory=set)
    _real_folders: list[tuple[Path, int]] = field(default_factory=list)  # a stack
    _linked_folders: deque[tuple[Path, int]] = field(default_factory=deque)
    _unreadable: set[Path] = field(default_factory=set)

    def run(self) -> list[Path]:
        """The matching paths, sorted."""
        self._real_folders.append((self.root, 0))
        while self._real_folders or self._linked_folders:
            folder, index = self._real_folders.pop() if self._real_folders else self._linked_folders.popleft()
            try:
                status = os.stat(folder)
            except OSError:
                continue
            if (status.st_dev, status.st_ino, index) not in self._searched:
                self._searched.add((status.st_dev, status.st_ino, index))
                self._search(folder, index)
        return sorted(self.matches)

    def _search(self, folder: Path, index: int) -> None:
        part, last = self.parts[index], index == len(self.parts) - 1
        if part == "**":
            self._real_folders.append((folder, index + 1))  # "**" as no folder at all
            for entry in self._entries(folder):
                if _is_folder(entry) and (self.hidden_folders or not entry.name.startswith(".")):
                    self._enter(folder, entry, index)
        elif not glob.has_magic(part):
            child = folder / part
            if last and os.path.lexists(child) and not child.is_dir():
                self.matches.append(child)
            elif not last and child.is_dir():
                self._real_folders.append((child, index + 1))
        else:
            hidden = part.startswith(".")
            for entry in self._entries(folder):
                if not fnmatch.fnmatchcase(entry.name, part) or (entry.name.startswith(".") and not hidden):
                    continue
                if last and not _is_folder(entry):
                    self.matches.append(folder / entry.name)
                elif not last and _is_folder(entry):
                    self._enter(folder, entry, index + 1)

    def _entries(self, folder: Path) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            if folder not in self._unreadable:  # one line per folder, though each part of the pattern reads it
                self._unreadable.add(folder)
                self.errors.append(f"{folder}: cannot search this folder: {error.strerror or error}")
            return []

    def _enter(self, parent: Path, entry: os.DirEntry, index: int) -> None:
        child = parent / entry.name
        if not entry.is_symlink():
            self._real_folders.append((child, index))
            return
        target, here = real_path(child), real_path(parent)
        if target == here or target in here.parents:
            logger.debug("%s: not followed, a symbolic link back to %s (a loop)", child, target)
            return
        self._linked_folders.append((child, index))


def _is_folder(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a folder or a symbolic link to one (False for a link that loops)."""
    try:
        return entry.is_dir()
    except OSError:  # ELOOP: DirEntry.is_dir raises it where Path.is_dir says False
        return False


def _distinct(found: list[InputFile], errors: list[str]) -> ExpandedInputs:
    """Each real file once, under its first name."""
    kept: dict[object, InputFile] = {}
    repeated: list[tuple[Path, Path]] = []
    for entry in found:
        first = kept.setdefault(_file_identity(entry.path), entry)
        if first is not entry:
            logger.info("%s is another name for %s: separated once, as %s", entry.path, first.path, first.path)
            repeated.append((entry.path, first.path))
    return ExpandedInputs(list(kept.values()), errors, repeated)


def _file_identity(path: Path) -> object:
    """(device, inode) of the file ``path`` leads to; for a name that leads to none (a broken link), where it leads."""
    try:
        status = os.stat(path)
    except OSError:
        return real_path(path)
    return status.st_dev, status.st_ino


def real_path(path: Path) -> Path:
    """``path`` absolute with every symbolic link followed (``Path.resolve`` raises RuntimeError on a link that
    loops; this never raises, and such a link stays as far as it resolves)."""
    return Path(os.path.realpath(path))


def _is_under(path: Path, folders: list[Path]) -> bool:
    resolved = real_path(path)
    return any(resolved.is_relative_to(folder) for folder in folders)


def _found_under(root: Path, path: Path) -> InputFile:
    parent = path.parent.relative_to(root).as_posix()
    return InputFile(path, "" if parent == "." else parent)
