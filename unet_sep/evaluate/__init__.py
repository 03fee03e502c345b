"""Evaluation of separators as the field reports it: museval BSSEval v4 with SiSEC18 medians, MIR-1K's GNSDR.

:func:`plan_evaluation` checks the arguments, loads the models and lists the tracks (raising
:class:`EvaluationError` with a one-line message); :meth:`Evaluation.run` then goes through the tracks one at a
time: decode the references at the data set's own rate (:mod:`unet_sep.train.datasets`), separate the mixture
with every model, build the two baselines ("mixture" and "oracle-irm"), score each method with museval
(:mod:`unet_sep.evaluate.score`) and write ``OUT/<method>/<track>.json`` in museval's per-track format. A track
whose JSON already exists (with the same settings) is read back instead of being separated and scored again,
so an interrupted evaluation resumes where it stopped. :mod:`unet_sep.evaluate.report` turns the result into
the summary table, ``summary.csv`` and ``sdr_boxplot.png``.

Example::

    from unet_sep.evaluate import plan_evaluation
    from unet_sep.evaluate.report import format_table, write_reports

    evaluation = plan_evaluation("runs/mir1k", "eval/mir1k", stems_dir="data/mir1k",
                                 split_file="data/mir1k/splits.json", split_group="singers", mir1k_mixing=True)
    result = evaluation.run()
    rows, paths = write_reports(result.scores, "eval/mir1k", result.stems, mir1k=True)
    print(format_table(rows, mir1k=True))
"""

from __future__ import annotations

import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from unet_sep.evaluate.score import (
    IRM_EXPONENT,
    MUSEVAL_MODE,
    VOICE,
    WINDOW_SECONDS,
    TrackScores,
    find_result_files,
    load_track_json,
    mix,
    mix_at_0db,
    mixture_estimates,
    oracle_irm_estimates,
    save_track_json,
    score_track,
)

__all__ = ["Evaluation", "EvaluationError", "EvaluationResult", "Method", "plan_evaluation"]

logger = logging.getLogger(__name__)

MIXTURE = "mixture"
ORACLE = "oracle-irm"
BASELINES = (MIXTURE, ORACLE)
MUSDB_SOURCES = ("vocals", "drums", "bass", "other")
# settings that must match for a stored per-track JSON to be reused
RESUME_KEYS = ("sample_rate", "channels", "mir1k_mixing", "window_seconds", "museval_mode", "n_fft", "hop_length",
               "exponent", "model_sha256")


class EvaluationError(ValueError):
    """Arguments or data that cannot be evaluated as asked; the message is one line meant for the user."""


@dataclass
class Method:
    """One column of the comparison.

    ``kind``: "model" (separated here with ``separator``), "mixture" or "oracle-irm" (baselines computed here),
    or "stored" (per-track museval JSON read from ``files``, scored elsewhere).
    """

    name: str
    kind: str
    stems: list[str]
    source: str = ""
    separator: Any = None
    files: dict[str, Path] = field(default_factory=dict)
    fingerprint: str = ""  # models: a hash of the config and weights files, so a retrained model is scored again

    @property
    def computed(self) -> bool:
        return self.kind != "stored"


@dataclass
class EvaluationResult:
    """What :meth:`Evaluation.run` did.

    ``scores``: method -> its :class:`TrackScores`, one per evaluated track (stored methods: those of the
    evaluated tracks they have). ``scored``/``resumed``: (method, track) pairs scored now / read back from
    earlier runs. ``failed``: (track, one-line reason) for tracks that could not be evaluated.
    """

    methods: list[str]
    stems: list[str]
    tracks: list[str]
    scores: dict[str, list[TrackScores]]
    scored: int = 0
    resumed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    missing: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    mir1k_mixing: bool = False
    title: str = ""


@dataclass
class Evaluation:
    """A planned evaluation (see :func:`plan_evaluation`); :meth:`run` does it."""

    data: Any  # DataConfig
    specs: list[Any]  # the split's tracks as listed by unet_sep.train.datasets
    sample_rate: int
    channels: int
    out: Path
    methods: list[Method]
    stems: list[str]
    n_fft: int
    hop_length: int
    mir1k_mixing: bool = False
    description: str = ""

    @property
    def track_names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    def settings(self, method: Method) -> dict[str, Any]:
        """What a method's per-track JSON records about how it was scored (resuming compares these)."""
        settings: dict[str, Any] = {
            "method": method.name,
            "kind": method.kind,
            "source": method.source,
            "stems": list(method.stems),
            "data": self.description,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "mir1k_mixing": self.mir1k_mixing,
            "window_seconds": WINDOW_SECONDS,
            "museval_mode": MUSEVAL_MODE,
        }
        if method.kind == ORACLE:
            settings.update(n_fft=self.n_fft, hop_length=self.hop_length, exponent=IRM_EXPONENT)
        if method.kind == "model" and method.fingerprint:
            settings["model_sha256"] = method.fingerprint
        return settings

    def result_path(self, method: Method, track: str) -> Path:
        return self.out / method.name / f"{track}.json"

    def run(self, progress: bool = False, notify: Callable[[str], None] | None = None) -> EvaluationResult:
        """Evaluate every track; ``progress`` shows a tqdm bar over tracks (stderr, with ETA).

        ``notify(message)`` receives one line per failed track (default: logged as a warning). A failing track
        is reported and skipped; KeyboardInterrupt propagates (what was scored so far is on disk).
        """
        from tqdm import tqdm

        notify = notify or (lambda message: logger.warning("%s", message))
        started = time.perf_counter()
        computed = [m for m in self.methods if m.computed]
        order = sorted(computed, key=lambda m: m.kind != MIXTURE)  # the mixture first: NSDR needs its SDR
        per_track: dict[str, dict[str, TrackScores]] = {}
        result = EvaluationResult(
            methods=[m.name for m in self.methods], stems=list(self.stems), tracks=[], scores={},
            mir1k_mixing=self.mir1k_mixing,
            title=f"{self.description} ({len(self.specs)} tracks, {self.sample_rate} Hz)",
        )
        self.out.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=len(self.specs), unit="track", desc="evaluate", file=sys.stderr, disable=not progress,
                   dynamic_ncols=True)
        try:
            for spec in self.specs:
                bar.set_postfix_str(spec.name if len(spec.name) <= 40 else spec.name[:37] + "...", refresh=True)
                try:
                    scores, scored, resumed = self._track(spec, order)
                except KeyboardInterrupt:
                    raise
                except Exception as error:  # one track's problem: report it in one line and go on
                    logger.info("%s: evaluation failed", spec.name, exc_info=True)
                    message = " ".join(str(error).split()) or type(error).__name__
                    result.failed.append((spec.name, message))
                    notify(f"error: {spec.name}: {message}")
                else:
                    per_track[spec.name] = scores
                    result.scored += scored
                    result.resumed += resumed
                    logger.info("%s: %d method(s) scored, %d read back", spec.name, scored, resumed)
                bar.update(1)
        finally:
            bar.close()

        result.tracks = [name for name in self.track_names if name in per_track]
        for method in self.methods:
            if method.computed:
                result.scores[method.name] = [per_track[t][method.name] for t in result.tracks]
            else:
                result.scores[method.name] = self._stored(method, result)
        result.seconds = time.perf_counter() - started
        return result

    # ---- one track -------------------------------------------------------------------------------------
    def _track(self, spec: Any, order: list[Method]) -> tuple[dict[str, TrackScores], int, int]:
        from unet_sep.train.datasets import load_track

        name = spec.name
        scores: dict[str, TrackScores] = {}
        todo: list[Method] = []
        for method in order:
            stored = self._reusable(method, name)
            if stored is None:
                todo.append(method)
            else:
                scores[method.name] = stored
        if not todo:
            return scores, 0, len(scores)

        track = load_track(spec, self.sample_rate, self.channels)
        references = {stem: np.asarray(track.sources[stem], dtype=np.float32) for stem in self.stems}
        if self.mir1k_mixing:
            references, gain = mix_at_0db(references, VOICE)
            logger.info("%s: accompaniment scaled by %.3f for a 0 dB mixture", name, gain)
        mixture = mix(references)
        mixture_sdr: dict[str, float] = {}
        if self.mir1k_mixing and MIXTURE in scores:
            mixture_sdr = {s: v["SDR"] for s, v in scores[MIXTURE].whole.items()}

        for method in todo:
            estimates = self._estimates(method, references, mixture)
            refs = {stem: references[stem] for stem in method.stems}
            result = score_track(
                name, refs, estimates, self.sample_rate, whole_clip=self.mir1k_mixing,
                mixture_sdr={s: mixture_sdr[s] for s in method.stems if s in mixture_sdr},
                settings=self.settings(method),
            )
            if method.kind == MIXTURE and self.mir1k_mixing:
                mixture_sdr = {s: v["SDR"] for s, v in result.whole.items()}
                result.mixture_sdr = dict(mixture_sdr)
            save_track_json(self.result_path(method, name), result)
            scores[method.name] = result
        return scores, len(todo), len(order) - len(todo)

    def _estimates(self, method: Method, references: dict[str, np.ndarray], mixture: np.ndarray) -> dict[str, np.ndarray]:
        if method.kind == MIXTURE:
            return mixture_estimates(references, mixture)
        if method.kind == ORACLE:
            return oracle_irm_estimates(references, self.n_fft, self.hop_length, IRM_EXPONENT, mixture=mixture)
        separated = method.separator.separate(mixture, self.sample_rate)
        return {stem: np.asarray(separated[stem], dtype=np.float32) for stem in method.stems}

    def _reusable(self, method: Method, track: str) -> TrackScores | None:
        """The stored scores of ``method`` on ``track`` if they exist and were made the way this run would."""
        path = self.result_path(method, track)
        if not path.is_file():
            return None
        try:
            scores = load_track_json(path, track)
        except ValueError as error:
            logger.warning("%s; scoring again", error)
            return None
        missing = [s for s in method.stems if s not in scores.frames]
        if missing:
            logger.warning("%s lacks stem(s) %s; scoring again", path, ", ".join(missing))
            return None
        wanted = self.settings(method)
        changed = [k for k in RESUME_KEYS if k in scores.settings and k in wanted and scores.settings[k] != wanted[k]]
        if changed:
            logger.warning("%s was made with other settings (%s); scoring again", path,
                           ", ".join(f"{k} {scores.settings[k]!r} -> {wanted[k]!r}" for k in changed))
            return None
        if self.mir1k_mixing and any(s not in scores.whole for s in method.stems):
            logger.warning("%s has no whole-clip scores (needed for NSDR); scoring again", path)
            return None
        return scores

    def _stored(self, method: Method, result: EvaluationResult) -> list[TrackScores]:
        scores = []
        missing = []
        for track in result.tracks:
            path = method.files.get(track)
            if path is None:
                missing.append(track)
                continue
            try:
                stored = load_track_json(path, track)
            except ValueError as error:
                logger.warning("%s", error)
                missing.append(track)
                continue
            stored.frames = {s: v for s, v in stored.frames.items() if s in self.stems}
            if not stored.frames:
                logger.warning("%s scores none of the stems %s", path, ", ".join(self.stems))
                missing.append(track)
                continue
            scores.append(stored)
        if missing:
            result.missing[method.name] = missing
        return scores


# --------------------------------------------------------------------------------------------------- planning


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _label(text: str) -> str:
    label = re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "model"
    return label[:80]


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 2
    while candidate in taken or candidate in BASELINES:
        candidate = f"{name}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def _load_separator(name: str, device: str) -> tuple[Any, str, str]:
    """(Separator, label, fingerprint) for a registered model name or a model folder."""
    import hashlib

    from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE, ConfigError
    from unet_sep.separate.separator import Separator
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.registry import ModelNotFoundError, registered_models, resolve_model, sha256_of

    try:
        folder = Path(resolve_model(name))
        separator = Separator.from_pretrained(folder, device=device)
        digest = hashlib.sha256("".join(sha256_of(folder / f) for f in (CONFIG_FILE, WEIGHTS_FILE)).encode())
    except (ModelNotFoundError, CheckpointError, ConfigError, RuntimeError, ValueError, OSError) as error:
        raise EvaluationError(f"model {name}: {' '.join(str(error).split())}") from error
    label = name if name in registered_models() else folder.resolve().name
    return separator, _label(label), digest.hexdigest()[:16]


def _is_model_folder(path: Path) -> bool:
    from unet_sep.config import CONFIG_FILE

    return path.is_dir() and (path / CONFIG_FILE).is_file()


def _compare_method(entry: str, stems: list[str], device: str, tracks: list[str], taken: set[str]) -> Method:
    path = Path(entry).expanduser()
    if path.is_dir() and not _is_model_folder(path):
        files = find_result_files(path)
        if not files:
            raise EvaluationError(f"--compare {entry}: neither a model folder nor a folder of museval per-track JSON")
        first = next(iter(files.values()))
        try:
            load_track_json(first)
        except ValueError as error:
            raise EvaluationError(f"--compare {entry}: {error}") from error
        usable = {t: files[t] for t in tracks if t in files}
        if not usable:
            example = ", ".join(sorted(files)[:3])
            raise EvaluationError(
                f"--compare {entry}: holds results for none of the {len(tracks)} tracks evaluated (it has {example}, ...)"
            )
        return Method(_unique(_label(path.resolve().name), taken), "stored", [], str(path), files=usable)
    separator, label, fingerprint = _load_separator(entry, device)
    foreign = [s for s in separator.stems if s not in stems]
    if foreign:
        raise EvaluationError(
            f"--compare {entry}: its stem(s) {', '.join(foreign)} are not among the evaluated stems ({', '.join(stems)})"
        )
    return Method(_unique(label, taken), "model", list(separator.stems), entry, separator=separator,
                  fingerprint=fingerprint)


def _probe(spec: Any) -> tuple[int, int]:
    """Sample rate and channel count of the first file of a track: the data set's own format."""
    from unet_sep.audio.decode import AudioDecodeError, open_audio

    part = next(iter(spec.targets.values()))[0]
    try:
        info = open_audio(part.path).info
    except AudioDecodeError as error:
        raise EvaluationError(str(error)) from error  # names the file
    return int(info.sample_rate), int(info.channels)


def plan_evaluation(
    model: str,
    out: str | Path,
    *,
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
    device: str = "auto",
) -> Evaluation:
    """Check the arguments, load the models and list the tracks; raise :class:`EvaluationError` on any problem.

    Args:
        model: a registered model name or a model folder; its stems are the evaluated targets.
        out: results folder (``<out>/<method>/<track>.json``, ``summary.csv``, ``sdr_boxplot.png``).
        musdb_root, subset, is_wav: a MUSDB18(-HQ) root, its split ("test", "train", "valid", "train+valid";
            default "test") and whether it is MUSDB18-HQ (WAV). "accompaniment" is the sum of the other sources.
        stems_dir, split_file, split_group, split: a folder ``<track>/<stem>.<ext>`` with an optional JSON split
            file (and group, e.g. MIR-1K's ``splits.json`` group "singers") and the split to use (default "test").
        compare: more models (names or folders) and/or folders of another method's museval per-track JSON.
        max_tracks: the first N tracks only.
        mir1k_mixing: mix at 0 dB voice-to-accompaniment (MIR-1K's protocol) and add NSDR/GNSDR/GSIR/GSAR.
        device: for the models.
    """
    from unet_sep.train import datasets

    if (musdb_root is None) == (stems_dir is None):
        raise EvaluationError("give exactly one data set: --musdb-root ROOT or --stems-dir FOLDER")
    if musdb_root is not None and (split_file is not None or split_group is not None or split is not None):
        raise EvaluationError("--split-file, --split-group and --split apply to --stems-dir; MUSDB uses --subset")
    if stems_dir is not None and (subset is not None or is_wav):
        raise EvaluationError("--subset and --is-wav apply to --musdb-root; a stems folder uses --split")
    if split_file is None and (split is not None or split_group is not None):
        raise EvaluationError("--split and --split-group need --split-file (without one, every track is scored)")
    if max_tracks is not None and (isinstance(max_tracks, bool) or int(max_tracks) < 1):
        raise EvaluationError(f"--tracks must be a positive number, got {max_tracks}")
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise EvaluationError(f"--out {out} exists and is not a folder")
    root = Path(musdb_root if musdb_root is not None else stems_dir).expanduser()
    if not root.is_dir():
        raise EvaluationError(f"{'--musdb-root' if musdb_root is not None else '--stems-dir'} {root}: no such folder")
    if split_file is not None and not Path(split_file).expanduser().is_file() and not (root / split_file).is_file():
        raise EvaluationError(f"--split-file {split_file}: no such file")

    separator, label, fingerprint = _load_separator(model, device)
    stems = list(separator.stems)
    if mir1k_mixing and (VOICE not in stems or len(stems) < 2):
        raise EvaluationError(f"--mir1k-mixing needs a model with a {VOICE!r} stem and an accompaniment; "
                              f"this one has {', '.join(stems)}")

    if musdb_root is not None:
        split_name = subset or "test"
        if split_name not in datasets.MUSDB_SPLITS:
            raise EvaluationError(f"--subset must be one of {', '.join(datasets.MUSDB_SPLITS)}, got {split_name!r}")
        unknown = [s for s in stems if s not in (*MUSDB_SOURCES, datasets.ACCOMPANIMENT)]
        if unknown:
            raise EvaluationError(f"model stem(s) {', '.join(unknown)} are not MUSDB stems "
                                  f"({', '.join((*MUSDB_SOURCES, datasets.ACCOMPANIMENT))})")
        if datasets.ACCOMPANIMENT not in stems and not all(s in stems for s in MUSDB_SOURCES):
            raise EvaluationError(f"the model's stems ({', '.join(stems)}) do not add up to the MUSDB mixture "
                                  "(it needs all four sources or an accompaniment)")
        config = datasets.DataConfig(kind="musdb", root=str(root), is_wav=is_wav, targets=stems,
                                     test_split=split_name, max_tracks=max_tracks)
        description = f"MUSDB18{'-HQ' if is_wav else ''} {split_name}"
    else:
        split_name = split or "test"
        config = datasets.DataConfig(kind="folder", root=str(root), targets=stems,
                                     split_file=None if split_file is None else str(split_file),
                                     split_group=split_group, test_split=split_name, max_tracks=max_tracks)
        description = f"{root.name} {split_group + '/' if split_group else ''}{split_name}"
    quiet = _DropRecords("data.split_file is not set")  # scoring every track of a folder is intended here
    datasets.logger.addFilter(quiet)
    try:
        specs = datasets.list_tracks(config, "test")
    except Exception as error:  # ConfigError, DatasetError, OSError, or whatever musdb raises on a bad tree
        raise EvaluationError(" ".join(str(error).split()) or type(error).__name__) from error
    finally:
        datasets.logger.removeFilter(quiet)
    rate, channels = _probe(specs[0])

    taken: set[str] = set()
    methods = [Method(_unique(label, taken), "model", stems, model, separator=separator, fingerprint=fingerprint)]
    names = [spec.name for spec in specs]
    for entry in compare:
        methods.append(_compare_method(entry, stems, device, names, taken))
    methods.append(Method(ORACLE, ORACLE, stems, f"power IRM, n_fft {separator.config.stft.n_fft}, "
                                                 f"hop {separator.config.stft.hop_length}"))
    methods.append(Method(MIXTURE, MIXTURE, stems, "the mixture as every estimate"))
    if mir1k_mixing:
        description += ", 0 dB mixing"
    logger.info("evaluating %s on %d track(s) of %s at %d Hz, %d channel(s)", ", ".join(m.name for m in methods),
                len(specs), description, rate, channels)
    return Evaluation(
        data=config, specs=specs, sample_rate=rate, channels=channels, out=out, methods=methods, stems=stems,
        n_fft=int(separator.config.stft.n_fft), hop_length=int(separator.config.stft.hop_length),
        mir1k_mixing=mir1k_mixing, description=description,
    )
