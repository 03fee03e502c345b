"""Turn a finished MIR-1K run into the bundled default model: choose the ratio-mask exponent on the validation
singers, then write float16 weights and the config into the package.

    python recipes/mir1k/export_bundled.py --run runs/mir1k-singers-ft [--exponents 1,1.5,2]
                                           [--dest unet_sep/pretrained/mir1k-vocals-accompaniment]
                                           [--weights runs/NAME/checkpoints/step-N/average.safetensors]
                                           [--provenance '{"steps": 24000, ...}']

A run whose training split holds the validation singers (``data.train_split`` "train+valid", the last stage) cannot
choose: give it the exponent chosen for the stage before (``--exponents 1.5``); its validation scores are then
printed for reference only.

For every exponent it separates the validation clips of the ``singers`` split, mixed at 0 dB as MIR-1K papers
do, and prints both stems' GNSDR (whole-clip BSSEval v4 through museval, aggregated by the evaluator's own
``global_scores``).
The exponent with the best mean of the two is written into the exported config; so are ``mask_extension:
capped_average`` (benchmarks/mask_extension.py) and the run's provenance merged with ``--provenance``.
The model card (MODEL_CARD.md) in ``--dest``
is left alone: update it by hand with the test-singer figures of ``unet-sep evaluate``.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from unet_sep import Separator
from unet_sep.audio import read_audio
from unet_sep.data.load import list_tracks
from unet_sep.data.tracks import mix
from unet_sep.evaluate.score import TrackScores, bss_eval, global_scores, mix_at_0db, mixture_estimates
from unet_sep.train.recipe import load_recipe
from unet_sep.weights.checkpoint import load_model, save_model

ROOT = Path(__file__).resolve().parents[2]
MIR1K = ROOT.parent / "shared" / "data" / "mir1k"
DEST = ROOT / "unet_sep" / "pretrained" / "mir1k-vocals-accompaniment"
STEMS = ("vocals", "accompaniment")


def validation_names(root: Path) -> list[str]:
    """The clip names of the ``singers`` split's validation singers."""
    return json.loads((root / "splits.json").read_text())["singers"]["valid"]


def trained_on(run: Path, names: list[str]) -> bool:
    """Whether the run's training split (as its saved recipe resolves it) holds any of ``names``."""
    if not (run / "recipe.json").is_file():
        return False
    trained = {spec.name for spec in list_tracks(load_recipe(run / "recipe.json").data, "train")}
    return not trained.isdisjoint(names)


def validation_clips(root: Path) -> list[dict[str, np.ndarray]]:
    """The ``singers`` split's validation clips at 16 kHz, voice and accompaniment mixed at 0 dB."""
    clips = []
    for name in validation_names(root):
        sources = {}
        for stem in STEMS:
            audio, rate = read_audio(next((root / name).glob(f"{stem}.*")))
            if rate != 16000:
                raise SystemExit(f"{root / name}: expected 16 kHz, got {rate}")
            sources[stem] = audio.mean(axis=0, keepdims=True)
        clips.append(mix_at_0db(sources)[0])
    return clips


def gnsdr(separator: Separator, clips: list[dict[str, np.ndarray]]) -> dict[str, float]:
    """Each stem's GNSDR over ``clips``, aggregated as ``unet-sep evaluate --mir1k-mixing`` does."""
    tracks = []
    for number, sources in enumerate(clips):
        mixture = mix(sources)
        length = mixture.shape[-1]
        estimates = separator.separate(mixture, 16000)
        whole = bss_eval(sources, {stem: estimates[stem] for stem in STEMS}, win=length, hop=length)
        baseline = bss_eval(sources, mixture_estimates(sources, mixture), win=length, hop=length)
        tracks.append(TrackScores(
            track=str(number), frames={stem: {} for stem in STEMS}, n_samples=length,
            whole={stem: {metric: float(values[0]) for metric, values in whole[stem].items()} for stem in STEMS},
            mixture_sdr={stem: float(baseline[stem]["SDR"][0]) for stem in STEMS},
        ))
    scores = global_scores(tracks)
    return {stem: scores[stem]["GNSDR"] for stem in STEMS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, type=Path, help="the run folder (its best model is exported)")
    parser.add_argument("--exponents", default="1,1.5,2", help="ratio-mask exponents to try on validation")
    parser.add_argument("--dest", type=Path, default=DEST)
    parser.add_argument("--data", type=Path, default=MIR1K)
    parser.add_argument("--provenance", default="{}", help="JSON merged into the config's provenance")
    parser.add_argument("--weights", type=Path, default=None,
                        help="export these weights instead of the run's best model, e.g. a checkpoint's weight "
                             "average: runs/NAME/checkpoints/step-N/average.safetensors")
    args = parser.parse_args()

    config, net = load_model(args.run)
    if args.weights is not None:
        net.load_state_dict(load_file(str(args.weights)))
    exponents = [float(x) for x in args.exponents.split(",")]
    trained_on_valid = trained_on(args.run, validation_names(args.data))
    if trained_on_valid and len(exponents) != 1:
        raise SystemExit(f"{args.run} trained on the validation singers too: they cannot choose an exponent; "
                         "give the one chosen before (--exponents 1.5)")
    clips = validation_clips(args.data)
    print(f"{len(clips)} validation clips from {args.data}" + (" (seen in training: scores for reference only)"
                                                             if trained_on_valid else ""))
    results = {}
    for exponent in exponents:
        trial = copy.deepcopy(config)
        trial.separation_exponent = exponent
        trial.mask_extension = "capped_average"
        scores = gnsdr(Separator(net, trial, device="cpu"), clips)
        results[exponent] = scores
        print(f"exponent {exponent:g}: GNSDR vocals {scores['vocals']:.3f} dB, "
              f"accompaniment {scores['accompaniment']:.3f} dB", flush=True)
    best = max(results, key=lambda e: sum(results[e].values()))
    print(f"chosen exponent: {best:g}")

    config.mask_extension = "capped_average"
    config.separation_exponent = best
    previous = json.loads((args.dest / "config.json").read_text()) if (args.dest / "config.json").is_file() else {}
    if previous.get("name"):
        config.name = previous["name"]
    provenance = dict(previous.get("provenance", {}))
    provenance.update(json.loads(args.provenance))
    tried = ", ".join(f"{e:g}: {results[e]['vocals']:.2f}" for e in results)
    how = ("given to recipes/mir1k/export_bundled.py: chosen on the validation singers for the stage before, since "
           "this run trained on them too (vocals GNSDR on them, seen in training: " if trained_on_valid else
           "chosen on the validation singers by recipes/mir1k/export_bundled.py (vocals GNSDR per exponent: ")
    provenance["separation_exponent_note"] = f"{best:g}, {how}{tried})"
    config.provenance = provenance
    save_model(args.dest, net, config, dtype=torch.float16)
    size = (args.dest / "model.safetensors").stat().st_size
    print(f"wrote {args.dest} ({size / 1e6:.1f} MB of float16 weights)")


if __name__ == "__main__":
    main()
