"""Look at what a model does to a real, professionally produced song: spectrograms of the mixture and its stems.

    python recipes/mir1k/check_on_song.py --model runs/mir1k [--input ../shared/data/mixtures/audio_example.mp3]
                                          [--out spectrograms.png]

Writes one PNG (mixture and every stem, 0-22 kHz, dB) and prints, per stem, the share of the mixture's energy
it takes in a few frequency bands, and how well the stems add back up to the mixture.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from unet_sep import Separator
from unet_sep.audio import read_audio
from unet_sep.dsp.stft import stft

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model name or folder (default: the bundled model)")
    parser.add_argument("--input", default=str(ROOT.parent / "shared" / "data" / "mixtures" / "audio_example.mp3"))
    parser.add_argument("--out", default="spectrograms.png")
    parser.add_argument("--mask-extension", default=None, help="override the model's mask extension above its band")
    args = parser.parse_args()

    from unet_sep.weights.registry import default_model_name

    model = args.model or default_model_name()
    separator = Separator.from_pretrained(model, device="cpu", mask_extension=args.mask_extension)
    audio, rate = read_audio(args.input)
    stems = separator.separate(audio, rate)
    mixture_power = _power(audio, rate)
    bands = [(0, 500), (500, 2000), (2000, 5000), (5000, 8000), (8000, rate / 2)]
    freqs = np.fft.rfftfreq(2048, 1 / rate)
    print(f"{Path(args.input).name}: {audio.shape[0]} ch, {rate} Hz, {audio.shape[1] / rate:.1f} s; model {model}")
    print(f"{'stem':<16}" + "".join(f"{f'{lo / 1000:g}-{hi / 1000:g} kHz':>14}" for lo, hi in bands))
    for stem, waveform in stems.items():
        power = _power(waveform, rate)
        shares = [power[(freqs >= lo) & (freqs < hi)].sum() / mixture_power[(freqs >= lo) & (freqs < hi)].sum()
                  for lo, hi in bands]
        print(f"{stem:<16}" + "".join(f"{100 * s:>13.1f}%" for s in shares))
    residual = audio - sum(stems.values())
    print(f"stems sum to the mixture at {10 * np.log10(np.sum(audio**2) / np.sum(residual**2)):.1f} dB SNR")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("mixture", audio)] + list(stems.items())
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 2.6 * len(panels)), sharex=True)
    for ax, (name, waveform) in zip(axes, panels, strict=True):
        spec = stft(torch.from_numpy(waveform.mean(0, keepdims=True)), 2048, 512)[0].abs().numpy()
        db = 20 * np.log10(spec + 1e-6)
        extent = (0, waveform.shape[-1] / rate, 0, rate / 2000)
        ax.imshow(db, origin="lower", aspect="auto", extent=extent, vmin=db.max() - 80, vmax=db.max(), cmap="magma")
        ax.set_ylabel("kHz")
        ax.set_title(name)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


def _power(waveform: np.ndarray, rate: int) -> np.ndarray:
    spec = stft(torch.from_numpy(waveform), 2048, 512).abs() ** 2
    return spec.sum(dim=(0, 2)).numpy()


if __name__ == "__main__":
    main()
