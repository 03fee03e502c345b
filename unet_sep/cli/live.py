"""``unet-sep live``: stems from a stream as it comes, a fixed latency behind it (:mod:`unet_sep.live`)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, List, Optional

import typer

from unet_sep.audio.wav_stream import SAMPLE_FORMATS
from unet_sep.cli.common import MAX_THREADS, print_error, setting_error_exit, setup_logging
from unet_sep.cli.process import EXIT_BROKEN_PIPE, interrupted_exit_code
from unet_sep.errors import SettingError
from unet_sep.separate.settings import SeparationSettings

if TYPE_CHECKING:
    from unet_sep.audio.wav_stream import PcmFormat
    from unet_sep.live.loop import LiveReport, Session
    from unet_sep.live.sinks import Sink
    from unet_sep.live.sources import Source

log = logging.getLogger("unet_sep")

# Seconds of input per block: a device's callback period, a file's pace, a read from standard input.
BLOCK_SECONDS = 0.025

_INPUT_HELP = ("An audio file (played at its real pace), - for standard input (a WAV stream, as ffmpeg ... -f wav - "
               "writes it; raw PCM with --rate), or device:[NAME] for a sound device (device: the default input; "
               "NAME: a number or part of a name from python -m sounddevice; needs unet-sep[live]).")
_OUTPUT_DEVICE_HELP = ("[STEM=]DEVICE: play the mix (--stems, --gains), or STEM alone, on a sound device (a number or "
                       "part of a name). Repeat it to send stems to several devices.")
_GAINS_HELP = ("Linear gain of each stem in the mix on standard output and devices, e.g. vocals=0,accompaniment=1 "
               "(stems it does not name keep 1).")


def live(
    source: str = typer.Argument(..., metavar="INPUT", show_default=False, help=_INPUT_HELP),
    rate: Optional[int] = typer.Option(None, "--rate", metavar="HZ", help="Standard input is raw PCM at this rate "
                                       "(without it, a WAV stream); for a device, its rate (default: the device's)."),
    channels: Optional[int] = typer.Option(None, "--channels", help="Channels of raw PCM on standard input "
                                           "(default 2) or of a device (default: up to 2)."),
    sample_format: str = typer.Option("s16", "--sample-format", help=f"Samples of raw PCM in and of standard output: "
                                      f"{', '.join(SAMPLE_FORMATS)} (little-endian; f32 is float)."),
    latency: Optional[float] = typer.Option(None, "--latency", metavar="SECONDS", help="The most delay accepted "
                                            "between a sample in and its stems out (default: the model's live "
                                            "default). Too small for the model is an error naming the least."),
    stems: Optional[str] = typer.Option(None, "--stems", help="Comma-separated stems to mix on standard output and "
                                        "devices and to write with --out (default: all)."),
    gains: Optional[str] = typer.Option(None, "--gains", help=_GAINS_HELP),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A registered model name, a model folder or "
                                        "hf://ORG/REPO (default: the bundled model)."),
    device: str = typer.Option(SeparationSettings.device, "--device", help="Where the U-Nets run: auto, cpu, cuda, "
                               "cuda:N or mps."),
    output_devices: Optional[List[str]] = typer.Option(None, "--output-device", metavar="[STEM=]DEVICE",
                                                       help=_OUTPUT_DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write each chosen stem to OUT/STEM.wav (float32) "
                                       "as it comes, finished under that name at the end (also after Ctrl-C)."),
    stdout_format: str = typer.Option("wav", "--stdout-format", help="wav (a WAV stream of unknown length) or raw "
                                      "(PCM in --sample-format)."),
    to_stdout: bool = typer.Option(False, "--stdout", help="Write the mix to standard output even with --out or "
                                   "--output-device (without them it is the output)."),
    duration: Optional[float] = typer.Option(None, "--duration", metavar="SECONDS", help="Stop after this many "
                                             "seconds of input (default: at its end; a device: at Ctrl-C)."),
    paced: bool = typer.Option(True, "--pace/--no-pace", help="Play a file at its real pace (default), or read it as "
                               "fast as it separates."),
    threads: int = typer.Option(1, "--threads", min=1, max=MAX_THREADS, help="CPU threads for torch (default 1: "
                                "live compute comes in small pieces, which more threads slow down on a busy "
                                "machine; more can help a large model on idle cores)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail."),
) -> None:
    """Separate audio as it plays, with a fixed delay: a stream in, stems out as they come.

    Example: ffmpeg -i http://radio.example/stream -f wav - | unet-sep live - --stems accompaniment | ffplay -

    Messages and the end summary go to stderr; standard output carries only audio. Ctrl-C, SIGTERM or a closed
    output pipe end the run: files are finished with the stems separated so far.
    """
    setup_logging(verbose)
    try:
        _check_numbers(latency, duration, stdout_format)
        raw = _raw_format(source, rate, channels, sample_format)
        chosen = _names(stems)
        gain_of = _gains(gains)
        writes_stdout = to_stdout or (out is None and not output_devices)
        if writes_stdout and sys.stdout.isatty():
            raise SettingError("stdout", "is a terminal: pipe it (| ffplay -) or write files with --out")
        if source == "-" and sys.stdin.isatty():
            raise SettingError("input", "standard input is a terminal: pipe audio into it (ffmpeg -i URL -f wav - | "
                                        "unet-sep live -)")
        in_source = _open_source(source, raw, paced, rate, channels)
    except SettingError as error:
        raise _option_exit(error, source) from None
    _run(in_source, model, device, latency, threads, duration,
         dict(chosen=chosen, gains=gain_of, out=out, devices=output_devices or [], stdout=writes_stdout,
              wav=stdout_format == "wav", sample_format=sample_format))


def _option_exit(error: SettingError, source: str) -> typer.Exit:
    """One line for a setting that cannot be used, naming its option, or INPUT as given (a sound device); exit 2."""
    if error.setting != "input":
        return setting_error_exit(error)
    print_error(f"{source}: {error.reason}")
    return typer.Exit(2)


def _check_numbers(latency: Optional[float], duration: Optional[float], stdout_format: str) -> None:
    """The options that are plain numbers and choices, checked where they enter."""
    import math

    for setting, value in (("latency", latency), ("duration", duration)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise SettingError(setting, f"must be a number of seconds above 0, got {value}")
    if stdout_format not in ("wav", "raw"):
        raise SettingError("stdout_format", f"must be wav or raw, got {stdout_format!r}")


def _raw_format(source: str, rate: Optional[int], channels: Optional[int], sample_format: str) -> PcmFormat | None:
    """Raw PCM on standard input when --rate is given; its format, checked (None: a WAV stream, or no stdin)."""
    from unet_sep.audio.wav_stream import PcmFormat, check_sample_format
    from unet_sep.live.sources import DEVICE_PREFIX

    check_sample_format(sample_format)  # it also names standard output's samples
    if source != "-" and not source.startswith(DEVICE_PREFIX):
        for setting, value in (("rate", rate), ("channels", channels)):
            if value is not None:
                raise SettingError(setting, "is for standard input and devices; a file has its own")
    if source == "-" and rate is None:
        if channels is not None:
            raise SettingError("channels", "raw PCM on standard input needs --rate too (without it, standard input "
                                           "is a WAV stream whose header says its channels)")
        return None
    fmt = PcmFormat(rate or 44100, channels or 2, sample_format)
    return fmt if source == "-" else None


def _names(stems: Optional[str]) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None for all stems."""
    if stems is None:
        return None
    names = [name.strip() for name in stems.split(",") if name.strip()]
    if not names:
        raise SettingError("stems", "names no stem")
    return names


def _gains(spelled: Optional[str]) -> dict[str, float] | None:
    """``"vocals=0,accompaniment=1.5"`` -> ``{"vocals": 0.0, "accompaniment": 1.5}``."""
    import math

    if spelled is None:
        return None
    gains = {}
    for item in (part.strip() for part in spelled.split(",") if part.strip()):
        stem, equals, value = item.partition("=")
        try:
            gain = float(value)
        except ValueError:
            gain = math.nan
        if not equals or not stem.strip() or not math.isfinite(gain):
            raise SettingError("gains", f"{item!r} is not STEM=GAIN with a finite number (e.g. vocals=0)")
        gains[stem.strip()] = gain
    return gains


def _open_source(spelled: str, raw: PcmFormat | None, paced: bool, rate: Optional[int],
                 channels: Optional[int]) -> Source:
    """The input; a file, stream or device that cannot be used exits 2 with one line naming it."""
    from unet_sep.audio.resample import check_sample_rate
    from unet_sep.errors import FileError
    from unet_sep.live.sources import open_source

    try:
        if rate is not None:
            check_sample_rate(rate, "rate")
        return open_source(spelled, BLOCK_SECONDS, raw, sys.stdin.buffer, paced, rate, channels)
    except FileError as error:
        print_error(str(error) if error.path else f"{spelled}: {error.reason}")
        raise typer.Exit(2) from None


def _run(source: Source, model: Optional[str], device: str, latency: Optional[float], threads: int,
         duration: Optional[float], outputs: dict) -> None:
    """Load the model, make the session and the sinks, run the loop, finish the sinks; exits with the status."""
    import torch

    try:
        torch.set_num_threads(threads)
        session, hop_seconds = _session(model, device, source, latency)
        sinks = _sinks(session, outputs)
    except SettingError as error:
        source.close()
        raise _option_exit(error, source.name) from None
    # The stems are computed a hop at a time, so a block that completes a hop waits for its segment: compute is
    # behind when a block's stems take longer than one hop (or what --latency leaves beyond the plan's delay).
    planned = session.latency_samples / session.sample_rate
    allowance = max((latency or planned) - planned, hop_seconds, BLOCK_SECONDS)
    typer.echo(f"live: {source.name} at {session.sample_rate} Hz, {session.channels} channel(s); stems "
               f"{', '.join(session.stems)}; latency {session.latency_samples / session.sample_rate:.3f} s "
               f"({session.latency_samples} samples)" + (f", compute may add {allowance:.3f} s" if source.realtime
                                                         else ""), err=True)
    report = _loop(session, source, sinks, allowance, duration)
    typer.echo(f"live: {report.summary()}", err=True)
    if report.interrupt is not None:
        raise typer.Exit(interrupted_exit_code(report.interrupt))
    if report.stopped:  # standard output closed: as SIGPIPE ends a program writing to a pipe
        raise typer.Exit(EXIT_BROKEN_PIPE)


def _loop(session: Session, source: Source, sinks: list[Sink], allowance: float,
          duration: Optional[float]) -> LiveReport:
    """The loop with a progress bar on a terminal; the sinks finished whatever ends it (aborted on an error)."""
    from tqdm import tqdm

    from unet_sep.errors import FileError
    from unet_sep.live.loop import run_live

    max_frames = None if duration is None else round(duration * session.sample_rate)
    bar = tqdm(unit="s", unit_scale=False, disable=None, file=sys.stderr, bar_format="{desc} {n:.1f} s {rate_fmt}",
               desc="live")
    try:
        report = run_live(session, source, sinks, allowance, max_frames,
                          warn=lambda line: bar.write(f"warning: {line}", file=sys.stderr),
                          progress=lambda frames: bar.update(frames / session.sample_rate))
    except FileError as error:
        bar.close()
        _close(source, sinks, aborted=True)
        print_error(str(error) if error.path else f"{source.name}: {error.reason}")
        raise typer.Exit(1) from None
    except BaseException:
        bar.close()
        _close(source, sinks, aborted=True)
        raise
    bar.close()
    _close(source, sinks, aborted=False)
    return report


def _close(source: Source, sinks: list[Sink], aborted: bool) -> None:
    source.close()
    for sink in sinks:
        if aborted:
            sink.abort()
        else:
            sink.finish()


def _session(model: Optional[str], device: str, source: Source, latency: Optional[float]) -> tuple[Session, float]:
    """The model's live session for the source's rate and channels, and the seconds between its segment runs (a
    hop); model errors exit 2 with one line."""
    from unet_sep.config import ConfigError
    from unet_sep.separate.separator import Separator
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.entries import ModelNotFoundError
    from unet_sep.weights.registry import model_or_default

    try:
        separator = Separator.from_pretrained(model_or_default(model), device=device)
    except (ModelNotFoundError, CheckpointError, ConfigError) as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    session = separator.live_session(source.sample_rate, source.channels, latency)
    return session, session.plan.hop * separator.config.stft.hop_length / separator.sample_rate


def _sinks(session: Session, outputs: dict) -> list[Sink]:
    """Sound devices, standard output and files, as the options ask (standard output written as binary)."""
    from unet_sep.audio.wav_stream import PcmFormat
    from unet_sep.live.sinks import DeviceSink, FileSink, PipeSink, mix_weights

    weights = mix_weights(session.stems, outputs["chosen"], outputs["gains"])
    sinks: list[Sink] = []
    try:
        for spelled in outputs["devices"]:
            stem, equals, name = spelled.rpartition("=")
            if equals and stem not in session.stems:
                raise SettingError("output_device", f"unknown stem {stem!r} in {spelled!r}; the model's stems are "
                                                    f"{', '.join(session.stems)}")
            alone = mix_weights(session.stems, [stem], None) if equals else weights
            sinks.append(DeviceSink(name, alone, session.sample_rate, session.channels))
        if outputs["stdout"]:
            fmt = PcmFormat(session.sample_rate, session.channels, outputs["sample_format"])
            sinks.append(PipeSink(_stdout_binary(), weights, fmt, outputs["wav"]))
        if outputs["out"] is not None:  # last: no folder is made when another output cannot be used
            sinks.append(FileSink(outputs["out"], session.stems, outputs["chosen"], session.sample_rate,
                                  session.channels))
    except SettingError:
        for sink in sinks:
            sink.abort()
        raise
    return sinks


def _stdout_binary() -> BinaryIO:
    """Standard output as a binary stream on descriptor 1 (``sys.stdout`` may be a text wrapper)."""
    sys.stdout.flush()
    return os.fdopen(os.dup(1), "wb", buffering=0)
