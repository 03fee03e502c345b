"""Validation during training: the separation score of the model on the validation tracks, and the run folder's
best model (``config.json``, ``model.safetensors`` and ``best.json``: its step and scores)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from unet_sep.atomic import write_text_atomic
from unet_sep.data.load import load_tracks
from unet_sep.dsp.measures import snr_db
from unet_sep.errors import ConfigError
from unet_sep.model.stems import StemsNet
from unet_sep.separate.separator import Separator
from unet_sep.separate.settings import SeparationSettings
from unet_sep.train.metrics import MetricsWriter
from unet_sep.train.recipe import Recipe
from unet_sep.weights.checkpoint import save_model

logger = logging.getLogger(__name__)

VALIDATION_EPS = 1e-9  # keeps the SDR of a silent validation stem finite
BEST_FILE = "best.json"


def validation_scores(separator: Separator, tracks: list) -> dict[str, float]:
    """Mean SDR per stem over ``tracks`` for the separator and for the mixture used as the estimate."""
    per_stem: dict[str, list[float]] = {s: [] for s in separator.stems}
    baseline: dict[str, list[float]] = {s: [] for s in separator.stems}
    for track in tracks:
        mixture = track.mixture
        estimates = separator.separate(mixture, separator.sample_rate)  # numpy in, numpy out
        for stem in separator.stems:
            estimate = cast(np.ndarray, estimates[stem])
            per_stem[stem].append(snr_db(track.sources[stem], estimate, eps=VALIDATION_EPS))
            baseline[stem].append(snr_db(track.sources[stem], mixture, eps=VALIDATION_EPS))
    scores = {f"sdr_{s}": float(np.mean(v)) for s, v in per_stem.items()}
    scores.update({f"mixture_sdr_{s}": float(np.mean(v)) for s, v in baseline.items()})
    return scores


def load_validation_tracks(recipe: Recipe) -> list:
    """The validation tracks of ``recipe`` (at most ``train.valid_tracks``); none, with a message, when that is 0
    or the data set has none."""
    model = recipe.model
    if recipe.train.valid_tracks == 0:
        logger.info("train.valid_tracks is 0: no validation; the last model (or the weight average) is kept")
        return []
    try:
        tracks = load_tracks(recipe.data, "valid", model.sample_rate, model.n_channels)
    except (ValueError, ConfigError) as error:
        logger.warning("no validation data (%s): the last model is kept instead of the best", error)
        return []
    if recipe.train.valid_tracks is not None:
        tracks = tracks[: recipe.train.valid_tracks]
    return tracks


class Validator:
    """Scores a model on the validation ``tracks`` and keeps the best one in the run folder ``out``.

    The score is the mean SDR over stems and tracks. ``loop_state`` (saved with every checkpoint) holds the best
    score and its step, the validations since the last improvement (``train.patience`` of them stop the run)
    and the history of all scores.
    """

    def __init__(self, out: Path, recipe: Recipe, tracks: list, device: torch.device, channels_last: bool) -> None:
        self.out, self.model_config, self.tracks = out, recipe.model, tracks
        self.patience = recipe.train.patience
        # Separated on the training's device, in its memory layout.
        self.settings = SeparationSettings(device=device, channels_last=channels_last)

    @torch.no_grad()
    def validate(self, step: int, net: StemsNet, loop_state: dict[str, Any], metrics: MetricsWriter) -> bool:
        """Score ``net`` after ``step`` and keep it if it is the best so far; True means stop early."""
        if not self.tracks:
            return False
        net.eval()
        separator = Separator(net, self.model_config, settings=self.settings)
        scores = validation_scores(separator, self.tracks)
        score = float(np.mean([scores[f"sdr_{s}"] for s in self.model_config.stems]))
        scores["score"] = score
        entry = {"step": step, **scores}
        if loop_state.get("average_count"):
            entry["averaged_weights"] = loop_state["average_count"]
        loop_state["history"].append(entry)
        metrics.log_valid(step, scores)
        return self._keep_if_best(step, net, entry, loop_state)

    def _keep_if_best(self, step: int, net: StemsNet, entry: dict[str, Any], loop_state: dict[str, Any]) -> bool:
        """Save ``net`` as the run's model when its score is the best so far; True when patience has run out."""
        score, best = entry["score"], loop_state["best_score"]
        if best is None or score > best:
            loop_state.update(best_score=score, best_step=step, bad_validations=0)
            save_model(self.out, net, self.model_config)
            write_text_atomic(self.out / BEST_FILE, json.dumps(entry, indent=2) + "\n")
            logger.info("step %d: validation SDR %.2f dB (best so far, kept)", step, score)
            return False
        loop_state["bad_validations"] += 1
        logger.info("step %d: validation SDR %.2f dB (best %.2f dB at step %d)", step, score, best,
                    loop_state["best_step"])
        return bool(self.patience and loop_state["bad_validations"] >= self.patience)
