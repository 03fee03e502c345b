"""The prepared GPU check (issue 30): what a short session on a GPU machine runs, as one table.

Run through ``benchmarks/gpu_check.sh`` (it installs the carried wheels first); the steps, in this order:

* ``env``: torch, CUDA, cuDNN, the GPUs and the CPU cores;
* ``tests``: the tests that skip without CUDA (``-k cuda`` over the test files that check for it);
* ``parity``: stems on the device against the CPU (SNR, worst stem), in Spleeter-exact and default mode, with
  TF32 convolutions off and on (the runner's choice marked), and TF32 as benchmarks/tf32.py emulates it on the CPU
  against the device's own TF32;
* ``precision``: bf16 and fp16 against fp32 on the device: finite or not, SNR;
* ``speed``: 1 and 8 minute songs in each mode and precision (and exact mode with TF32, what turning it off
  costs): seconds, times real time, peak GPU memory;
* ``folders``: folder to folder through ``unet-sep separate`` with 2 and 8 readers: audio seconds per second and
  GPU utilisation (nvidia-smi, sampled every 0.2 s);
* ``torchrun``: separation and training on all GPUs (``torch.distributed.run -m unet_sep separate / train``);
* ``compile``: a compiled separator over songs whose last batches differ: compilations, graphs, graph breaks,
  and its time against eager.

Models: the tests' fixture model (tests/conftest.py) and full-size Spleeter 2stems U-Nets with random weights
(BatchNorm statistics of their own activations, benchmarks/tf32.py); the songs are the tests' music-like signal.
Nothing is read from ../shared, which does not travel to the GPU machine.

Environment: ``DEV`` (cuda; cpu for the dry run), ``GPU_CHECK_TINY=1`` (tiny sizes, a few seconds a step),
``GPU_CHECK_BUDGET`` (seconds for the whole check, default 510: a step is not started when less time is left
than it is expected to take, and is stopped at the time left), ``GPU_CHECK_START`` (when the check began, epoch
seconds; the .sh sets it before installing). The table is printed last and written to ``$OUT/gpu_check.txt`` when
``OUT`` is set (the device tool's folder of results).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

DEV = os.environ.get("DEV", "cuda")
TINY = os.environ.get("GPU_CHECK_TINY") == "1"
ROWS_MARK = "GPU_CHECK_ROWS "
EXACT = {"segmentation": "spleeter", "mask_extension": "zeros"}
MODES = {"exact": EXACT, "default": {}}
Row = tuple[str, str, str]

# step: (expected seconds, most seconds), full size; tiny sizes expect a tenth
STEPS: dict[str, tuple[int, int]] = {
    "env": (5, 30), "tests": (60, 100), "parity": (40, 70), "precision": (20, 45), "speed": (60, 90),
    "folders": (50, 80), "torchrun": (45, 80), "compile": (100, 150),
}


# ---- shared pieces --------------------------------------------------------------------------------------------
def work() -> Path:
    """The check's scratch folder, shared by its steps (the driver makes it)."""
    return Path(os.environ["GPU_CHECK_WORK"])


def song(seconds: float, seed: int = 0):
    from conftest import music_like

    return music_like(seconds, 44100, 2, seed=seed)


def fixture_model():
    from conftest import make_model
    from unet_sep.weights.checkpoint import load_model

    folder = work() / "fixture"
    if not (folder / "config.json").is_file():
        make_model(folder)
    return load_model(folder)


def full_model():
    """Full-size Spleeter 2stems with random weights (the fixture model with GPU_CHECK_TINY), and its folder."""
    from unet_sep import save_model
    from unet_sep.weights.checkpoint import load_model

    folder = work() / ("fixture" if TINY else "full-2stems")
    if not (folder / "config.json").is_file():
        if TINY:
            fixture_model()
        else:
            from tf32 import full_size_2stems  # benchmarks/tf32.py

            config, net = full_size_2stems(song(12.0, seed=3))
            save_model(folder, net, config)
    config, net = load_model(folder)
    return config, net, folder


def worst_snr(expected: dict, got: dict) -> float:
    import numpy as np

    from unet_sep.dsp.measures import snr_db

    return min(snr_db(np.asarray(expected[s]), np.asarray(got[s])) for s in expected)


def synchronize() -> None:
    import torch

    if DEV.startswith("cuda"):
        torch.cuda.synchronize()


def run_command(command: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})}, check=False)
    return done, time.perf_counter() - started


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1][-200:] if lines else ""


# ---- the steps ------------------------------------------------------------------------------------------------
def step_env() -> Iterator[Row]:
    import torch

    versions = f"{torch.__version__} (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
    yield from [("env", "torch", versions), ("env", "CPU cores", str(os.cpu_count()))]
    if torch.cuda.is_available():
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            yield ("env", f"cuda:{index}", f"{props.name}, {props.total_memory / 2**30:.0f} GiB, "
                                           f"{props.multi_processor_count} SMs")
    else:
        yield ("env", "cuda", "not available")


def step_tests() -> Iterator[Row]:
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "torch.cuda.is_available()" in p.read_text(encoding="utf-8"))
    done, seconds = run_command([sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-k", "cuda",
                                 *files])
    yield ("tests", f"-k cuda: {' '.join(files)}", f"{last_line(done.stdout)} (exit {done.returncode})")
    yield from [("tests", "failed", line[7:][:150]) for line in done.stdout.splitlines() if line.startswith("FAILED ")]
    yield from [("tests", "error", line[6:][:150]) for line in done.stdout.splitlines() if line.startswith("ERROR ")]


def step_parity() -> Iterator[Row]:
    from tf32 import emulated_tf32  # benchmarks/tf32.py

    from unet_sep import Separator

    audio = song(3.0 if TINY else 12.0, seed=21)
    models = [("fixture", *fixture_model())] + ([] if TINY else [("full 2stems", *full_model()[:2])])
    for label, config, net in models:
        for mode, settings in MODES.items():
            reference = Separator(net, config, device="cpu", **settings).separate(audio, 44100)
            for tf32 in (False, True):
                separator = Separator(net, config, device=DEV, **settings)
                chosen = " (its choice)" if separator.runner.tf32 == tf32 else ""
                separator.runner.tf32 = tf32
                stems = separator.separate(audio, 44100)
                yield ("parity", f"{label}, {mode} mode, TF32 {'on' if tf32 else 'off'}{chosen}",
                       f"{worst_snr(reference, stems):.1f} dB against the CPU")
                if mode == "exact" and tf32:
                    with emulated_tf32():
                        emulated = Separator(net, config, device="cpu", **settings).separate(audio, 44100)
                    yield ("parity", f"{label}, exact mode, TF32 emulated on the CPU",
                           f"{worst_snr(emulated, stems):.1f} dB against {DEV}'s TF32, "
                           f"{worst_snr(reference, emulated):.1f} dB against the CPU")


def step_precision() -> Iterator[Row]:
    import numpy as np

    from unet_sep import Separator

    config, net, _ = full_model()
    audio = song(3.0 if TINY else 30.0, seed=23)
    for mode, settings in MODES.items():
        reference = Separator(net, config, device=DEV, **settings).separate(audio, 44100)
        for precision in ("bf16", "fp16"):
            try:
                stems = Separator(net, config, device=DEV, precision=precision, **settings).separate(audio, 44100)
            except Exception as error:  # a per-file error (non-finite stems) or an unsupported autocast: reported
                yield ("precision", f"{mode} mode, {precision}", f"{type(error).__name__}: {error}"[:150])
                continue
            finite = all(np.isfinite(stem).all() for stem in stems.values())
            yield ("precision", f"{mode} mode, {precision}",
                   f"{'finite' if finite else 'NOT FINITE'}, {worst_snr(reference, stems):.1f} dB against fp32")


def _timed_separation(separator, audio) -> tuple[float, float]:
    """Seconds of one separation of ``audio`` and the peak GPU memory it took (MiB; 0 off CUDA)."""
    import torch

    cuda = DEV.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    synchronize()
    started = time.perf_counter()
    separator.separate(audio, 44100)
    synchronize()
    seconds = time.perf_counter() - started
    return seconds, (torch.cuda.max_memory_allocated() / 2**20 if cuda else 0.0)


def step_speed() -> Iterator[Row]:
    from unet_sep import Separator

    config, net, _ = full_model()
    lengths = (3.0, 6.0) if TINY else (60.0, 480.0)
    songs = {seconds: song(seconds, seed=31) for seconds in lengths}
    # each mode in fp32; the default mode in bf16 and fp16; exact mode with TF32 (what turning it off costs)
    settings_list = [("default", "fp32", None), ("default", "bf16", None), ("default", "fp16", None),
                     ("exact", "fp32", None), ("exact", "fp32", True)]
    for mode, precision, tf32 in settings_list:
        separator = Separator(net, config, device=DEV, precision=precision, **MODES[mode])
        if tf32 is not None:
            separator.runner.tf32 = tf32
        try:
            separator.separate(song(10.0 if not TINY else 1.0, seed=30), 44100)  # warm-up: cuDNN's choices, caches
            for seconds, audio in songs.items():
                took, peak = _timed_separation(separator, audio)
                length = f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
                label = f"{length}, {mode}, {precision}{', TF32 on' if tf32 else ''}"
                yield ("speed", label, f"{took:.2f} s, {seconds / took:.0f}x real time, peak {peak:.0f} MiB")
        except Exception as error:  # reported in the table; the other settings still run
            yield ("speed", f"{mode}, {precision}", f"{type(error).__name__}: {error}"[:150])


class _UtilisationSampler:
    """GPU utilisation (%) read from nvidia-smi every 0.2 s while running (nothing off CUDA or without it)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._process: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> "_UtilisationSampler":
        if DEV.startswith("cuda") and shutil.which("nvidia-smi"):
            self._process = subprocess.Popen(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,"
                                              "nounits", "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def summary(self) -> str:
        if not self.samples:
            return "GPU utilisation n/a"
        return f"GPU busy {sum(self.samples) / len(self.samples):.0f}% mean, {max(self.samples):.0f}% max"


def song_folder() -> tuple[Path, float]:
    """A folder of 16-bit WAV songs (16 of 45 s; 3 of 2 s tiny) and their total seconds."""
    import soundfile as sf

    folder = work() / "songs"
    count, seconds = (3, 2.0) if TINY else (16, 45.0)
    if not folder.is_dir():
        folder.mkdir()
        for index in range(count):
            sf.write(folder / f"song{index:02d}.wav", song(seconds, seed=40 + index).T, 44100, subtype="PCM_16")
    return folder, count * seconds


def step_folders() -> Iterator[Row]:
    _, _, model = full_model()
    folder, total = song_folder()
    for readers in (2, 8):
        command = [sys.executable, "-m", "unet_sep", "separate", str(folder), "--out", str(work() / f"out-{readers}"),
                   "--model", str(model), "--device", DEV, "--readers", str(readers), "--quiet"]
        with _UtilisationSampler() as sampler:
            done, seconds = run_command(command)
        result = (f"{total / seconds:.0f} audio s per s ({seconds:.1f} s for {total:.0f} s), {sampler.summary()}"
                  if done.returncode == 0 else f"exit {done.returncode}: {last_line(done.stderr)}")
        yield ("folders", f"{readers} readers, {DEV}", result)


def step_torchrun() -> Iterator[Row]:
    import torch

    from train_runs import make_stems, stems_recipe, write_recipe  # tests/train_runs.py

    ranks = torch.cuda.device_count() if DEV.startswith("cuda") else 2
    device = [] if DEV.startswith("cuda") else ["--device", "cpu"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    env = {"OMP_NUM_THREADS": "1"} if not DEV.startswith("cuda") else {}
    _, _, model = full_model()
    folder, total = song_folder()
    done, seconds = run_command(launch + ["-m", "unet_sep", "separate", str(folder), "--out",
                                          str(work() / "out-torchrun"), "--model", str(model), "--quiet", *device], env)
    summary = [line for line in done.stderr.splitlines() if line.startswith("separated ")]
    yield ("torchrun", f"separate, {ranks} ranks",
           f"{total / seconds:.0f} audio s per s, {summary[0][:120]}" if done.returncode == 0 and summary
           else f"exit {done.returncode}: {last_line(done.stderr)}")
    data = make_stems(work() / "stems") if not (work() / "stems").is_dir() else work() / "stems"
    steps = 2 if TINY else 40
    recipe = write_recipe(work() / "recipe.json", stems_recipe(data, steps=steps, batch_size=8, checkpoint_every=steps))
    done, seconds = run_command(launch + ["-m", "unet_sep", "train", str(recipe), "--out", str(work() / "run"),
                                          "--quiet", *device], env)
    trained = [line for line in done.stderr.splitlines() if "trained" in line]
    yield ("torchrun", f"train {steps} steps, {ranks} ranks",
           f"{seconds:.1f} s, {trained[-1][:120] if trained else 'done'}" if done.returncode == 0
           else f"exit {done.returncode}: {last_line(done.stderr)}")


def _compile_model():
    if not TINY:
        return full_model()[:2]
    import torch

    from unet_sep import ModelConfig, UNetConfig
    from unet_sep.model import StemsNet

    torch.manual_seed(5)
    config = ModelConfig(unet=UNetConfig(filters=[4, 8, 16], dropout_layers=2), frequency_bins=128,
                         segment_frames=64, name="compile-check")
    return config, StemsNet(config).eval()


def step_compile() -> Iterator[Row]:
    import torch
    from torch._dynamo.utils import counters

    from unet_sep import Separator

    config, net = _compile_model()
    batch = 3 if TINY else 8
    songs = [song(seconds, seed=50 + i) for i, seconds in enumerate((2.0, 4.5, 3.3) if TINY else (30.0, 75.0, 50.0))]
    torch._dynamo.reset()
    counters.clear()
    compiled = Separator(net, config, device=DEV, batch_size=batch, compile=True)
    eager = Separator(net, config, device=DEV, batch_size=batch)
    first, _ = _timed_separation(compiled, songs[0])
    yield ("compile", f"first song ({len(songs[0][0]) / 44100:g} s), batch size {batch}", f"{first:.1f} s")
    after_first = counters["frames"]["total"]
    eager.separate(songs[0], 44100)  # warm-up
    later = sum(_timed_separation(compiled, audio)[0] for audio in songs[1:])
    plain = sum(_timed_separation(eager, audio)[0] for audio in songs[1:])
    frames, graphs = counters["frames"]["total"], counters["stats"]["unique_graphs"]
    breaks = sum(counters["graph_break"].values())
    yield ("compile", "compilations / graphs / graph breaks",
           f"{frames} / {graphs} / {breaks}; {frames - after_first} after the first song")
    yield ("compile", "later songs, compiled / eager", f"{later:.2f} s / {plain:.2f} s")


STEP_FUNCTIONS: dict[str, Callable[[], Iterator[Row]]] = {
    "env": step_env, "tests": step_tests, "parity": step_parity, "precision": step_precision, "speed": step_speed,
    "folders": step_folders, "torchrun": step_torchrun, "compile": step_compile,
}


# ---- the driver -----------------------------------------------------------------------------------------------
def run_step(name: str, timeout: float) -> list[Row]:
    """One step in a process of its own (a crash or a hang loses only what that step had not yet given); the rows
    it gave before a failure or the time limit are kept."""
    started = time.perf_counter()
    note = ""
    try:
        done = subprocess.run([sys.executable, __file__, "--step", name], capture_output=True, text=True,
                              timeout=timeout, check=False)
        stdout, returncode = done.stdout, done.returncode
        if returncode != 0:
            note = f"failed (exit {returncode}): {last_line(done.stderr)}"
    except subprocess.TimeoutExpired as stopped:
        output = stopped.stdout or b""
        stdout = output.decode(errors="replace") if isinstance(output, bytes) else output
        note = f"stopped after {timeout:.0f} s (time budget)"
    rows: list[Row] = [tuple(json.loads(line[len(ROWS_MARK):])) for line in stdout.splitlines()  # type: ignore[misc]
                       if line.startswith(ROWS_MARK)]
    return [*rows, (name, "step time", f"{time.perf_counter() - started:.0f} s{'; ' + note if note else ''}")]


def table(rows: list[Row]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    header = f"{'step':<{widths[0]}}  {'setting':<{widths[1]}}  result"
    lines = [header, "-" * len(header)]
    lines += [f"{step:<{widths[0]}}  {setting:<{widths[1]}}  {result}" for step, setting, result in rows]
    return "\n".join(lines)


def drive(steps: list[str]) -> int:
    start = float(os.environ.get("GPU_CHECK_START") or time.time())
    budget = float(os.environ.get("GPU_CHECK_BUDGET", "510"))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        os.environ["GPU_CHECK_WORK"] = scratch
        for name in steps:
            expected, most = STEPS[name]
            expected = max(2, expected // 10) if TINY else expected
            left = budget - (time.time() - start)
            if left < expected:
                rows.append((name, "-", f"not started: {left:.0f} s left of {budget:.0f}, it takes about {expected} s"))
            else:
                rows += run_step(name, min(most, left - 1))
            print("  ".join(rows[-1]), file=sys.stderr, flush=True)
    rows.append(("total", f"DEV={DEV}{', tiny sizes' if TINY else ''}", f"{time.time() - start:.0f} s of {budget:.0f}"))
    text = table(rows)
    print(text, flush=True)
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "gpu_check.txt").write_text(text + "\n", encoding="utf-8")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", default=",".join(STEPS), help=f"which steps, in order (default: {','.join(STEPS)})")
    p.add_argument("--step", help=argparse.SUPPRESS)  # run one step here and print its rows as JSON
    args = p.parse_args()
    if args.step:
        for row in STEP_FUNCTIONS[args.step]():
            print(ROWS_MARK + json.dumps(row), flush=True)
        return
    unknown = [name for name in args.steps.split(",") if name not in STEPS]
    if unknown:
        p.error(f"unknown steps {unknown}; choose from {', '.join(STEPS)}")
    sys.exit(drive(args.steps.split(",")))


if __name__ == "__main__":
    main()
