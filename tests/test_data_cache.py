"""The decode cache (unet_sep.data.cache): decoded once, memory-mapped afterwards, pickled by file name,
invalidated by a changed source file, a corrupt file decoded again, and written atomically."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musdb_tree import make_musdb_tree, musdb_config, read_file
from unet_sep.data import cache as cache_module
from unet_sep.data import load as load_module
from unet_sep.data.load import load_tracks

RATE = 44100


def test_decode_cache(tmp_path, monkeypatch):
    root = make_musdb_tree(tmp_path / "musdb", n_train=2, n_valid=0, n_test=0, seconds=1.0)
    cache = tmp_path / "cache"
    config = musdb_config(root, cache_dir=str(cache))
    real_read = load_module.read_audio
    calls: list[Path] = []

    def counting_read(path, *args, **kwargs):
        calls.append(Path(path))
        return real_read(path, *args, **kwargs)

    monkeypatch.setattr(load_module, "read_audio", counting_read)
    first = load_tracks(config, "train", RATE, 2)
    assert len(calls) == 2 * 4  # vocals + drums, bass, other per track
    files = sorted(cache.iterdir())
    assert len(files) == 4 and all(f.suffix == ".npy" and not f.name.startswith(".") for f in files)

    # the second load maps the cache and never decodes
    def failing_read(path, *args, **kwargs):
        raise AssertionError(f"decoded {path} although it is cached")

    monkeypatch.setattr(load_module, "read_audio", failing_read)
    second = load_tracks(config, "train", RATE, 2)
    for a, b in zip(first, second, strict=True):
        for stem in ("vocals", "accompaniment"):
            assert isinstance(b.sources[stem], np.memmap)
            np.testing.assert_array_equal(a.sources[stem], b.sources[stem])
    # without a cache: the same data, in RAM
    monkeypatch.setattr(load_module, "read_audio", real_read)
    for a, b in zip(second, load_tracks(musdb_config(root), "train", RATE, 2), strict=True):
        assert not isinstance(b.sources["vocals"], np.memmap)
        np.testing.assert_array_equal(a.sources["accompaniment"], b.sources["accompaniment"])
    # a memory-mapped track pickles by file name, not by content
    blob = pickle.dumps(second[0])
    assert len(blob) < 10000
    np.testing.assert_array_equal(pickle.loads(blob).sources["vocals"], second[0].sources["vocals"])

    # a changed source file invalidates its cache entry (and only that one)
    monkeypatch.setattr(load_module, "read_audio", counting_read)
    calls.clear()
    changed = root / "train" / second[0].name / "vocals.wav"
    sf.write(changed, 0.5 * read_file(changed).T, RATE, subtype="PCM_16")
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = load_tracks(config, "train", RATE, 2)
    assert calls == [changed]
    np.testing.assert_allclose(third[0].sources["vocals"], 0.5 * first[0].sources["vocals"], atol=1e-4)
    np.testing.assert_array_equal(third[1].sources["vocals"], first[1].sources["vocals"])

    # a corrupt cache file is decoded again (with a warning), not trusted
    victim = next(f for f in cache.iterdir() if "accompaniment" in f.name)
    victim.write_bytes(victim.read_bytes()[:200])
    calls.clear()
    load_tracks(config, "train", RATE, 2)
    assert len(calls) == 3


def test_cache_writes_are_atomic(tmp_path, monkeypatch):
    root = make_musdb_tree(tmp_path / "musdb", n_train=1, n_valid=0, n_test=0, seconds=1.0)
    cache = tmp_path / "cache"
    config = musdb_config(root, cache_dir=str(cache))
    real_save = np.save

    def interrupted_save(handle, array, *args, **kwargs):
        handle.write(b"\x93NUMPY partial")  # some bytes reach the disk, then the run dies
        raise KeyboardInterrupt

    monkeypatch.setattr(cache_module.np, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        load_tracks(config, "train", RATE, 2)
    assert list(cache.iterdir()) == []  # neither a final file nor the temporary one

    monkeypatch.setattr(cache_module.np, "save", real_save)
    (track,) = load_tracks(config, "train", RATE, 2)
    assert sorted(f.suffix for f in cache.iterdir()) == [".npy", ".npy"]
    np.testing.assert_array_equal(track.sources["vocals"], read_file(root / "train" / track.name / "vocals.wav"))
