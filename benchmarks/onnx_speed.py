"""ONNX Runtime against PyTorch on the CPU: the same separation, the same song, in one run.

    python benchmarks/onnx_speed.py                                  # bundled model, Spleeter 2- and 4-stem U-Nets
    python benchmarks/onnx_speed.py --models bundled --threads 1 --repeats 5

For each model, one ``Separator`` with the torch backend (the default path: fp32, eager, channels-last), one
with the torch backend's TorchScript-frozen U-Nets (``optimize=True``, for reference) and one with
``backend="onnxruntime"`` (the U-Nets exported to ONNX, run by ONNX Runtime's CPU provider with the same
number of threads; STFT, masks and inverse STFT in torch as always) separate the same ``--seconds`` of music held
in memory: ../shared/data/mixtures/audio_example.mp3 looped (or ``--song``). After one warm-up call each, the
backends take turns ``--repeats`` times and the best wall time of each is kept. Also printed: the export's time
(paid once: ``unet-sep separate --backend onnxruntime`` keeps the export in its cache) and the SNR of the
onnxruntime stems against the torch stems (lowest stem).

Models: ``bundled`` (the bundled model, its real weights) and Spleeter's architectures by name
(``spleeter:2stems``, ``spleeter:4stems``, ...): their converted weights where they are in the cache, otherwise
full-size U-Nets with random weights (the speed of a convolution does not depend on its weights' values).
"""

from __future__ import annotations

import argparse
import copy
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
from unet_sep.config import ModelConfig  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.model import StemsNet  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.checkpoint import load_model  # noqa: E402
from unet_sep.weights.registry import default_model_name, registered_models, resolve_model  # noqa: E402

SONG = ROOT.parent / "shared" / "data" / "mixtures" / "audio_example.mp3"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="bundled,spleeter:2stems,spleeter:4stems",
                   help="comma-separated: bundled and/or spleeter:* names")
    p.add_argument("--song", type=Path, default=SONG, help="audio file, looped to --seconds")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch and ONNX Runtime threads (default: the cores)")
    return p.parse_args()


def load(name: str) -> tuple[str, ModelConfig, StemsNet]:
    """A model to time: (label, config, net)."""
    if name == "bundled":
        bundled = default_model_name()
        if bundled is None:
            raise SystemExit("no bundled model in this installation")
        config, net = load_model(resolve_model(bundled))
        return bundled, config, net
    entry = registered_models().get(name)
    if entry is not None and entry.local_folder() is not None:
        config, net = load_model(entry.local_folder())
        return name, config, net
    torch.manual_seed(0)
    config = spleeter.spleeter_model_config(name)
    return f"{name} (random weights)", config, StemsNet(config).eval()


def song(path: Path, seconds: float) -> tuple[np.ndarray, int]:
    """``[2, n]`` float32: ``path`` looped to ``seconds``."""
    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.T[:2] if audio.shape[1] >= 2 else np.repeat(audio.T, 2, axis=0)
    total = int(seconds * rate)
    return np.tile(audio, (1, -(-total // audio.shape[1])))[:, :total].copy(), rate


def time_model(name: str, audio: np.ndarray, rate: int, repeats: int) -> dict:
    label, config, net = load(name)
    by_torch = Separator(copy.deepcopy(net), config, device="cpu")
    by_torchscript = Separator(copy.deepcopy(net), config, device="cpu", optimize=True)
    started = time.perf_counter()
    by_onnx = Separator(net, config, device="cpu", backend="onnxruntime")  # exported here, in memory
    export = time.perf_counter() - started
    backends = {"torch": by_torch, "torchscript": by_torchscript, "onnxruntime": by_onnx}
    outputs = {backend: separator.separate(audio, rate) for backend, separator in backends.items()}  # warm-up
    best = {backend: float("inf") for backend in backends}
    for _ in range(repeats):
        for backend, separator in backends.items():
            started = time.perf_counter()
            separator.separate(audio, rate)
            best[backend] = min(best[backend], time.perf_counter() - started)
    parity = min(snr_db(outputs["torch"][stem], outputs["onnxruntime"][stem]) for stem in config.stems)
    return {"label": label, "seconds": best, "export": export, "parity": parity}


def main() -> None:
    args = parse_args()
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    import onnxruntime

    audio, rate = song(args.song, args.seconds)
    length = audio.shape[1] / rate
    print(f"CPU: {cpu_name()}; {threads} thread(s) for torch and ONNX Runtime; torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    print(f"song: {args.song.name} looped to {length:.1f} s, {rate} Hz stereo, in memory; best of {args.repeats}\n")
    header = (f"{'model':<36} {'torch s':>8} {'torchscript s':>14} {'onnxruntime s':>14} {'speed-up':>9} "
              f"{'export s':>9} {'SNR dB':>7}")
    print(header)
    print("-" * len(header))
    for name in args.models.split(","):
        result = time_model(name.strip(), audio, rate, args.repeats)
        torch_s, onnx_s = result["seconds"]["torch"], result["seconds"]["onnxruntime"]
        print(f"{result['label']:<36} {torch_s:>8.2f} {result['seconds']['torchscript']:>14.2f} {onnx_s:>14.2f} "
              f"{torch_s / onnx_s:>8.2f}x "
              f"{result['export']:>9.1f} {result['parity']:>7.1f}", flush=True)
    print(f"\nseconds: the whole separation of {length:.1f} s of audio (STFT, U-Nets, masks, inverse STFT); "
          "torchscript: torch with optimize=True; speed-up: torch s / onnxruntime s; export: the first-use ONNX "
          "export; SNR: onnxruntime stems against torch stems, lowest stem")


if __name__ == "__main__":
    main()
