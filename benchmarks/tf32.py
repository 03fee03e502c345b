"""What TF32 convolutions (cuDNN's default for float32 on Ampere and later GPUs) do to the stems, emulated on the CPU.

    python benchmarks/tf32.py                 # all tables (about 10 minutes on 2 cores)
    python benchmarks/tf32.py --clips 40      # more MIR-1K clips

TF32 runs a float32 convolution on the tensor cores with its inputs and weights rounded to a 10-bit mantissa
(float32 has 23) and sums in float32. Here every convolution of the U-Nets gets its input and weights rounded so
(to nearest, ``(bits + 0x1000) & ~0x1FFF``), in float32, on the CPU; nothing else changes (STFT, masks, iSTFT and
the Wiener filter have no convolutions). The NetworkRunner decides per mode (``NetworkRunner.tf32``); this is the
measurement behind that decision. On a GPU, ``benchmarks/gpu_check.py`` measures the real thing.

Tables:
1. Agreement, TF32 against float32, as the SNR (dB) of the stems, worst stem (and mean over stems and inputs), in
   the default mode and in Spleeter-exact mode (``segmentation="spleeter"``, ``mask_extension="zeros"``): the
   tests' fixture model on their music-like signal, the bundled model on MIR-1K test clips, the Spleeter 2stems
   reference checkpoint (../shared/data/spleeter-ref, small filters) on its input, and full-size Spleeter 2stems
   U-Nets ([16..512] filters, random weights, BatchNorm statistics of its own activations) on the same input.
2. What that costs against the model's own error: MIR-1K whole-clip SDR of the bundled model, float32 and TF32;
   and the Spleeter reference's SNR against Spleeter 2.4.2's own outputs (docs/models.md's 99-103 dB), float32 and
   TF32.
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from unet_sep import Separator  # noqa: E402
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402
from unet_sep.weights.registry import default_model_name, resolve_model  # noqa: E402

MODES = {"default": {}, "exact": {"segmentation": "spleeter", "mask_extension": "zeros"}}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=20, help="MIR-1K test clips (evenly spread; 0 for all 181)")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32) rounded to TF32's 10-bit mantissa, to nearest, kept in float32 (and in its memory layout)."""
    bits = x.view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


# The convolutions as the dispatcher sees them (inference mode sees conv2d itself, autograd its decomposition).
_CONVOLUTIONS = (torch.ops.aten.convolution.default, torch.ops.aten.conv2d.default, torch.ops.aten.conv2d.padding,
                 torch.ops.aten.conv_transpose2d.input)


class _TF32Convolutions(TorchDispatchMode):
    """Rounds the input and weight of every float32 convolution to TF32 before it runs."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _CONVOLUTIONS and args[0].dtype == torch.float32:
            args = (round_to_tf32(args[0]), round_to_tf32(args[1]), *args[2:])
        return func(*args, **kwargs)


@contextmanager
def emulated_tf32(enabled: bool = True) -> Iterator[None]:
    """Float32 convolutions as TF32 tensor cores compute them, for the calls inside (when ``enabled``)."""
    if not enabled:
        yield
        return
    with _TF32Convolutions():
        yield


def full_size_2stems(audio: np.ndarray) -> tuple[ModelConfig, StemsNet]:
    """Spleeter 2stems at its real size with random weights, each BatchNorm's statistics set to those of its own
    input on ``audio`` (so activations stay of order one through all six levels, as in a trained model)."""
    torch.manual_seed(0)
    config = spleeter.spleeter_model_config("spleeter:2stems")
    net = StemsNet(config).eval()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    def calibrate(module: torch.nn.Module, inputs: tuple) -> None:
        x = inputs[0]
        module.running_mean.copy_(x.mean(dim=(0, 2, 3)))
        module.running_var.copy_(x.var(dim=(0, 2, 3)) + 1e-3)

    hooks = [norm.register_forward_pre_hook(calibrate) for norm in norms]
    Separator(net, config, device="cpu", **MODES["exact"]).separate(audio, 44100)  # one pass fills the statistics
    for hook in hooks:
        hook.remove()
    return config, net


def agreement(separator: Separator, inputs: list[tuple[np.ndarray, int]]) -> tuple[float, float, list]:
    """Worst and mean stem SNR (dB) of TF32 against float32 over ``inputs``, and the TF32 outputs."""
    values, outputs = [], []
    for audio, rate in inputs:
        reference = separator.separate(audio, rate)
        with emulated_tf32():
            tf32 = separator.separate(audio, rate)
        outputs.append((reference, tf32))
        values += [snr_db(reference[stem], tf32[stem]) for stem in separator.stems]
    return min(values), float(np.mean(values)), outputs


def models(clips: list[str]) -> Iterator[tuple[str, ModelConfig, StemsNet, list[tuple[np.ndarray, int]]]]:
    """(label, config, net, inputs) for each model that is here."""
    sys.path.insert(0, str(ROOT / "tests"))
    import tempfile

    from precision import mir1k_mixture, spleeter_fixtures  # benchmarks/precision.py

    from conftest import make_model, music_like

    with tempfile.TemporaryDirectory() as folder:
        config, net = load_model(make_model(Path(folder) / "tiny"))
    yield "test fixture", config, net, [(music_like(12.0, 44100, seed=21), 44100)]
    config, net = load_model(resolve_model(default_model_name() or ""))
    if clips:
        mixtures = [mir1k_mixture(clip) for clip in clips]
        yield f"bundled, {len(clips)} MIR-1K clips", config, net, [(mixture, rate) for mixture, _, rate in mixtures]
    for name, config, net, audio, _ in spleeter_fixtures():
        if name == "2stems":
            yield "spleeter-ref 2stems", config, net, [(audio, 44100)]
            config, net = full_size_2stems(audio)
            yield "full-size 2stems (random)", config, net, [(audio, 44100)]


def main() -> None:
    from precision import mir1k_mixture, mir1k_test_clips, spleeter_fixtures, whole_sdr  # benchmarks/precision.py

    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    clips = mir1k_test_clips(args.clips)
    started = time.perf_counter()
    print(f"TF32 convolutions emulated on the CPU ({cpu_name()}, torch {torch.__version__}): stems SNR, TF32 against "
          "float32, dB: worst stem / mean")
    print(f"{'model':<34}{'default mode':>18}{'exact mode':>18}")
    quality = []
    for label, config, net, inputs in models(clips):
        line = f"{label:<34}"
        for mode, settings in MODES.items():
            separator = Separator(net, config, device="cpu", **settings)
            worst, mean, outputs = agreement(separator, inputs)
            line += f"{worst:>10.1f} / {mean:5.1f}"
            if label.startswith("bundled") and mode == "default":
                quality.append((label, separator, outputs, clips))
        print(line, flush=True)
    for label, separator, outputs, used in quality:
        print(f"\n{label}, default mode: mean whole-clip SDR (dB)")
        print(f"{'stem':<16}{'float32':>10}{'TF32':>10}{'TF32 - float32':>16}")
        for stem in separator.stems:
            sdrs = [(whole_sdr(mir1k_mixture(clip)[1][stem], ref[stem]), whole_sdr(mir1k_mixture(clip)[1][stem],
                                                                                    tf32[stem]))
                    for clip, (ref, tf32) in zip(used, outputs, strict=True)]
            fp32_sdr, tf32_sdr = (float(np.mean(column)) for column in zip(*sdrs, strict=True))
            print(f"{stem:<16}{fp32_sdr:>10.3f}{tf32_sdr:>10.3f}{tf32_sdr - fp32_sdr:>16.4f}")
    for name, config, net, audio, references in spleeter_fixtures():
        separator = Separator(net, config, device="cpu", **MODES["exact"])
        fp32 = separator.separate(audio, 44100)
        with emulated_tf32():
            tf32 = separator.separate(audio, 44100)
        print(f"\nspleeter-ref {name}, exact mode: SNR against Spleeter 2.4.2's outputs (dB)")
        for stem in config.stems:
            print(f"  {stem:<14} float32 {snr_db(references[stem], fp32[stem]):6.1f}   "
                  f"TF32 {snr_db(references[stem], tf32[stem]):6.1f}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
