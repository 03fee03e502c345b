"""Training throughput: seconds per step and excerpts per second, and whether the data pipeline keeps up.

    python benchmarks/train_throughput.py [--recipe recipes/musdb18/vocals-accompaniment.json] [--data-root R]
                                          [--steps 12] [--batch-size 4] [--device cpu]

Without --data-root a synthetic MUSDB18-HQ tree (tests/musdb_tree.py) is generated, so the numbers measure the
model and the pipeline, not a particular dataset. Prints one table: the time to draw a batch of augmented
excerpts alone, the time the training loop waited for data per step (the prefetch thread hides drawing behind
the step), and seconds per step / excerpts per second of the training loop itself (warm-up steps excluded).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from unet_sep.data.load import load_tracks  # noqa: E402
from unet_sep.train.loop import Trainer  # noqa: E402
from unet_sep.train.recipe import load_recipe  # noqa: E402
from unet_sep.train.sampler import ExcerptSampler, load_stem_pool  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default=str(ROOT / "recipes" / "musdb18" / "vocals-accompaniment.json"))
    p.add_argument("--data-root", help="dataset root (default: a generated MUSDB18-HQ-format tree)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override key=value")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="unet-sep-train-bench-") as tmp:
        overrides = [f"train.steps={args.steps}", f"train.batch_size={args.batch_size}", "train.valid_every=0",
                     f"train.checkpoint_every={args.steps}", "train.log_every=1", *args.overrides]
        data_root = args.data_root
        if data_root is None:
            from musdb_tree import make_musdb_tree

            data_root = str(make_musdb_tree(Path(tmp) / "musdb", n_train=6, n_valid=1, n_test=1, seconds=30.0))
            overrides += ["data.kind=musdb", "data.is_wav=true", "data.cache_dir=null"]
        recipe = load_recipe(args.recipe, overrides, data_root)
        model = recipe.model
        frames = recipe.train.excerpt_frames or model.segment_frames
        length = frames * model.stft.hop_length - model.stft.n_fft
        tracks = load_tracks(recipe.data, "train", model.sample_rate, model.n_channels)
        pools = [load_stem_pool(source, recipe.data.cache_dir, model.sample_rate, model.n_channels)
                 for source in recipe.data.stem_sources]
        sampler = ExcerptSampler(tracks, length, list(model.stems), recipe.data.augment, seed=0,
                                 sample_rate=model.sample_rate, pools=pools)
        draws = []
        for step in range(5):
            start = time.perf_counter()
            sampler.batch(range(step * args.batch_size, (step + 1) * args.batch_size))
            draws.append(time.perf_counter() - start)

        out = Path(tmp) / "run"
        trainer = Trainer(recipe, out, device=args.device, progress=False)
        started = time.perf_counter()
        trainer.run()
        wall = time.perf_counter() - started
        rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if int(r["step"]) > args.warmup]
        per_step = float(np.median([float(r["seconds_per_step"]) for r in rows]))
        waits = float(np.median([float(r["data_wait_s"]) for r in rows]))
        excerpts = float(np.median([float(r["excerpts_per_s"]) for r in rows]))
        from unet_sep.model import StemsNet

        n_params = sum(p.numel() for p in StemsNet(model).parameters())

    print()
    if args.device.startswith("cuda"):
        device = torch.cuda.get_device_name()
    else:
        device = f"{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    print(f"hardware: {device}; torch {torch.__version__}")
    print(f"model: {len(model.stems)} stems x U-Net {model.unet.filters}, {n_params / 1e6:.1f} M parameters; "
          f"excerpts of {frames} frames = {length / model.sample_rate:.1f} s at {model.sample_rate} Hz, "
          f"{model.n_channels} ch; "
          f"batch {args.batch_size}; {args.steps} steps ({args.warmup} warm-up) in {wall:.0f} s")
    print(f"{'what':<52}{'value':>12}")
    print(f"{'draw a batch of augmented excerpts (alone), s':<52}{np.median(draws):>12.3f}")
    print(f"{'training loop: waited for data per step, s':<52}{waits:>12.3f}")
    print(f"{'training loop: seconds per step':<52}{per_step:>12.3f}")
    print(f"{'training loop: excerpts per second':<52}{excerpts:>12.2f}")
    print(f"data pipeline share of a step: {100 * waits / per_step:.1f} % (the rest is STFT, U-Nets, backward, Adam)")


if __name__ == "__main__":
    main()
