"""What reduced precision (bf16 / fp16 autocast of the U-Nets) costs in separation quality, against fp32.

    python benchmarks/precision.py --device cuda            # on a GPU: the figures that matter
    python benchmarks/precision.py --device cpu --clips 10  # CPU autocast (bf16, fp16): slow, indicative

Two checks, each printed as a table:
1. MIR-1K (../shared/data/mir1k, singers-split test clips, 0 dB mixtures as MIR-1K papers mix them) with the
   bundled model: museval BSSEval v4 SDR over the whole clip against the true stems, fp32 and reduced, and
   the difference (target: less than 0.05 dB lost), per stem, mean over clips.
2. ../shared/data/spleeter-ref: the Spleeter-format checkpoints separate the reference input in
   Spleeter-exact mode; the SNR of each reduced-precision output against the fp32 output (fp32 itself
   matches Spleeter's outputs at ~100 dB, tests/test_spleeter.py), and museval SDR of both against
   Spleeter's own outputs used as references.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.evaluate.score import bss_eval  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.registry import default_model_name  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unet_sep.dsp.measures import snr_db  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
K = TypeVar("K")  # what names a separator in mir1k_sdrs


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precisions", default="bf16,fp16")
    p.add_argument("--clips", type=int, default=40, help="MIR-1K test clips (evenly spread; 0 for all 181)")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def whole_sdr(reference: np.ndarray, estimate: np.ndarray) -> float:
    """museval v4 SDR over the whole signal (one window), through the evaluation code's own ``bss_eval``."""
    length = np.atleast_2d(reference).shape[-1]
    return float(bss_eval({"s": reference}, {"s": estimate}, win=length, hop=length)["s"]["SDR"][0])


def mir1k_test_clips(count: int) -> list[str]:
    """``count`` MIR-1K singers-split test clips, evenly spread (0: all 181); empty, with a note, without MIR-1K."""
    root = SHARED / "mir1k"
    if not (root / "splits.json").is_file():
        print(f"MIR-1K not found at {root}: skipped")
        return []
    clips = json.loads((root / "splits.json").read_text())["singers"]["test"]
    return clips[:: max(1, len(clips) // count)][:count] if count else clips


def mir1k_stems(clip: str) -> tuple[np.ndarray, np.ndarray, int]:
    """A MIR-1K clip's vocals and accompaniment as recorded (mono float32), and their rate."""
    import soundfile as sf

    vocals, rate = sf.read(SHARED / "mir1k" / clip / "vocals.ogg", dtype="float32")
    accompaniment, _ = sf.read(SHARED / "mir1k" / clip / "accompaniment.ogg", dtype="float32")
    return vocals, accompaniment, rate


def mir1k_mixture(clip: str) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """A MIR-1K clip mixed at 0 dB, as MIR-1K papers mix it: the mixture, the true stems and the rate."""
    vocals, accompaniment, rate = mir1k_stems(clip)
    accompaniment = accompaniment * np.sqrt(np.mean(vocals**2) / max(np.mean(accompaniment**2), 1e-12))
    return vocals + accompaniment, {"vocals": vocals, "accompaniment": accompaniment}, rate


def mir1k_sdrs(separators: dict[K, Separator], clips: list[str],
               spans: Callable[[int], dict[str, slice]] | None = None) -> dict[K, dict[str, list[float]]]:
    """Whole-clip SDR of every separator on every clip (mixed by :func:`mir1k_mixture`): ``{key: {stem: [dB]}}``;
    with ``spans`` (a clip's length in samples -> named ranges of it), also the SDR of each range, under
    ``"{stem} {name}"``."""
    sdr: dict[K, dict[str, list[float]]] = {key: {} for key in separators}
    for clip in clips:
        mixture, references, rate = mir1k_mixture(clip)
        ranges = spans(mixture.shape[-1]) if spans else {}
        for key, separator in separators.items():
            stems = separator.separate(mixture, rate)
            for stem in separator.stems:
                sdr[key].setdefault(stem, []).append(whole_sdr(references[stem], stems[stem]))
                for name, span in ranges.items():
                    score = whole_sdr(references[stem][span], stems[stem][span])
                    sdr[key].setdefault(f"{stem} {name}", []).append(score)
    return sdr


def mir1k(args: argparse.Namespace, precisions: list[str]) -> None:
    clips = mir1k_test_clips(args.clips)
    if not clips:
        return
    name = default_model_name()
    separators = {p: Separator.from_pretrained(name, device=args.device, precision=p) for p in ["fp32"] + precisions}
    sdr = mir1k_sdrs(separators, clips)
    print(f"\nMIR-1K singers-split test, {len(clips)} clips, model {name}, device {args.device}: "
          "mean whole-clip SDR (dB)")
    print(f"{'stem':<16}{'fp32':>8}" + "".join(f"{p:>8}{'loss':>8}" for p in precisions))
    for stem in separators["fp32"].stems:
        base = float(np.mean(sdr["fp32"][stem]))
        line = f"{stem:<16}{base:>8.3f}"
        for precision in precisions:
            value = float(np.mean(sdr[precision][stem]))
            line += f"{value:>8.3f}{base - value:>8.3f}"
        print(line)


def spleeter_fixtures(models: tuple[str, ...] = ("2stems", "4stems", "5stems"),
                      ) -> Iterator[tuple[str, ModelConfig, StemsNet, np.ndarray, dict[str, np.ndarray]]]:
    """The reference checkpoints of ../shared/data/spleeter-ref among ``models`` that are there (of 2stems, 4stems,
    5stems and 2stems-16kHz, the 2stems weights with a 16 kHz band): name, config and network, their input
    ``[channels, samples]`` and Spleeter's output ``{stem: [channels, samples]}``."""
    root = SHARED / "spleeter-ref"
    if not (root / "manifest.json").is_file():
        return
    manifest = json.loads((root / "manifest.json").read_text())
    full = np.load(root / "input.npy")
    for model in models:
        info = manifest["models"].get(model, {})
        folder = root / info.get("checkpoint_dir", model)
        if not (folder / "checkpoint").is_file():
            continue
        config, net = spleeter.load_spleeter(folder, root / info["config"], name=f"spleeter:{model}")
        start, stop = manifest["models"][model]["input_slice"]
        audio = np.ascontiguousarray(full[start:stop].T, dtype=np.float32)
        yield model, config, net, audio, {stem: np.load(folder / f"out_{stem}.npy").T for stem in config.stems}


def spleeter_ref(args: argparse.Namespace, precisions: list[str]) -> None:
    root = SHARED / "spleeter-ref"
    if not (root / "manifest.json").is_file():
        print(f"Spleeter fixtures not found at {root}: skipped")
        return
    print(f"\n../shared/data/spleeter-ref, Spleeter-exact mode, device {args.device}")
    print(f"{'model':<10}{'stem':<14}{'SDR fp32':>10}"
          + "".join(f"{'SDR ' + p:>10}{'SNR vs fp32':>13}" for p in precisions))
    for model, config, net, audio, references in spleeter_fixtures():
        outputs = {}
        for precision in ["fp32"] + precisions:
            separator = Separator(net, config, device=args.device, segmentation="spleeter", mask_extension="zeros",
                                  precision=precision)
            outputs[precision] = separator.separate(audio, 44100)
        for stem in config.stems:
            reference = references[stem]
            line = f"{model:<10}{stem:<14}{whole_sdr(reference, outputs['fp32'][stem]):>10.2f}"
            for precision in precisions:
                line += f"{whole_sdr(reference, outputs[precision][stem]):>10.2f}"
                line += f"{snr_db(outputs['fp32'][stem], outputs[precision][stem]):>13.1f}"
            print(line)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = [p for p in args.precisions.split(",") if p]
    mir1k(args, precisions)
    spleeter_ref(args, precisions)


if __name__ == "__main__":
    main()
