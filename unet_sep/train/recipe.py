"""Training recipes: one JSON file with the model, the data and the training settings.

```json
{"model": {...ModelConfig...}, "data": {...DataConfig...}, "train": {...TrainConfig...}}
```

A recipe may build on another: ``{"base": "other.json", ...the keys that change...}`` (see :func:`read_recipe`).
Relative data paths in a recipe are resolved against the recipe's folder. ``--set key=value`` overrides any
field by its dotted path (``train.steps=100``, ``model.unet.filters=[8,16,32,64,128,256]``); a value is read as
JSON when that gives the field's type, else as the text itself. Every value, from the file or ``--set``, is
checked against its field's type annotation, and an error names the dotted key, the type wanted and the value
given (``train.steps must be an integer, got "abc"``); an unknown key is named with the valid keys of its section.
The resolved recipe is saved beside every run.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unet_sep.config import MAX_SEGMENT_FRAMES, PRECISIONS, ModelConfig
from unet_sep.data.config import DataConfig
from unet_sep.data.stem_sources import StemSourceConfig, check_stem_sources
from unet_sep.errors import ConfigError
from unet_sep.fields import build_section, dotted, field_hints, read_json, unknown_key, value_from_text
from unet_sep.train.augment import AugmentConfig

BASE_KEY = "base"  # a recipe built on another: {"base": "other.json", ...the keys that change...}
RELATIVE_DATA_PATHS = ("root", "split_file")  # data shipped with or beside a recipe: relative to its folder
LOSSES = ("l1", "mse")
SCHEDULES = ("constant", "cosine", "step")
# The train settings that size memory or time, with their bounds, checked before anything is allocated: batches of
# excerpts live on the device with their activations (a MUSDB batch of 4 full-size excerpts: about 3 GB), prefetched
# batches in memory, and a billion steps is a typo.
_SIZE_BOUNDS = {"steps": (1, 1_000_000_000), "batch_size": (1, 1024), "prefetch": (0, 64)}


@dataclass
class TrainingDataConfig(DataConfig):
    """A recipe's ``data`` section: the data set (:class:`~unet_sep.data.config.DataConfig`) and, last, how its
    training excerpts are augmented (``augment``, :class:`~unet_sep.train.augment.AugmentConfig`).

    ``stem_sources`` lends target stems from other data sets (:class:`~unet_sep.data.stem_sources.StemSourceConfig`,
    each with its own split, probability and gain range); validation and testing use the main data set only.
    """

    stem_sources: list[StemSourceConfig] = field(default_factory=list)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> None:
        """The data set's checks, then the augmentation's; a :class:`ConfigError` naming the dotted key."""
        super().validate()
        if not isinstance(self.augment, AugmentConfig):
            raise ConfigError("data.augment must be an augmentation section")
        self.augment.validate()
        check_stem_sources(self.stem_sources, self.targets)
        if self.augment.percussion_probability > 0 and self.augment.percussion_stem not in self.targets:
            raise ConfigError(
                f"data.augment.percussion_stem {self.augment.percussion_stem!r} must be one of data.targets "
                f"{list(self.targets)} (drums or accompaniment, usually)"
            )
        effects = self.augment.vocal_effects
        if effects.enabled and effects.stem not in self.targets:
            raise ConfigError(
                f"data.augment.vocal_effects.stem {effects.stem!r} must be one of data.targets {list(self.targets)}"
            )


@dataclass
class TrainConfig:
    """Optimisation settings.

    Attributes:
        seed: seeds the data order, augmentation and dropout; a run is a pure function of its recipe.
        steps: optimisation steps in all.
        batch_size: excerpts per step and process (the global batch is this times the number of processes).
        excerpt_frames: STFT frames per training excerpt (default: the model's segment length T).
        loss: "l1" (Spleeter: L1 between masked and target magnitudes, summed over stems) or "mse".
        learning_rate, lr_schedule, warmup_steps, lr_min, lr_step_every, lr_step_gamma: Adam's learning rate,
            "constant", "cosine" (to lr_min at the last step) or "step" (times gamma every lr_step_every steps),
            after a linear warm-up.
        weight_decay: Adam's L2 penalty.
        grad_clip: clip the gradient norm to this (0: off).
        precision: "fp32", or "bf16"/"fp16" autocast on CUDA (ignored on the CPU).
        channels_last: keep activations and weights in channels-last layout on the CPU and CUDA (the same
            arithmetic; about 15 % faster steps on a 2-core AVX-512 CPU).
        init_from: start from another model's weights (a model folder, a run folder or a registered name)
            instead of a random initialisation: fine-tuning. The network's shape, stems, sample rate and STFT
            must match; the optimiser, the schedule and the step count start afresh. A resumed run takes its
            weights from its own checkpoint instead.
        average_from, average_every: stochastic weight averaging. From step ``average_from`` on, every
            ``average_every`` steps (at ``average_from``, ``average_from + average_every``, ...), the weights and
            batch-norm statistics join a uniform running average; validations from then on score the average, so
            the kept model is the average whenever it validates best. None: off. The training itself is
            unchanged: a run with averaging follows the same steps as one without.
        valid_every: validate every so many steps (0: only at the end); the score is the mean SDR over stems
            and validation tracks.
        valid_tracks: at most this many validation tracks (None: all; 0: no validation, so the last model, or
            the weight average, is kept: for a final run on train+valid with settings chosen earlier).
        patience: stop after this many validations without a better score (0: never stop early).
        checkpoint_every: save the training state every so many steps.
        log_every: write metrics every so many steps.
        prefetch: batches prepared ahead by a background thread.
    """

    seed: int = 0
    steps: int = 100_000
    batch_size: int = 4
    excerpt_frames: int | None = None
    loss: str = "l1"
    learning_rate: float = 1e-4
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    lr_min: float = 1e-6
    lr_step_every: int = 10_000
    lr_step_gamma: float = 0.5
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    precision: str = "fp32"
    channels_last: bool = True
    init_from: str | None = None
    average_from: int | None = None
    average_every: int = 1000
    valid_every: int = 1000
    valid_tracks: int | None = None
    patience: int = 0
    checkpoint_every: int = 500
    log_every: int = 10
    prefetch: int = 2

    def validate(self) -> None:
        for name, (least, most) in _SIZE_BOUNDS.items():
            value = getattr(self, name)
            if not least <= value <= most:
                raise ConfigError(f"train.{name} must be from {least} to {most}, got {value}")
        if self.excerpt_frames is not None and not 1 <= self.excerpt_frames <= MAX_SEGMENT_FRAMES:
            raise ConfigError(f"train.excerpt_frames must be from 1 to {MAX_SEGMENT_FRAMES} frames, or null, got "
                              f"{self.excerpt_frames}")
        if self.loss not in LOSSES:
            raise ConfigError(f"train.loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lr_schedule not in SCHEDULES:
            raise ConfigError(f"train.lr_schedule must be one of {SCHEDULES}, got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"train.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.learning_rate <= 0:
            raise ConfigError("train.learning_rate must be > 0")
        if not isinstance(self.channels_last, bool):
            raise ConfigError(f"train.channels_last must be true or false, got {self.channels_last!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ConfigError(f"train.init_from must be a model folder or name, or null, got {self.init_from!r}")
        if self.average_from is not None and not (
            type(self.average_from) is int and 1 <= self.average_from <= self.steps
        ):
            raise ConfigError(f"train.average_from must be a step from 1 to train.steps ({self.steps}), or null, "
                              f"got {self.average_from!r}")
        if type(self.average_every) is not int or self.average_every < 1:
            raise ConfigError(f"train.average_every must be an integer >= 1, got {self.average_every!r}")
        for name in ("valid_every", "patience", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0")
        if self.valid_tracks is not None and (type(self.valid_tracks) is not int or self.valid_tracks < 0):
            raise ConfigError(f"train.valid_tracks must be an integer >= 0, or null, got {self.valid_tracks!r}")
        for name in ("checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be >= 1")

    def learning_rate_at(self, step: int) -> float:
        """The learning rate for optimisation step ``step`` (0-based); a pure function, so resuming needs no state."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.learning_rate * (step + 1) / self.warmup_steps
        if self.lr_schedule == "cosine":
            import math

            span = max(1, self.steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.lr_min + 0.5 * (self.learning_rate - self.lr_min) * (1 + math.cos(math.pi * progress))
        if self.lr_schedule == "step":
            return self.learning_rate * self.lr_step_gamma ** ((step - self.warmup_steps) // self.lr_step_every)
        return self.learning_rate


@dataclass
class Recipe:
    """A whole training recipe."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: TrainingDataConfig = field(default_factory=TrainingDataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> None:
        self.model.validate()
        self.data.validate()
        self.train.validate()
        if list(self.data.targets) != list(self.model.stems):
            raise ConfigError(f"data.targets {self.data.targets} must equal model.stems {self.model.stems}")
        frames = self.train.excerpt_frames or self.model.segment_frames
        if frames % 2 ** self.model.unet.depth:
            raise ConfigError(f"train.excerpt_frames ({frames}) must be a multiple of 2**depth")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recipe_differences(old: dict[str, Any], new: dict[str, Any], section: str = "") -> dict[str, tuple[Any, Any]]:
    """The dotted keys whose values differ between two recipes in JSON form, with (old, new) values; a key one
    of them lacks has the value None there. Objects are compared key by key, anything else as a whole."""
    changes: dict[str, tuple[Any, Any]] = {}
    for name in list(old) + [n for n in new if n not in old]:
        before, after, key = old.get(name), new.get(name), dotted(section, name)
        if isinstance(before, dict) and isinstance(after, dict):
            changes.update(recipe_differences(before, after, key))
        elif before != after:
            changes[key] = (before, after)
    return changes


def field_annotation(path: list[str]) -> Any:
    """The annotation of the recipe field at a dotted path (["train", "steps"] -> int); a ConfigError naming the
    valid keys when there is no such field."""
    annotation: Any = Recipe
    for depth, name in enumerate(path):
        section = ".".join(path[:depth])
        if typing.get_origin(annotation) is dict:  # free-form (model.provenance): any key, any value
            return Any
        if not (isinstance(annotation, type) and dataclasses.is_dataclass(annotation)):
            raise ConfigError(f"{section} is a value, not a section: it has no key {name!r}")
        hints = field_hints(annotation)
        if name not in hints:
            raise unknown_key(annotation, section, name)
        annotation = hints[name]
    return annotation


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.steps=100"`` -> (["train", "steps"], 100).

    The value is read as JSON when that gives the field's type, else as the text itself (``model.name=2024`` is
    the string "2024"); a ConfigError names the key, the type it wants and the value when neither fits, or the
    valid keys of the section when there is no such field.
    """
    if "=" not in text:
        raise ConfigError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    return path, value_from_text(field_annotation(path), raw, ".".join(path))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in a recipe dict (before it is turned into dataclasses), each checked against its field."""
    for text in overrides:
        try:
            path, value = parse_override(text)
        except ConfigError as error:
            raise ConfigError(f"--set: {error}") from None
        node = data
        for depth, part in enumerate(path[:-1]):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {text}: {'.'.join(path[:depth + 1])} in the recipe is not an object")
        node[path[-1]] = value
    return data


def _read_object(path: Path) -> dict[str, Any]:
    """The JSON object in the file ``path``; a one-line :class:`ConfigError` naming the file otherwise."""
    return read_json(path, "recipe", shape="a JSON object with the keys model, data, train")


def merge_recipes(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: objects merge key by key, any other value replaces the base's."""
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_recipes(merged[key], value)
        else:
            merged[key] = value
    return merged


def _anchor_data_paths(data: dict[str, Any], folder: Path) -> None:
    """Resolve the relative data paths (:data:`RELATIVE_DATA_PATHS`) of a recipe's JSON form against ``folder``,
    the folder of the file that gives them."""
    section = data.get("data")
    if not isinstance(section, dict):
        return
    sources = section.get("stem_sources")
    for part in [section, *(sources if isinstance(sources, list) else [])]:
        if not isinstance(part, dict):
            continue
        for key in RELATIVE_DATA_PATHS:
            value = part.get(key)
            if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
                part[key] = str((folder / value).resolve())


def read_recipe(path: Path, derived: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe file ``path`` as a JSON object, built on its base recipe when it names one.

    ``"base": "other.json"`` (a path relative to the recipe's folder) takes every setting of that recipe, which
    may itself have a base, and changes those the file gives: objects merge key by key, any other value (a list
    too) replaces the base's. Relative data paths are resolved against the folder of the file that gives them.
    A missing base file, or bases that lead back to a recipe of the chain (``derived``: the recipes built on
    ``path``), is a one-line :class:`ConfigError` naming the file. The key ``base`` is not in the result.
    """
    data = _read_object(path)
    if BASE_KEY not in data:
        return data
    base = data.pop(BASE_KEY)
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: base must be the file name of another recipe, got {json.dumps(base)}")
    base_path = path.parent / base
    chain = (*derived, path)
    if base_path.resolve() in {recipe.resolve() for recipe in chain}:
        cycle = " -> ".join(str(recipe) for recipe in (*chain, base_path))
        raise ConfigError(f"{path}: the recipe's bases form a cycle: {cycle}")
    if not base_path.is_file():
        raise ConfigError(f"{path}: base recipe {base_path} not found")
    base_data = read_recipe(base_path, chain)
    _anchor_data_paths(base_data, base_path.parent)
    return merge_recipes(base_data, data)


def load_recipe(path: str | Path, overrides: list[str] | None = None, data_root: str | None = None) -> Recipe:
    """Read a recipe file, apply ``--set`` overrides and ``--data-root``, resolve relative paths, validate."""
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.json"))
        if len(candidates) != 1:
            raise ConfigError(f"{path}: a recipe folder must hold exactly one .json recipe (found {len(candidates)})")
        path = candidates[0]
    data = apply_overrides(read_recipe(path), overrides or [])
    _anchor_data_paths(data, path.parent)
    try:
        recipe = build_section(Recipe, data, "")  # the overrides are checked already: an error here is the file's
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    section = recipe.data
    if data_root is not None:
        section.root = str(Path(data_root).expanduser().resolve())
    if section.cache_dir:  # a cache is the user's: relative to where the command runs
        section.cache_dir = str(Path(section.cache_dir).expanduser().resolve())
    start = recipe.train.init_from
    if start and Path(start).expanduser().exists():  # a folder, not a registered name
        recipe.train.init_from = str(Path(start).expanduser().resolve())
    recipe.validate()
    return recipe
