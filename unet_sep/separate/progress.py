"""How far a run over files is, in seconds of audio, from the events of
:class:`~unet_sep.separate.pipeline.FilePipeline`.

The pipeline opens each input once, and its "started" event then says how long the input is. Until an input is
opened, its length is estimated from its file size at the seconds per byte of the opened inputs of its type (its
file name extension; of all opened inputs while none of its type is), so the total, and with it an ETA, is there
from the first opened file on and gets exact as the run goes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from unet_sep.separate.files import FileEvent


class RunProgress:
    """Seconds of audio separated (:attr:`done`) and expected in all (:attr:`total`) for the inputs of one run.

    ``inputs`` are the run's inputs by event index (under torchrun: this rank's). An input counts its expected
    seconds from its "started" event on, what it gave once "done", and what it had given when it is skipped or
    fails.
    """

    def __init__(self, inputs: Mapping[int, Path]) -> None:
        self._unopened = {index: (_size(path), Path(path).suffix.lower()) for index, path in inputs.items()}
        self._unopened_bytes: dict[str, int] = {}  # per extension, of the inputs not opened yet
        for size, suffix in self._unopened.values():
            self._unopened_bytes[suffix] = self._unopened_bytes.get(suffix, 0) + size
        self._opened: dict[str, tuple[int, float]] = {}  # per extension: bytes and announced seconds of opened inputs
        self._expected: dict[int, float] = {}  # seconds per opened input
        self._expected_sum = 0.0
        self._seen: dict[int, float] = {}  # seconds separated per input
        self.done = 0.0

    @property
    def total(self) -> float:
        opened_size = sum(size for size, _ in self._opened.values())
        overall = sum(seconds for _, seconds in self._opened.values()) / opened_size if opened_size else 0.0
        estimate = 0.0
        for suffix, unopened in self._unopened_bytes.items():
            size, seconds = self._opened.get(suffix, (0, 0.0))
            estimate += unopened * (seconds / size if size else overall)
        return self._expected_sum + estimate

    def seconds(self, index: int) -> tuple[float, float]:
        """(separated, expected) seconds of one input."""
        return self._seen.get(index, 0.0), self._expected.get(index, 0.0)

    def add(self, event: FileEvent) -> None:
        """Count one event of the run."""
        index = event.index
        if event.kind == "started":
            seconds = event.total / event.sample_rate if event.sample_rate else 0.0
            if index in self._unopened:
                size, suffix = self._forget(index)
                opened_size, opened_seconds = self._opened.get(suffix, (0, 0.0))
                self._opened[suffix] = (opened_size + size, opened_seconds + seconds)
            self._expect(index, seconds)
        elif event.kind in ("progress", "done"):
            seen = event.done / event.sample_rate if event.sample_rate else 0.0
            self._see(index, seen)
            if event.kind == "done" or seen > self._expected.get(index, 0.0):
                self._expect(index, seen)
        elif event.kind in ("skipped", "failed"):
            if index in self._unopened:
                self._forget(index)
            self._expect(index, self._seen.get(index, 0.0))

    def _forget(self, index: int) -> tuple[int, str]:
        """Take an input off the ones not opened yet: (its size, its extension)."""
        size, suffix = self._unopened.pop(index)
        self._unopened_bytes[suffix] -= size
        return size, suffix

    def _expect(self, index: int, seconds: float) -> None:
        self._expected_sum += seconds - self._expected.get(index, 0.0)
        self._expected[index] = seconds

    def _see(self, index: int, seconds: float) -> None:
        self.done += seconds - self._seen.get(index, 0.0)
        self._seen[index] = seconds


def _size(path: Path) -> int:
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
