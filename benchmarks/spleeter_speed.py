"""unet-sep against Spleeter itself, side by side in one run, on the very same full-size checkpoints.

    python benchmarks/spleeter_speed.py --spleeter-python /path/to/.spleeter-venv/bin/python

What it does:
1. Runs ../shared/tools/spleeter_bench/bench.py (Spleeter 2.4.2 on TensorFlow, in its own venv) with
   ``--workdir``, so the random full-size checkpoints it builds and times are kept.
2. Loads those checkpoints with unet-sep's TensorFlow-free reader, checks on the same input that unet-sep's
   Spleeter-exact mode gives Spleeter's output (SNR against Spleeter's own ``Separator``), and times unet-sep:
   STFT+iSTFT alone, the model path in Spleeter-exact mode (same output) and in unet-sep's default mode
   (overlapped segments, full band).
3. Times folder to folder: ``--songs`` generated songs (``--duration`` s each, stereo 44.1 kHz MP3) separated
   into WAV stems by the batched pipeline (``Separator.separate_files``, what ``unet-sep separate`` runs), warm.
4. With ``--variants``, times the model path of the U-Nets run eagerly, eagerly in channels-last layout,
   TorchScript-frozen (the CPU default) and through ``torch.compile``; on a GPU also in bf16 and fp16.
5. Prints one table with seconds, real-time factors (audio seconds / wall seconds), peak RSS and peak GPU
   memory so far, and the ratios against Spleeter's rows.

Without ``--spleeter-python`` only unet-sep is timed, on random full-size models. On a GPU machine:
``python benchmarks/spleeter_speed.py --device cuda --variants --songs 16`` (Spleeter's own GPU timing needs
a TensorFlow GPU build, which its bench venv does not have).
Input: 0.1 * Gaussian noise + a 220 Hz sine, stereo 44.1 kHz, as bench.py makes it.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
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
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (unet-sep's rows)")
    p.add_argument("--songs", type=int, default=4, help="generated MP3 songs for the folder-to-folder rows (0: none)")
    p.add_argument("--variants", action="store_true",
                   help="also time eager / channels-last / TorchScript / torch.compile (and bf16/fp16 on a GPU)")
    return p.parse_args()


def bench_input(seconds: float, seed: int = 0) -> np.ndarray:
    """bench.py's input, ``(samples, 2)`` float32."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * 44100))
    t = np.arange(n) / 44100.0
    wav = 0.1 * rng.standard_normal((n, 2)).astype(np.float32)
    wav += (0.3 * np.sin(2 * np.pi * 220.0 * t))[:, None].astype(np.float32)
    return wav


def timed(fn, repeats: int, device: str = "cpu") -> list[float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def distinct_stems(net: StemsNet) -> StemsNet:
    """A copy of ``net`` whose stems' weights differ (scaled by 1 + 0.001 * stem index): the same work, and
    nothing for a graph optimiser to merge."""
    import copy

    copy_ = copy.deepcopy(net)
    with torch.no_grad():
        for index, unet in enumerate(copy_.unets):
            for parameter in unet.parameters():
                parameter.mul_(1.0 + 0.001 * index)
    return copy_


def peak_memory(device: str) -> dict:
    """Peak RSS of this process so far (MiB) and, on CUDA, peak GPU memory allocated (MiB)."""
    peaks = {"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.startswith("cuda"):
        peaks["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return peaks


def make_songs(folder: Path, count: int, seconds: float) -> list[Path]:
    """``count`` generated stereo 44.1 kHz MP3 songs: chords, a bass line, drum-like noise bursts and a voice-like
    vibrato tone, different for every song."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    rate = 44100
    t = np.arange(int(seconds * rate)) / rate
    paths = []
    for index in range(count):
        rng = np.random.default_rng(100 + index)
        root = rng.uniform(110, 220)
        chords = sum(np.sin(2 * np.pi * root * ratio * t + rng.uniform(0, 6)) for ratio in (1, 1.25, 1.5)) / 3
        bass = np.sin(2 * np.pi * root / 2 * t) * (0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 0.5 * t)))
        beat = (np.mod(t, 0.5) < 0.05) * rng.standard_normal(t.size)
        voice = np.sin(2 * np.pi * (root * 2 + 5 * np.sin(2 * np.pi * 5 * t)) * t) * (np.sin(2 * np.pi * 0.25 * t) > 0)
        mono = 0.2 * chords + 0.2 * bass + 0.15 * beat + 0.2 * voice
        stereo = np.stack([mono * 0.9 + 0.02 * rng.standard_normal(t.size), mono * 1.0]).T
        path = folder / f"song{index:03d}.mp3"
        sf.write(path, (0.8 * stereo / np.abs(stereo).max()).astype(np.float32), rate, format="MP3")
        paths.append(path)
    return paths


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
        device = args.device
        # bench.py's checkpoints give every stem the same weights; TorchScript's freezing would then merge the
        # identical U-Nets and compute one, so the timed copy gets slightly different weights per stem.
        net = distinct_stems(net)
        exact = Separator(net, config, device=device, segmentation="spleeter", mask_extension="zeros",
                          batch_size=args.batch_size)
        default = Separator(net, config, device=device, batch_size=args.batch_size)
        for label, separator in (("model path, Spleeter-exact (same output)", exact),
                                 ("model path, default (overlap, full band)", default)):
            rows.append({"impl": "unet-sep", "model": name, "row": label, "audio_s": args.duration,
                         "times": timed(functools.partial(separator.separate, audio, 44100), args.repeats, device),
                         **peak_memory(device)})
        if args.variants:
            variants = [("eager", dict(channels_last=False, optimize=False)),
                        ("eager channels-last", dict(channels_last=True, optimize=False)),
                        ("TorchScript frozen", dict(optimize=True)),
                        ("torch.compile", dict(compile=True))]
            variants += [("bf16 autocast", dict(precision="bf16"))]
            if device.startswith("cuda"):
                variants += [("fp16 autocast", dict(precision="fp16")),
                             ("bf16 + torch.compile", dict(precision="bf16", compile=True))]
            for label, options in variants:
                variant = Separator(net, config, device=device, segmentation="spleeter", mask_extension="zeros",
                                    batch_size=args.batch_size, **options)
                try:
                    times = timed(functools.partial(variant.separate, audio, 44100), args.repeats, device)
                except Exception as error:  # e.g. torch.compile without a working compiler
                    print(f"[{name}] {label}: failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                    continue
                rows.append({"impl": "unet-sep", "model": name, "row": f"model path, exact, {label}",
                             "audio_s": args.duration, "times": times, **peak_memory(device)})
        if args.songs > 0:
            songs = make_songs(workdir / "songs", args.songs, args.duration)
            for label, separator in (("folder to folder, Spleeter-exact", exact),
                                     ("folder to folder, default", default)):
                def run_folder(separator=separator, label=label, songs=songs) -> None:
                    out = workdir / "stems"
                    if out.exists():
                        shutil.rmtree(out)
                    events = separator.separate_files(songs, out, fmt="wav")
                    failed = [e for e in events if e.kind != "done"]
                    if failed:
                        raise RuntimeError(f"{label}: {failed[0].path}: {failed[0].error}")

                rows.append({"impl": "unet-sep", "model": name, "row": f"{label} ({args.songs} songs)",
                             "audio_s": args.duration * args.songs, "per_song": args.songs,
                             "times": timed(run_folder, max(1, min(args.repeats, 3)), device), **peak_memory(device)})

    signal = torch.from_numpy(audio).to(args.device)
    rows.append({"impl": "unet-sep", "model": "any", "row": "STFT + iSTFT", "audio_s": args.duration,
                 "times": timed(lambda: istft(stft(signal), signal.shape[-1]), args.repeats, args.device),
                 **peak_memory(args.device)})

    print()
    hardware = f"{cpu_name()}, {os.cpu_count()} cores"
    if args.device.startswith("cuda"):
        hardware += f"; GPU {torch.cuda.get_device_name(torch.device(args.device))}"
    print(f"hardware: {hardware}; threads {args.threads}; torch {torch.__version__}; unet-sep on {args.device}; "
          f"{args.duration:g} s stereo 44.1 kHz per song; median of {args.repeats} "
          f"(folder rows: of {max(1, min(args.repeats, 3))})")
    print(f"{'impl':<10}{'model':<8}{'row':<52}{'min s':>8}{'median s':>10}{'x realtime':>12}{'peak RSS MiB':>14}"
          f"{'GPU MiB':>9}")
    for row in rows:
        median = statistics.median(row["times"])
        row["median_s"], row["min_s"] = median, min(row["times"])
        audio_s = row.get("audio_s", args.duration)
        rss = f"{row['rss_mib']:.0f}" if "rss_mib" in row else "-"
        gpu = f"{row['gpu_mib']:.0f}" if "gpu_mib" in row else "-"
        print(f"{row['impl']:<10}{row['model']:<8}{row['row']:<52}{row['min_s']:>8.3f}{median:>10.3f}"
              f"{audio_s / median:>12.1f}{rss:>14}{gpu:>9}")
    print("peak RSS / GPU MiB: this process's peak up to that row (rows run top to bottom after Spleeter's)")
    print()
    for name in models:
        ours = next((r for r in rows if r["impl"] == "unet-sep" and r["model"] == name and "exact" in r["row"]), None)
        for label in ("b2 session.run warm (full separate)", "a2 separate() later calls"):
            theirs = next((r for r in rows if r["impl"] == "spleeter" and r["model"] == name and r["row"] == label),
                          None)
            if ours and theirs:
                print(f"{name}: unet-sep Spleeter-exact is {theirs['median_s'] / ours['median_s']:.2f}x faster than "
                      f"Spleeter's '{label}' ({theirs['median_s']:.3f} s vs {ours['median_s']:.3f} s)")
        folder = next((r for r in rows if r["impl"] == "unet-sep" and r["model"] == name
                       and r["row"].startswith("folder to folder, Spleeter-exact")), None)
        if ours and folder:
            per_song = folder["median_s"] / folder["per_song"]
            print(f"{name}: folder to folder (MP3 in, WAV out) takes {per_song:.3f} s per {args.duration:g} s song, "
                  f"{per_song / ours['median_s']:.2f}x the model path")
            theirs = next((r for r in rows if r["impl"] == "spleeter" and r["model"] == name
                           and r["row"] == "a2 separate() later calls"), None)
            if theirs:
                print(f"{name}: folder to folder is {theirs['median_s'] / per_song:.2f}x faster than Spleeter's "
                      f"separate() ({theirs['median_s']:.3f} s per call, in memory)")
        if name in parity:
            print(f"{name}: SNR of unet-sep (Spleeter-exact) against Spleeter's Separator, dB: {parity[name]}")
    if parity:
        print("note: bench.py's random checkpoints give every stem the same weights (Spleeter's fixed-seed init), "
              "so the\n"
              "SNRs above check the signal path and the checkpoint reader on full-size models; the networks "
              "themselves\n"
              "are checked against Spleeter on distinct weights by tests/test_spleeter.py (99-103 dB).")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "parity_db": parity}, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
