"""The last seconds of a song against its middle and its first seconds: what the last segment's padding costs.

    python benchmarks/last_segment.py             # MIR-1K (30 test clips) and the Spleeter reference checkpoints
    python benchmarks/last_segment.py --clips 0   # all 181 MIR-1K test clips (about 5 times as long)
    python benchmarks/last_segment.py --quick     # 12 clips, 2 song lengths per checkpoint: a quick look
    python benchmarks/last_segment.py --timing    # seconds per 3-minute song, zeros against mirrored frames

The default mode's last segment sits on the U-Nets' stride grid and ends up to ``2 ** depth - 1`` frames after
the song (a song shorter than a segment: up to T - 1); those frames were zeros, silence the U-Nets read as
content, and the song's last seconds are that segment's alone. They are now the song's last frames mirrored
(``SegmentPlan.pad_index``). Separators of each model: Spleeter-exact mode (back-to-back segments, the last
zero-padded), the old default (the plan with ``reflect_end=False``: zeros), the new default, and the alternative
not kept, "off-grid end": the last segment starts T frames before the song's end, off the stride grid, so no frame
of it is padding (a song shorter than a segment is mirrored as in the new default).

1. MIR-1K singers-split test clips (0 dB mixtures, ``precision.mir1k_sdrs``), the bundled model: museval SDR of
   the first, middle and last ``--seconds`` of each clip and of the whole clip, mean and median over the clips.
   2 s is 125 of the bundled model's frames (T = 256, 4.1 s): about what the last segment alone decides after its
   overlap with the one before, and long enough for one bss_eval window to be steady where a clip's voice fades.
2. The same seconds at the edge and inside: each clip cut ``--cut`` seconds short, the SDR of its last
   ``--seconds`` against that of the same seconds in the whole clip (with ``--cut`` seconds of the song after
   them), so the content is the same and only the end differs; "start": the first ``--seconds`` of the clip with
   its first ``--cut`` seconds cut (rounded up to whole U-Net strides, so its frames and grid are the clip's),
   against the same seconds in the whole clip. Table 1's "last - middle" mixes the end's effect with how clips
   end (MIR-1K clips often fade out their voice); this table has the edge's alone. The stems' masks sum to one,
   so vocals and accompaniment lose the same.
3. The Spleeter reference checkpoints of ../shared/data/spleeter-ref (random-like weights: agreement, not
   quality), all four (2stems, 4stems, 5stems, 2stems-16kHz) on real full-band music (the reference input, 12.3 s,
   then the song excerpt of ../shared/data/mixtures, 10.9 s): the song's first L seconds, the SNR (dB, worst stem)
   of their middle and last ``--seconds`` against one U-Net pass over all 23 s (T = all of it, rounded up to the
   stride grid), in which those seconds have the song around them; and, as the yardstick of an edge, the first
   ``--seconds`` of the song's last L seconds (L rounded to whole U-Net strides) against the same pass.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py
from precision import SHARED, mir1k_mixture, mir1k_sdrs, mir1k_test_clips, spleeter_fixtures, whole_sdr
from segment_plan import counted, replanned, time_calls  # benchmarks/segment_plan.py
from spleeter_speed import bench_input, distinct_stems  # benchmarks/spleeter_speed.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.audio.decode import read_audio  # noqa: E402
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.dsp.stft import num_frames  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.separate.segments import SegmentPlan  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.registry import default_model_name  # noqa: E402

MODES = ("exact", "old default", "new default", "off-grid end")
SPLEETER_MODELS = ("2stems", "4stems", "5stems", "2stems-16kHz")
SONG_CUTS = (5.0, 8.0, 11.0, 14.0, 17.0, 20.0)  # seconds: one segment (T = 11.9 s) up to three


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=30, help="MIR-1K test clips (evenly spread; 0 for all 181)")
    p.add_argument("--seconds", type=float, default=2.0, help="length of the first, middle and last stretch")
    p.add_argument("--cut", type=float, default=2.0, help="seconds cut off for table 2")
    p.add_argument("--quick", action="store_true", help="12 clips and 2 song lengths per checkpoint")
    p.add_argument("--timing", action="store_true", help="time a 3-minute song instead (old and new default)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats of --timing")
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


@dataclasses.dataclass(frozen=True)
class EndAtSongEnd(SegmentPlan):
    """The alternative not kept: the last segment starts T frames before the song's end, off the stride grid."""

    def end_start(self, total_frames: int) -> int:
        return max(0, total_frames - self.frames)


def off_grid_end(separator: Separator) -> Separator:
    """The separator with its last segments ending at the song's end (:class:`EndAtSongEnd`)."""
    plan_for = separator.runner.plan_for

    def moved(length: int | None = None, sample_rate: int | None = None) -> SegmentPlan:
        return EndAtSongEnd(**dataclasses.asdict(plan_for(length, sample_rate)))

    separator.runner.plan_for = moved  # type: ignore[method-assign]
    return separator


def separators(config: ModelConfig, net: StemsNet) -> dict[str, Separator]:
    """The separators of :data:`MODES`: Spleeter-exact, the default with zeros after the song (before), the default
    (now), and the default with its last segment off the grid."""
    return {"exact": Separator(net, config, device="cpu", segmentation="spleeter"),
            "old default": replanned(Separator(net, config, device="cpu"), reflect_end=False),
            "new default": Separator(net, config, device="cpu"),
            "off-grid end": off_grid_end(Separator(net, config, device="cpu"))}


def stride_samples(config: ModelConfig) -> int:
    """Samples per U-Net stride: a cut by a whole number of them keeps the frames and the grid of the whole song."""
    return config.stft.hop_length * 2 ** config.unet.depth


def stretches(seconds: float, cut: float, rate: int, stride: int):
    """A clip's length -> its first, middle and last ``seconds`` and, in a clip long enough for table 2, the
    ``seconds`` before its last ``cut`` seconds and after its first ``cut`` rounded up to ``stride`` samples (sample
    ranges)."""
    n, m = int(seconds * rate), int(cut * rate)
    head = -(-m // stride) * stride

    def spans(length: int) -> dict[str, slice]:
        middle = (length - n) // 2
        ranges = {"first": slice(0, n), "middle": slice(middle, middle + n), "last": slice(length - n, length)}
        if long_enough(length, n, m, rate):
            ranges.update({"before cut": slice(length - m - n, length - m), "after cut": slice(head, head + n)})
        return ranges

    return spans


def long_enough(length: int, n: int, cut: int, rate: int) -> bool:
    """Whether a clip of ``length`` samples takes part in table 2 (a second to spare after the cut)."""
    return length >= n + cut + rate


def summary(values: list[float]) -> str:
    return f"{np.mean(values):6.2f} ({np.median(values):5.2f})"


def mir1k_tables(args: argparse.Namespace, clips: list[str], models: dict[str, Separator]) -> None:
    config = models["exact"].config
    sdr = mir1k_sdrs(models, clips, stretches(args.seconds, args.cut, config.sample_rate, stride_samples(config)))
    print(f"\n1. MIR-1K singers-split test, {len(clips)} clips, model {default_model_name()}: SDR (dB) of the first, "
          f"middle and last {args.seconds:g} s of each clip and of the whole clip, mean (median)")
    print(f"{'mode':<13}{'stem':<15}{'first':>15}{'middle':>15}{'last':>15}{'last - middle':>15}{'whole clip':>15}")
    for mode in MODES:
        for stem in models[mode].stems:
            scores = {name: sdr[mode][f"{stem} {name}"] for name in ("first", "middle", "last")}
            gap = [b - a for a, b in zip(scores["middle"], scores["last"], strict=True)]
            print(f"{mode:<13}{stem:<15}" + "".join(f"{summary(v):>15}" for v in scores.values())
                  + f"{summary(gap):>15}{summary(sdr[mode][stem]):>15}")
    edge = mir1k_edges(args, clips, models)
    print(f"\n2. The same {args.seconds:g} s inside the whole clip and at the end of the clip cut {args.cut:g} s short "
          f"({len(edge['exact', 'vocals'])} clips of at least {args.seconds + args.cut + 1:g} s); \"start\": the first "
          f"{args.seconds:g} s of the clip with its first {args.cut:g} s cut. SDR (dB), mean (median)")
    print(f"{'mode':<20}{'stem':<15}{'inside':>15}{'at the edge':>15}{'loss':>15}")
    for (case, stem), values in edge.items():
        mode, span = ("new default", "after cut") if case.endswith("start") else (case, "before cut")
        inside = sdr[mode][f"{stem} {span}"]
        loss = [a - b for a, b in zip(inside, values, strict=True)]
        print(f"{case:<20}{stem:<15}{summary(inside):>15}{summary(values):>15}{summary(loss):>15}")


def mir1k_edges(args: argparse.Namespace, clips: list[str], models: dict[str, Separator]) -> dict:
    """Table 2's edges: SDR of the last ``seconds`` of each clip cut ``cut`` seconds short, per mode and stem, and of
    the first ``seconds`` of the clip with its first ``cut`` seconds cut (the new default, "start")."""
    edge: dict[tuple[str, str], list[float]] = {}
    stride = stride_samples(models["new default"].config)
    for clip in clips:
        mixture, references, rate = mir1k_mixture(clip)
        length, n, cut = mixture.shape[-1], int(args.seconds * rate), int(args.cut * rate)
        if not long_enough(length, n, cut, rate):
            continue
        # case: separator, the part of the clip it separates, the seconds scored (in the clip, in the part)
        end = slice(length - cut - n, length - cut)
        cases = {mode: (separator, slice(0, length - cut), end, slice(-n, None)) for mode, separator in models.items()}
        head = -(-cut // stride) * stride
        cases["new default, start"] = (models["new default"], slice(head, length), slice(head, head + n), slice(0, n))
        for case, (separator, kept, span, own) in cases.items():
            part = separator.separate(mixture[kept], rate)
            for stem in separator.stems:
                edge.setdefault((case, stem), []).append(whole_sdr(references[stem][span], part[stem][own]))
    return edge


def full_band_song() -> np.ndarray | None:
    """Real full-band music, ``[2, samples]`` at 44.1 kHz: the Spleeter reference input, then the song excerpt."""
    reference = SHARED / "spleeter-ref" / "input.npy"
    if not reference.is_file():
        return None
    parts = [np.load(reference).T]
    excerpt = SHARED / "mixtures" / "audio_example.mp3"
    if excerpt.is_file():
        audio, rate = read_audio(excerpt)
        if rate == 44100 and audio.shape[0] == 2:
            parts.append(audio)
    return np.ascontiguousarray(np.concatenate(parts, axis=-1), dtype=np.float32)


def agreement(reference: dict[str, np.ndarray], stems: dict[str, np.ndarray], own: slice, span: slice) -> float:
    """SNR (dB) of the stems' samples ``own`` against the reference's ``span``, the worst stem."""
    return min(snr_db(reference[stem][..., span], stems[stem][..., own]) for stem in stems)


def spleeter_agreement(args: argparse.Namespace) -> None:
    song = full_band_song()
    if song is None:
        print(f"\nSpleeter fixtures not found at {SHARED / 'spleeter-ref'}: skipped")
        return
    n = int(args.seconds * 44100)
    cuts = [c for c in (SONG_CUTS[1::3] if args.quick else SONG_CUTS) if c * 44100 <= song.shape[-1] - n]
    modes = MODES[1:]
    print(f"\n3. Spleeter reference checkpoints on {song.shape[-1] / 44100:.1f} s of real music: its first L s; SNR "
          f"(dB, worst stem) of their middle and last {args.seconds:g} s against one U-Net pass over all of it, and of "
          f"the first {args.seconds:g} s of its last L s (L rounded to whole U-Net strides, so frames and grid line "
          "up);\npadded: frames of the last segment (new default) after the song")
    print(f"{'model':<14}{'L':>6}{'frames':>8}{'padded':>8}{'first':>8}{'middle':>8}"
          + "".join(f"{'last, ' + mode.split()[0]:>16}" for mode in modes))
    for model, config, net, _, _ in spleeter_fixtures(SPLEETER_MODELS):
        rate, multiple = config.sample_rate, 2 ** config.unet.depth
        total = num_frames(song.shape[-1], config.stft.n_fft, config.stft.hop_length)
        whole_config = dataclasses.replace(config, segment_frames=-(-total // multiple) * multiple)
        whole = Separator(net, whole_config, device="cpu", segmentation="spleeter").separate(song, rate)
        models = separators(config, net)
        stride = stride_samples(config)
        rows = []
        for seconds in cuts:
            length = int(seconds * rate)
            frames = num_frames(length, config.stft.n_fft, config.stft.hop_length)
            middle, last = slice((length - n) // 2, (length - n) // 2 + n), slice(length - n, length)
            tail = (song.shape[-1] - length) // stride * stride  # where the song's last (about) L seconds begin
            start = models["new default"].separate(song[:, tail:], rate)
            row = [agreement(whole, start, slice(0, n), slice(tail, tail + n))]
            ends = {mode: models[mode].separate(song[:, :length], rate) for mode in modes}
            row.append(agreement(whole, ends["new default"], middle, middle))
            row += [agreement(whole, ends[mode], last, last) for mode in modes]
            padded = models["new default"].runner.plan_for(length).padded_frames(frames)
            rows.append(row)
            print(f"{model:<14}{seconds:>4g} s{frames:>8}{padded:>8}" + "".join(f"{v:>8.1f}" for v in row[:2])
                  + "".join(f"{v:>16.1f}" for v in row[2:]))
        means = [statistics.mean(column) for column in zip(*rows, strict=True)]
        print(f"{model:<14}{'mean':>6}{'':>16}" + "".join(f"{v:>8.1f}" for v in means[:2])
              + "".join(f"{v:>16.1f}" for v in means[2:]))


def timing(args: argparse.Namespace) -> None:
    """Seconds per 3-minute song of the old and the new default, full-size 2stems U-Nets (random weights)."""
    config = spleeter.spleeter_model_config("spleeter:2stems")
    torch.manual_seed(0)
    net = distinct_stems(StemsNet(config).eval())
    models = {mode: separator for mode, separator in separators(config, net).items() if "default" in mode}
    batches = {mode: counted(separator) for mode, separator in models.items()}
    calls = {mode: functools.partial(separator.separate) for mode, separator in models.items()}
    audio = np.ascontiguousarray(bench_input(180.0).T)
    for call in calls.values():  # warm-up
        call(audio, 44100)
    times = time_calls(calls, batches, audio, args.repeats)
    print(f"\nhardware: {cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; torch {torch.__version__}; "
          f"3-minute stereo song (bench.py's input), full-size 2stems U-Nets, random weights; {args.repeats} "
          "interleaved repeats after a warm-up")
    print(f"{'mode':<14}{'least s':>9}{'median s':>10}{'U-Net s':>9}")
    for mode, measured in times.items():
        print(f"{mode:<14}{min(measured['wall']):>9.3f}{statistics.median(measured['wall']):>10.3f}"
              f"{min(measured['unet']):>9.3f}")
    paired = statistics.median(n / o for o, n in zip(times["old default"]["wall"], times["new default"]["wall"],
                                                     strict=True))
    print(f"paired: median of new / old over the repeats (each pair back to back) {paired:.3f}")
    padding_cost(config, audio.shape[-1])


def padding_cost(config: ModelConfig, samples: int) -> None:
    """What the change itself costs: the last segment's input filled with zeros and with mirrored frames (the
    one step that differs, once per song), least of 200 runs."""
    plan = Separator(StemsNet(config).eval(), config, device="cpu").runner.plan_for(samples)
    total = num_frames(samples, config.stft.n_fft, config.stft.hop_length)
    available = total - plan.starts(total)[-1]
    piece = torch.rand(1, config.n_channels, config.frequency_bins, available)
    fills = {"zeros": lambda: torch.nn.functional.pad(piece, (0, plan.frames - available)),
             "mirrored": lambda: piece[..., plan.pad_index(available)]}
    cost = {}
    for name, fill in fills.items():
        runs = []
        for _ in range(200):
            start = time.perf_counter()
            fill()
            runs.append(time.perf_counter() - start)
        cost[name] = min(runs) * 1e3
    print(f"the last segment's input ({available} frames of the song, {plan.frames - available} after it): zeros "
          f"{cost['zeros']:.3f} ms, mirrored {cost['mirrored']:.3f} ms, once per song")


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.timing:
        timing(args)
        return
    clips = mir1k_test_clips(12 if args.quick else args.clips)
    if clips:
        name = default_model_name()
        bundled = Separator.from_pretrained(name, device="cpu")
        models = separators(bundled.config, bundled.runner.net)
        mir1k_tables(args, clips, models)
    spleeter_agreement(args)
    print(f"\nhardware: {cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; torch {torch.__version__}")


if __name__ == "__main__":
    main()
