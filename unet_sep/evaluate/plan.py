"""Planning an evaluation from command-line-like arguments: :func:`plan_evaluation`.

Example::

    from unet_sep.evaluate.plan import plan_evaluation
    from unet_sep.evaluate.report import format_table, write_reports

    evaluation = plan_evaluation("runs/mir1k", "eval/mir1k", data="data/mir1k",
                                 data_options=["split_file=splits.json", "split_group=singers"], mir1k_mixing=True)
    result = evaluation.run()
    rows, paths = write_reports(result.scores, "eval/mir1k", result.stems, mir1k=True)
    print(format_table(rows, mir1k=True))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from unet_sep.data.load import probe_track
from unet_sep.data.musdb_support import import_museval
from unet_sep.data.tracks import DatasetError, TrackSpec
from unet_sep.evaluate.evaluation import Evaluation, EvaluationError, Method
from unet_sep.evaluate.methods import baseline_methods, compare_method, load_separator, unique
from unet_sep.evaluate.score import VOICE
from unet_sep.evaluate.selection import DataSelection
from unet_sep.separate.settings import SeparationSettings

__all__ = ["plan_evaluation"]

logger = logging.getLogger(__name__)


def plan_evaluation(
    model: str,
    out: str | Path,
    *,
    data: str | Path | None = None,
    data_options: Sequence[str] = (),
    musdb_root: str | Path | None = None,
    subset: str | None = None,
    is_wav: bool = False,
    stems_dir: str | Path | None = None,
    split_file: str | Path | None = None,
    split_group: str | None = None,
    split: str | None = None,
    compare: Sequence[str] = (),
    max_tracks: int | None = None,
    mir1k_mixing: bool = False,
    settings: SeparationSettings | None = None,
) -> Evaluation:
    """Check the arguments, load the models and list the tracks; raise :class:`EvaluationError` on any problem.

    Args:
        model: a registered model name or a model folder; its stems are the evaluated targets.
        out: results folder (``<out>/<method>/<track>.json``, ``summary.csv``, ``sdr_boxplot.png``).
        data, data_options: a data set's folder in any registered format (recognised from the folder, or named
            by ``"kind=..."``), and more data settings as ``"key=value"`` (:mod:`unet_sep.evaluate.selection`).
        musdb_root, subset, is_wav: shorthands: a MUSDB18(-HQ) root, its split ("test", "train", "valid",
            "train+valid"; default "test") and whether it is MUSDB18-HQ (WAV). "accompaniment" is the sum of the
            other sources.
        stems_dir, split_file, split_group: shorthands: a folder ``<track>/<stem>.<ext>`` with an optional JSON
            split file (and group, e.g. MIR-1K's ``splits.json`` group "singers").
        split: the split to score (default "test").
        compare: more models (names or folders) and/or folders of another method's museval per-track JSON.
        max_tracks: the first N tracks only.
        mir1k_mixing: mix at 0 dB voice-to-accompaniment (MIR-1K's protocol) and add NSDR/GNSDR/GSIR/GSAR.
        settings: how every model scored separates (its device, Wiener filter iterations, ...; default: the
            defaults of :class:`~unet_sep.separate.settings.SeparationSettings`). Wiener iterations other than a
            model's own make a method of their own (:func:`~unet_sep.evaluate.methods.load_separator`).
    """
    selection = DataSelection.from_options(
        data=data, data_options=data_options, musdb_root=musdb_root, subset=subset, is_wav=is_wav,
        stems_dir=stems_dir, split_file=split_file, split_group=split_group, split=split,
    )
    out = _results_folder(out, max_tracks)
    source = selection.resolve()
    import_museval()  # a missing eval extra is one line now, not a failure per track

    settings = settings or SeparationSettings()
    separator, label, fingerprint = load_separator(model, settings)
    stems = list(separator.stems)
    if mir1k_mixing and (VOICE not in stems or len(stems) < 2):
        raise EvaluationError(f"--mir1k-mixing needs a model with a {VOICE!r} stem and an accompaniment; "
                              f"this one has {', '.join(stems)}")
    config = selection.config(stems, max_tracks)
    specs = selection.tracks(config)
    rate, channels = _probe(specs[0])

    taken: set[str] = set()
    methods = [Method(unique(label, taken), "model", stems, model, separator=separator, fingerprint=fingerprint)]
    names = [spec.name for spec in specs]
    methods += [compare_method(entry, stems, settings, names, taken) for entry in compare]
    stft = separator.config.stft
    methods += baseline_methods(stems, stft.n_fft, stft.hop_length)
    description = source.describe(config, config.test_split) + (", 0 dB mixing" if mir1k_mixing else "")
    logger.info("evaluating %s on %d track(s) of %s at %d Hz, %d channel(s)", ", ".join(m.name for m in methods),
                len(specs), description, rate, channels)
    return Evaluation(
        data=config, specs=specs, sample_rate=rate, channels=channels, out=out, methods=methods, stems=stems,
        n_fft=int(stft.n_fft), hop_length=int(stft.hop_length), mir1k_mixing=mir1k_mixing, description=description,
    )


def _results_folder(out: str | Path, max_tracks: Any) -> Path:
    """``out`` as a path, after the checks of ``--tracks`` and ``--out``."""
    if max_tracks is not None and (isinstance(max_tracks, bool) or int(max_tracks) < 1):
        raise EvaluationError(f"--tracks must be a positive number, got {max_tracks}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"--out {out} exists and is not a folder")
    return out


def _probe(spec: TrackSpec) -> tuple[int, int]:
    """Sample rate and channel count of the first file of a track: the data set's own format."""
    try:
        return probe_track(spec)
    except DatasetError as error:
        raise EvaluationError(str(error)) from error  # names the file
