"""Where stems go: which stems are written, the output template, and the checks made before any work.

A template is a relative path under the output folder with the fields ``{dir}`` (the input's folder relative to
the folder or glob it was found under; empty for a file named directly), ``{track}`` (its name without
extension), ``{trackext}`` (its extension), ``{stem}``, ``{ext}`` (the output format) and ``{model}``. The
default, ``{dir}/{track}/{stem}.{ext}``, mirrors the input folders, so songs of the same name in different
folders stay apart. Before a batch starts, :func:`plan_outputs` refuses, per input, outputs outside the output
folder, outputs that would replace an input and outputs two inputs would share (naming a template field that
tells them apart).
"""

from __future__ import annotations

import os
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from unet_sep.atomic import NAME_MAX
from unet_sep.errors import FileError, SettingError
from unet_sep.separate.inputs import InputFile, real_path

DEFAULT_TEMPLATE = "{dir}/{track}/{stem}.{ext}"
TEMPLATE_FIELDS = ("dir", "track", "trackext", "stem", "ext", "model")
OTHERS_PREFIX = "no_"  # --two-stems STEM writes STEM and "no_STEM", the sum of the other stems (Demucs's name)


class OutputPathError(FileError, ValueError):
    """An input whose outputs cannot be written where the template puts them; names the input."""


@dataclass(frozen=True)
class OutputStems:
    """The stems written for each input: ``names[k]`` is the sum of the model's stems ``mix[k] == 1``."""

    names: list[str]
    mix: np.ndarray  # [outputs, model stems], 0/1

    @classmethod
    def choose(cls, model_stems: Sequence[str], stems: Sequence[str] | None = None,
               two_stems: str | None = None) -> "OutputStems":
        """All of the model's stems, a subset (``stems``), or ``two_stems`` and the sum of the others.

        ``stems`` selects among the written names (with ``two_stems="vocals"``: ``vocals`` and ``no_vocals``).
        Raises :class:`SettingError` naming ``stems`` or ``two_stems`` and the allowed names.
        """
        model_stems = list(model_stems)
        if two_stems is not None:
            if two_stems not in model_stems:
                raise SettingError("two_stems", f"{two_stems!r} is not a stem of this model ({', '.join(model_stems)})")
            names = [two_stems, OTHERS_PREFIX + two_stems]
            rows = [[float(s == two_stems) for s in model_stems], [float(s != two_stems) for s in model_stems]]
        else:
            names = model_stems
            rows = [[float(s == name) for s in model_stems] for name in names]
        if stems is not None:
            selected = list(dict.fromkeys(stems))
            if not selected:
                raise SettingError("stems", f"no stem selected; choose from {', '.join(names)}")
            unknown = [s for s in selected if s not in names]
            if unknown:
                raise SettingError("stems", f"unknown stem(s) {', '.join(unknown)}; choose from {', '.join(names)}")
            rows = [rows[names.index(s)] for s in selected]
            names = selected
        return cls(names, np.asarray(rows, dtype=np.float32))


def check_template(template: str) -> None:
    """:class:`SettingError` for a template with an unknown field or an absolute path."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as error:
        raise SettingError("template", f"{template!r} is not a valid template: {error}") from error
    unknown = [name for name in fields if name not in TEMPLATE_FIELDS]
    if unknown:
        raise SettingError("template", f"{template!r} has unknown field(s) "
                           f"{', '.join('{' + n + '}' for n in unknown)}; "
                           f"fields: {', '.join('{' + n + '}' for n in TEMPLATE_FIELDS)}")
    if Path(template).is_absolute() or template.startswith("~"):
        raise SettingError("template",
                           f"{template!r} is an absolute path; a template is a path under the output folder")


def output_paths(source: InputFile, out_dir: Path, template: str, fmt: str, stems: Sequence[str],
                 model: str) -> dict[str, Path]:
    """``{stem: path}`` for one input, each checked to lie under ``out_dir`` after ``..`` and symlinks, and each
    name in it to fit the file system's limit (bytes, not characters).

    ``template`` has passed :func:`check_template` (once per run, not per input). Empty fields (``{dir}`` of a
    top-level file) leave no empty folder name. Raises :class:`SettingError` for a template that cannot work for
    any input and :class:`OutputPathError` for one that fails this input.
    """
    out_dir = Path(out_dir)
    lexical_root, real_root = _normalised(out_dir), real_path(out_dir)
    longest = _longest_name(out_dir)
    values = {"dir": source.folder, "track": source.path.stem, "trackext": source.path.suffix.lstrip("."),
              "ext": fmt, "model": model}
    paths: dict[str, Path] = {}
    for stem in stems:
        text = template.format(stem=stem, **values)
        names = [part for part in text.split("/") if part not in ("", ".")]
        target = out_dir.joinpath(*names)
        if not _below(_normalised(target), lexical_root):
            raise SettingError("template", f"{template!r} puts stem {stem} at {target}, outside the output folder "
                                           f"{out_dir}")
        too_long = max(len(os.fsencode(name)) for name in names)
        if too_long > longest:
            raise OutputPathError(f"a name in its {stem} output's path would be {too_long} bytes, over the file "
                                  f"system's limit of {longest}: use a template that puts fewer fields in one name, "
                                  f"or a shorter input name", source.path)
        if not _below(real_path(target), real_root):
            raise OutputPathError(f"output {target} for stem {stem} resolves to {real_path(target)}, outside the "
                                  f"output folder {out_dir} (through a symbolic link)", source.path)
        paths[stem] = target
    if len(set(paths.values())) != len(paths):
        raise SettingError("template", f"{template!r} gives several stems the same file name; use {{stem}}")
    return paths


def _longest_name(folder: Path) -> int:
    """The longest file name, in bytes, the file system of ``folder`` (or of its nearest existing parent) takes."""
    for existing in (folder, *folder.absolute().parents):
        try:
            limit = os.pathconf(existing, "PC_NAME_MAX")
        except (OSError, ValueError):  # not there yet, or a system that cannot tell
            continue
        return limit if limit > 0 else NAME_MAX
    return NAME_MAX


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them cannot be reached (a broken link): it is at most the same name
        return real_path(first) == real_path(second)


def _normalised(path: Path) -> Path:
    """``path`` made absolute with ``..`` applied, symbolic links left as they are."""
    return Path(os.path.normpath(path.absolute()))


def _below(path: Path, root: Path) -> bool:
    return path != root and path.is_relative_to(root)


def plan_outputs(sources: Sequence[InputFile],
                 paths_of: Callable[[InputFile], dict[str, Path]]) -> list[dict[str, Path] | OutputPathError]:
    """For each input, its outputs or the reason it cannot be separated, decided before any work.

    Refused: an output that is an input of the batch, an output that is an existing folder, and an output an
    earlier input already claims (the message names a template field that tells the two apart, or says that the
    two are one file under two names).
    """
    inputs = {real_path(source.path): source for source in sources}
    claimed: dict[Path, InputFile] = {}
    plan: list[dict[str, Path] | OutputPathError] = []
    for source in sources:
        try:
            paths = paths_of(source)
        except OutputPathError as error:
            plan.append(error)
            continue
        targets = {stem: real_path(path) for stem, path in paths.items()}
        victim = next((inputs[t] for t in targets.values() if t in inputs), None)
        owner = next((claimed[t] for t in targets.values() if t in claimed), None)
        folder = next((paths[s] for s, t in targets.items() if t.is_dir()), None)
        if victim is not None:
            what = "the input itself" if victim is source else f"the input {victim.path}"
            plan.append(OutputPathError(f"an output would overwrite {what}", source.path))
        elif folder is not None:
            plan.append(OutputPathError(f"output {folder} is an existing folder", source.path))
        elif owner is not None and _same_file(source.path, owner.path):
            plan.append(OutputPathError(f"another name for {owner.path}, which this batch separates already: give "
                                        "each file once (expand_inputs lists each once)", source.path))
        elif owner is not None:
            plan.append(OutputPathError(f"its outputs would be the same files as those of {owner.path}; "
                                        f"{_clash_hint(source, owner)}", source.path))
        else:
            claimed.update((t, source) for t in targets.values())
            plan.append(paths)
    return plan


def _clash_hint(source: InputFile, owner: InputFile) -> str:
    """A template change that keeps ``source`` and ``owner`` apart."""
    if source.path.stem == owner.path.stem and source.path.suffix != owner.path.suffix:
        return 'add {trackext} to the template, e.g. "{dir}/{track}.{trackext}/{stem}.{ext}"'
    if source.folder != owner.folder:
        return f'add {{dir}} to the template, e.g. "{DEFAULT_TEMPLATE}"'
    if real_path(source.path.parent) != real_path(owner.path.parent):
        return ("they were named as files from different folders, where {dir} is empty: give the folder that holds "
                "both instead (then {dir} keeps them apart), or separate them into different output folders")
    return "add {stem} or {dir} to the template"
