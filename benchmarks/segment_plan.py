"""Per-song segment plans: what they cost against Spleeter-exact segments, and how well they cross-fade.

    python benchmarks/segment_plan.py                  # timing table: 2stems, 4stems; 10 s, 30 s, 1, 3, 10 min
    python benchmarks/segment_plan.py --quality        # agreement with one U-Net pass over the whole song

Timing (default): full-size Spleeter-architecture U-Nets with random weights (as ``spleeter_speed.py`` builds
them), bench.py's input (noise + a 220 Hz sine, stereo 44.1 kHz). For each length it times ``Separator.separate``
(the model path) in the default mode (segments planned for the song's length, the model's mask extension) and in
Spleeter-exact mode (``segmentation="spleeter"``, ``mask_extension="zeros"``), and, with ``--stream``, the default
mode streamed without a length (the plan every song got before per-song plans: hop 0.75 T). The configurations
run interleaved, ``--repeats`` times each (``--long-repeats`` over 1 min) after one warm-up; the table shows
the least wall seconds of each (the CPU may be shared).
Segments are counted as the U-Nets run them, and the seconds spent in them are summed per call (U-Net s; the
rest is STFT, masks, inverse STFT and output); "paired" is the median over the repeats of default / exact, each
pair run back to back, which follows slow changes of the machine's speed better than the ratio of the minima.

Quality (``--quality``): the tests' fixture model on their music-like signal (tests/conftest.py), and real music
(MIR-1K clips from ../shared, joined into one song per length, made stereo 44.1 kHz for the Spleeter models)
separated by the bundled model and by the Spleeter reference checkpoints of ../shared/data/spleeter-ref
(converted through ``unet_sep.weights.spleeter``). Each plan's stems are compared with one pass of the U-Nets
over the whole song (T = the whole song, rounded up to the stride grid) by SNR in dB, leaving out ``--margin``
seconds at both ends; the table shows the worst stem and the segments run. Plans: the stream plan (no length
announced: hop 0.75 T, linear ramps, what every song got before per-song plans), per-song plans with at least 64
frames of overlap with linear and with squared ramps (the default), at least 128 frames, and back-to-back
segments (Spleeter's hard cuts, with the model's mask extension).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py
from spleeter_speed import bench_input, distinct_stems  # benchmarks/spleeter_speed.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.audio.resample import resample  # noqa: E402
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.dsp.stft import num_frames  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.separate.segments import SegmentPlan  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
BUNDLED = ROOT / "unet_sep" / "pretrained" / "mir1k-vocals-accompaniment"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="2stems,4stems")
    p.add_argument("--lengths", default="10,30,60,180,600", help="song lengths in seconds")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="repeats of songs up to 1 min")
    p.add_argument("--long-repeats", type=int, default=3, help="repeats of longer songs")
    p.add_argument("--batch-size", type=int, default=None, help="segments per U-Net batch (default: unet-sep's)")
    p.add_argument("--stream", action="store_true", help="also time the default mode streamed without a length")
    p.add_argument("--quality", action="store_true", help="measure agreement with a whole-song pass instead")
    p.add_argument("--quality-lengths", default="30,60,100", help="song lengths (s) for --quality")
    p.add_argument("--margin", type=float, default=3.0, help="seconds left out at both ends for --quality")
    return p.parse_args()


def counted(separator: Separator) -> list[tuple[int, float]]:
    """Record the segments and the seconds of every U-Net batch the separator runs from now on."""
    batches: list[tuple[int, float]] = []
    forward = separator.runner.forward

    def counting(batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        out = forward(batch)
        batches.append((batch.shape[0], time.perf_counter() - start))
        return out

    separator.runner.forward = counting  # type: ignore[method-assign]
    return batches


def streamed(separator: Separator, audio: np.ndarray, rate: int) -> np.ndarray:
    """The separator's stems of ``audio`` streamed without announcing its length."""
    return np.concatenate(list(separator.stream([audio[None]], rate)), axis=-1)


def time_calls(calls: dict, batches: dict, audio: np.ndarray, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Each call ``repeats`` times, interleaved: its wall seconds and the seconds of its U-Net batches."""
    times: dict[str, dict[str, list[float]]] = {label: {"wall": [], "unet": []} for label in calls}
    for _ in range(repeats):
        for label, call in calls.items():
            batches[label].clear()
            start = time.perf_counter()
            call(audio, 44100)
            times[label]["wall"].append(time.perf_counter() - start)
            times[label]["unet"].append(sum(seconds for _, seconds in batches[label]))
    return times


def timing(args: argparse.Namespace) -> None:
    lengths = [float(s) for s in args.lengths.split(",")]
    rows = []
    for name in args.models.split(","):
        config = spleeter.spleeter_model_config(f"spleeter:{name}")
        torch.manual_seed(0)
        net = distinct_stems(StemsNet(config).eval())
        modes = {"exact": Separator(net, config, device="cpu", segmentation="spleeter", mask_extension="zeros",
                                    batch_size=args.batch_size),
                 "default": Separator(net, config, device="cpu", batch_size=args.batch_size)}
        batches = {label: counted(separator) for label, separator in modes.items()}
        calls = {label: functools.partial(separator.separate) for label, separator in modes.items()}
        if args.stream:
            calls["stream"] = functools.partial(streamed, modes["default"])
            batches["stream"] = batches["default"]
        for seconds in lengths:
            audio = np.ascontiguousarray(bench_input(seconds).T)
            segments: dict[str, int] = {}
            for label, call in calls.items():  # warm-up, and the segment counts
                batches[label].clear()
                call(audio, 44100)
                segments[label] = sum(size for size, _ in batches[label])
            times = time_calls(calls, batches, audio, args.repeats if seconds <= 60 else args.long_repeats)
            rows.append((name, seconds, segments, times))
            print(f"[{name} {seconds:g} s] segments {segments} wall s "
                  f"{ {label: [round(t, 3) for t in times[label]['wall']] for label in calls} }", flush=True)
    print_timing(args, rows)


def print_timing(args: argparse.Namespace, rows: list) -> None:
    print()
    print(f"hardware: {cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; torch {torch.__version__}; "
          f"full-size U-Nets, random weights; {args.repeats} (songs over 1 min: {args.long_repeats}) interleaved "
          "repeats after a warm-up")
    extra = ["stream"] if args.stream else []
    print(f"{'model':<8}{'length':>8}{'segments e/d':>14}{'exact s':>9}{'default s':>10}{'ratio':>7}{'paired':>8}"
          f"{'U-Net s e/d':>14}{'rest s e/d':>13}" + "".join(f"{'stream seg':>11}{'stream s':>10}{'ratio':>7}"
                                                       for _ in extra))
    for name, seconds, segments, times in rows:
        length = f"{seconds:g} s" if seconds < 60 else f"{seconds / 60:g} min"
        best = {label: min(t["wall"]) for label, t in times.items()}
        paired = statistics.median(d / e for d, e in zip(times["default"]["wall"], times["exact"]["wall"],
                                                         strict=True))
        unet = {label: min(t["unet"]) for label, t in times.items()}
        rest = {label: min(w - u for w, u in zip(t["wall"], t["unet"], strict=True)) for label, t in times.items()}
        line = (f"{name:<8}{length:>8}{segments['exact']:>8}/{segments['default']:<5}{best['exact']:>9.3f}"
                f"{best['default']:>10.3f}{best['default'] / best['exact']:>7.2f}{paired:>8.2f}"
                f"{unet['exact']:>8.2f}/{unet['default']:<5.2f}{rest['exact']:>7.2f}/{rest['default']:<5.2f}")
        for label in extra:
            line += f"{segments[label]:>11}{best[label]:>10.3f}{best[label] / best['exact']:>7.2f}"
        print(line)
    print("ratio: least default / least exact wall seconds; paired: median of default / exact over the repeats "
          "(each pair run back to back);\nU-Net s: least seconds in the U-Nets per call; rest s: least seconds outside "
          "them (STFT, masks, iSTFT, output)")


def mir1k_song(seconds: float) -> np.ndarray:
    """Real music: MIR-1K clips (vocals + accompaniment, 16 kHz mono) in name order, joined to ``seconds``."""
    import soundfile as sf

    need = int(seconds * 16000)
    parts, have = [], 0
    for clip in sorted((SHARED / "mir1k").iterdir()):
        if not (clip / "vocals.ogg").is_file():
            continue
        vocals, _ = sf.read(clip / "vocals.ogg", dtype="float32")
        accompaniment, _ = sf.read(clip / "accompaniment.ogg", dtype="float32")
        parts.append(vocals + accompaniment)
        have += vocals.size
        if have >= need:
            break
    song = np.concatenate(parts)[:need]
    return (0.5 * song / np.abs(song).max()).astype(np.float32)


def quality_models() -> list[tuple[str, ModelConfig, StemsNet]]:
    """The tests' fixture model (tests/conftest.py), the bundled model and the Spleeter reference checkpoints."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_model

    with tempfile.TemporaryDirectory() as folder:
        config, net = load_model(make_model(Path(folder) / "tiny"))
    models = [("test fixture", config, net)]
    if BUNDLED.is_dir():
        config, net = load_model(BUNDLED)
        models.append(("bundled", config, net))
    for name in ("2stems", "4stems"):
        folder = SHARED / "spleeter-ref" / name
        if folder.is_dir():
            config, net = spleeter.load_spleeter(folder, folder / "config.json", name=f"spleeter:{name}")
            models.append((f"ref-{name}", config, net))
    return models


def quality_song(label: str, config: ModelConfig, seconds: float) -> np.ndarray:
    """``[channels, samples]`` at the model's rate: the tests' music-like signal for the fixture, else MIR-1K."""
    if label == "test fixture":
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import music_like

        return music_like(seconds, config.sample_rate)
    mono = mir1k_song(seconds)[None]
    audio = resample(mono, 16000, config.sample_rate)
    if config.n_channels == 2:
        audio = np.concatenate([audio, 0.8 * audio + 0.05 * np.roll(audio, 441, axis=-1)])
    return audio


def replanned(separator: Separator, **changes: object) -> Separator:
    """The separator with ``changes`` (fields of :class:`SegmentPlan`) made to every plan it runs, for comparison."""
    plan_for = separator.runner.plan_for

    def changed(length: int | None = None, sample_rate: int | None = None) -> SegmentPlan:
        return dataclasses.replace(plan_for(length, sample_rate), **changes)  # type: ignore[arg-type]

    separator.runner.plan_for = changed  # type: ignore[method-assign]
    return separator


def linear_ramps(separator: Separator) -> Separator:
    """The separator with its songs' plans cross-faded by linear ramps (as streams are), for comparison."""
    return replanned(separator, fade_power=1)


PLANS = ("stream (before)", "min 64 linear", "min 64 (default)", "min 128", "back to back")


def plan_separators(config: ModelConfig, net: StemsNet) -> dict[str, Separator]:
    frames = config.segment_frames
    return {"stream (before)": Separator(net, config, device="cpu"),
            "min 64 linear": linear_ramps(Separator(net, config, device="cpu", overlap=64 / frames)),
            "min 64 (default)": Separator(net, config, device="cpu"),
            "min 128": Separator(net, config, device="cpu", overlap=128 / frames),
            "back to back": Separator(net, config, device="cpu", segmentation="spleeter")}


def agreement(args: argparse.Namespace) -> None:
    lengths = [float(s) for s in args.quality_lengths.split(",")]
    rows = []
    for label, config, net in quality_models():
        separators = plan_separators(config, net)
        for seconds in lengths:
            rate = config.sample_rate
            audio = quality_song(label, config, seconds)
            total = num_frames(audio.shape[-1], config.stft.n_fft, config.stft.hop_length)
            multiple = 2 ** config.unet.depth
            whole_config = dataclasses.replace(config, segment_frames=-(-total // multiple) * multiple)
            whole = Separator(net, whole_config, device="cpu", segmentation="spleeter").separate(audio, rate)
            inner = slice(int(args.margin * rate), audio.shape[-1] - int(args.margin * rate))
            results = {}
            for name, separator in separators.items():
                if name == "stream (before)":  # no length announced: the plan of streams
                    out = streamed(separator, audio, rate)
                    stems = {stem: out[i, 0] for i, stem in enumerate(separator.stems)}
                    count = separator.runner.settings.plan.count(total)
                else:
                    stems = separator.separate(audio, rate)
                    count = separator.runner.plan_for(audio.shape[-1]).count(total)
                snr = min(snr_db(whole[stem][..., inner], stems[stem][..., inner]) for stem in whole)
                results[name] = (snr, count)
            rows.append((label, seconds, total, results))
            print(f"[{label} {seconds:g} s, {total} frames] " + "; ".join(
                f"{name}: {snr:.1f} dB, {count} segments" for name, (snr, count) in results.items()), flush=True)
    print()
    print(f"hardware: {cpu_name()}; agreement with one whole-song U-Net pass, dB (worst stem), {args.margin:g} s "
          f"left out at each end; (segments)")
    print(f"{'model':<14}{'length':>8}{'frames':>8}" + "".join(f"{name:>19}" for name in PLANS))
    for label, seconds, total, results in rows:
        cells = "".join(f"{f'{results[n][0]:.1f} ({results[n][1]})':>19}" for n in PLANS)
        print(f"{label:<14}{seconds:>6g} s{total:>8}{cells}")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.quality:
        agreement(args)
    else:
        timing(args)


if __name__ == "__main__":
    main()
