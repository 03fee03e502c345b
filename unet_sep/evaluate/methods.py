"""The methods an evaluation compares: the model, ``--compare`` entries (models or stored museval results) and
the two baselines, each as a :class:`~unet_sep.evaluate.evaluation.Method` with a unique, file-safe name."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE
from unet_sep.errors import ConfigError, one_line
from unet_sep.evaluate.evaluation import BASELINES, MIXTURE, ORACLE, EvaluationError, Method
from unet_sep.evaluate.score import find_result_files, load_track_json

if TYPE_CHECKING:
    from unet_sep.separate.settings import SeparationSettings

__all__ = ["baseline_methods", "compare_method", "is_model_folder", "load_separator"]

MAX_LABEL = 80


def label(text: str) -> str:
    """``text`` as a method name that is also a file-safe folder name (at most 80 characters)."""
    return (re.sub(r"[^A-Za-z0-9._+-]+", "_", text).strip("._") or "model")[:MAX_LABEL]


def unique(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``, ... : not yet in ``taken`` (then added to it) nor a baseline's name."""
    candidate, n = name, 2
    while candidate in taken or candidate in BASELINES:
        candidate = f"{name}-{n}"
        n += 1
    taken.add(candidate)
    return candidate


def load_separator(name: str, settings: SeparationSettings) -> tuple[Any, str, str]:
    """(Separator, label, fingerprint) for a registered model name or a model folder separating with ``settings``;
    the fingerprint hashes its config and weights files, so a retrained model under the same name is scored again.

    Wiener iterations (``settings.wiener_iterations``; None: the model's own) other than the model's own are named
    in the label (``<model>-wiener<N>``) and the fingerprint, so their results do not mix with the model's."""
    from unet_sep.separate.separator import Separator
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.download import sha256_of
    from unet_sep.weights.entries import ModelNotFoundError
    from unet_sep.weights.hub import is_hub_ref
    from unet_sep.weights.registry import registered_models, resolve_model
    from unet_sep.weights.verified import remembered_digest

    try:
        folder = Path(resolve_model(name))
        separator = Separator.from_pretrained(folder, settings=settings)
        # the weights' digest was taken (and remembered per file identity) when they were verified at load
        files = sha256_of(folder / CONFIG_FILE) + remembered_digest(folder / WEIGHTS_FILE, "sha256", sha256_of)
    except (ModelNotFoundError, CheckpointError, ConfigError, RuntimeError, ValueError, OSError) as error:
        raise EvaluationError(f"model {name}: {one_line(error)}") from error
    if is_hub_ref(name):
        name_shown = name.removeprefix("hf://")  # ORG/REPO[@REVISION], not the cache's commit-hash folder
    else:
        name_shown = name if name in registered_models() else folder.resolve().name
    wiener_iterations = settings.wiener_iterations
    if wiener_iterations is not None and wiener_iterations != separator.config.wiener_iterations:
        name_shown += f"-wiener{wiener_iterations}"
        files += f"wiener{wiener_iterations}"
    return separator, label(name_shown), hashlib.sha256(files.encode()).hexdigest()[:16]


def is_model_folder(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def compare_method(entry: str, stems: list[str], settings: SeparationSettings, tracks: list[str],
                   taken: set[str]) -> Method:
    """A ``--compare`` entry: another model (name or folder), separating with ``settings`` as
    :func:`load_separator`'s, or a folder of another method's museval per-track JSON (read for the ``tracks`` it
    has)."""
    path = Path(entry).expanduser()
    if path.is_dir() and not is_model_folder(path):
        return _stored_method(entry, path, tracks, taken)
    separator, name, fingerprint = load_separator(entry, settings)
    foreign = [s for s in separator.stems if s not in stems]
    if foreign:
        raise EvaluationError(
            f"--compare {entry}: its stem(s) {', '.join(foreign)} are not among the evaluated stems "
            f"({', '.join(stems)})"
        )
    return Method(unique(name, taken), "model", list(separator.stems), entry, separator=separator,
                  fingerprint=fingerprint)


def _stored_method(entry: str, path: Path, tracks: list[str], taken: set[str]) -> Method:
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
    return Method(unique(label(path.resolve().name), taken), "stored", [], str(path), files=usable)


def baseline_methods(stems: list[str], n_fft: int, hop_length: int) -> list[Method]:
    """The oracle ratio mask at the model's STFT, then the mixture as every estimate."""
    return [
        Method(ORACLE, ORACLE, stems, f"power IRM, n_fft {n_fft}, hop {hop_length}"),
        Method(MIXTURE, MIXTURE, stems, "the mixture as every estimate"),
    ]
