"""Stems of a loud 16-bit master in each output format and clip mode (issue 25 item 5), and what the float spool of
``--clip-mode rescale`` costs on a 3-minute song: the tables behind the defaults (float WAV; FLAC and integer
WAV rescaled; mp3 and ogg as they are).

    python benchmarks/clip_modes.py                      # both tables, about 10 minutes on 2 cores
    python benchmarks/clip_modes.py --tables modes       # one of: modes, cost

1. ``modes``: the real song excerpt (../shared/data/mixtures/audio_example.mp3) as two 16-bit FLAC masters, peak at
   -0.1 dBFS: ``normalised`` (the excerpt scaled, RMS -12.5 dBFS) and ``limited`` (6 dB into a tanh soft limiter
   first, RMS -8 dBFS, as loud produced masters are). Separated through ``Separator.separate_files`` (the CLI's
   pipeline) by the bundled model and the converted Spleeter 2stems reference checkpoint (random weights: its stems
   mean nothing, but they overshoot as real ones do), per output: the gain of rescale, each stem's peak, the samples
   clipped (those of the float stems that ``gain x stem`` puts beyond full scale, for integer outputs; mp3 and ogg
   hold them, and the decoded file's samples beyond 1 are counted as "over"), and the SNR of the sum of the stems
   against the input and against gain x input. The last row: ``Separator.separate`` on the master as an int16 array
   (the API keeps the caller's dtype, so it clips).
2. ``cost``: the limited master looped to ``--minutes`` (3), separated by the bundled model through the CLI into
   float WAV, FLAC with ``--clip-mode clamp`` (written as it comes) and FLAC with ``rescale`` (the default: float
   spool on disk, then encoded): wall seconds and peak RSS of each process, and the spool's size. Then the writer's
   part alone, on stems already in memory: encode FLAC directly against spool, read back and encode.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_name  # noqa: E402
from precision import SHARED  # noqa: E402

from unet_sep import Separator  # noqa: E402
from unet_sep.audio.encode import AtomicAudioWriter  # noqa: E402
from unet_sep.audio.spool import StemSpool  # noqa: E402
from unet_sep.dsp.measures import snr_db  # noqa: E402
from unet_sep.separate.stages import BLOCK_SAMPLES  # noqa: E402
from unet_sep.weights import spleeter  # noqa: E402
from unet_sep.weights.registry import default_model_name  # noqa: E402

EXCERPT = SHARED / "mixtures" / "audio_example.mp3"
# (label, format, bit depth, clip mode): None is the default
OUTPUTS = [("wav (float)", "wav", None, None), ("wav 16 clamp", "wav", "16", "clamp"),
           ("wav 16 rescale", "wav", "16", None), ("flac rescale", "flac", None, None),
           ("flac clamp", "flac", None, "clamp"), ("mp3", "mp3", None, None)]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tables", default="modes,cost")
    p.add_argument("--minutes", type=float, default=3.0, help="length of the song of the cost table")
    p.add_argument("--threads", type=int, default=None)
    return p.parse_args()


def master(folder: Path, kind: str, seconds: float | None = None) -> Path:
    """The excerpt as a loud 16-bit FLAC master (see the module's doc), looped to ``seconds`` if given."""
    mixture, rate = sf.read(EXCERPT, dtype="float64")
    mixture /= np.abs(mixture).max()
    if kind == "limited":
        mixture = np.tanh(2.0 * mixture)
    if seconds is not None:
        mixture = np.tile(mixture, (int(np.ceil(seconds * rate / len(mixture))), 1))[: int(seconds * rate)]
    path = folder / f"{kind}.flac"
    sf.write(path, mixture / np.abs(mixture).max() * 10 ** (-0.1 / 20), rate, subtype="PCM_16")
    return path


def models(folder: Path) -> dict[str, Separator]:
    chosen = {"bundled": Separator.from_pretrained(default_model_name(), device="cpu")}
    reference = SHARED / "spleeter-ref" / "2stems"
    if (reference / "checkpoint").is_file():
        converted = spleeter.convert_spleeter(reference, reference / "config.json", folder / "spleeter-2stems",
                                              name="spleeter:2stems")
        chosen["spleeter 2stems"] = Separator.from_pretrained(converted, device="cpu")
    return chosen


def modes_table(folder: Path) -> None:
    masters = {kind: master(folder, kind) for kind in ("normalised", "limited")}
    for model_name, separator in models(folder).items():
        for kind, path in masters.items():
            mixture, rate = sf.read(path, dtype="float64")
            print(f"\n{model_name}, {kind} master ({len(mixture) / rate:.1f} s, RMS "
                  f"{20 * np.log10(np.sqrt(np.mean(mixture ** 2))):.1f} dBFS, peak -0.1 dBFS, 16-bit FLAC)")
            print(f"{'output':<16}{'gain':>7}" + "".join(f"{s[:5] + ' peak':>12}{'clipped':>9}"
                                                       for s in separator.stems)
                  + f"{'SNR sum/input':>15}{'SNR sum/(gain x input)':>24}")
            reference: dict[str, np.ndarray] = {}
            for label, fmt, depth, clip in OUTPUTS:
                out = folder / "out" / model_name / kind / label.replace(" ", "-")
                (event,) = separator.separate_files([path], out, fmt=fmt, bit_depth=depth, clip_mode=clip,
                                                    overwrite=True)
                assert event.kind == "done", event.error
                stems = {s: sf.read(event.outputs[s], dtype="float64")[0] for s in separator.stems}
                if not reference:
                    reference = stems  # the float WAV run: the stems as computed
                row = f"{label:<16}{event.gain:>7.3f}"
                for stem, data in stems.items():
                    if fmt == "mp3":
                        row += f"{np.abs(data).max():>12.3f}{f'{int(np.sum(np.abs(data) > 1))} over':>9}"
                        continue
                    integer = depth is not None or fmt == "flac"
                    clipped = int(np.sum(np.abs(event.gain * reference[stem]) > 1)) if integer else 0
                    row += f"{np.abs(data).max():>12.3f}{clipped:>9}"
                total = sum(stems.values())
                n = min(len(total), len(mixture))  # mp3 adds encoder delay: only a rough figure there
                row += f"{snr_db(mixture[:n], total[:n]):>15.1f}{snr_db(event.gain * mixture[:n], total[:n]):>24.1f}"
                print(row)
            as_int16 = np.round(mixture.T * 32768).clip(-32768, 32767).astype(np.int16)
            stems16 = separator.separate(as_int16, rate)
            floats = separator.separate(as_int16.astype(np.float32) / 32768, rate)
            row = f"{'API int16':<16}{1.0:>7.3f}"
            for stem in separator.stems:
                row += f"{np.abs(stems16[stem]).max() / 32768:>12.3f}{int(np.sum(np.abs(floats[stem]) > 1)):>9}"
            total16 = sum(s.astype(np.float64) for s in stems16.values()) / 32768
            print(row + f"{snr_db(as_int16 / 32768, total16):>15.1f}{'':>24}")


def _run_cli(path: Path, out: Path, *options: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``unet-sep separate`` process."""
    args = [sys.executable, "-m", "unet_sep", "separate", str(path), "--out", str(out), "--quiet", "--overwrite",
            *options]
    started = time.perf_counter()
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    assert status == 0, process.stderr.read() if process.stderr else status
    return seconds, usage.ru_maxrss / 1024


def cost_table(folder: Path, minutes: float) -> None:
    path = master(folder, "limited", seconds=60 * minutes)
    info = sf.info(path)
    print(f"\ncost: the limited master looped to {info.duration:.0f} s (stereo {info.samplerate} Hz), bundled model, "
          "one CLI process each")
    print(f"{'output':<22}{'wall s':>9}{'peak RSS MB':>13}")
    for label, options in [("wav (float)", ()), ("flac clamp", ("--format", "flac", "--clip-mode", "clamp")),
                           ("flac rescale (spool)", ("--format", "flac"))]:
        seconds, rss = _run_cli(path, folder / "cost" / label.split()[0], *options)
        print(f"{label:<22}{seconds:>9.1f}{rss:>13.0f}")
    stems = sf.read(folder / "cost" / "wav" / "limited" / "vocals.wav", dtype="float32")[0].T
    stems = np.concatenate([stems, -stems])  # two stems' worth of channels, as the writer holds them
    width, frames = stems.shape
    print(f"spool: {width * frames * 4 / 1e6:.0f} MB of float32 beside the outputs while the song is separated "
          f"({width // 2} stems x 2 channels x {frames} frames)")
    print(f"\nthe writer alone, {frames / info.samplerate:.0f} s of 2 stereo stems already in memory, 16-bit FLAC")
    print(f"{'path':<34}{'s':>8}")
    for label, spooled in [("encode as it comes (clamp)", False), ("spool, read back, encode (rescale)", True)]:
        best = min(_write_once(folder / "writer", stems, info.samplerate, spooled) for _ in range(3))
        print(f"{label:<34}{best:>8.2f}")


def _write_once(folder: Path, stems: np.ndarray, rate: int, spooled: bool) -> float:
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    writers = [AtomicAudioWriter(folder / f"stem{i}.flac", rate, 2, "flac", "16") for i in range(2)]
    spool = StemSpool(folder / "stem0.flac", stems.shape[0]) if spooled else None
    for start in range(0, stems.shape[1], BLOCK_SAMPLES):
        block = stems[:, start : start + BLOCK_SAMPLES]
        if spool is not None:
            spool.write(block)
        else:
            for i, writer in enumerate(writers):
                writer.write(block[2 * i : 2 * i + 2])
    if spool is not None:
        for block in spool.blocks(BLOCK_SAMPLES):
            for i, writer in enumerate(writers):
                writer.write(block[2 * i : 2 * i + 2] * np.float32(0.9))
        spool.remove()
    for writer in writers:
        writer.commit()
    return time.perf_counter() - started


def main() -> None:
    args = parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if not EXCERPT.is_file():
        sys.exit(f"the song excerpt is not at {EXCERPT} (../shared is absent)")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores")
    tables = args.tables.split(",")
    with tempfile.TemporaryDirectory(prefix="clip-modes-") as scratch:
        if "modes" in tables:
            modes_table(Path(scratch))
        if "cost" in tables:
            cost_table(Path(scratch), args.minutes)


if __name__ == "__main__":
    main()
