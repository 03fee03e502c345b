"""Stems drawn from another data set: :class:`StemSourceConfig` (one item of a recipe's ``data.stem_sources``).

A training excerpt's stems normally come from the recipe's own data set. A stem source lends one target stem from
a second data set, with its own split, probability and gain range: vocals from MIR-1K's training singers over
accompaniments from a folder of produced instrumentals, say. The source is read like any data set (its own
``kind``, ``root`` and split file; decoded to the model's rate and channels through the main data set's cache),
so a folder holding only ``<track>/accompaniment.ogg`` files is a valid source of accompaniments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from unet_sep.data.config import DataConfig
from unet_sep.errors import ConfigError
from unet_sep.fields import check_range, is_number

__all__ = ["MAX_SOURCE_GAIN_DB", "StemSourceConfig", "check_stem_sources"]

MAX_SOURCE_GAIN_DB = 60.0  # down to near silence: a source can lend quiet stems (a voice far behind the music)


@dataclass
class StemSourceConfig:
    """One data set that lends one target stem to the training excerpts.

    Attributes:
        stem: the target stem this source supplies (one of ``data.targets``).
        source_stem: the stem's name in this data set (default: ``stem``), e.g. "vocals" from a data set whose
            files call it "voice".
        probability: per excerpt, the chance that ``stem`` comes from this source instead of the main data set.
            The probabilities of the sources of one stem add up to at most 1; the rest is the main data set's.
        gain_db: the random gain range in dB for excerpts from this source (None: the main ``augment.gain_db``).
        kind, root, split_file, split_group, max_tracks: the data set, as in the ``data`` section
            (:class:`~unet_sep.data.config.DataConfig`); relative paths are resolved against the recipe's folder.
        split: the split of this data set the excerpts come from (a key of its split file; "a+b" for a union).
    """

    stem: str = ""
    source_stem: str | None = None
    probability: float = 0.0
    gain_db: tuple[float, float] | None = None
    kind: str = "folder"
    root: str = ""
    split_file: str | None = None
    split_group: str | None = None
    split: str = "train"
    max_tracks: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.gain_db, list) and len(self.gain_db) == 2:
            self.gain_db = (self.gain_db[0], self.gain_db[1])

    @property
    def stem_in_source(self) -> str:
        """The name this source gives the stem."""
        return self.source_stem or self.stem

    def data_config(self, cache_dir: str | None) -> DataConfig:
        """The source as a data set whose one target is :attr:`stem_in_source` and whose train split is
        :attr:`split`, decoded through ``cache_dir`` (the main data set's)."""
        return DataConfig(kind=self.kind, root=self.root, targets=[self.stem_in_source], train_split=self.split,
                          split_file=self.split_file, split_group=self.split_group, cache_dir=cache_dir,
                          max_tracks=self.max_tracks)

    def validate(self, key: str, targets: Sequence[str]) -> None:
        """Raise :class:`ConfigError` naming ``key`` (e.g. ``data.stem_sources[0]``) and the setting at fault."""
        if self.stem not in targets:
            raise ConfigError(f"{key}.stem must be one of data.targets {list(targets)}, got {self.stem!r}")
        probability = self.probability
        if not is_number(probability) or not 0.0 < probability <= 1.0:
            raise ConfigError(f"{key}.probability must be a number in (0, 1], got {probability!r}")
        if self.gain_db is not None:
            check_range(f"{key}.gain_db", self.gain_db, -MAX_SOURCE_GAIN_DB, MAX_SOURCE_GAIN_DB, "dB")
        try:
            self.data_config(None).validate()
        except ConfigError as error:
            raise ConfigError(f"{key}: {_within(error, key)}") from None


def check_stem_sources(sources: Sequence[StemSourceConfig], targets: Sequence[str]) -> None:
    """Validate each source (:meth:`StemSourceConfig.validate`) and that the sources of one stem leave the
    main data set a probability of at least 0."""
    totals: dict[str, float] = {}
    for number, source in enumerate(sources):
        source.validate(f"data.stem_sources[{number}]", targets)
        totals[source.stem] = totals.get(source.stem, 0.0) + float(source.probability)
    for stem, total in totals.items():
        if total > 1.0 + 1e-9:
            raise ConfigError(f"data.stem_sources: the probabilities of the sources of {stem!r} add up to "
                              f"{total:g}, more than 1")


def _within(error: ConfigError, key: str) -> str:
    """A data-set error's message with its ``data.`` keys renamed to the source's (``data.root`` -> ``root``)."""
    return str(error).replace("data.train_split", "split").replace("data.", "")
