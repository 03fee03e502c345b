"""Live separation: quality and compute against latency, beside the offline default.

    python benchmarks/live_latency.py                      # the table of docs/live.md (about 15 min on 2 cores)
    python benchmarks/live_latency.py --clips 2 --latencies 0.5,2 --segments 64,256   # a quick look

For each model, the first row is the offline default (``Separator.separate``: per-song segment plan, whole
input known); then a row per live plan (:func:`unet_sep.separate.live.live_plan`) for each segment length
(``--segments``, STFT frames) and latency bound (``--latencies``, seconds) that fit and cost at most
``--most-segments`` segment frames per frame of audio (T / hop), with the default lookahead
share, newest hop only; and, at ``--variant-latency``, the same latency with a lookahead share of 0.25 and 0.75,
and with the previous hop cross-faded (``fade``). Latency is the plan's exact delay (``latency_samples``) in
seconds; hop and lookahead are in STFT frames.

- 2 stems: the bundled model (16 kHz mono) on ``--clips`` of MIR-1K's test singers
  (../shared/data/mir1k/splits.json, "singers"; evenly spaced in name order), mixed at 0 dB as ``unet-sep evaluate``
  mixes MIR-1K, scored as it scores them: vocals GNSDR, the length-weighted mean over clips of the whole-clip
  BSSEval v4 SDR (museval) of the estimate less that of the mixture; and the agreement of the stems with the
  offline default's (SNR in dB, the worst stem, mean over clips).
- Spleeter: the 2stems and 4stems reference checkpoints of ../shared/data/spleeter-ref (Spleeter's architecture
  with reduced filters, 2 to 64, and seeded weights: no separation to score, so only the agreement with their
  offline output), on ``--excerpt`` seconds of its input.npy (44.1 kHz stereo).

Real-time factor (RTF): wall seconds of ``LiveSession.process`` over blocks of ``--block`` samples (a sound
card's callback size) and the flush, per second of audio (below 1 keeps up; the offline row's is
``Separator.separate``'s), on ``--threads`` torch threads; "CPU s per s", the process's CPU seconds (all threads)
per second of audio, the compute itself, which a machine shared with other work changes less than the wall
seconds. Single runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.errors import SettingError  # noqa: E402
from unet_sep.evaluate.score import bss_eval, mix_at_0db  # noqa: E402
from unet_sep.separate.live import LivePlan, LiveSession, live_plan  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="bundled,2stems,4stems",
                   help="bundled, and the Spleeter reference checkpoints 2stems and 4stems")
    p.add_argument("--clips", type=int, default=3, help="MIR-1K test clips (bundled model)")
    p.add_argument("--excerpt", type=float, default=8.0, help="seconds of the Spleeter reference input")
    p.add_argument("--latencies", default="0.25,0.5,1,2,4,6", help="latency bounds, seconds")
    p.add_argument("--segments", default="64,128,256,512", help="segment lengths, STFT frames")
    p.add_argument("--variant-latency", type=float, default=1.0, help="latency of the lookahead and fade variants")
    p.add_argument("--variant-segments", type=int, default=128, help="segment frames of the variants")
    p.add_argument("--block", type=int, default=1024, help="samples per process() call")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine, two threads spin on each other's barriers)")
    p.add_argument("--most-segments", type=float, default=12.0,
                   help="leave out plans running more than this many segment frames per frame of audio (T / hop)")
    return p.parse_args()


def mir1k_clips(count: int) -> list[tuple[str, dict[str, np.ndarray]]]:
    """``count`` clips of MIR-1K's test singers, evenly spaced in name order, as 0 dB mixed ``[1, n]`` sources."""
    names = sorted(json.loads((SHARED / "mir1k" / "splits.json").read_text())["singers"]["test"])
    chosen = [names[round(i * (len(names) - 1) / max(1, count - 1))] for i in range(count)]
    clips = []
    for name in chosen:
        sources = {stem: sf.read(SHARED / "mir1k" / name / f"{stem}.ogg", dtype="float32")[0][None]
                   for stem in ("vocals", "accompaniment")}
        clips.append((name, mix_at_0db(sources)[0]))
    return clips


def live_stems(separator: Separator, live: LivePlan, audio: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """The stems ``[S, C, n]`` of ``audio [C, n]`` through a live session of ``live``, aligned with the input, and
    the seconds it took."""
    session = LiveSession(separator.runner, live, audio.shape[0])
    start = Clock()
    outs = [session.process(audio[:, i : i + block]) for i in range(0, audio.shape[-1], block)]
    outs.append(session.flush())
    return np.concatenate(outs, axis=-1)[..., live.latency_samples :], start.since()


def offline_stems(separator: Separator, audio: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    start = Clock()
    stems = separator.separate(audio, rate)
    return np.stack([np.asarray(stems[s]) for s in separator.stems]), start.since()


class Clock:
    """Wall and CPU (this process's, all threads) seconds since it was made."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def since(self) -> np.ndarray:
        return np.array([time.perf_counter() - self.wall, time.process_time() - self.cpu])


def plans(separator: Separator, rate: int, args: argparse.Namespace) -> list[tuple[str, LivePlan]]:
    """The live plans of the table (label, plan), without repeats."""
    found: list[tuple[str, LivePlan]] = []
    seen = set()

    def add(label: str, latency: float, frames: int, share: float = 0.5, fade: bool = False) -> None:
        try:
            live = live_plan(separator.config, rate, latency, frames, share, fade)
        except SettingError:
            return
        if live.plan not in seen and live.plan.frames / live.plan.hop <= args.most_segments:
            seen.add(live.plan)
            found.append((label, live))

    for frames in (int(s) for s in args.segments.split(",")):
        for latency in (float(s) for s in args.latencies.split(",")):
            add("newest hop", latency, frames)
    for share in (0.25, 0.75):
        add(f"lookahead {share:g}", args.variant_latency, args.variant_segments, share)
    add("cross-fade", args.variant_latency, args.variant_segments, 0.5, True)
    return found


def bundled_rows(args: argparse.Namespace) -> list[dict]:
    separator = Separator.from_pretrained("mir1k-vocals-accompaniment", device="cpu")
    clips = mir1k_clips(args.clips)
    rate, seconds = separator.sample_rate, sum(c["vocals"].shape[-1] for _, c in clips) / separator.sample_rate
    print(f"bundled: {len(clips)} clips ({', '.join(n for n, _ in clips)}), {seconds:.1f} s", flush=True)
    references, mixture_sdr, offline = [], [], []
    row = {"model": "bundled (2 stems)", "label": "offline default", "latency": None,
           "frames": separator.config.segment_frames, "hop": None, "lookahead": None, "time": np.zeros(2)}
    for _, sources in clips:
        mixture = sources["vocals"] + sources["accompaniment"]
        stems, took = offline_stems(separator, mixture, rate)
        row["time"] += took
        offline.append(stems)
        references.append(sources)
        mixture_sdr.append(whole_sdr(sources, {s: mixture for s in sources}))
    rows = [score_bundled(row, separator, offline, offline, references, mixture_sdr, seconds)]
    for label, live in plans(separator, rate, args):
        row = {"model": "bundled (2 stems)", "label": label, "latency": live.latency, "frames": live.plan.frames,
               "hop": live.plan.hop, "lookahead": live.plan.lookahead, "time": np.zeros(2)}
        estimates = []
        for sources in references:
            stems, took = live_stems(separator, live, sources["vocals"] + sources["accompaniment"], args.block)
            row["time"] += took
            estimates.append(stems)
        rows.append(score_bundled(row, separator, estimates, offline, references, mixture_sdr, seconds))
    return rows


def whole_sdr(references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> float:
    """The whole-clip BSSEval v4 SDR of the vocals (museval, as ``unet-sep evaluate`` scores MIR-1K)."""
    n = references["vocals"].shape[-1]
    return float(bss_eval(references, estimates, win=n, hop=n)["vocals"]["SDR"][0])


def score_bundled(row: dict, separator: Separator, estimates: list, offline: list, references: list,
                  mixture_sdr: list, seconds: float) -> dict:
    lengths = np.array([r["vocals"].shape[-1] for r in references], dtype=np.float64)
    nsdr = [whole_sdr(r, {s: e[i] for i, s in enumerate(separator.stems)}) - base
            for r, e, base in zip(references, estimates, mixture_sdr, strict=True)]
    agreement = [min(snr_db(o[i], e[i]) for i in range(len(separator.stems)))
                 for o, e in zip(offline, estimates, strict=True)]
    row.update(rtf=row["time"] / seconds, gnsdr=float(np.sum(lengths * nsdr) / lengths.sum()),
               agreement=None if row["latency"] is None else float(np.mean(agreement)))
    print(table_line(row), flush=True)
    return row


def spleeter_rows(args: argparse.Namespace, name: str) -> list[dict]:
    """The rows of the Spleeter reference checkpoint ``name`` (2stems, 4stems): cost, and agreement with offline."""
    folder = SHARED / "spleeter-ref" / name
    config, net = spleeter.load_spleeter(folder, folder / "config.json", name=f"spleeter:{name}")
    separator = Separator(net, config, device="cpu")
    rate = 44100
    audio = np.ascontiguousarray(np.load(SHARED / "spleeter-ref" / "input.npy")[: int(args.excerpt * rate)].T)
    print(f"{name}: {args.excerpt:g} s of spleeter-ref/input.npy", flush=True)
    offline, took = offline_stems(separator, audio, rate)
    row = {"model": f"ref {name}", "label": "offline default", "latency": None, "frames": config.segment_frames,
           "hop": None, "lookahead": None, "rtf": took / args.excerpt, "gnsdr": None, "agreement": None}
    print(table_line(row), flush=True)
    rows = [row]
    for label, live in plans(separator, rate, args):
        stems, took = live_stems(separator, live, audio, args.block)
        row = {"model": f"ref {name}", "label": label, "latency": live.latency, "frames": live.plan.frames,
               "hop": live.plan.hop, "lookahead": live.plan.lookahead, "rtf": took / args.excerpt, "gnsdr": None,
               "agreement": min(snr_db(offline[i], stems[i]) for i in range(len(separator.stems)))}
        print(table_line(row), flush=True)
        rows.append(row)
    return rows


def table_line(row: dict) -> str:
    def shown(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    return (f"| {row['model']} | {row['label']} | {shown(row['latency'], '.3f')} | {row['frames']} | "
            f"{shown(row['hop'], 'd')} | {shown(row['lookahead'], 'd')} | {row['rtf'][0]:.2f} | {row['rtf'][1]:.2f} | "
            f"{shown(row['gnsdr'], '.2f')} | {shown(row['agreement'], '.1f')} |")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    models = args.models.split(",")
    if "bundled" in models:
        rows += bundled_rows(args)
    for name in ("2stems", "4stems"):
        if name not in models:
            continue
        if (SHARED / "spleeter-ref" / name).is_dir():
            rows += spleeter_rows(args, name)
        else:
            print(f"{name}: ../shared/data/spleeter-ref/{name} is absent, skipped")
    print()
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, {args.threads} torch threads; torch {torch.__version__}; "
          f"blocks of {args.block} samples; {time.strftime('%Y-%m-%d')}")
    print("| model | plan | latency (s) | segment frames | hop | lookahead | RTF | CPU s per s | vocals GNSDR (dB) | "
          "agreement with offline (dB) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(table_line(row))


if __name__ == "__main__":
    main()
