"""What to separate: files, folders (searched recursively) and glob patterns, turned into a list of inputs.

Each input remembers the folder it was found under (:attr:`InputFile.folder`), so an output template can keep
songs of different folders apart (``{dir}``), and folders or globs never pick up the run's own outputs.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from unet_sep.audio.formats import AUDIO_EXTENSIONS


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


def _is_under(path: Path, folders: list[Path]) -> bool:
    resolved = path.resolve()
    return any(resolved.is_relative_to(folder) for folder in folders)


def _found_under(root: Path, path: Path) -> InputFile:
    parent = path.parent.relative_to(root).as_posix()
    return InputFile(path, "" if parent == "." else parent)


def _glob_root(pattern: str) -> Path:
    """The longest leading part of ``pattern`` without wildcards (``live/*.flac`` -> ``live``)."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if glob.has_magic(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def _is_audio(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS and not path.name.startswith(".")


def expand_inputs(items: Iterable[str], exclude: Iterable[Path] = ()) -> tuple[list[InputFile], list[str]]:
    """Inputs from paths, folders (searched recursively for audio files) and globs; plus one error per bad item.

    Files under a folder of ``exclude`` (e.g. the output folder, which may lie inside an input folder) are left
    out of folder and glob results; a file named directly is always kept. Each file is listed once.
    """
    excluded = [Path(folder).expanduser().resolve() for folder in exclude]
    found: list[InputFile] = []
    errors: list[str] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            audio = sorted(p for p in path.rglob("*") if _is_audio(p))
            files = [p for p in audio if not _is_under(p, excluded)]
            if not audio:
                names = ", ".join(sorted(e[1:] for e in AUDIO_EXTENSIONS))
                errors.append(f"{item}: folder holds no audio files ({names})")
            elif not files:
                errors.append(f"{item}: folder holds audio files only under the output folder")
            found.extend(_found_under(path, p) for p in files)
        elif path.exists():
            found.append(InputFile(path))
        elif glob.has_magic(item):
            root = _glob_root(str(path))
            files = sorted(Path(p) for p in glob.glob(str(path), recursive=True)
                           if Path(p).is_file() and not _is_under(Path(p), excluded))
            if not files:
                errors.append(f"{item}: pattern matches no files")
            found.extend(_found_under(root, p) for p in files)
        else:
            errors.append(f"{item}: no such file or folder")
    unique: dict[Path, InputFile] = {}
    for entry in found:
        unique.setdefault(entry.path, entry)
    return list(unique.values()), errors
