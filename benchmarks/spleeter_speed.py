"""unet-sep against Spleeter itself, side by side in one run, on the very same full-size checkpoints.

    python benchmarks/spleeter_speed.py --spleeter-python /path/to/.spleeter-venv/bin/python

What it does:
1. Runs ../shared/tools/spleeter_bench/bench.py (Spleeter 2.4.2 on TensorFlow, in its own venv) with
   ``--workdir``, so the random full-size checkpoints it builds and times are kept.
2. Loads those checkpoints with unet-sep's TensorFlow-free reader, checks on the same input that unet-sep's
   Spleeter-exact mode gives Spleeter's output (SNR against Spleeter's own ``Separator``), and times unet-sep:
   STFT+iSTFT alone, the model path in Spleeter-exact mode (same output) and in unet-sep's default mode
   (overlapped segments, full band).
3. Prints one table with seconds, real-time factors and the ratios against Spleeter's rows.

Without ``--spleeter-python`` only unet-sep is timed, on random full-size models.
Input: 0.1 * Gaussian noise + a 220 Hz sine, stereo 44.1 kHz, as bench.py makes it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.dsp.stft import istft, stft  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402

BENCH = ROOT.parent / "shared" / "tools" / "spleeter_bench" / "bench.py"

SPLEETER_SNIPPET = """
import json, sys, numpy as np
from spleeter.separator import Separator
cfg, wav, out = sys.argv[1], sys.argv[2], sys.argv[3]
stems = Separator(cfg, MWF=False, multiprocess=False).separate(np.load(wav))
np.savez(out, **stems)
"""


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spleeter-python", help="python of a venv with spleeter==2.4.2 (see shared/tools/spleeter_bench)")
    p.add_argument("--spleeter-rows", default="graph,e2e,stft", help="bench.py --rows (e2e costs ~1 min per model)")
    p.add_argument("--models", default="2stems,4stems")
    p.add_argument("--duration", type=float, default=30.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None, help="segments per U-Net batch (default: unet-sep's)")
    p.add_argument("--workdir", help="keep the checkpoints here (default: a temporary folder)")
    p.add_argument("--json", help="write all rows as JSON")
    return p.parse_args()


def bench_input(seconds: float, seed: int = 0) -> np.ndarray:
    """bench.py's input, ``(samples, 2)`` float32."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 44100))
    t = np.arange(n) / 44100.0
    wav = 0.1 * rng.standard_normal((n, 2)).astype(np.float32)
    wav += (0.3 * np.sin(2 * np.pi * 220.0 * t))[:, None].astype(np.float32)
    return wav


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - estimate) ** 2), 1e-300)))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    models = args.models.split(",")
    rows: list[dict] = []
    parity: dict[str, dict[str, float]] = {}
    tmp = tempfile.TemporaryDirectory(prefix="unet-sep-bench-") if args.workdir is None else None
    workdir = Path(tmp.name if tmp else args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    wav = bench_input(args.duration)
    audio = np.ascontiguousarray(wav.T)

    if args.spleeter_python:
        out_json = workdir / "spleeter_bench.json"
        command = [args.spleeter_python, str(BENCH), "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--duration", str(args.duration), "--models", args.models, "--rows", args.spleeter_rows,
                   "--workdir", str(workdir), "--json", str(out_json)]
        print("running Spleeter:", " ".join(command), flush=True)
        subprocess.run(command, check=True)
        for row in json.loads(out_json.read_text())["rows"]:
            rows.append({"impl": "spleeter", "model": row["model"], "row": row["row"], "times": row["times_s"]})

    for name in models:
        checkpoint = workdir / name.replace("-16kHz", "")
        if args.spleeter_python and (checkpoint / "checkpoint").is_file():
            config, net = spleeter.load_spleeter(checkpoint, f"spleeter:{name}", name=f"spleeter:{name}")
            source = "Spleeter's bench checkpoint"
            # Same output: Spleeter's own Separator on the same input and weights.
            np.save(workdir / "input.npy", wav)
            subprocess.run([args.spleeter_python, "-c", SPLEETER_SNIPPET, str(workdir / f"{name}.json"),
                            str(workdir / "input.npy"), str(workdir / f"out_{name}.npz")], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            reference = np.load(workdir / f"out_{name}.npz")
            exact = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros",
                              batch_size=args.batch_size).separate(audio, 44100)
            parity[name] = {stem: round(snr_db(reference[stem].T, exact[stem]), 1) for stem in config.stems}
        else:
            config = spleeter.spleeter_model_config(f"spleeter:{name}")
            torch.manual_seed(0)
            net = StemsNet(config).eval()
            source = "random weights"
        print(f"[{name}] unet-sep on {source}", flush=True)
        exact = Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros", batch_size=args.batch_size)
        default = Separator(net, config, device="cpu", batch_size=args.batch_size)
        rows.append({"impl": "unet-sep", "model": name, "row": "model path, Spleeter-exact (same output)",
                     "times": timed(lambda: exact.separate(audio, 44100), args.repeats)})
        rows.append({"impl": "unet-sep", "model": name, "row": "model path, default (overlap, full band)",
                     "times": timed(lambda: default.separate(audio, 44100), args.repeats)})

    signal = torch.from_numpy(audio)
    rows.append({"impl": "unet-sep", "model": "any", "row": "STFT + iSTFT",
                 "times": timed(lambda: istft(stft(signal), signal.shape[-1]), args.repeats)})

    print()
    print(f"hardware: {cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; torch {torch.__version__}; "
          f"{args.duration:g} s stereo 44.1 kHz; median of {args.repeats}")
    print(f"{'impl':<10}{'model':<8}{'row':<44}{'min s':>8}{'median s':>10}{'x realtime':>12}")
    for row in rows:
        median = statistics.median(row["times"])
        row["median_s"], row["min_s"] = median, min(row["times"])
        print(f"{row['impl']:<10}{row['model']:<8}{row['row']:<44}{row['min_s']:>8.3f}{median:>10.3f}"
              f"{args.duration / median:>12.1f}")
    print()
    for name in models:
        ours = next((r for r in rows if r["impl"] == "unet-sep" and r["model"] == name and "exact" in r["row"]), None)
        for label in ("b2 session.run warm (full separate)", "a2 separate() later calls"):
            theirs = next((r for r in rows if r["impl"] == "spleeter" and r["model"] == name and r["row"] == label), None)
            if ours and theirs:
                print(f"{name}: unet-sep Spleeter-exact is {theirs['median_s'] / ours['median_s']:.2f}x faster than "
                      f"Spleeter's '{label}' ({theirs['median_s']:.3f} s vs {ours['median_s']:.3f} s)")
        if name in parity:
            print(f"{name}: SNR of unet-sep (Spleeter-exact) against Spleeter's Separator, dB: {parity[name]}")
    if parity:
        print("note: bench.py's random checkpoints give every stem the same weights (Spleeter's fixed-seed init), so the\n"
              "SNRs above check the signal path and the checkpoint reader on full-size models; the networks themselves\n"
              "are checked against Spleeter on distinct weights by tests/test_spleeter.py (99-103 dB).")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "parity_db": parity}, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
