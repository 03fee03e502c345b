"""Live plans on and off the U-Nets' stride grid: agreement with the offline stems, and the bundled model's quality.

    python benchmarks/live_grid.py            # the table of docs/live.md's "stride grid" note (about 3 minutes)

Offline segments start on multiples of ``2 ** depth`` frames (64 for these U-Nets); a live plan's segment ``k``
starts ``k * hop - head`` frames into the signal (``head``: the frames before the hop a segment gives), so the
frames it gives sit at another phase of the strided convolutions unless ``hop`` and ``head`` are multiples of the
grid. Each row is one plan (segment frames T, hop, lookahead, the head that follows, and the phase of segment
starts on the grid: the largest power of two dividing both hop and head, up to the grid), with the exact delay;
for the Spleeter 2stems reference checkpoint (seeded weights) on 8 s of ../shared/data/spleeter-ref/input.npy,
the agreement with its offline stems (SNR, worst stem); for the bundled model on 3 clips of MIR-1K's test singers
(as ``benchmarks/live_latency.py`` picks them), the agreement (mean over clips) and vocals GNSDR.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from live_latency import SHARED, live_stems, mir1k_clips, offline_stems, whole_sdr

from unet_sep import Separator
from unet_sep.dsp.measures import snr_db
from unet_sep.separate.live import LivePlan, plan_latency
from unet_sep.separate.segments import SegmentPlan
from unet_sep.weights import spleeter

PLANS = [(128, 64, 0), (128, 64, 1), (128, 64, 32), (256, 64, 64), (256, 64, 63), (128, 30, 29), (128, 32, 32),
         (128, 31, 33), (128, 16, 48), (128, 16, 47)]


def aligned(plan: SegmentPlan, grid: int) -> int:
    """The largest power of two up to ``grid`` dividing both the hop and the head: how far segment starts keep
    the offline plans' phase on the stride grid."""
    both = math.gcd(plan.hop, plan.head) or grid
    return min(grid, both & -both)


def rows(separator: Separator, clips: list[tuple[np.ndarray, dict | None]], rate: int) -> list[str]:
    grid = 2 ** separator.config.unet.depth
    offline = [offline_stems(separator, audio, rate)[0] for audio, _ in clips]
    mixture_sdr = [whole_sdr(sources, {s: audio for s in sources}) for audio, sources in clips if sources]
    lines = []
    for frames, hop, lookahead in PLANS:
        plan = SegmentPlan.live(frames, hop, lookahead)
        live = LivePlan(plan, rate, plan_latency(separator.config, plan, rate))
        agreement, sdr = [], []
        for (audio, sources), reference in zip(clips, offline, strict=True):
            stems = live_stems(separator, live, audio, 1024)[0]
            agreement.append(min(snr_db(reference[i], stems[i]) for i in range(len(separator.stems))))
            if sources:
                sdr.append(whole_sdr(sources, dict(zip(separator.stems, stems, strict=True))))
        gnsdr = f"{np.mean(np.array(sdr) - mixture_sdr):.2f}" if sdr else "-"
        lines.append(f"| {separator.config.name} | {frames} | {hop} | {lookahead} | {plan.head} | "
                     f"{aligned(plan, grid)} | {live.latency:.3f} | {np.mean(agreement):.1f} | {gnsdr} |")
    return lines


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    torch.set_num_threads(1)
    folder = SHARED / "spleeter-ref" / "2stems"
    config, net = spleeter.load_spleeter(folder, folder / "config.json", name="spleeter:2stems")
    reference = Separator(net, config, device="cpu")
    audio = np.ascontiguousarray(np.load(SHARED / "spleeter-ref" / "input.npy")[: 8 * 44100].T)
    table = rows(reference, [(audio, None)], 44100)
    bundled = Separator.from_pretrained("mir1k-vocals-accompaniment", device="cpu")
    clips = [(sources["vocals"] + sources["accompaniment"], sources) for _, sources in mir1k_clips(3)]
    table += rows(bundled, clips, bundled.sample_rate)
    print("| model | T | hop | lookahead | head | phase kept (frames) | latency (s) | agreement with offline (dB) | "
          "vocals GNSDR (dB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
