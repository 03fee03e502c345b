"""The progress bars of ``unet-sep separate``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from unet_sep.errors import printable

if TYPE_CHECKING:
    from tqdm import tqdm

    from unet_sep.separate.files import FileEvent


class ProgressBars:
    """tqdm bars on stderr: one per file in flight (seconds of audio) and one for all files, whose total and ETA
    come from :class:`~unet_sep.separate.progress.RunProgress` (known lengths plus estimates for inputs not opened
    yet)."""

    def __init__(self, n_files: int, inputs: dict[int, Path], enabled: bool) -> None:
        from tqdm import tqdm

        from unet_sep.separate.progress import RunProgress

        self.run = RunProgress(inputs)
        self.enabled = enabled
        self.overall = tqdm(total=0, unit="s", desc="all files", position=0, disable=not enabled,
                            dynamic_ncols=True,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")
        self.n_files = n_files
        self.bars: dict[int, tqdm] = {}

    def add(self, event: FileEvent) -> None:
        """Count a :class:`~unet_sep.separate.files.FileEvent` and show it."""
        self.run.add(event)
        if event.kind == "progress" and self.enabled:
            self._file_bar(event)
        elif event.final and event.index in self.bars:
            self.bars.pop(event.index).close()
        total = round(self.run.total, 1)
        if total != self.overall.total:
            self.overall.total = total
            self.overall.refresh()
        self.overall.update(self.run.done - self.overall.n)

    def _file_bar(self, event: FileEvent) -> None:
        from tqdm import tqdm

        seconds, _ = self.run.seconds(event.index)
        bar = self.bars.get(event.index)
        if bar is None:
            name = event.path.name if len(event.path.name) <= 30 else event.path.name[:27] + "..."
            rate = event.sample_rate
            bar = self.bars[event.index] = tqdm(
                total=round(max(event.total, event.done) / rate, 1) if rate else 0, unit="s",
                desc=f"[{event.index + 1}/{self.n_files}] {name}", position=1 + len(self.bars), leave=False,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_fmt}]")
        if seconds > bar.total:
            bar.total = seconds
        bar.update(seconds - bar.n)

    def write(self, message: str) -> None:
        """Print a line on stderr above the bars, one line whatever file names it holds
        (:func:`~unet_sep.errors.printable`)."""
        from tqdm import tqdm

        tqdm.write(printable(message), file=sys.stderr)

    def close(self) -> None:
        """Close every bar (again: harmless)."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.overall.close()
