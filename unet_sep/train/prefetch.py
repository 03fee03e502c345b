"""Batches drawn ahead of the training steps by a background thread, handed over in step order."""

from __future__ import annotations

import queue
import threading
from typing import Callable

import numpy as np


class BatchPrefetcher:
    """Draws ``draw(step)`` for the steps ``start`` .. ``stop - 1`` in a background thread, at most ``depth`` ahead
    (a bounded queue); ``depth`` 0 draws each batch when it is asked for. An error while drawing is raised by
    :meth:`get` for its step."""

    def __init__(self, draw: Callable[[int], np.ndarray], start: int, stop: int, depth: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._draw = draw
        self._thread = None
        if depth > 0:
            self._thread = threading.Thread(target=self._work, args=(start, stop), daemon=True, name="unet-sep-data")
            self._thread.start()

    def _work(self, start: int, stop: int) -> None:
        for step in range(start, stop):
            if self._stop.is_set():
                return
            item: tuple[int, np.ndarray | BaseException]
            try:
                item = (step, self._draw(step))
            except BaseException as error:  # hand the error to the training thread
                item = (step, error)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self, step: int) -> np.ndarray:
        """The batch of ``step`` (steps are asked for in order)."""
        if self._thread is None:
            return self._draw(step)
        got, batch = self._queue.get()
        if isinstance(batch, BaseException):
            raise batch
        assert got == step, (got, step)
        return batch

    def close(self) -> None:
        """Stop the background thread (waiting at most 5 s for a batch it is drawing)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
