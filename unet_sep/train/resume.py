"""Resuming a run: which changes to the recipe a resume accepts, the recipes a run folder keeps, and when a run
restored from its checkpoint has nothing left to do.

Resuming compares the recipe with the run's ``recipe.json``. A change is an error (:class:`RecipeChangedError`)
unless allowed, except for keys that change neither the steps taken nor the model kept (:data:`FREE_ON_RESUME`)
and ``train.steps`` when the learning rate does not depend on it (any schedule but "cosine"): a run can be
extended, or finished sooner, without changing the steps it has taken. A resume that changes the recipe keeps the
one it replaces as ``recipe.until-step-XXXXXXXX.json`` (the recipe of the steps up to that one).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from unet_sep.atomic import write_bytes_atomic, write_text_atomic
from unet_sep.errors import ConfigError
from unet_sep.fields import build_section, show_value
from unet_sep.train.recipe import Recipe, TrainConfig, recipe_differences
from unet_sep.train.result import RecipeChangedError, TrainingError

logger = logging.getLogger(__name__)

RECIPE_FILE = "recipe.json"
# recipe keys that may change when a run is resumed: they affect neither the steps taken nor the model kept
FREE_ON_RESUME = ("train.log_every", "train.checkpoint_every", "train.prefetch", "data.cache_dir", "model.name",
                  "model.provenance")


def refuse_to_overwrite(out: Path, checkpoints: Path) -> None:
    """A :class:`TrainingError` when ``checkpoints`` holds anything but temporaries: ``out`` holds a run."""
    if checkpoints.exists() and any(not p.name.startswith(".") for p in checkpoints.iterdir()):
        raise TrainingError(f"{out} already holds a run; pass --resume to continue it or choose another --out")


def recipe_changes(out: Path, recipe: Recipe, resume_step: int, allow_changes: bool) -> dict[str, str]:
    """The dotted keys in which ``recipe`` differs from the run's ``recipe.json``, each with a line saying how
    (``"train.batch_size 2 -> 3"``); a :class:`RecipeChangedError` naming those that change the training, unless
    ``allow_changes``. Empty (with a warning) when ``recipe.json`` cannot be read."""
    path = out / RECIPE_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        logger.warning("%s: cannot read the run's recipe (%s): changes to it are not checked", path, error)
        return {}
    changes = recipe_differences(_with_defaults(saved), json.loads(json.dumps(recipe.to_dict())))
    cosine = recipe.train.lr_schedule == "cosine"
    listed = {key: f"{key} {show_value(old)} -> {show_value(new)}" for key, (old, new) in changes.items()}
    if "train.steps" in changes and cosine:
        listed["train.steps"] += " (the cosine schedule's learning rates depend on it)"
    binding = [text for key, text in listed.items()
               if not (key == "train.steps" and not cosine)
               and not any(key == free or key.startswith(free + ".") for free in FREE_ON_RESUME)]
    if binding and not allow_changes:
        raise RecipeChangedError(
            f"the recipe differs from the one {out} was trained with ({path}): {'; '.join(binding)}. "
            f"Resume with that recipe, or pass --allow-changes to continue from step {resume_step} with the new values")
    return listed


def _with_defaults(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's saved recipe with the settings it lacks at their defaults: settings added to unet-sep after the run
    started default to what the code did before them (a new augmentation is off), so their absence is no change.
    A saved recipe that no longer parses is compared as it is."""
    try:
        return json.loads(json.dumps(build_section(Recipe, saved, "").to_dict()))
    except (ConfigError, TypeError, ValueError):
        return saved


def save_recipe(out: Path, recipe: Recipe, replaced_at: int | None = None) -> None:
    """Write the resolved ``recipe`` to ``out/recipe.json``. With ``replaced_at`` (a resume from that step changed
    the recipe) the one it replaces is kept as ``recipe.until-step-XXXXXXXX.json``; an earlier copy for the same
    step stays, as it holds the recipe that trained those steps."""
    out.mkdir(parents=True, exist_ok=True)
    recipe_file = out / RECIPE_FILE
    if replaced_at is not None:
        kept = out / f"recipe.until-step-{replaced_at:08d}.json"
        if not kept.exists():
            write_bytes_atomic(kept, recipe_file.read_bytes())
    write_text_atomic(recipe_file, json.dumps(recipe.to_dict(), indent=2) + "\n")


def nothing_left_to_do(train: TrainConfig, step: int, loop_state: dict[str, Any]) -> tuple[str, bool]:
    """Why a run restored at ``step`` has nothing left to do ("" when it has), and whether it stopped early."""
    if step == train.steps:
        return f"already finished its {train.steps} steps", False
    if step > train.steps:
        return f"is already at step {step}, past train.steps ({train.steps})", False
    if train.patience and loop_state["bad_validations"] >= train.patience:  # the loop's own stopping rule
        return (f"stopped early at step {step} ({loop_state['bad_validations']} validations without improvement; "
                f"train.patience is {train.patience})"), True
    return "", False
