"""The ``unet-sep`` command: thin wrappers that parse options, call the API and print."""

from __future__ import annotations

import io
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer
import typer.core

from unet_sep import __version__
from unet_sep.config import MASK_EXTENSIONS, PRECISIONS
from unet_sep.separate.outputs import DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from unet_sep.separate.ranks import SeparationRanks

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Split music into stems (vocals, accompaniment, drums, bass, ...) with spectrogram U-Nets.",
)
class _Command(typer.core.TyperCommand):
    """Usage lines in the usual notation: ``unet-sep separate [OPTIONS] INPUT...`` (this typer writes required
    arguments in braces, ``{INPUT}...``)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = param.display_name_raw.upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


models_app = typer.Typer(add_completion=False, rich_markup_mode=None, help="List and manage separation models.")
app.add_typer(models_app, name="models")

log = logging.getLogger("unet_sep")


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


# The command-line spelling of the API's settings where it is not "--" + the name with dashes.
_OPTION_NAMES = {"fmt": "--format", "out_dir": "--out", "compile": "--compile"}


def _setting_error(error) -> typer.Exit:
    """Print a :class:`~unet_sep.errors.SettingError` in one line naming the option; the exit (2) to raise."""
    option = _OPTION_NAMES.get(error.setting, "--" + error.setting.replace("_", "-"))
    _error(f"{option}: {error.reason}")
    return typer.Exit(2)


def _setup_logging(verbose: bool) -> None:
    """Our own handler on the package logger, so our messages reach stderr whatever libraries do to the root logger."""
    package = logging.getLogger("unet_sep")
    package.setLevel(logging.INFO if verbose else logging.WARNING)
    for old in [h for h in package.handlers if getattr(h, "_unet_sep", False)]:
        package.removeHandler(old)  # a second command in the same process (tests): its stderr may be closed
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._unet_sep = True  # type: ignore[attr-defined]
    package.addHandler(handler)
    package.propagate = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unet-sep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Split music into stems with spectrogram U-Nets."""


class _Progress:
    """tqdm bars on stderr: one per file in flight (seconds of audio) and one for all files, whose total and ETA
    come from :class:`~unet_sep.separate.progress.RunProgress` (known lengths plus estimates for inputs not opened
    yet)."""

    def __init__(self, n_files: int, inputs: dict[int, Path], enabled: bool) -> None:
        from tqdm import tqdm

        from unet_sep.separate.progress import RunProgress

        self.run = RunProgress(inputs)
        self.enabled = enabled
        self.overall = tqdm(total=0, unit="s", desc="all files", position=0, disable=not enabled,
                            dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")
        self.n_files = n_files
        self.bars: dict[int, object] = {}

    def add(self, event) -> None:
        """Count a :class:`~unet_sep.separate.files.FileEvent` and show it."""
        self.run.add(event)
        if event.kind == "progress" and self.enabled:
            self._file_bar(event)
        elif event.final and event.index in self.bars:
            self.bars.pop(event.index).close()
        total = round(self.run.total, 1)
        if total != self.overall.total:
            self.overall.total = total
            self.overall.refresh()
        self.overall.update(self.run.done - self.overall.n)

    def _file_bar(self, event) -> None:
        from tqdm import tqdm

        seconds, _ = self.run.seconds(event.index)
        bar = self.bars.get(event.index)
        if bar is None:
            name = event.path.name if len(event.path.name) <= 30 else event.path.name[:27] + "..."
            rate = event.sample_rate
            bar = self.bars[event.index] = tqdm(
                total=round(max(event.total, event.done) / rate, 1) if rate else 0, unit="s",
                desc=f"[{event.index + 1}/{self.n_files}] {name}", position=1 + len(self.bars), leave=False,
                dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_fmt}]")
        if seconds > bar.total:
            bar.total = seconds
        bar.update(seconds - bar.n)

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.overall.close()


def _spelled(choices: tuple[str, ...]) -> str:
    """``("a", "b", "c")`` -> ``"a, b or c"`` (for help texts)."""
    return f"{', '.join(choices[:-1])} or {choices[-1]}" if len(choices) > 1 else "".join(choices)


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM is handled like Ctrl-C: clean up, then leave
    raise KeyboardInterrupt


@app.command(cls=_Command)
def separate(
    inputs: List[str] = typer.Argument(..., metavar="INPUT", show_default=False, help="Audio files, folders (searched recursively) or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the stems to (folders and globs never pick up files under it)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A registered model name (see `unet-sep models`) or a model folder. Default: the bundled model."),
    stems: Optional[str] = typer.Option(None, "--stems", help="Comma-separated stems to write, e.g. vocals (default: all)."),
    two_stems: Optional[str] = typer.Option(None, "--two-stems", metavar="STEM", help="Write STEM and no_STEM, the sum of all other stems (e.g. --two-stems vocals: vocals and no_vocals)."),
    fmt: str = typer.Option("wav", "--format", "-f", help="Output format: wav, flac, ogg or mp3."),
    bit_depth: Optional[str] = typer.Option(None, "--bit-depth", help="16, 24 or float (wav); 16 or 24 (flac). Default: the input's: 16- and 24-bit PCM keep their depth, anything else (float, mp3, aac, ...) is written as float wav or 24-bit flac, so the stems add up to the input without clipping."),
    bitrate: Optional[int] = typer.Option(None, "--bitrate", "-b", metavar="KBPS", help="mp3: constant bit rate in kbit/s (32-320 at 32-48 kHz; 8-160 at 16-24 kHz); ogg: the Vorbis quality of this nominal rate (64-500). Default: the encoder's (VBR, about 140 kbit/s for mp3 at 44.1 kHz)."),
    template: str = typer.Option(DEFAULT_TEMPLATE, "--template", help="Output path under --out; fields {dir} (the input's folder under the folder or glob given), {track}, {trackext}, {stem}, {ext}, {model}."),
    offset: float = typer.Option(0.0, "--offset", help="Start this many seconds into each input."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Separate only this many seconds (default: to the end; nothing is cut silently)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Segments per U-Net batch (default: 2 on the CPU, 8 on a GPU)."),
    overlap: float = typer.Option(0.25, "--overlap", help="Overlap between segments, as a fraction of a segment from 0 to 0.75 (cross-faded)."),
    segmentation: str = typer.Option("overlap", "--segmentation", help="overlap (default) or spleeter (back-to-back segments, Spleeter's exact output)."),
    mask_extension: Optional[str] = typer.Option(None, "--mask-extension", help=f"Masks above the model's band: {_spelled(MASK_EXTENSIONS)} (zeros: nothing above the band, as Spleeter). Default: the model's own (bundled model: average; Spleeter models: last)."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", metavar="HZ", help="Write stems at this rate, 8000 to 192000 Hz (default: each input's own rate)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: the cores this process may use, shared out among torchrun's local ranks)."),
    readers: int = typer.Option(2, "--readers", min=1, help="Threads decoding the next inputs while the model computes."),
    precision: str = typer.Option("fp32", "--precision", help=f"U-Net arithmetic: {_spelled(PRECISIONS)} (autocast; for GPUs)."),
    compile_net: bool = typer.Option(False, "--compile", help="Run the U-Nets through torch.compile (slow first call)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (default: skip inputs whose stems all exist)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail."),
) -> None:
    """Separate audio files into stems.

    Example: unet-sep separate song.mp3 album/ "live/*.flac" --out stems/ --stems vocals --format flac

    Many GPUs or machines: torchrun --nproc-per-node N -m unet_sep separate INPUT... --out DIR shares the inputs
    out among the ranks (one device each); re-running skips the files whose stems exist.
    """
    _setup_logging(verbose)
    from unet_sep.errors import SettingError
    from unet_sep.separate.files import FileOptions

    selected = None if stems is None else [name.strip() for name in stems.split(",") if name.strip()]
    try:
        options = FileOptions(out, template, fmt, bit_depth, bitrate, selected, two_stems, offset, duration, overwrite,
                              sample_rate)
    except SettingError as error:
        raise _setting_error(error)
    model_options = dict(segmentation=segmentation, overlap=overlap, batch_size=batch_size,
                         mask_extension=mask_extension, precision=precision, compile=compile_net)
    from unet_sep.separate.ranks import SeparationRanks

    ranks = SeparationRanks()
    try:
        _separate(ranks, inputs, options, model, ranks.device(device), model_options, threads, readers, quiet)
    finally:
        ranks.close()


def _load_pipeline(model: Optional[str], device: str, model_options: dict, options, readers: int):
    """The model and the file pipeline around it; option and model errors exit 2 with one line."""
    from unet_sep.config import ConfigError
    from unet_sep.errors import SettingError
    from unet_sep.separate.pipeline import FilePipeline
    from unet_sep.separate.separator import Separator
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.entries import ModelNotFoundError
    from unet_sep.weights.registry import default_model_name

    model_name = model or default_model_name()
    if model_name is None:
        _error("no model given and no bundled default model is installed; pass --model NAME_OR_FOLDER (see `unet-sep models`)")
        raise typer.Exit(2)
    try:
        separator = Separator.from_pretrained(model_name, device=device, **model_options)
        return model_name, FilePipeline(separator.runner, options, readers=readers)
    except SettingError as error:
        raise _setting_error(error)
    except (ModelNotFoundError, CheckpointError, ConfigError, RuntimeError, ValueError) as error:
        _error(str(error))
        raise typer.Exit(2)


def _failure_text(error: BaseException) -> str:
    """One line for a failed file (the caller names the file)."""
    from unet_sep.errors import FileError

    if isinstance(error, FileError):
        return error.reason
    if isinstance(error, (ValueError, OSError)):
        return str(error)
    log.info("unexpected error", exc_info=error)  # a bug, but one file's: one line, and the batch goes on
    return f"unexpected {type(error).__name__}: {' '.join(str(error).split())} (use --verbose for details)"


def _separate(ranks: SeparationRanks, inputs: list[str], options, model: Optional[str], device: str, model_options: dict,
              threads: Optional[int], readers: int, quiet: bool) -> None:
    import torch

    from unet_sep.separate.inputs import expand_inputs

    torch.set_num_threads(threads or ranks.cpu_threads())
    files, input_errors = expand_inputs(inputs, exclude=[options.out_dir])
    lead = ranks.rank == 0  # messages about the whole batch come from one rank
    if lead:
        for message in input_errors:
            _error(message)
    model_name, pipeline = _load_pipeline(model, device, model_options, options, readers)
    if not files and not ranks.group:
        raise typer.Exit(1)

    here = {i: files[i].path for i in range(ranks.rank, len(files), ranks.world)}  # this rank's share
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    progress = _Progress(len(files), here, enabled=not quiet and sys.stderr.isatty() and lead)
    done: list[float] = []
    skipped: list[Path] = []
    failed: list[Path] = []
    started = time.perf_counter()
    interrupted = False
    runner = pipeline.runner
    log.info("model %s: stems %s at %d Hz on %s", model_name, ", ".join(runner.stems), runner.sample_rate, runner.device)

    def on_event(event) -> None:
        progress.add(event)
        if event.kind == "skipped":
            skipped.append(event.path)
            progress.write(f"skipped {event.path}: outputs exist (use --overwrite to replace them)")
        elif event.kind == "failed":
            failed.append(event.path)
            progress.write(f"error: {event.path}: {_failure_text(event.error)}")
        elif event.kind == "done":
            done.append(event.done / event.sample_rate if event.sample_rate else 0.0)
            if not quiet:
                progress.write(f"{event.path} -> {', '.join(str(p) for p in event.outputs.values())}")

    try:
        pipeline.run(files, on_event=on_event, shard=ranks.shard)
    except KeyboardInterrupt as error:
        progress.close()
        for path in getattr(error, "unfinished", []):
            _error(f"{path}: interrupted; its partial outputs were removed")
        interrupted = True
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous)

    mine = {"done": len(done), "audio": sum(done), "skipped": len(skipped),
            "failed": len(failed) + (len(input_errors) if lead else 0), "wall": time.perf_counter() - started,
            "interrupted": interrupted}
    everyone = ranks.gather(mine) if not interrupted else [mine]
    if lead:
        typer.echo(_separate_summary(everyone, ranks.world), err=True)
    if interrupted:
        raise typer.Exit(130)
    if any(r["failed"] for r in everyone):
        raise typer.Exit(1)


def _separate_summary(everyone: list[dict], world: int) -> str:
    total = {key: sum(r[key] for r in everyone) for key in ("done", "audio", "skipped", "failed")}
    wall = max(r["wall"] for r in everyone)
    speed = f", {total['audio'] / wall:.1f}x real time" if total["done"] and wall > 0 else ""
    where = f" on {world} ranks" if world > 1 else ""
    summary = f"separated {total['done']} file(s) ({total['audio']:.1f} s of audio) in {wall:.1f} s{where}{speed}"
    if total["skipped"]:
        summary += f"; skipped {total['skipped']} already done"
    if total["failed"]:
        summary += f"; {total['failed']} failed"
    return summary


@app.command(cls=_Command)
def train(
    recipe: Path = typer.Argument(..., help="A recipe JSON file (or a folder holding one), e.g. recipes/mir1k/vocals-accompaniment.json."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<recipe name>). It becomes a model folder: unet-sep separate --model runs/NAME."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset root, overriding the recipe's data.root."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest checkpoint (same step, same data order). A finished run has nothing to do."),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="With --resume: continue even though the recipe differs from the run's recipe.json in keys that change the training (batch size, learning rate, data, ...; train.steps may change freely unless the schedule is cosine). The old recipe is kept as recipe.until-step-N.json."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set train.steps=200 --set model.unet.filters=[8,16,32,64,128,256]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun each process uses cuda:LOCAL_RANK)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch. Default: as many as the cores other processes leave free, counted again every 5 s (at most torch's default, shared among torchrun's local processes): threads sharing a core with a busy process slow every step down (2 cores, one busy: 0.50 s per step by default, 1.03 s with 2 threads; recipes/README.md has the table). A number fixes the count, e.g. for bit-for-bit reproducible runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every logged step."),
) -> None:
    """Train a separator from a recipe, on one device or many (torchrun --nproc-per-node N -m unet_sep train ...).

    Example: unet-sep train recipes/mir1k/vocals-accompaniment.json --out runs/mir1k --set train.steps=2000
    """
    _setup_logging(verbose)
    import os

    import torch

    from unet_sep.config import ConfigError
    from unet_sep.errors import SettingError
    from unet_sep.train.checkpoints import resume_advice
    from unet_sep.train.loop import Trainer
    from unet_sep.train.metrics import CURVES_FILE
    from unet_sep.train.recipe import load_recipe
    from unet_sep.train.result import RecipeChangedError, TrainingError

    if threads:
        torch.set_num_threads(threads)
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        loaded = load_recipe(recipe, overrides, data_root)
    except (ConfigError, TypeError, ValueError) as error:
        _error(str(error))
        raise typer.Exit(2)
    run_folder = out or Path("runs") / (recipe.stem if recipe.is_file() else recipe.name)
    if allow_changes and not resume:
        _error("--allow-changes applies to --resume only")
        raise typer.Exit(2)
    try:
        result = Trainer(loaded, run_folder, device=device, resume=resume, progress=not quiet, allow_changes=allow_changes,
                         adapt_threads=threads is None).run()
    except SettingError as error:
        raise _setting_error(error)
    except RecipeChangedError as error:
        _error(str(error))
        raise typer.Exit(2)
    except (TrainingError, ConfigError, ValueError, OSError) as error:
        _error(str(error))
        raise typer.Exit(1)
    except KeyboardInterrupt:
        _error(f"{run_folder}: interrupted; {resume_advice(run_folder, loaded.train.checkpoint_every)}")
        raise typer.Exit(130)
    if main_process:
        typer.echo(result.summary(), err=True)
        curves = result.out / CURVES_FILE  # absent when matplotlib is not installed
        typer.echo(f"model: {result.out} (unet-sep separate SONG --model {result.out})"
                   + (f"; curves: {curves}" if curves.is_file() else ""), err=True)
        sys.stderr.flush()


@app.command(cls=_Command)
def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The model to score: a registered name or a model folder; its stems are the targets."),
    data: Optional[Path] = typer.Option(None, "--data", help="A data set's folder in any known format (MUSDB18, MUSDB18-HQ, a folder of <track>/<stem>.<ext> files), recognised from what it holds."),
    data_option: List[str] = typer.Option([], "--data-option", metavar="KEY=VALUE", help="A data setting by its name in a recipe's data section, e.g. kind=musdb, is_wav=true, split_file=splits.json, split_group=singers; repeatable."),
    musdb_root: Optional[Path] = typer.Option(None, "--musdb-root", help="A MUSDB18 root (.stem.mp4), or MUSDB18-HQ with --is-wav (--data ROOT --data-option kind=musdb)."),
    subset: Optional[str] = typer.Option(None, "--subset", help="MUSDB split: test (default), train, valid or train+valid."),
    is_wav: bool = typer.Option(False, "--is-wav", help="--musdb-root is MUSDB18-HQ (one WAV per source)."),
    stems_dir: Optional[Path] = typer.Option(None, "--stems-dir", help="A folder of <track>/<stem>.<ext> files, e.g. MIR-1K as vocals.ogg + accompaniment.ogg (--data FOLDER --data-option kind=folder)."),
    split_file: Optional[Path] = typer.Option(None, "--split-file", help="JSON split file for --stems-dir: {split: [track, ...]} or {group: {split: [...]}}."),
    split_group: Optional[str] = typer.Option(None, "--split-group", help="Group of a grouped split file (MIR-1K: singers or literature)."),
    split: Optional[str] = typer.Option(None, "--split", help="The split to score: one of --split-file, or of MUSDB with --data (default: test)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder: <method>/<track>.json (museval format), summary.csv, tracks.csv, sdr_boxplot.png. Running again resumes."),
    compare: List[str] = typer.Option([], "--compare", help="Another model (name or folder) or a folder of another method's museval per-track JSON; repeatable."),
    tracks: Optional[int] = typer.Option(None, "--tracks", help="Score only the first N tracks (quick checks)."),
    mir1k_mixing: bool = typer.Option(False, "--mir1k-mixing", help="MIR-1K protocol: voice and accompaniment mixed at 0 dB; adds GNSDR, GSIR, GSAR (whole-clip BSS Eval, length-weighted)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail."),
) -> None:
    """Score separators like the field does: museval BSSEval v4 (SDR, SIR, SAR, ISR in 1 s windows; median over
    windows, then over tracks, as SiSEC18), beside the mixture and oracle ratio-mask baselines.

    Example: unet-sep evaluate --model runs/mir1k --stems-dir data/mir1k --split-file data/mir1k/splits.json --split-group singers --mir1k-mixing --out eval/mir1k
    """
    _setup_logging(verbose)
    from unet_sep.evaluate.evaluation import EvaluationError
    from unet_sep.evaluate.plan import plan_evaluation

    _check_evaluate_options(model, out, tracks, threads, device)
    try:
        evaluation = plan_evaluation(
            model, out, data=data, data_options=data_option, musdb_root=musdb_root, subset=subset, is_wav=is_wav,
            stems_dir=stems_dir, split_file=split_file, split_group=split_group, split=split, compare=compare,
            max_tracks=tracks, mir1k_mixing=mir1k_mixing, device=device,
        )
    except EvaluationError as error:
        _error(str(error))
        raise typer.Exit(2)
    result, rows, paths = _run_evaluation(evaluation, out, progress=not quiet and sys.stderr.isatty())
    _print_evaluation(result, rows, paths, out)


def _check_evaluate_options(model: Optional[str], out: Optional[Path], tracks: Optional[int], threads: Optional[int],
                            device: str) -> None:
    """The options of ``evaluate`` that need no data or model: exit 2 with one line if one is missing or wrong."""
    if model is None or out is None:
        _error("--model and --out are required (see unet-sep evaluate --help)")
        raise typer.Exit(2)
    if (tracks is not None and tracks < 1) or (threads is not None and threads < 1):
        _error("--tracks and --threads must be positive numbers")
        raise typer.Exit(2)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from unet_sep.device import resolve_device
    from unet_sep.errors import SettingError

    try:
        resolve_device(device)  # a device the machine lacks is an option error, before models and data load
    except SettingError as error:
        raise _setting_error(error)


def _run_evaluation(evaluation, out: Path, progress: bool):
    """Run a planned evaluation and write its reports: (result, summary rows, report paths); exits 1 when no track
    could be scored or the results cannot be written, 130 when interrupted (SIGTERM too)."""
    from tqdm import tqdm

    from unet_sep.evaluate.report import write_reports

    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = evaluation.run(progress=progress, notify=lambda m: tqdm.write(m, file=sys.stderr))
        if not result.tracks:
            _error(f"no track could be scored ({len(result.failed)} failed)")
            raise typer.Exit(1)
        rows, paths = write_reports(result.scores, out, result.stems, mir1k=result.mir1k_mixing, title=result.title)
    except KeyboardInterrupt:
        _error(f"interrupted; the tracks scored so far are in {out}: run the same command again to resume")
        raise typer.Exit(130)
    except OSError as error:
        _error(f"{out}: {error.strerror or error}")
        raise typer.Exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return result, rows, paths


def _print_evaluation(result, rows: list, paths: dict, out: Path) -> None:
    """The table on stdout; what is missing, what was done and where it went on stderr; exit 1 if a track failed."""
    from unet_sep.evaluate.report import format_table

    typer.echo(format_table(rows, mir1k=result.mir1k_mixing))
    for method, missing in result.missing.items():
        typer.echo(f"warning: {method} has no results for {len(missing)} of the {len(result.tracks)} tracks "
                   f"(e.g. {missing[0]}); its figures cover the others", err=True)
    summary = (f"scored {len(result.tracks)} track(s) x {len(result.methods)} methods in {result.seconds:.1f} s: "
               f"{result.scored} scored now, {result.resumed} read back from {out}")
    if result.failed:
        summary += f"; {len(result.failed)} track(s) failed"
    typer.echo(summary, err=True)
    typer.echo(f"wrote {paths['summary']}, {paths['tracks']}, {paths['boxplot']}", err=True)
    if result.failed:
        raise typer.Exit(1)


@models_app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List the registered models: stems, sample rate, the band the U-Nets see, and whether they are on disk."""
    if ctx.invoked_subcommand is not None:
        return
    from unet_sep.weights.entries import cache_dir
    from unet_sep.weights.registry import registered_models

    entries = registered_models()
    if not entries:
        typer.echo("no registered models; pass a model folder to --model")
        return
    rows = [("name", "stems", "rate", "U-Net band", "where")]
    for entry in entries.values():
        local = entry.local_folder()
        where = "bundled" if entry.bundled is not None else "on disk" if local is not None else f"download from {entry.url}"
        band = f"0-{entry.band_hz / 1000:.1f} kHz" if entry.band_hz else "?"
        rows.append((entry.name, ",".join(entry.stems), f"{entry.sample_rate} Hz", band, where))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1])
    typer.echo(
        "\nThe U-Nets see the band shown; above it the masks are extended (--mask-extension), so stems are full band."
        "\n-16kHz is the top of that band (the same weights on 1536 bins), not a sample rate: those models run at 44.1 kHz."
        f"\nDownloads are converted once and kept in {cache_dir()}."
    )


@models_app.command("import-spleeter", cls=_Command)
def import_spleeter(
    checkpoint: Path = typer.Argument(..., help="Folder with Spleeter's checkpoint files (checkpoint, model.index, model.data-00000-of-00001), or a release .tar.gz."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (config.json + model.safetensors)."),
    config: str = typer.Option("spleeter:2stems", "--config", "-c", help="The Spleeter config: an embedded name (spleeter:2stems, spleeter:4stems-16kHz, ...) or a Spleeter config JSON file."),
    name: Optional[str] = typer.Option(None, "--name", help="Name stored in the converted config (default: the folder's name)."),
) -> None:
    """Convert a Spleeter TensorFlow checkpoint into a unet-sep model folder (no TensorFlow needed).

    Example: unet-sep models import-spleeter pretrained_models/4stems --config spleeter:4stems --out models/4stems
    """
    _setup_logging(False)
    import tempfile

    from unet_sep.config import ConfigError
    from unet_sep.weights import spleeter
    from unet_sep.weights.download import extract_tar
    from unet_sep.weights.tf_checkpoint import TFCheckpointError, find_checkpoint_folder

    spleeter_config = config if config in spleeter.embedded_names() else Path(config)
    if isinstance(spleeter_config, Path) and not spleeter_config.is_file():
        _error(f"{config}: neither an embedded Spleeter config ({', '.join(spleeter.embedded_names())}) nor a file")
        raise typer.Exit(2)
    try:
        with tempfile.TemporaryDirectory(prefix=".unet-sep-import-") as tmp:
            source = checkpoint
            if checkpoint.is_file() and checkpoint.name.endswith((".tar.gz", ".tgz", ".tar")):
                extract_tar(checkpoint, Path(tmp))
                source = find_checkpoint_folder(Path(tmp))
            folder = spleeter.convert_spleeter(source, spleeter_config, out, name=name or out.name)
    except (TFCheckpointError, spleeter.SpleeterCheckpointError, ConfigError, OSError, ValueError) as error:
        _error(f"{checkpoint}: {error}")
        raise typer.Exit(1)
    typer.echo(f"wrote {folder} (use it with: unet-sep separate SONG --model {folder})")


def _python_stderr_apart() -> None:
    """Point ``sys.stderr`` at a duplicate of file descriptor 2.

    The decoder mutes fd 2 for the moments a native library opens a file (it prints warnings there, see
    ``unet_sep.audio.decode``); this command's own messages written meanwhile from another thread (an error
    line, a progress bar, a log record) then still reach the terminal instead of being lost.
    """
    try:
        sys.stderr.flush()
        duplicate = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # no real stderr (captured by a test runner): nothing to do
        return
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    sys.stderr = io.TextIOWrapper(io.FileIO(duplicate, "w"), encoding=encoding, errors="backslashreplace",
                                  line_buffering=True)


def main() -> None:
    """Console-script entry point."""
    _python_stderr_apart()
    try:
        app(prog_name="unet-sep")
    except KeyboardInterrupt:  # Ctrl-C outside a command (typer turns one inside a command into exit 130)
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except ImportError as error:
        from unet_sep.extras import MissingExtraError

        if not isinstance(error, MissingExtraError):
            raise
        _error(str(error))  # an optional extra (train, eval) that this command needs is not installed
        sys.exit(1)


if __name__ == "__main__":
    main()
