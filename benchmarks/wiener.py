"""What the multichannel Wiener filter (``wiener_iterations``) gives and costs: tables for docs/how-it-works.md
(what it gives) and docs/speed-and-memory.md (what it costs).

    python benchmarks/wiener.py                    # all four tables, about 10 minutes on 2 cores
    python benchmarks/wiener.py --tables cost      # one of: mir1k, window, spleeter, cost

1. ``mir1k``: the bundled model on MIR-1K singers-split test clips (0 dB mixtures, as MIR-1K papers mix them),
   museval BSSEval v4 SDR over each whole clip against the true stems, for 0 / 1 / 2 iterations, mean and median.
2. ``window``: the bounded statistics window of the default mode against whole-track statistics, on long inputs
   (MIR-1K test clips strung together with the bundled model; the Spleeter 2stems fixture, stereo, looped): SNR of
   the windowed output against the whole-track one, and for MIR-1K the SDR of both.
3. ``spleeter``: the Spleeter-format fixtures (../shared/data/spleeter-ref, random weights: their SDR means
   nothing, so this is about agreement) in Spleeter-exact mode, SNR against Spleeter 2.4.2's own outputs with
   ``MWF=False`` and, when made (tests/tools/make_spleeter_mwf.py), ``MWF=True``.
4. ``cost``: seconds to separate a 30 s song with the model in memory, for 0 / 1 / 2 iterations: full-size Spleeter
   2stems and 4stems networks (random weights; stereo 44.1 kHz) in the default and Spleeter-exact modes, and the
   bundled model (mono 16 kHz). Minimum of interleaved repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402
from precision import SHARED, mir1k_mixture, mir1k_sdrs, mir1k_test_clips, whole_sdr  # noqa: E402
from spleeter_speed import bench_input  # noqa: E402

from unet_sep import Separator  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.registry import default_model_name  # noqa: E402

ITERATIONS = (0, 1, 2)
MWF_REFERENCES = Path(__file__).resolve().parents[1] / "tests" / "data" / "spleeter-mwf"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="mir1k,window,spleeter,cost")
    p.add_argument("--clips", type=int, default=40, help="MIR-1K test clips (evenly spread; 0 for all 181)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (cost table)")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def mir1k_table(clips: list[str]) -> None:
    name = default_model_name()
    separators = {n: Separator.from_pretrained(name, device="cpu", wiener_iterations=n) for n in ITERATIONS}
    sdr = mir1k_sdrs(separators, clips)
    print(f"\nMIR-1K singers-split test, {len(clips)} clips, model {name}: whole-clip SDR (dB), mean / median")
    print(f"{'stem':<15}" + "".join(f"{f'{n} iterations':>22}" for n in ITERATIONS))
    for stem in ("vocals", "accompaniment"):
        cells = [f"{np.mean(sdr[n][stem]):>11.3f} / {np.median(sdr[n][stem]):>6.3f}" for n in ITERATIONS]
        print(f"{stem:<15}" + "".join(f"{cell:>22}" for cell in cells))


def window_table(clips: list[str]) -> None:
    print("\nStatistics window of the default mode (1 iteration) against the whole track")
    print(f"{'input':<44}{'window':>8}{'SNR vs whole (dB)':>19}{'vocals SDR':>12}{'accomp. SDR':>12}")
    parts = [mir1k_mixture(clip) for clip in clips]
    mixture = np.concatenate([p[0] for p in parts])
    references = {stem: np.concatenate([p[1][stem] for p in parts]) for stem in ("vocals", "accompaniment")}
    rate = parts[0][2]
    label = f"MIR-1K, {len(clips)} test clips, {len(mixture) / rate:.0f} s"
    name = default_model_name()
    whole = Separator.from_pretrained(name, device="cpu", wiener_iterations=1, wiener_window=0).separate(mixture, rate)
    for window in (128, 256, 512, 1024, 2048, 0):
        stems = Separator.from_pretrained(name, device="cpu", wiener_iterations=1,
                                          wiener_window=window).separate(mixture, rate)
        agreement = f"{min(snr_db(whole[s], stems[s]) for s in stems):.1f}" if window else "(reference)"
        scores = [whole_sdr(references[s], stems[s]) for s in ("vocals", "accompaniment")]
        print(f"{label:<44}{window or 'whole':>8}{agreement:>19}{scores[0]:>12.3f}{scores[1]:>12.3f}")
    ref = SHARED / "spleeter-ref"
    if not (ref / "input.npy").is_file():
        return
    config, net = spleeter.load_spleeter(ref / "2stems", ref / "2stems" / "config.json", name="spleeter:2stems")
    audio = np.tile(np.load(ref / "input.npy").T, (1, 5))
    whole = Separator(net, config, device="cpu", wiener_iterations=1, wiener_window=0).separate(audio, 44100)
    label = f"Spleeter 2stems fixture, stereo, {audio.shape[-1] / 44100:.0f} s"
    for window in (128, 256, 512, 1024, 2048):
        stems = Separator(net, config, device="cpu", wiener_iterations=1, wiener_window=window).separate(audio, 44100)
        agreement = min(snr_db(whole[s], stems[s]) for s in stems)
        print(f"{label:<44}{window:>8}{agreement:>19.1f}{'-':>12}{'-':>12}")


def spleeter_table() -> None:
    ref = SHARED / "spleeter-ref"
    if not (ref / "manifest.json").is_file():
        print(f"\n{ref} not found: Spleeter table skipped")
        return
    manifest = json.loads((ref / "manifest.json").read_text())
    have_mwf = (MWF_REFERENCES / "manifest.json").is_file()
    print("\nSpleeter fixtures, Spleeter-exact mode: least SNR over stems (dB) against Spleeter 2.4.2's outputs")
    if not have_mwf:
        print(f"(no MWF=True outputs at {MWF_REFERENCES}: make them with tests/tools/make_spleeter_mwf.py)")
    print(f"{'model':<14}{'iterations':>11}{'vs MWF=False':>14}{'vs MWF=True':>13}")
    for model, info in manifest["models"].items():
        config, net = spleeter.load_spleeter(ref / info["checkpoint_dir"], ref / info["config"],
                                             name=f"spleeter:{model}")
        start, stop = info["input_slice"]
        mixture = np.load(ref / "input.npy")[start:stop].T
        for n in ITERATIONS:
            stems = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros",
                              wiener_iterations=n).separate(mixture, 44100)
            plain = min(snr_db(np.load(ref / model / f"out_{s}.npy").T, stems[s]) for s in stems)
            mwf = min(snr_db(np.load(MWF_REFERENCES / model / f"out_{s}.npy").T, stems[s]) for s in stems) \
                if have_mwf else float("nan")
            print(f"{model:<14}{n:>11}{plain:>14.1f}{mwf:>13.1f}")


def cost_table(repeats: int) -> None:
    print("\nSeconds to separate a 30 s song, model in memory (min of interleaved repeats)")
    print(f"{'model':<34}{'mode':<16}" + "".join(f"{f'{n} it.':>9}" for n in ITERATIONS) + f"{'+1 it. s':>10}")
    rows = []
    stereo = bench_input(30.0)
    for name in ("2stems", "4stems"):
        config = spleeter.spleeter_model_config(f"spleeter:{name}")
        torch.manual_seed(0)
        net = StemsNet(config).eval()
        for mode, options in (("default", {}), ("spleeter-exact", {"segmentation": "spleeter",
                                                                   "mask_extension": "zeros"})):
            separators = [Separator(net, config, device="cpu", wiener_iterations=n, **options) for n in ITERATIONS]
            rows.append((f"spleeter:{name} (full size)", mode, separators, stereo.T, 44100))
    bundled = default_model_name()
    mono = bench_input(30.0 * 16000 / 44100)[:, 0]  # 30 s of the same signal, read as 16 kHz
    rows.append((f"{bundled} (mono 16 kHz)", "default",
                 [Separator.from_pretrained(bundled, device="cpu", wiener_iterations=n) for n in ITERATIONS],
                 np.ascontiguousarray(mono), 16000))
    for label, mode, separators, audio, rate in rows:
        times: list[list[float]] = [[] for _ in separators]
        for separator in separators:
            separator.separate(audio, rate)  # warm-up
        for _ in range(repeats):
            for index, separator in enumerate(separators):
                start = time.perf_counter()
                separator.separate(audio, rate)
                times[index].append(time.perf_counter() - start)
        best = [min(t) for t in times]
        print(f"{label:<34}{mode:<16}" + "".join(f"{t:>9.3f}" for t in best) + f"{best[1] - best[0]:>10.3f}")


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    tables = args.tables.split(",")
    if "mir1k" in tables:
        clips = mir1k_test_clips(args.clips)
        if clips:
            mir1k_table(clips)
    if "window" in tables:
        clips = mir1k_test_clips(20)
        if clips:
            window_table(clips)
    if "spleeter" in tables:
        spleeter_table()
    if "cost" in tables:
        cost_table(args.repeats)


if __name__ == "__main__":
    main()
