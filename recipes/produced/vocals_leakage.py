"""How much of an instrumental each model puts into its vocals stem, on the produced-song test set's
instrumentals (recipes/produced/build_testset.py), where SDR is undefined because the vocals reference is silent.

    python recipes/produced/vocals_leakage.py --model mir1k-vocals-accompaniment [--model runs/new ...] \\
        --root data/produced-testset [--group instrumentals] [--split test] [--out eval/leakage] \\
        [--device auto] [--threads N] [--tracks N]

Every excerpt of the split (its vocals stem must be silent) is separated by every model, and scored as the level of
the vocals stem against the mixture: 10 log10 of the ratio of their energies over the excerpt, in dB (lower is
better; -inf is a silent vocals stem). Printed as a markdown table, per model the median and the worst (highest)
level over the excerpts; written to <out>/levels.csv (one row per model and excerpt) and <out>/summary.json.
The mixture itself and the oracle ratio mask are no rows here: the oracle's vocals stem is silent (-inf).

--model takes a registered name, a model folder, or a Spleeter TensorFlow checkpoint folder holding its
config.json (../shared/data/spleeter-ref/2stems, read as `unet-sep models import-spleeter` reads it).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from tqdm import tqdm

from unet_sep import Separator
from unet_sep.atomic import write_text_atomic
from unet_sep.cli.common import MAX_THREADS, option_name, print_error
from unet_sep.data.config import DataConfig
from unet_sep.data.load import list_tracks, load_track, probe_track
from unet_sep.data.tracks import DatasetError
from unet_sep.dsp.measures import level_db
from unet_sep.errors import ConfigError, SettingError
from unet_sep.weights.entries import ModelNotFoundError
from unet_sep.weights.spleeter import SpleeterCheckpointError, load_spleeter
from unet_sep.weights.tf_checkpoint import TFCheckpointError

sys.path.insert(0, str(Path(__file__).resolve().parent))  # its sibling script_errors.py
from script_errors import exit_status  # noqa: E402

VOCALS = "vocals"
SPLIT_FILE = "splits.json"


@dataclass(frozen=True)
class Excerpt:
    """One excerpt to separate: its mixture ``[channels, samples]`` at its own rate."""

    name: str
    mixture: np.ndarray
    sample_rate: int


def load_separator(model: str, device: str) -> Separator:
    """A registered name or model folder through :meth:`Separator.from_pretrained`; a folder with a Spleeter
    checkpoint (``checkpoint`` and the Spleeter ``config.json``) through the Spleeter reader."""
    folder = Path(model).expanduser()
    if folder.is_dir() and (folder / "checkpoint").is_file() and not (folder / "model.safetensors").is_file():
        config, net = load_spleeter(folder, folder / "config.json", name=folder.name)
        separator = Separator(net, config, device=device)
    else:
        separator = Separator.from_pretrained(model, device=device)
    if VOCALS not in separator.stems:
        raise SettingError("model", f"{model} has no {VOCALS} stem (its stems: {', '.join(separator.stems)})")
    return separator


def load_excerpts(root: Path, group: str, split: str, tracks: int | None) -> list[Excerpt]:
    """The excerpts of ``split`` in ``group`` of ``root/splits.json``, each with a silent vocals stem."""
    if not (root / SPLIT_FILE).is_file():
        raise ConfigError(f"{root / SPLIT_FILE}: no such file (run build_testset.py to make {root})")
    config = DataConfig(kind="folder", root=str(root), targets=[VOCALS, "accompaniment"],
                        split_file=str(root / SPLIT_FILE), split_group=group, test_split=split, max_tracks=tracks)
    excerpts = []
    for spec in list_tracks(config, "test"):
        rate, channels = probe_track(spec)
        track = load_track(spec, rate, channels)
        if np.any(track.sources[VOCALS]):
            raise DatasetError(f"{spec.targets[VOCALS][0].path}: not silent; the vocals' level against the mixture "
                               f"is a measure for instrumentals (group {group!r} holds songs with vocals: score "
                               f"those with unet-sep evaluate)")
        excerpts.append(Excerpt(spec.name, track.mixture, rate))
    return excerpts


def vocals_levels(separator: Separator, excerpts: Sequence[Excerpt], progress: Any) -> dict[str, float]:
    """The vocals stem's level against the mixture (dB) for each excerpt."""
    levels = {}
    for excerpt in excerpts:
        stems = separator.separate(excerpt.mixture, excerpt.sample_rate)
        levels[excerpt.name] = level_db(stems[VOCALS], excerpt.mixture)
        progress.update()
    return levels


def summarise(levels: dict[str, float]) -> dict[str, Any]:
    """The median and the worst (highest) level, and the excerpt that gave the worst."""
    values = np.array(list(levels.values()))
    worst = max(levels, key=lambda name: levels[name])
    return {"excerpts": len(values), "median_db": float(np.median(values)), "worst_db": levels[worst],
            "worst_excerpt": worst}


def _db(value: float) -> str:
    return "-inf" if value == -math.inf else f"{value:.1f}"


def table(summaries: dict[str, dict[str, Any]]) -> str:
    """The markdown table: one row per model."""
    lines = ["| model | excerpts | vocals level, median (dB) | worst (dB) | worst excerpt |", "|---|---|---|---|---|"]
    lines += [f"| {model} | {s['excerpts']} | {_db(s['median_db'])} | {_db(s['worst_db'])} | {s['worst_excerpt']} |"
              for model, s in summaries.items()]
    return "\n".join(lines)


def _json_db(value: float) -> float | None:
    return None if value == -math.inf else round(value, 4)


def write_results(out: Path, levels: dict[str, dict[str, float]], summaries: dict[str, dict[str, Any]],
                  about: dict[str, Any]) -> tuple[Path, Path]:
    """``levels.csv`` (model, excerpt, level) and ``summary.json`` in ``out``, each whole or not at all."""
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["model", "excerpt", "vocals_level_db"])
    for model, per_excerpt in levels.items():
        writer.writerows([model, name, f"{value:.4f}" if value != -math.inf else "-inf"]
                         for name, value in per_excerpt.items())
    summary = {**about, "unit": "dB, 10 log10(vocals stem energy / mixture energy); null: a silent stem (-inf)",
               "models": {model: {**s, "median_db": _json_db(s["median_db"]), "worst_db": _json_db(s["worst_db"])}
                          for model, s in summaries.items()},
               "levels": {model: {name: _json_db(v) for name, v in per.items()} for model, per in levels.items()}}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "levels.csv", rows.getvalue())
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    return out / "levels.csv", out / "summary.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", required=True, help="a model to score (repeatable)")
    parser.add_argument("--root", required=True, help="the test set's folder (build_testset.py --out)")
    parser.add_argument("--group", default="instrumentals", help="group of ROOT/splits.json (default instrumentals)")
    parser.add_argument("--split", default="test", help="split of the group (default test)")
    parser.add_argument("--out", default="vocals-leakage", help="folder for levels.csv and summary.json")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--tracks", type=int, default=None, help="only the first N excerpts (quick checks)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: all cores; 1 "
                                                                   "where other processes keep the cores busy)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; the exit status (2: a bad option or model, 1: bad data or a failed write)."""
    logging.basicConfig(format="warning: %(message)s", level=logging.WARNING)
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        if args.tracks is not None and args.tracks < 1:
            raise SettingError("tracks", f"must be a positive number, got {args.tracks}")
        if args.threads is not None:
            if not 1 <= args.threads <= MAX_THREADS:
                raise SettingError("threads", f"must be from 1 to {MAX_THREADS}, got {args.threads}")
            torch.set_num_threads(args.threads)
        excerpts = load_excerpts(Path(args.root), args.group, args.split, args.tracks)
        separators = {model: load_separator(model, args.device) for model in dict.fromkeys(args.model)}
        levels: dict[str, dict[str, float]] = {}
        with tqdm(total=len(separators) * len(excerpts), desc="separating", unit="excerpt", disable=None) as bar:
            for model, separator in separators.items():
                levels[model] = vocals_levels(separator, excerpts, bar)
        summaries = {model: summarise(per_excerpt) for model, per_excerpt in levels.items()}
        about = {"root": args.root, "group": args.group, "split": args.split}
        paths = write_results(Path(args.out), levels, summaries, about)
    except SettingError as error:
        print_error(f"{option_name(error.setting)}: {error.reason}")
        return 2
    except (ModelNotFoundError, SpleeterCheckpointError, TFCheckpointError) as error:
        print_error(f"--model: {error}")
        return 2
    except BaseException as error:
        status = exit_status(error, args.out, "interrupted; nothing was written")
        if status is None:
            raise
        return status
    print(table(summaries))
    print(f"{len(excerpts)} excerpts of {args.root} ({args.group} {args.split}) x {len(separators)} model(s) in "
          f"{time.perf_counter() - started:.1f} s; wrote {paths[0]} and {paths[1]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
