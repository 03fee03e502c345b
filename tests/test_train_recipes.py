"""Training recipes: typed --set and recipe-file errors, recipes built on a base recipe, and the shipped recipes
(every one loads; the bundled model's stages build exactly the shipped network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from train_runs import make_stems, stems_recipe, train, write_recipe
from unet_sep.config import ConfigError
from unet_sep.train.recipe import load_recipe
from unet_sep.weights.registry import resolve_model

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
# the recipes among recipes/**/*.json (beside them: data files such as produced/packages.json)
RECIPE_FILES = [path for path in sorted(RECIPES.rglob("*.json"))
                if (data := json.loads(path.read_text())) and isinstance(data, dict)
                and set(data) <= {"base", "model", "data", "train"}]


@pytest.fixture(scope="module")
def stems(tmp_path_factory) -> Path:
    return make_stems(tmp_path_factory.mktemp("stems"))


def test_a_value_of_the_wrong_type_names_the_key_the_type_and_the_value(stems, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.json", stems_recipe(stems))
    result = train(recipe, tmp_path / "run", "--set", "train.steps=abc")
    assert result.returncode == 2
    assert result.stderr == 'error: --set: train.steps must be an integer, got "abc"\n'
    assert not (tmp_path / "run").exists()

    def error(overrides: list[str], recipe_path: Path = recipe) -> str:
        with pytest.raises(ConfigError) as caught:
            load_recipe(recipe_path, overrides)
        return str(caught.value)

    assert error(['model.unet.filters=[4,8,"x"]']) == (
        '--set: model.unet.filters must be a list of integers, got [4, 8, "x"]')
    assert error(["train.average_from=1.5"]) == "--set: train.average_from must be an integer or null, got 1.5"
    assert error(["data.augment.gain_db=[1]"]) == "--set: data.augment.gain_db must be a list of 2 numbers, got [1]"
    assert error(["train.channels_last=1"]) == "--set: train.channels_last must be true or false, got 1"
    unknown = error(["train.stepz=3"])
    assert unknown.startswith(
        "--set: unknown key train.stepz (did you mean train.steps?); section train has seed, steps, batch_size,")
    assert error(["model.unet.filterz=[4]"]).startswith(
        "--set: unknown key model.unet.filterz (did you mean model.unet.filters?)")
    assert error(["train.steps.x=1"]) == "--set: train.steps is a value, not a section: it has no key 'x'"
    # a string field takes the text as it is; a number stays a number where one is wanted
    loaded = load_recipe(recipe, ["model.name=2024", "train.learning_rate=1", "train.init_from=null"])
    assert loaded.model.name == "2024" and loaded.train.learning_rate == 1.0 and loaded.train.init_from is None
    # the same checks for the recipe file itself, naming the file; a --set that corrects the file wins
    broken = stems_recipe(stems)
    broken["train"]["steps"] = "abc"
    broken_path = write_recipe(tmp_path / "broken.json", broken)
    assert error([], broken_path) == f'{broken_path}: train.steps must be an integer, got "abc"'
    assert load_recipe(broken_path, ["train.steps=3"]).train.steps == 3
    broken["train"] = {"steps": 3, "batchsize": 2}
    assert error([], write_recipe(broken_path, broken)).startswith(
        f"{broken_path}: unknown key train.batchsize (did you mean train.batch_size?); section train has ")


@pytest.mark.parametrize("path", RECIPE_FILES,
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_recipes_load_and_bundled_ones_build_the_shipped_model(path):
    """Every recipe in recipes/ passes validation; the bundled model's stages (recipes/mir1k/bundled-*, and
    recipes/produced/default-*) build exactly the shipped network."""
    recipe = load_recipe(path)
    assert recipe.train.steps > 0 and recipe.model.stems
    if not path.name.startswith(("bundled-", "default-")):
        return
    shipped = json.loads((resolve_model("mir1k-vocals-accompaniment", offline=True) / "config.json").read_text())
    mine = recipe.model.to_dict()
    for key in ("stems", "sample_rate", "n_channels", "frequency_bins", "segment_frames", "stft", "unet"):
        assert mine[key] == shipped[key], key
    assert recipe.data.split_group == "singers"


def test_a_recipe_builds_on_its_base(stems, tmp_path):
    """"base" names a recipe relative to the file's folder; objects merge key by key, any other value (a list too)
    replaces the base's; bases chain; relative data paths follow the file that gives them; "base" itself is not a
    setting, neither in the recipe nor in a run's recipe.json."""
    shared, stages = tmp_path / "shared", tmp_path / "stages"
    shared.mkdir()
    stages.mkdir()
    first = stems_recipe(stems)
    first["data"] = {"kind": "folder", "root": os.path.relpath(stems, shared),
                     "split_file": os.path.relpath(stems / "splits.json", shared),
                     "augment": {"remix": True, "gain_db": [-6.0, 3.0]}}
    write_recipe(shared / "first.json", first)
    write_recipe(stages / "second.json", {"base": "../shared/first.json",
                                          "model": {"unet": {"filters": [4, 8, 16, 32]}},
                                          "data": {"augment": {"remix": False}}, "train": {"steps": 5}})
    last = write_recipe(stages / "last.json", {"base": "second.json", "train": {"steps": 6, "learning_rate": 0.01}})
    recipe = load_recipe(last)
    assert recipe.model.unet.filters == [4, 8, 16, 32]  # a list replaces the base's
    assert recipe.model.stft.n_fft == 512 and recipe.model.stems == ["vocals", "accompaniment"]  # the rest stays
    assert recipe.data.augment.remix is False and list(recipe.data.augment.gain_db) == [-6.0, 3.0]
    assert recipe.train.steps == 6 and recipe.train.learning_rate == 0.01 and recipe.train.batch_size == 2
    assert recipe.data.root == str(stems.resolve()) and recipe.data.split_file == str((stems / "splits.json").resolve())
    assert "base" not in recipe.to_dict()
    overridden = load_recipe(last, ["train.steps=7", "model.unet.filters=[4,8,16,32,64,128]"])
    assert overridden.train.steps == 7 and overridden.model.unet.filters == [4, 8, 16, 32, 64, 128]

    result = train(last, tmp_path / "run", "--set", "train.steps=1", "--set", "train.checkpoint_every=1")
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "run" / "recipe.json").read_text())
    resolved = load_recipe(last, ["train.steps=1", "train.checkpoint_every=1"]).to_dict()
    assert "base" not in saved and saved == json.loads(json.dumps(resolved))


def test_a_missing_base_or_a_cycle_of_bases_is_one_line_naming_the_file(tmp_path):
    def error(path: Path) -> str:
        with pytest.raises(ConfigError) as caught:
            load_recipe(path)
        return str(caught.value)

    a, b, c = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"
    write_recipe(a, {"base": "b.json", "train": {"steps": 3}})
    assert error(a) == f"{a}: base recipe {b} not found"
    result = train(a, tmp_path / "run")
    assert result.returncode == 2 and result.stderr == f"error: {a}: base recipe {b} not found\n"
    assert not (tmp_path / "run").exists()
    write_recipe(b, {"base": "c.json"})
    write_recipe(c, {"base": "a.json"})
    assert error(a) == f"{c}: the recipe's bases form a cycle: {a} -> {b} -> {c} -> {a}"
    own = write_recipe(tmp_path / "own.json", {"base": "own.json"})
    assert error(own) == f"{own}: the recipe's bases form a cycle: {own} -> {own}"
    c.write_text("{not json")
    assert error(a).startswith(f"{c}: not valid JSON (")
    write_recipe(c, {"base": 3})
    assert error(a) == f"{c}: base must be the file name of another recipe, got 3"


def _leaves(data: dict, section: str = "") -> dict:
    """The dotted keys of a recipe's JSON form with their values (an object's keys, never the object itself)."""
    leaves = {}
    for key, value in data.items():
        name = f"{section}.{key}" if section else key
        leaves.update(_leaves(value, name) if isinstance(value, dict) else {name: value})
    return leaves


def test_shipped_recipes_built_on_a_base_differ_from_it_in_the_keys_they_give():
    """The bundled model's stages 2-4 and the 4-stem MUSDB18 recipe give only what changes from their base."""
    derived = [path for path in RECIPE_FILES if "base" in json.loads(path.read_text())]
    names = {path.name for path in derived}
    assert {"bundled-2-finetune.json", "bundled-3-finetune.json", "bundled-4-trainval.json", "4stems.json"} <= names
    for path in derived:
        given = json.loads(path.read_text())
        base = _leaves(load_recipe(path.parent / given.pop("base")).to_dict())
        mine = _leaves(load_recipe(path).to_dict())
        given = _leaves(given)
        changed = {key for key in mine if mine[key] != base[key]}
        assert changed <= set(given), (path.name, changed - set(given))
        for key, value in given.items():
            assert _same_setting(mine[key], value), (path.name, key)


def _same_setting(loaded, given) -> bool:
    """Whether a recipe's ``given`` value is the ``loaded`` one, paths resolved (relative data paths against the
    recipe's folder, a cache folder against the working directory, init_from as a folder)."""
    if isinstance(given, list) and isinstance(loaded, (list, tuple)):
        return len(given) == len(loaded) and all(_same_setting(a, b) for a, b in zip(loaded, given, strict=True))
    if isinstance(given, dict) and isinstance(loaded, dict):
        return all(_same_setting(loaded[key], value) for key, value in given.items())
    if isinstance(given, str) and isinstance(loaded, str) and loaded != given:
        return Path(loaded).name == Path(given).name and Path(loaded).is_absolute()
    return loaded == given
