"""How far a run is: lengths of opened inputs, estimates from file sizes for the others, and what skipped and
failed inputs leave of the total."""

from __future__ import annotations

from pathlib import Path

import pytest

from unet_sep.separate.files import FileEvent
from unet_sep.separate.progress import RunProgress

RATE = 8000


def _inputs(tmp_path: Path, sizes: dict[int, int]) -> dict[int, Path]:
    paths = {}
    for index, size in sizes.items():
        paths[index] = tmp_path / f"{index}.wav"
        paths[index].write_bytes(b"\0" * size)
    return paths


def _event(kind: str, index: int, seconds: float = 0.0, total: float = 0.0) -> FileEvent:
    return FileEvent(kind, index, Path(f"{index}.wav"), done=int(seconds * RATE), total=int(total * RATE),
                     sample_rate=RATE)


def test_unopened_inputs_count_at_the_seconds_per_byte_of_the_opened_ones(tmp_path):
    run = RunProgress(_inputs(tmp_path, {0: 1000, 1: 3000, 2: 500}))
    assert run.total == 0 and run.done == 0  # nothing known before the first input is opened
    run.add(_event("started", 0, total=20))  # 20 s in 1000 bytes: 0.02 s per byte
    assert run.total == pytest.approx(20 + 0.02 * 3500)
    run.add(_event("skipped", 2))  # never opened: leaves the total
    assert run.total == pytest.approx(20 + 0.02 * 3000)
    run.add(_event("started", 1, total=50))
    assert run.total == pytest.approx(70)
    run.add(_event("progress", 0, seconds=5, total=20))
    run.add(_event("progress", 1, seconds=10, total=50))
    assert run.done == pytest.approx(15) and run.seconds(1) == pytest.approx((10, 50))


def test_ended_inputs_count_what_they_gave(tmp_path):
    run = RunProgress(_inputs(tmp_path, {0: 1000, 1: 1000, 2: 1000}))
    run.add(_event("started", 0, total=10))
    run.add(_event("started", 1, total=10))
    run.add(_event("progress", 0, seconds=4, total=10))
    run.add(_event("done", 0, seconds=10.5, total=10.5))  # a little longer than announced (an MP3 estimate)
    run.add(_event("progress", 1, seconds=3, total=10))
    run.add(_event("failed", 1))  # failed after 3 s: the rest of it is no longer expected
    run.add(_event("failed", 2))  # failed before it was opened
    assert run.done == pytest.approx(13.5) and run.total == pytest.approx(13.5)


def test_a_missing_file_counts_nothing(tmp_path):
    run = RunProgress({0: tmp_path / "gone.wav", 1: _inputs(tmp_path, {1: 800})[1]})
    run.add(_event("started", 1, total=8))
    assert run.total == pytest.approx(8)


def test_each_file_type_is_estimated_at_its_own_rate(tmp_path):
    """A compressed and an uncompressed format hold very different seconds per byte."""
    paths = {0: tmp_path / "a.mp3", 1: tmp_path / "b.wav", 2: tmp_path / "c.mp3", 3: tmp_path / "d.WAV"}
    for path, size in zip(paths.values(), (100, 1000, 300, 2000), strict=True):
        path.write_bytes(b"\0" * size)
    run = RunProgress(paths)
    run.add(_event("started", 0, total=10))  # mp3: 0.1 s per byte, and every other type too while none is open
    assert run.total == pytest.approx(10 + 0.1 * (1000 + 300 + 2000))
    run.add(_event("started", 1, total=5))  # wav (any case): 0.005 s per byte
    assert run.total == pytest.approx(10 + 5 + 0.1 * 300 + 0.005 * 2000)
