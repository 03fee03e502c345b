"""``unet-sep separate``: the files given, through the file pipeline, with progress bars and one summary line."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from unet_sep.cli.common import MAX_THREADS, option_name, print_error, setting_error_exit, setup_logging
from unet_sep.cli.process import interrupted_exit_code
from unet_sep.cli.progress import ProgressBars
from unet_sep.config import DEFAULT_WIENER_WINDOW, MASK_EXTENSIONS, MAX_WIENER_ITERATIONS, PRECISIONS
from unet_sep.errors import one_line
from unet_sep.separate.outputs import DEFAULT_TEMPLATE
from unet_sep.separate.settings import (
    BACKENDS,
    CPU_BATCH_SIZE,
    DEFAULT_BACKEND,
    GPU_BATCH_SIZE,
    MAX_BATCH_SIZE,
    MAX_OVERLAP,
    SeparationSettings,
)

if TYPE_CHECKING:

    from unet_sep.separate.files import FileEvent, FileOptions
    from unet_sep.separate.pipeline import FilePipeline
    from unet_sep.separate.ranks import SeparationRanks

log = logging.getLogger("unet_sep")


def _spelled(choices: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"`` (for help texts)."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else "".join(choices)


_MASK_EXTENSION_HELP = (
    f"Masks above the model's band: {_spelled(MASK_EXTENSIONS)} (zeros: nothing above the band, as Spleeter; "
    "average: the band's mean mask; last: the mask of its top bin; capped_average: the mean mask, capped by each "
    "stem's share of the energy of the band's top octave). Default: the model's own (capped_average for the bundled "
    "and converted Spleeter models)."
)


_WIENER_HELP = (f"Multichannel Wiener filter: N EM iterations after the masks, 0 to {MAX_WIENER_ITERATIONS} (0: the "
                "ratio masks alone). "
                "With --segmentation spleeter, 1 is Spleeter's --mwf. Default: the model's own (0 for the bundled "
                "and Spleeter models).")
_WINDOW_HELP = ("STFT frames the Wiener filter's statistics span (0: the whole track, memory grows with its "
                f"length). Default: the whole track with --segmentation spleeter, else {DEFAULT_WIENER_WINDOW} frames.")

# The settings' defaults are SeparationSettings' (each option's default is its field's); the help says what a None
# default becomes from the constants resolve() uses.
_DEFAULT = SeparationSettings
_DEVICE_HELP = ("auto, cpu, cuda, cuda:N or mps (under torchrun, auto or cuda: local rank r takes GPU r, round the "
                "GPUs when there are more ranks).")
_BATCH_HELP = (f"Segments per U-Net batch, 1 to {MAX_BATCH_SIZE}. Default: {CPU_BATCH_SIZE} on the CPU, "
               f"{GPU_BATCH_SIZE} on a GPU.")
_OVERLAP_HELP = (f"Least overlap between segments, as a fraction of a segment from 0 to {MAX_OVERLAP} (cross-faded). "
                 "Default: one stride step of the model's U-Nets (2^depth STFT frames), the fewest segments per song.")
_SEGMENTATION_HELP = ("overlap (overlapping segments, their masks cross-faded) or spleeter (back-to-back segments, "
                      "Spleeter's exact output).")
_BACKEND_HELP = (f"What runs the U-Nets: {_spelled(BACKENDS)} (the U-Nets exported to ONNX once, kept in the cache, "
                 f"and run by ONNX Runtime; fp32; needs unet-sep[onnx]). Default: {DEFAULT_BACKEND}; onnxruntime for a "
                 ".onnx --model.")

_READERS_HELP = ("Threads decoding the next inputs while the model computes, 1 to 64. Default: 2 on the CPU; with a "
                 "GPU, the cores this process may use less one (shared out among torchrun's local ranks).")
_WRITERS_HELP = ("Threads encoding stems (each input's by one), 1 to 64. Default: 1 on the CPU; with a GPU, as many as "
                 "readers (encoding is most of what a GPU leaves to the CPU).")

_BIT_DEPTH_HELP = ("16, 24 or float (wav); 16 or 24 (flac). Default: float wav, whatever the input's depth (the stems "
                   "are float results and may exceed full scale, so they add up to the input exactly); flac: 16 bits "
                   "for 16-bit inputs, else 24.")
_CLIP_MODE_HELP = ("Stem samples beyond full scale where the format cannot hold them (flac, 16- or 24-bit wav): "
                   "rescale (the default there: one gain for all of a song's stems, so they still add up to gain x "
                   "the input; a warning gives the gain), clamp (clip each sample; a warning counts them) or none "
                   "(as they are: float wav, mp3 and ogg hold them; the default there).")


def separate(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", show_default=False,
                                       help="Audio files, folders (searched recursively) or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the stems to (folders and globs never pick up "
                                                      "files under it)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A registered model name (see `unet-sep models`), "
                                        "a model folder, hf://ORG/REPO[@REVISION] on the Hugging Face Hub, or a .onnx "
                                        "file from `unet-sep models export`. Default: the bundled model."),
    stems: Optional[str] = typer.Option(None, "--stems",
                                        help="Comma-separated stems to write, e.g. vocals (default: all)."),
    two_stems: Optional[str] = typer.Option(None, "--two-stems", metavar="STEM", help="Write STEM and no_STEM, the sum "
                                            "of all other stems (e.g. --two-stems vocals: vocals and no_vocals)."),
    fmt: str = typer.Option("wav", "--format", "-f", help="Output format: wav, flac, ogg or mp3."),
    bit_depth: Optional[str] = typer.Option(None, "--bit-depth", help=_BIT_DEPTH_HELP),
    clip_mode: Optional[str] = typer.Option(None, "--clip-mode", help=_CLIP_MODE_HELP),
    bitrate: Optional[int] = typer.Option(None, "--bitrate", "-b", metavar="KBPS", help="mp3: constant bit rate in "
                                          "kbit/s (32-320 at 32-48 kHz; 8-160 at 16-24 kHz; 8-64 at 8-12 kHz; one the "
                                          "stems' rate does not offer is an error); ogg: the Vorbis quality of this "
                                          "nominal rate (64-500). Default: the encoder's (VBR, about 140 kbit/s for "
                                          "mp3 at 44.1 kHz)."),
    template: str = typer.Option(DEFAULT_TEMPLATE, "--template", help="Output path under --out; fields {dir} (the "
                                 "input's folder under the folder or glob given), {track}, {trackext}, {stem}, {ext}, "
                                 "{model}."),
    offset: float = typer.Option(0.0, "--offset", help="Start this many seconds into each input."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Separate only this many seconds (default: to "
                                             "the end; nothing is cut silently)."),
    device: str = typer.Option(_DEFAULT.device, "--device", help=_DEVICE_HELP),
    batch_size: Optional[int] = typer.Option(_DEFAULT.batch_size, "--batch-size", help=_BATCH_HELP),
    overlap: Optional[float] = typer.Option(_DEFAULT.overlap, "--overlap", help=_OVERLAP_HELP),
    segmentation: str = typer.Option(_DEFAULT.segmentation, "--segmentation", help=_SEGMENTATION_HELP),
    mask_extension: Optional[str] = typer.Option(_DEFAULT.mask_extension, "--mask-extension",
                                                 help=_MASK_EXTENSION_HELP),
    wiener_iterations: Optional[int] = typer.Option(_DEFAULT.wiener_iterations, "--wiener-iterations", metavar="N",
                                                    help=_WIENER_HELP),
    wiener_window: Optional[int] = typer.Option(_DEFAULT.wiener_window, "--wiener-window", metavar="FRAMES",
                                                help=_WINDOW_HELP),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", metavar="HZ", help="Write stems at this rate, "
                                              "8000 to 192000 Hz (default: each input's own rate)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS, help="CPU threads for torch "
                                          "(default: the cores this process may use, shared out among torchrun's "
                                          "local ranks)."),
    readers: Optional[int] = typer.Option(None, "--readers", help=_READERS_HELP),
    writers: Optional[int] = typer.Option(None, "--writers", help=_WRITERS_HELP),
    precision: str = typer.Option(_DEFAULT.precision, "--precision",
                                  help=f"U-Net arithmetic: {_spelled(PRECISIONS)} (autocast; for GPUs)."),
    compile_net: bool = typer.Option(_DEFAULT.compile, "--compile",
                                     help="Run the U-Nets through torch.compile (slow first call)."),
    backend: Optional[str] = typer.Option(_DEFAULT.backend, "--backend", help=_BACKEND_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip inputs whose "
                                   "stems all exist)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail."),
) -> None:
    """Separate audio files into stems.

    Example: unet-sep separate song.mp3 album/ "live/*.flac" --out stems/ --stems vocals --format flac

    Many GPUs or machines: torchrun --nproc-per-node N -m unet_sep separate INPUT... --out DIR shares the inputs
    out among the ranks (one device each); re-running skips the files whose stems exist.
    """
    setup_logging(verbose)
    options = _file_options(out, template, fmt, bit_depth, bitrate, stems, two_stems, offset, duration, overwrite,
                            sample_rate, clip_mode)
    from unet_sep.errors import SettingError
    from unet_sep.separate.ranks import SeparationRanks

    ranks = SeparationRanks()
    try:
        try:  # the device first: this process's (one GPU per local rank), made current before anything goes on one
            settings = SeparationSettings(
                device=ranks.device(device), segmentation=segmentation, overlap=overlap, batch_size=batch_size,
                mask_extension=mask_extension, precision=precision, compile=compile_net, backend=backend,
                wiener_iterations=wiener_iterations, wiener_window=wiener_window)
        except SettingError as error:
            raise setting_error_exit(error) from None
        _separate(ranks, inputs, options, model, settings, threads, dict(readers=readers, writers=writers), quiet)
    finally:
        ranks.close()


def _file_options(out: Path, template: str, fmt: str, bit_depth: Optional[str], bitrate: Optional[int],
                  stems: Optional[str], two_stems: Optional[str], offset: float, duration: Optional[float],
                  overwrite: bool, sample_rate: Optional[int], clip_mode: Optional[str]) -> FileOptions:
    """Where and how the stems are written; a setting that cannot be used exits 2 with one line."""
    from unet_sep.errors import SettingError
    from unet_sep.separate.files import FileOptions

    selected = None if stems is None else [name.strip() for name in stems.split(",") if name.strip()]
    try:
        return FileOptions(out, template, fmt, bit_depth, bitrate, selected, two_stems, offset, duration, overwrite,
                           sample_rate, clip_mode)
    except SettingError as error:
        raise setting_error_exit(error) from None


def _load_pipeline(model: Optional[str], settings: SeparationSettings, options: FileOptions,
                   stage_threads: dict) -> tuple[str, FilePipeline]:
    """The model's runner and the file pipeline around it; option and model errors exit 2 with one line."""
    from unet_sep.config import ConfigError
    from unet_sep.errors import SettingError
    from unet_sep.separate.pipeline import FilePipeline
    from unet_sep.separate.runner import NetworkRunner, load_network
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.entries import ModelNotFoundError
    from unet_sep.weights.registry import model_or_default

    try:
        model_name = model_or_default(model)
        net, config, chosen = load_network(model_name, settings)
        return model_name, FilePipeline(NetworkRunner(net, config, chosen), options, **stage_threads)
    except SettingError as error:
        raise setting_error_exit(error) from None
    except (ModelNotFoundError, CheckpointError, ConfigError, RuntimeError, ValueError) as error:
        print_error(str(error))
        raise typer.Exit(2) from None


def _failure_text(error: BaseException | None) -> str:
    """One line for a failed file (the caller names the file)."""
    from unet_sep.errors import failure_reason

    # advice in the options' words: --batch-size 4
    reason = failure_reason(error, lambda setting, value: f"{option_name(setting)} {value}")
    if reason is not None:
        return reason
    log.info("unexpected error", exc_info=error)  # a bug, but one file's: one line, and the batch goes on
    return f"unexpected {type(error).__name__}: {one_line(error)} (use --verbose for details)"


def _separate(ranks: SeparationRanks, inputs: list[str], options: FileOptions, model: Optional[str],
              settings: SeparationSettings, threads: Optional[int], stage_threads: dict, quiet: bool) -> None:
    import torch

    from unet_sep.separate.files import NotSeparatedError
    from unet_sep.separate.inputs import expand_inputs

    torch.set_num_threads(threads or ranks.cpu_threads())
    files, input_errors, repeated = expand_inputs(inputs, exclude=[options.out_dir])
    lead = ranks.rank == 0  # messages about the whole batch come from one rank
    if lead:
        for message in input_errors:
            print_error(message)
    model_name, pipeline = _load_pipeline(model, settings, options, stage_threads)
    if not files and not ranks.group:
        raise typer.Exit(1)

    here = {i: files[i].path for i in range(ranks.rank, len(files), ranks.world)}  # this rank's share
    progress = ProgressBars(len(files), here, enabled=not quiet and sys.stderr.isatty() and lead)
    done: list[float] = []
    skipped: list[Path] = []
    failed: list[Path] = []
    not_separated: list[FileEvent] = []  # inputs a stopped run left undone: reported together, once
    started = time.perf_counter()
    interrupted = 0  # the exit status of an interrupted run
    runner = pipeline.runner
    log.info("model %s: stems %s at %d Hz on %s", model_name, ", ".join(runner.stems), runner.sample_rate,
             runner.device)

    def on_event(event: FileEvent) -> None:
        progress.add(event)
        if event.kind == "skipped":
            skipped.append(event.path)
            progress.write(f"skipped {event.path}: outputs exist (use --overwrite to replace them)")
        elif event.kind == "failed":
            failed.append(event.path)
            if isinstance(event.error, NotSeparatedError):
                not_separated.append(event)
            else:
                progress.write(f"error: {event.path}: {_failure_text(event.error)}")
        elif event.kind == "done":
            done.append(event.done / event.sample_rate if event.sample_rate else 0.0)
            if not quiet:
                progress.write(f"{event.path} -> {', '.join(str(p) for p in event.outputs.values())}")

    try:
        pipeline.run(files, on_event=on_event, shard=ranks.shard)
    except KeyboardInterrupt as error:  # Ctrl-C, or a signal that ends a run (cli.process)
        progress.close()
        for path in getattr(error, "unfinished", []):
            print_error(f"{path}: interrupted; its partial outputs were removed")
        interrupted = interrupted_exit_code(error)
    finally:
        progress.close()
    if not_separated:
        print_error(_not_separated_line(not_separated))

    mine = {"done": len(done), "audio": sum(done), "skipped": len(skipped),
            "failed": len(failed) + (len(input_errors) if lead else 0), "wall": time.perf_counter() - started,
            "interrupted": interrupted, "repeated": len(repeated) if lead else 0,
            "named_again": len({kept for _, kept in repeated}) if lead else 0}
    everyone = ranks.gather(mine) if not interrupted else [mine]
    if lead:
        typer.echo(_separate_summary(everyone, ranks.world), err=True)
    if interrupted:
        raise typer.Exit(interrupted)
    if any(r["failed"] for r in everyone):
        raise typer.Exit(1)


def _not_separated_line(events: list[FileEvent], shown: int = 5) -> str:
    """One line for the inputs a stopped run left undone (each event's error is a NotSeparatedError)."""
    events = sorted(events, key=lambda event: event.index)
    cause = getattr(events[0].error, "cause", None)
    why = _failure_text(cause) if cause is not None else "stopped"
    names = ", ".join(str(event.path) for event in events[:shown])
    more = f" and {len(events) - shown} more" if len(events) > shown else ""
    return (f"the run stopped ({why}); {len(events)} input(s) not separated: {names}{more}; run the same command "
            "again once that is fixed (finished inputs are skipped)")


def _separate_summary(everyone: list[dict], world: int) -> str:
    """The run's one summary line, over every rank's counts."""
    total = {key: sum(r[key] for r in everyone) for key in ("done", "audio", "skipped", "failed", "repeated",
                                                              "named_again")}
    wall = max(r["wall"] for r in everyone)
    speed = f", {total['audio'] / wall:.1f}x real time" if total["done"] and wall > 0 else ""
    where = f" on {world} ranks" if world > 1 else ""
    summary = f"separated {total['done']} file(s) ({total['audio']:.1f} s of audio) in {wall:.1f} s{where}{speed}"
    if total["skipped"]:
        summary += f"; skipped {total['skipped']} already done"
    if total["repeated"]:  # one file under several names (./a.wav, $PWD/a.wav, a link): separated under the first
        files = total["named_again"]
        times = "twice" if total["repeated"] == files else "more than once"
        summary += f"; {files} input{'s' if files > 1 else ''} named {times}, separated once"
    if total["failed"]:
        summary += f"; {total['failed']} failed"
    return summary
