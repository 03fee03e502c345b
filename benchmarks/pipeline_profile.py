"""Where the CPU time of ``unet-sep separate`` over a folder goes, stage by stage, and which thread does it.

On a GPU the U-Nets take milliseconds per song, so decoding, resampling, encoding and Python set the pace; what
matters is how much CPU work each song leaves on the CPU and on which of the pipeline's threads (the readers, the
model thread that drives the GPU, the writer). Throughput on this 2-core machine says little about a 16-core GPU
server; the split of CPU time per stage does. This script runs the file pipeline (the same code as the CLI) over a
folder of songs made from the real excerpt, with every stage wrapped to add up the CPU time of the thread that runs
it (``time.thread_time``, so other processes on the machine do not count), exclusive of the stages inside it.
torch runs on one thread, so the STFT and U-Net time is the calling thread's. Python and other is what a thread
spent outside the listed stages (queues, glue, numpy bookkeeping).

The last column says where each stage runs when the device is a GPU: the rows marked "CPU" are the work a GPU
leaves to the cores, per minute of audio, from which the number of reader threads a GPU needs follows.

    python benchmarks/pipeline_profile.py                                # 6 songs of 60 s, mp3 in, wav out
    python benchmarks/pipeline_profile.py --songs 4 --seconds 120 --input flac --rate 48000 --format flac
    python benchmarks/pipeline_profile.py --model 4stems                 # Spleeter's 4stems layout (reduced)
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from machine import cpu_name  # benchmarks/machine.py

from unet_sep import Separator
from unet_sep.audio import encode
from unet_sep.separate import pipeline, reader, stages, stream, writer
from unet_sep.separate.runner import NetworkRunner
from unet_sep.weights import spleeter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
EXCERPT = SHARED / "mixtures" / "audio_example.mp3"

# (stage, where it runs with a GPU); the order of the table.
STAGES = {
    "decode": "CPU (reader)",
    "check input (finite)": "CPU (reader)",
    "resample to model rate": "CPU (reader)",
    "STFT": "GPU",
    "segments in, masks out": "GPU",
    "U-Nets": "GPU",
    "iSTFT, overlap-add": "GPU",
    "copy back, check stems": "CPU (model thread)",
    "resample back, residual": "CPU (writer)",
    "encode, write": "CPU (writer)",
}
THREADS = ("reader", "model", "writer")


class StageClock:
    """Thread CPU time per (thread kind, stage), each stage exclusive of the stages called inside it."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], float] = defaultdict(float)
        self.local = threading.local()
        self.lock = threading.Lock()

    def _stack(self) -> list[list]:
        if not hasattr(self.local, "stack"):
            self.local.stack = []
        return self.local.stack

    def enter(self, stage: str) -> None:
        self._stack().append([stage, time.thread_time(), 0.0])

    def leave(self) -> None:
        stage, started, inner = self._stack().pop()
        spent = time.thread_time() - started
        kind = getattr(self.local, "kind", "model")
        with self.lock:
            self.seconds[(kind, stage)] += spent - inner
        if self._stack():
            self._stack()[-1][2] += spent

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        """Time every call of ``owner.name`` as ``stage``."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.enter(stage)
            try:
                return original(*args, **kwargs)
            finally:
                self.leave()

        setattr(owner, name, timed)

    def thread(self, owner: Any, name: str, kind: str) -> None:
        """``owner.name`` is a thread's body: its whole CPU time is the thread's, under ``kind``."""
        original = getattr(owner, name)

        def body(*args, **kwargs):
            self.local.kind = kind
            self.enter("Python and other")
            try:
                return original(*args, **kwargs)
            finally:
                self.leave()

        setattr(owner, name, body)

    def timed_blocks(self, audio: Any) -> Any:
        """A reader whose blocks are timed as decoding (the generator's own time, not its consumer's)."""
        blocks = audio.blocks

        def timed(*args, **kwargs):
            iterator = blocks(*args, **kwargs)
            while True:
                self.enter("decode")
                try:
                    block = next(iterator)
                except StopIteration:
                    return
                finally:
                    self.leave()
                yield block

        audio.blocks = timed
        return audio


def instrument(clock: StageClock) -> None:
    """Wrap the pipeline's stages (module attributes and methods, so every thread's calls are seen)."""
    open_audio = reader.open_audio
    reader.open_audio = lambda path: clock.timed_blocks(open_audio(path))
    clock.wrap(stages.InputStage, "check", "check input (finite)")
    clock.wrap(stages.InputStage, "process", "resample to model rate")
    clock.wrap(stream, "analyze_frames", "STFT")
    clock.wrap(stream.SeparationStream, "take", "segments in, masks out")
    clock.wrap(stream.SeparationStream, "give", "segments in, masks out")
    clock.wrap(NetworkRunner, "forward", "U-Nets")
    clock.wrap(stream.SeparationStream, "drain", "copy back, check stems")
    clock.wrap(stream.SeparationStream, "_synthesize", "iSTFT, overlap-add")
    clock.wrap(stages.OutputStage, "push", "resample back, residual")
    for method in ("write", "finish", "publish"):
        clock.wrap(encode.AtomicAudioWriter, method, "encode, write")
    clock.thread(reader.InputReader, "run", "reader")
    clock.thread(writer.StemWriter, "run", "writer")
    clock.thread(pipeline.ModelStage, "run", "model")


def make_songs(folder: Path, count: int, seconds: float, fmt: str, rate: int) -> list[Path]:
    """``count`` songs of ``seconds`` each from the real excerpt (looped, each from another start), as ``fmt``."""
    audio, excerpt_rate = sf.read(EXCERPT, dtype="float32", always_2d=True)
    if rate != excerpt_rate:
        import soxr

        audio = soxr.resample(audio, excerpt_rate, rate)
    songs = []
    frames = int(seconds * rate)
    for index in range(count):
        start = index * len(audio) // max(1, count)
        looped = np.tile(audio, (int(np.ceil((frames + start) / len(audio))), 1))[start : start + frames]
        path = folder / f"song{index}.{fmt}"
        subtype = {"wav": "PCM_16", "flac": "PCM_16", "mp3": "MPEG_LAYER_III"}[fmt]
        sf.write(path, looped, rate, subtype=subtype)
        songs.append(path)
    return songs


def reference_model(folder: Path, name: str) -> Path:
    """The Spleeter reference checkpoint ``name`` (2stems, 4stems, 5stems: Spleeter's STFT, masks and stems at 44.1
    kHz, reduced filters) converted to a model folder."""
    source = SHARED / "spleeter-ref" / name
    if not (source / "checkpoint").is_file():
        raise SystemExit(f"{source} not found (../shared is absent): pass --model with a model folder")
    return spleeter.convert_spleeter(source, source / "config.json", folder / name, name=f"spleeter:{name}")


def table(clock: StageClock, audio_minutes: float, wall: float) -> None:
    seconds = clock.seconds
    total = sum(seconds.values())
    print(f"\n{'stage':<26}{'thread':>9}{'CPU s':>9}{'share':>8}{'s per min':>11}   with a GPU")
    rows: list[tuple[str, str, float, str]] = []
    for stage, where in STAGES.items():
        for kind in THREADS:
            if (kind, stage) in seconds:
                rows.append((stage, kind, seconds[(kind, stage)], where))
    for kind in THREADS:
        if (kind, "Python and other") in seconds:
            rows.append(("Python and other", kind, seconds[(kind, "Python and other")], f"CPU ({kind})"))
    for stage, kind, spent, where in rows:
        print(f"{stage:<26}{kind:>9}{spent:>9.2f}{100 * spent / total:>7.1f}%{spent / audio_minutes:>11.3f}   {where}")
    print(f"{'all':<26}{'':>9}{total:>9.2f}{100.0:>7.1f}%{total / audio_minutes:>11.3f}")
    on_cpu: dict[str, float] = defaultdict(float)
    for _stage, kind, spent, where in rows:
        if where.startswith("CPU"):
            on_cpu[kind] += spent / audio_minutes
    left = sum(on_cpu.values())
    print(f"\nWall {wall:.1f} s for {audio_minutes:.1f} min of audio. With a GPU the CPU keeps {left:.3f} s per minute "
          "of audio: " + ", ".join(f"{kind} {on_cpu[kind]:.3f} s ({100 * on_cpu[kind] / left:.0f} %)"
                                    for kind in THREADS))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--songs", type=int, default=6, help="songs in the folder (default 6)")
    p.add_argument("--seconds", type=float, default=60.0, help="length of each song (default 60)")
    p.add_argument("--input", choices=("mp3", "flac", "wav"), default="mp3", help="the songs' format (default mp3)")
    p.add_argument("--rate", type=int, default=44100, help="the songs' sample rate (default 44100)")
    p.add_argument("--format", default="wav", help="the stems' format, as --format (default wav)")
    p.add_argument("--model", default="2stems", help="2stems, 4stems or 5stems (Spleeter's reference checkpoints, "
                   "converted), or a model name or folder (default 2stems)")
    p.add_argument("--readers", type=int, default=2, help="reader threads (default 2)")
    p.add_argument("--writers", type=int, default=1, help="writer threads (default 1)")
    p.add_argument("--batch-size", type=int, default=2, help="segments per U-Net batch (default 2)")
    return p.parse_args()


def main() -> None:
    args = parse()
    torch.set_num_threads(1)  # torch's work is then the calling thread's CPU time
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        songs = make_songs(folder, args.songs, args.seconds, args.input, args.rate)
        model = reference_model(folder, args.model) if args.model in ("2stems", "4stems", "5stems") else args.model
        separator = Separator.from_pretrained(model, device="cpu", batch_size=args.batch_size)
        clock = StageClock()
        instrument(clock)
        started = time.perf_counter()
        events = separator.separate_files(songs, folder / "out", readers=args.readers, writers=args.writers,
                                           fmt=args.format)
        wall = time.perf_counter() - started
        failed = [event for event in events if event.kind != "done"]
        if failed:
            raise SystemExit(f"not separated: {failed[0].path}: {failed[0].error}")
    print(f"{cpu_name()}; torch {torch.__version__} on 1 thread; {args.songs} songs x {args.seconds:g} s, "
          f"{args.input} at {args.rate} Hz -> {args.format}; model {args.model} ({len(separator.stems)} stems, "
          f"{separator.sample_rate} Hz); readers {args.readers}, writers {args.writers}, batch {args.batch_size}")
    table(clock, args.songs * args.seconds / 60, wall)


if __name__ == "__main__":
    main()
