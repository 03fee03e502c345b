"""Reports of an evaluation: the method x stem table (printed and ``summary.csv``), per-track figures
(``tracks.csv``) and a box plot of track SDRs per stem (``sdr_boxplot.png``)."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from unet_sep.atomic import write_bytes_atomic, write_text_atomic
from unet_sep.evaluate.score import (
    GLOBAL_METRICS,
    METRICS,
    TrackScores,
    global_scores,
    sisec_medians,
    track_medians,
)
from unet_sep.extras import import_pyplot

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.csv"
TRACKS_FILE = "tracks.csv"
BOXPLOT_FILE = "sdr_boxplot.png"

Results = Mapping[str, Sequence[TrackScores]]  # method -> its scores, one per track


def ordered_stems(results: Results, first: Sequence[str] = ()) -> list[str]:
    """Every stem any method scored: those of ``first`` in its order, then the others as met."""
    stems = list(dict.fromkeys(first))
    for tracks in results.values():
        for scores in tracks:
            stems.extend(s for s in scores.frames if s not in stems)
    return stems


def summary_rows(results: Results, stems: Sequence[str] = (), mir1k: bool = False) -> list[dict[str, Any]]:
    """One row per method and stem: SiSEC18 medians of SDR, SIR, SAR, ISR (and GNSDR, GSIR, GSAR with ``mir1k``).

    ``tracks`` counts the tracks that have the stem; a method without a stem gets no row for it.
    """
    rows = []
    for stem in ordered_stems(results, stems):
        for method, tracks in results.items():
            having = [t for t in tracks if stem in t.frames]
            if not having:
                continue
            medians = sisec_medians(having)[stem]
            row: dict[str, Any] = {"method": method, "stem": stem, "tracks": len(having)}
            row.update({m: medians[m] for m in METRICS})
            if mir1k:
                row.update(global_scores(having)[stem])
            rows.append(row)
    return rows


def _columns(mir1k: bool) -> list[str]:
    return ["method", "stem", "tracks", *METRICS, *(GLOBAL_METRICS if mir1k else ())]


def _cell(value: Any, digits: int = 2) -> str:
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], mir1k: bool = False) -> str:
    """The rows as an aligned text table (dB, two decimals; ``-`` where undefined)."""
    columns = _columns(mir1k)
    cells = [list(columns)] + [[_cell(row.get(c, math.nan)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        parts = [v.ljust(widths[i]) if i < 2 else v.rjust(widths[i]) for i, v in enumerate(line)]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    note = "median over 1 s windows per track, then median over tracks (SiSEC18, BSSEval v4); dB"
    if mir1k:
        note += "; G*: length-weighted means over clips of whole-clip NSDR, SIR, SAR"
    return "\n".join(lines + [note])


def _csv_value(value: Any) -> Any:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.5f}"
    return value


def write_summary_csv(rows: Sequence[Mapping[str, Any]], path: Path, mir1k: bool = False) -> Path:
    """``method,stem,tracks,SDR,SIR,SAR,ISR[,GNSDR,GSIR,GSAR]``; empty cells where undefined."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = _columns(mir1k)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c, math.nan)) for c in columns])
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def write_tracks_csv(results: Results, path: Path, mir1k: bool = False) -> Path:
    """Per method, track and stem: the medians over windows (and whole-clip SDR, NSDR with ``mir1k``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ["whole_SDR", "whole_SIR", "whole_SAR", "NSDR", "n_samples"] if mir1k else []
    writer.writerow(["method", "track", "stem", *METRICS, *extra])
    for method, tracks in results.items():
        for scores in tracks:
            for stem in scores.frames:
                row = [method, scores.track, stem, *(_csv_value(scores.median(stem, m)) for m in METRICS)]
                if mir1k:
                    whole = scores.whole.get(stem, {})
                    row += [_csv_value(float(whole.get(m, math.nan))) for m in ("SDR", "SIR", "SAR")]
                    row += [_csv_value(scores.nsdr(stem)), scores.n_samples if scores.n_samples is not None else ""]
                writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())
    return Path(path)


def sdr_boxplot(results: Results, path: Path, stems: Sequence[str] = (), title: str | None = None) -> Path:
    """One panel per stem, one box per method side by side: the distribution of track SDRs (each track's
    median over its 1 s windows), the values whose median is the table's SDR."""
    plt = import_pyplot("eval", "the SDR box plot")
    stems = ordered_stems(results, stems)
    methods = list(results)
    figure, axes = plt.subplots(
        1, max(len(stems), 1), figsize=(max(4.0, 1.1 * len(methods) + 1.5) * max(len(stems), 1), 4.5), squeeze=False
    )
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    for ax, stem in zip(axes[0], stems, strict=False):  # no stems: one empty panel
        positions, data, labels, shades = [], [], [], []
        for i, method in enumerate(methods):
            values = np.asarray(track_medians(results[method], stem, "SDR"), dtype=np.float64)
            values = values[~np.isnan(values)]
            if values.size:
                positions.append(i + 1)
                data.append(values)
                shades.append(colors[i % len(colors)])
            labels.append(method)
        if data:
            boxes = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True,
                               medianprops={"color": "black"})
            for patch, color in zip(boxes["boxes"], shades, strict=True):
                patch.set_facecolor(color)
                patch.set_alpha(0.45)
            for position, values in zip(positions, data, strict=True):
                jitter = np.linspace(-0.12, 0.12, values.size) if values.size > 1 else np.zeros(1)
                ax.scatter(position + jitter, values, s=9, color="black", alpha=0.6, zorder=3)
        ax.set_xticks(range(1, len(methods) + 1))
        ax.set_xticklabels(labels, rotation=30, ha="right")
        ax.set_xlim(0.4, len(methods) + 0.6)
        ax.set_title(stem)
        ax.set_ylabel("SDR (dB, per-track median over 1 s windows)")
        ax.grid(axis="y", alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())
    return Path(path)


def write_reports(
    results: Results, out: Path, stems: Sequence[str] = (), mir1k: bool = False, title: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """Write ``summary.csv``, ``tracks.csv`` and ``sdr_boxplot.png`` under ``out``; return the rows and paths."""
    out = Path(out)
    rows = summary_rows(results, stems, mir1k)
    paths = {
        "summary": write_summary_csv(rows, out / SUMMARY_FILE, mir1k),
        "tracks": write_tracks_csv(results, out / TRACKS_FILE, mir1k),
        "boxplot": sdr_boxplot(results, out / BOXPLOT_FILE, stems, title),
    }
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return rows, paths
