"""A run's metric files: metrics.csv's columns, the rows a resumed run drops, and training without the optional
TensorBoard and matplotlib (the extra "train"): the CSV files, a warning naming the extra, no curves.png."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from train_runs import make_stems, stems_recipe, train_command, write_recipe
from unet_sep.train.metrics import METRIC_FIELDS, MetricsWriter, StepWindow, plot_curves


@pytest.fixture(scope="module")
def stems(tmp_path_factory) -> Path:
    return make_stems(tmp_path_factory.mktemp("stems"))


def _train_rows(writer: MetricsWriter, steps: range) -> None:
    for step in steps:
        window = StepWindow()
        window.losses.append(1.0 / step)
        writer.log_train(step, window.row(lr=1e-3, grad_norm=0.5, excerpts_per_step=4))


def test_metrics_csv_has_its_columns_and_a_resumed_run_drops_the_rows_after_its_step(tmp_path):
    writer = MetricsWriter(tmp_path, 0, enabled=True)
    _train_rows(writer, range(1, 7))
    writer.log_valid(3, {"sdr_vocals": 1.0, "mixture_sdr_vocals": 0.0, "score": 1.0})
    writer.log_valid(6, {"sdr_vocals": 2.0, "mixture_sdr_vocals": 0.0, "score": 2.0})
    writer.close()
    with (tmp_path / "metrics.csv").open(newline="") as handle:
        assert next(csv.reader(handle)) == METRIC_FIELDS
    resumed = MetricsWriter(tmp_path, 4, enabled=True)
    assert [row["step"] for row in csv.DictReader((tmp_path / "metrics.csv").open())] == ["1", "2", "3", "4"]
    assert [row["step"] for row in csv.DictReader((tmp_path / "validation.csv").open())] == ["3"]
    _train_rows(resumed, range(5, 7))
    resumed.close()
    assert [row["step"] for row in csv.DictReader((tmp_path / "metrics.csv").open())] == [str(s) for s in range(1, 7)]
    plot_curves(tmp_path / "metrics.csv", tmp_path / "validation.csv", tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["curves.png", "metrics.csv", "validation.csv"]
    MetricsWriter(tmp_path, 0, enabled=True).close()  # a run started again from step 0 has no rows yet
    assert not (tmp_path / "metrics.csv").exists() and not (tmp_path / "validation.csv").exists()


def test_without_tensorboard_and_matplotlib_training_writes_the_csv_files_and_says_what_to_install(stems, tmp_path):
    recipe = write_recipe(tmp_path / "tiny.json", stems_recipe(stems))
    run = tmp_path / "run"
    without = ("import sys\n"
               "sys.modules['tensorboard'] = None\n"  # as if not installed: importing it raises ImportError
               "sys.modules['matplotlib'] = None\n"
               "from unet_sep.cli import main\n"
               "main()\n")
    command = [sys.executable, "-c", without, *train_command(recipe, run)[3:]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[:2] == [
        "WARNING unet_sep.train.metrics: TensorBoard logging needs tensorboard, which is not installed: "
        "pip install 'unet-sep[train]'; metrics go to CSV only",
        "WARNING unet_sep.train.metrics: the loss-curve plot (curves.png) needs matplotlib, which is not installed: "
        f"pip install 'unet-sep[train]'; no {run / 'curves.png'}",
    ], result.stderr
    assert result.stderr.splitlines()[-1] == f"model: {run} (unet-sep separate SONG --model {run})"
    assert (run / "metrics.csv").is_file() and (run / "model.safetensors").is_file()
    assert not (run / "curves.png").exists() and not (run / "tensorboard").exists()
