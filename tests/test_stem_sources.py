"""Stems from other data sets (``data.stem_sources``): a training excerpt's target stem drawn from a second data
set with its own split, rate, length, probability and gain range; deterministic per seed; pool-free recipes keep
exactly the excerpts they had; recipe values checked with one-line errors; a killed run resumes bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from train_runs import make_stems, stems_recipe, whole_and_resumed, write_recipe
from unet_sep.data.stem_sources import StemSourceConfig
from unet_sep.data.tracks import Track
from unet_sep.errors import ConfigError
from unet_sep.train.augment import AugmentConfig
from unet_sep.train.recipe import Recipe, load_recipe
from unet_sep.train.sampler import ExcerptSampler, StemPool, load_stem_pool

RATE = 16000
TARGETS = ["vocals", "accompaniment"]
MAIN_TONE, POOL_TONE = 440.0, 3000.0


def _tone(frequency: float, seconds: float, rate: int, level: float = 0.1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _main_tracks() -> list[Track]:
    return [Track(name, {"vocals": _tone(220 * (i + 1), 3.0, RATE)[None],
                         "accompaniment": _tone(MAIN_TONE, 3.0, RATE)[None]})
            for i, name in enumerate(["a", "b"])]


@pytest.fixture(scope="module")
def instrumentals(tmp_path_factory) -> Path:
    """A folder of accompaniment-only tracks at 22.05 and 44.1 kHz, stereo, of different lengths (1.2 to 5 s)."""
    root = tmp_path_factory.mktemp("instrumentals")
    for name, rate, seconds in [("x", 22050, 5.0), ("y", 44100, 1.2), ("z", 44100, 3.0)]:
        (root / name).mkdir()
        tone = _tone(POOL_TONE, seconds, rate, level=0.3)
        sf.write(root / name / "accompaniment.ogg", np.stack([tone, tone], axis=1), rate)
    (root / "splits.json").write_text(json.dumps({"train": ["x", "y"], "test": ["z"]}))
    return root


def _pool(root: Path, probability: float, gain_db: tuple[float, float] | None = None) -> StemPool:
    source = StemSourceConfig(stem="accompaniment", probability=probability, root=str(root),
                              split_file=str(root / "splits.json"), gain_db=gain_db)
    return load_stem_pool(source, None, RATE, 1)


def _dominant_hz(row: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(row[0]))
    return float(np.fft.rfftfreq(row.shape[-1], 1 / RATE)[int(np.argmax(spectrum))])


def test_a_pool_lends_its_stem_from_its_own_split_rate_and_length(instrumentals):
    pool = _pool(instrumentals, 1.0)
    assert sorted(track.name for track in pool.tracks) == ["x", "y"]  # the source's own train split, not "z"
    assert [track.length for track in pool.tracks] == [5 * RATE, int(1.2 * RATE)]  # resampled, mono
    sampler = ExcerptSampler(_main_tracks(), 2 * RATE, TARGETS, AugmentConfig(gain_db=(0.0, 0.0)), seed=0,
                             sample_rate=RATE, pools=[pool])
    batch = sampler.batch(range(30))
    for excerpt in batch:
        assert _dominant_hz(excerpt[1]) == pytest.approx(POOL_TONE, abs=2)  # the accompaniment is the pool's
        assert _dominant_hz(excerpt[0]) in (220.0, 440.0)  # the vocals stay the main data set's
    # the 1.2 s track is zero-padded to the 2 s excerpt where it is drawn
    assert any(np.all(excerpt[1, 0, int(1.25 * RATE):] == 0) for excerpt in batch)


def test_the_pool_probability_and_gain_range_hold(instrumentals):
    pool = _pool(instrumentals, 0.3, gain_db=(-20.0, -20.0))
    sampler = ExcerptSampler(_main_tracks(), RATE, TARGETS, AugmentConfig(gain_db=(0.0, 0.0)), seed=1,
                             sample_rate=RATE, pools=[pool])
    from_pool = []
    for excerpt in sampler.batch(range(400)):
        hz = _dominant_hz(excerpt[1])
        from_pool.append(hz > 1000)
        rms = float(np.sqrt(np.mean(excerpt[1] ** 2)))
        if hz > 1000 and np.all(excerpt[1] != 0):
            assert 20 * np.log10(rms / (0.3 / np.sqrt(2))) == pytest.approx(-20.0, abs=0.3)
        elif hz < 1000:
            assert 20 * np.log10(rms / (0.1 / np.sqrt(2))) == pytest.approx(0.0, abs=0.2)
    share = float(np.mean(from_pool))
    assert 0.23 < share < 0.37, share  # 400 draws at p = 0.3: 5 standard deviations is +-0.115


def test_excerpts_with_pools_are_deterministic_and_follow_the_seed(instrumentals):
    pool = _pool(instrumentals, 0.5)

    def batch(seed: int) -> np.ndarray:
        return ExcerptSampler(_main_tracks(), RATE, TARGETS, AugmentConfig(), seed=seed, sample_rate=RATE,
                              pools=[pool]).batch(range(12))

    assert np.array_equal(batch(4), batch(4))
    assert not np.array_equal(batch(4), batch(5))
    sampler = ExcerptSampler(_main_tracks(), RATE, TARGETS, AugmentConfig(), seed=4, sample_rate=RATE, pools=[pool])
    assert np.array_equal(sampler.excerpt(7), batch(4)[7])  # one excerpt is a pure function of (seed, index)


def test_a_sampler_without_pools_draws_the_excerpts_it_drew_before_pools_existed():
    """The digest was taken from the sampler before ``data.stem_sources`` existed (commit 5f63632)."""
    rng = np.random.default_rng(7)
    tracks = [Track(f"t{i}", {"vocals": rng.standard_normal((2, n)).astype(np.float32),
                              "accompaniment": rng.standard_normal((2, n)).astype(np.float32)})
              for i, n in enumerate([9000, 4000, 15000])]
    sampler = ExcerptSampler(tracks, 5000, TARGETS, AugmentConfig(), seed=3, sample_rate=16000)
    digest = hashlib.sha256(sampler.batch(range(40)).tobytes()).hexdigest()
    assert digest == "8b7abd02f0ac042631cf6f202737646f979a19158e300585ee9a36cd847a0f8e"


def _recipe_with(tmp_path: Path, stems: Path, sources: list) -> Path:
    recipe = stems_recipe(stems)
    recipe["data"]["stem_sources"] = sources
    return write_recipe(tmp_path / "r.json", recipe)


@pytest.mark.parametrize("sources, message", [
    ([{"stem": "drums", "probability": 0.5, "root": "x"}],
     "data.stem_sources[0].stem must be one of data.targets ['vocals', 'accompaniment'], got 'drums'"),
    ([{"stem": "vocals", "probability": 1.5, "root": "x"}],
     "data.stem_sources[0].probability must be a number in (0, 1], got 1.5"),
    ([{"stem": "vocals", "probability": 0.6, "root": "x"}, {"stem": "vocals", "probability": 0.6, "root": "y"}],
     "the probabilities of the sources of 'vocals' add up to 1.2, more than 1"),
    ([{"stem": "vocals", "probabilty": 0.5}], "unknown key data.stem_sources[0].probabilty (did you mean "
     "data.stem_sources[0].probability?)"),
    ([{"stem": "vocals", "probability": "half", "root": "x"}],
     'data.stem_sources[0].probability must be a number, got "half"'),
    ([{"stem": "vocals", "probability": 0.5, "root": ""}],
     "data.stem_sources[0]: root must name the data set's folder"),
    ([{"stem": "vocals", "probability": 0.5, "root": "x", "gain_db": [3, -3]}],
     "data.stem_sources[0].gain_db must be [low, high] with low <= high"),
    ({"stem": "vocals"}, "data.stem_sources must be a list of objects"),
])
def test_stem_source_values_are_checked_with_one_line(tmp_path, sources, message):
    stems = make_stems(tmp_path / "stems")
    with pytest.raises(ConfigError) as error:
        load_recipe(_recipe_with(tmp_path, stems, sources))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_relative_source_paths_are_read_from_the_recipes_folder(tmp_path, instrumentals):
    stems = make_stems(tmp_path / "stems")
    (tmp_path / "recipes").mkdir()
    link = tmp_path / "recipes" / "music"
    link.symlink_to(instrumentals)
    recipe = stems_recipe(stems)
    recipe["data"]["stem_sources"] = [{"stem": "accompaniment", "probability": 0.5, "root": "music",
                                       "split_file": "music/splits.json"}]
    loaded: Recipe = load_recipe(write_recipe(tmp_path / "recipes" / "r.json", recipe))
    source = loaded.data.stem_sources[0]
    assert Path(source.root) == link.resolve() and Path(source.split_file or "") == (link / "splits.json").resolve()
    assert loaded.to_dict()["data"]["stem_sources"][0]["probability"] == 0.5


def test_a_run_with_stem_sources_killed_and_resumed_ends_where_the_whole_run_does(tmp_path, instrumentals):
    stems = make_stems(tmp_path / "stems")
    recipe = stems_recipe(stems, steps=16, checkpoint_every=2, log_every=2)
    recipe["data"]["stem_sources"] = [{"stem": "accompaniment", "probability": 0.5, "root": str(instrumentals),
                                       "split_file": str(instrumentals / "splits.json"), "gain_db": [-9, 0]}]
    path = write_recipe(tmp_path / "r.json", recipe)
    whole_and_resumed(path, tmp_path)
    final = "step-00000016"
    a = load_file(str(tmp_path / "whole" / "checkpoints" / final / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "checkpoints" / final / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name].float(), b[name].float(), atol=1e-6, rtol=0), name
    saved = json.loads((tmp_path / "whole" / "recipe.json").read_text())
    assert saved["data"]["stem_sources"][0]["gain_db"] == [-9.0, 0.0]
