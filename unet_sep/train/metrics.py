"""A run's metric files: ``metrics.csv`` (training), ``validation.csv``, TensorBoard events and ``curves.png``.

TensorBoard and matplotlib are optional (the extra "train"): without TensorBoard the metrics go to the CSV files
only, without matplotlib there is no ``curves.png``; either is a warning naming the extra, and training goes on.
"""

from __future__ import annotations

import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from unet_sep.atomic import atomic_path
from unet_sep.extras import MissingExtraError, import_extra, import_pyplot

logger = logging.getLogger(__name__)

METRICS_FILE, VALIDATION_FILE, CURVES_FILE, TENSORBOARD_FOLDER = ("metrics.csv", "validation.csv", "curves.png",
                                                                  "tensorboard")
METRIC_FIELDS = ["step", "loss", "lr", "grad_norm", "excerpts_per_s", "seconds_per_step", "data_wait_s"]


class StepWindow:
    """The steps since the last row of ``metrics.csv``: their losses, the time they waited for data, their start."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.data_wait = 0.0
        self.started = time.perf_counter()

    def row(self, lr: float, grad_norm: float, excerpts_per_step: int) -> dict[str, float]:
        """The metrics of the window's steps (mean loss, throughput, waits per step); starts a new window."""
        elapsed = time.perf_counter() - self.started
        steps = len(self.losses)
        values = {
            "loss": float(np.mean(self.losses)), "lr": lr, "grad_norm": float(grad_norm),
            "excerpts_per_s": steps * excerpts_per_step / elapsed, "seconds_per_step": elapsed / steps,
            "data_wait_s": self.data_wait / steps,
        }
        self.losses, self.data_wait, self.started = [], 0.0, time.perf_counter()
        return values


def _tensorboard_writer(folder: Path, start_step: int) -> Any:
    """A TensorBoard ``SummaryWriter`` on ``folder`` (events after ``start_step`` dropped), or None with a
    warning when TensorBoard is not installed."""
    try:
        import_extra("tensorboard", "train", "TensorBoard logging")
        from torch.utils.tensorboard import SummaryWriter
    except MissingExtraError as error:
        logger.warning("%s; metrics go to CSV only", error)
        return None
    except ImportError:  # a broken install should not stop training
        logger.warning("tensorboard is not available: metrics go to CSV only")
        return None
    return SummaryWriter(str(folder), purge_step=start_step + 1 if start_step else None)


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite the CSV file ``path`` without its rows after ``step`` (a resumed run writes them again)."""
    if not path.exists():
        return
    with path.open(newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= step]
    if not rows:
        path.unlink()
        return
    with atomic_path(path) as temporary, temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _append_row(path: Path, row: dict[str, Any], columns: list[str] | None = None) -> None:
    """Append ``row`` to the CSV file ``path`` (in the order of ``columns``, default the row's own), with a header
    line first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns or list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


class MetricsWriter:
    """metrics.csv, validation.csv and TensorBoard of the run folder ``out``, written by the main process only
    (``enabled``); rows after ``start_step`` of a resumed run are dropped first."""

    def __init__(self, out: Path, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.path = out / METRICS_FILE
        self.valid_path = out / VALIDATION_FILE
        self.writer = None
        if not enabled:
            return
        for path in (self.path, self.valid_path):
            _drop_rows_after(path, start_step)
        self.writer = _tensorboard_writer(out / TENSORBOARD_FOLDER, start_step)

    def log_train(self, step: int, values: dict[str, float]) -> None:
        """One row of training metrics (the columns of :data:`METRIC_FIELDS`), also logged as a line."""
        if not self.enabled:
            return
        _append_row(self.path, {"step": step, **{key: f"{value:.6g}" for key, value in values.items()}}, METRIC_FIELDS)
        self._scalars("train", step, values)
        logger.info("step %d: loss %.4f, %.2f excerpts/s, %.3f s/step (data wait %.3f s)", step, values["loss"],
                    values["excerpts_per_s"], values["seconds_per_step"], values["data_wait_s"])

    def log_valid(self, step: int, values: dict[str, float]) -> None:
        """One row of validation scores."""
        if not self.enabled:
            return
        _append_row(self.valid_path, {"step": step, **{key: f"{value:.4f}" for key, value in values.items()}})
        self._scalars("valid", step, values)

    def _scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        if self.writer is not None:
            for key, value in values.items():
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def plot(self, path: Path) -> None:
        """Draw the curves of the CSV files into the PNG ``path`` (see :func:`plot_curves`)."""
        if self.path.exists():
            plot_curves(self.path, self.valid_path, path)


def plot_curves(metrics_csv: Path, validation_csv: Path, path: Path) -> None:
    """The training loss and, when there is ``validation_csv``, the validation SDR per stem (with the mixture
    baseline dashed), as the PNG ``path``; a warning instead when matplotlib is not installed."""
    try:
        plt = import_pyplot("train", "the loss-curve plot (curves.png)")
    except MissingExtraError as error:
        logger.warning("%s; no %s", error, path)
        return
    with metrics_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    valid = []
    if validation_csv.exists():
        with validation_csv.open(newline="") as handle:
            valid = list(csv.DictReader(handle))
    fig, axes = plt.subplots(1, 2 if valid else 1, figsize=(11 if valid else 6, 4), squeeze=False)
    _plot_loss(axes[0][0], rows)
    if valid:
        _plot_validation(axes[0][1], valid)
    fig.tight_layout()
    with atomic_path(path, ".partial.png") as temporary:
        fig.savefig(temporary, dpi=110)
    plt.close(fig)


def _plot_loss(ax: Any, rows: list[dict[str, str]]) -> None:
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.set_title("training loss")


def _plot_validation(ax: Any, valid: list[dict[str, str]]) -> None:
    steps = [int(r["step"]) for r in valid]
    stems = [k[4:] for k in valid[0] if k.startswith("sdr_")]
    for i, stem in enumerate(stems):
        color = f"C{i}"
        ax.plot(steps, [float(r[f"sdr_{stem}"]) for r in valid], marker="o", color=color, label=stem)
        ax.plot(steps, [float(r[f"mixture_sdr_{stem}"]) for r in valid], ls="--", color=color, alpha=0.6,
                label=f"{stem}: mixture as estimate")
    ax.set_xlabel("step")
    ax.set_ylabel("SDR (dB)")
    ax.set_title("validation")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
