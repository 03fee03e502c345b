"""The data an evaluation scores, from the options that name it, as a :class:`~unet_sep.data.config.DataConfig`.

Every option sets fields of the data settings:

- ``--data PATH``: the data set's folder; its format is the first registered one that recognises the folder
  (:func:`unet_sep.data.formats.recognise_format`, which may also set format settings such as ``is_wav``)
  unless ``--data-option kind=KIND`` names it.
- ``--data-option KEY=VALUE``: any other data setting by its recipe name (``split_file``, ``is_wav``, ...),
  the value read as JSON when that gives the field's type, else as the text itself.
- ``--split``: the split to score (default: the format's usual evaluation split, "test").
- Shorthands: ``--musdb-root ROOT`` (kind musdb), ``--stems-dir FOLDER`` (kind folder), ``--is-wav``,
  ``--subset`` (the split), ``--split-file`` and ``--split-group``.

A setting the chosen format does not read is an error naming the option that set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from unet_sep.data.config import DataConfig
from unet_sep.data.formats import FORMATS, data_format, recognise_format
from unet_sep.data.load import list_tracks
from unet_sep.data.source import DataFormat
from unet_sep.data.tracks import TrackSpec
from unet_sep.errors import ConfigError, one_line
from unet_sep.evaluate.evaluation import EvaluationError
from unet_sep.extras import MissingExtraError
from unet_sep.fields import check_value, field_hints, unknown_key, value_from_text

__all__ = ["DataSelection"]

# option -> the data setting it sets
OPTION_FIELDS = {
    "--data": "root", "--musdb-root": "root", "--stems-dir": "root", "--is-wav": "is_wav", "--subset": "test_split",
    "--split": "test_split", "--split-file": "split_file", "--split-group": "split_group",
}
SHORTHAND_KINDS = {"--musdb-root": "musdb", "--stems-dir": "folder"}
# settings that --data-option does not take, and why
NOT_DATA_OPTIONS = {
    "root": "give the data set's folder with --data", "targets": "the targets are the model's stems",
    "test_split": "give the split with --split", "train_split": "an evaluation scores the --split split",
    "valid_split": "an evaluation scores the --split split", "max_tracks": "give it with --tracks",
    "cache_dir": "an evaluation decodes each track once, at the data's own rate (the cache is for training)",
}
DEFAULT_SPLIT = "test"


@dataclass
class DataSelection:
    """The data settings the options give (all but ``targets`` and ``max_tracks``, which come from the model and
    ``--tracks``), and for each setting the option that gave it, for messages."""

    settings: dict[str, Any]
    options: dict[str, str]
    source: DataFormat | None = None

    @classmethod
    def from_options(cls, *, data: str | Path | None = None, data_options: Sequence[str] = (),
                     musdb_root: str | Path | None = None, subset: str | None = None, is_wav: bool = False,
                     stems_dir: str | Path | None = None, split_file: str | Path | None = None,
                     split_group: str | None = None, split: str | None = None) -> "DataSelection":
        """Check how the options combine (nothing is read from disk yet); :class:`EvaluationError` if they do not."""
        given = {option: value for option, value in (
            ("--data", data), ("--musdb-root", musdb_root), ("--stems-dir", stems_dir), ("--is-wav", is_wav or None),
            ("--subset", subset), ("--split", split), ("--split-file", split_file), ("--split-group", split_group),
        ) if value is not None}
        parsed = [_parse_data_option(text) for text in data_options]
        _check_shorthands(given, {name for name, _ in parsed})
        selection = cls({}, {})
        for option, value in given.items():
            selection._set(OPTION_FIELDS[option], str(value) if isinstance(value, Path) else value, option)
        for name, value in parsed:
            selection._set(name, value, "--data-option")
        for option, kind in SHORTHAND_KINDS.items():
            if option in given:
                selection._set("kind", kind, option)
        return selection

    @property
    def split_asked(self) -> bool:
        return "test_split" in self.options

    def _set(self, name: str, value: Any, option: str) -> None:
        if name in self.options:
            raise EvaluationError(f"{option} and {self.options[name]} both set data.{name}; give one")
        self.settings[name] = value
        self.options[name] = option

    def resolve(self) -> DataFormat:
        """Find the folder, its format and the split file, and return the format; :class:`EvaluationError` naming
        the option if one is missing or a setting does not apply to the format."""
        root = Path(self.settings["root"]).expanduser()
        if not root.is_dir():
            raise EvaluationError(f"{self.options['root']} {root}: no such folder")
        self.settings["root"] = str(root)
        self.source = self._format(root)
        readers = {name: kind for kind, source in FORMATS.items() for name in source.settings}
        for name, option in self.options.items():
            if name in readers and name not in self.source.settings:
                raise EvaluationError(f"{option} applies to {readers[name]} data; {root} is read as "
                                      f"{self.source.name} data")
        split_file = self.settings.get("split_file")
        if split_file is not None and not Path(split_file).expanduser().is_file() and not (root / split_file).is_file():
            raise EvaluationError(f"{self.options['split_file']} {split_file}: no such file")
        return self.source

    def _format(self, root: Path) -> DataFormat:
        if "kind" in self.settings:
            try:
                return data_format(self.settings["kind"])
            except ConfigError as error:
                raise EvaluationError(f"{self.options['kind']}: {error}") from None
        found = recognise_format(root)
        if found is None:
            raise EvaluationError(f"{self.options['root']} {root}: no data set format ({', '.join(FORMATS)}) "
                                  "recognises this folder; name one with --data-option kind=KIND")
        source, inferred = found
        self.settings["kind"] = source.name
        for name, value in inferred.items():
            self.settings.setdefault(name, value)
        return source

    def config(self, stems: list[str], max_tracks: int | None) -> DataConfig:
        """The data settings for a model of ``stems``; :class:`EvaluationError` if they cannot be scored."""
        assert self.source is not None, "resolve() first"
        names = self.source.split_names
        split = self.settings.get("test_split") or (names[0] if names else DEFAULT_SPLIT)
        if names is not None and split not in names:
            raise EvaluationError(f"{self.options['test_split']} must be one of {', '.join(names)}, got {split!r}")
        problem = self.source.scoring_problem(stems)
        if problem:
            raise EvaluationError(problem)
        config = DataConfig(**{**self.settings, "test_split": split}, targets=list(stems), max_tracks=max_tracks)
        try:
            config.validate()
        except ConfigError as error:
            raise EvaluationError(str(error)) from None
        return config

    def tracks(self, config: DataConfig) -> list[TrackSpec]:
        """The tracks of the split to score; a folder without a split file is scored whole without a warning,
        unless a split was asked for."""
        try:
            return list_tracks(config, "test", quiet=not self.split_asked)
        except MissingExtraError:
            raise
        except Exception as error:  # ConfigError, DatasetError, OSError, or whatever musdb raises on a bad tree
            raise EvaluationError(one_line(error)) from error


def _check_shorthands(given: dict[str, Any], data_options: set[str]) -> None:
    """The rules of the shorthand options, in the words of the options (``data_options``: the settings
    ``--data-option`` sets)."""
    if sum(option in given for option in ("--data", "--musdb-root", "--stems-dir")) != 1:
        raise EvaluationError("give exactly one data set: --data PATH, --musdb-root ROOT or --stems-dir FOLDER")
    if "--musdb-root" in given and any(o in given for o in ("--split-file", "--split-group", "--split")):
        raise EvaluationError("--split-file, --split-group and --split apply to --stems-dir; MUSDB uses --subset")
    if "--stems-dir" in given and any(o in given for o in ("--subset", "--is-wav")):
        raise EvaluationError("--subset and --is-wav apply to --musdb-root; a stems folder uses --split")
    no_split_file = "--split-file" not in given and "split_file" not in data_options
    if no_split_file and ("--split-group" in given or ("--split" in given and "--stems-dir" in given)):
        raise EvaluationError("--split and --split-group need --split-file (without one, every track is scored)")


def _parse_data_option(text: str) -> tuple[str, Any]:
    """``"KEY=VALUE"`` -> (KEY, VALUE read as JSON when that fits the setting's type, else the text)."""
    if "=" not in text:
        raise EvaluationError(f"--data-option expects KEY=VALUE, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    hints = field_hints(DataConfig)
    if key not in hints:
        raise EvaluationError(f"--data-option: {unknown_key(DataConfig, 'data', key)}")
    if key in NOT_DATA_OPTIONS:
        raise EvaluationError(f"--data-option {key}: {NOT_DATA_OPTIONS[key]}")
    try:
        return key, check_value(hints[key], value_from_text(hints[key], raw, f"data.{key}"), f"data.{key}")
    except ConfigError as error:
        raise EvaluationError(f"--data-option: {error}") from None
