"""The ``unet-sep`` command: thin wrappers that parse options, call the API and print."""

from __future__ import annotations

import glob
import logging
import signal
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from unet_sep import __version__

AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aif",
    ".aiff", ".aifc", ".wma", ".mka", ".mkv", ".mov", ".au", ".caf", ".w64", ".rf64",
}

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Split music into stems (vocals, accompaniment, drums, bass, ...) with spectrogram U-Nets.",
)
models_app = typer.Typer(add_completion=False, rich_markup_mode=None, help="List and manage separation models.")
app.add_typer(models_app, name="models")

log = logging.getLogger("unet_sep")


def _error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


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


def expand_inputs(inputs: list[str]) -> tuple[list[Path], list[str]]:
    """Files from paths, folders (searched recursively for audio files) and globs; plus one error per bad input."""
    files: list[Path] = []
    errors: list[str] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS and not p.name.startswith("."))
            if not found:
                errors.append(f"{item}: folder holds no audio files ({', '.join(sorted(e[1:] for e in AUDIO_EXTENSIONS))})")
            files.extend(found)
        elif path.exists():
            files.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                errors.append(f"{item}: pattern matches no files")
            files.extend(found)
        else:
            errors.append(f"{item}: no such file or folder")
    unique = list(dict.fromkeys(files))
    return unique, errors


class _Progress:
    """tqdm bars on stderr: one per file in flight (seconds of audio) and one for all files (ETA over audio)."""

    def __init__(self, n_files: int, total_seconds: float, enabled: bool) -> None:
        from tqdm import tqdm

        self.enabled = enabled
        self.overall = tqdm(total=round(total_seconds, 1), unit="s", desc="all files", position=0, disable=not enabled,
                            dynamic_ncols=True, bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s audio [{elapsed}<{remaining}]")
        self.n_files = n_files
        self.bars: dict[int, object] = {}
        self.seen: dict[int, float] = {}  # audio seconds counted so far per file

    def update(self, index: int, path: Path, done: int, total: int, rate: int) -> None:
        from tqdm import tqdm

        seconds = done / rate if rate else 0.0
        bar = self.bars.get(index)
        if bar is None and self.enabled:
            name = path.name if len(path.name) <= 30 else path.name[:27] + "..."
            bar = self.bars[index] = tqdm(
                total=round(max(total, done) / rate, 1) if rate else 0, unit="s", desc=f"[{index + 1}/{self.n_files}] {name}",
                position=1 + len(self.bars), leave=False, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s [{elapsed}<{remaining}, {rate_fmt}]")
        previous = self.seen.get(index, 0.0)
        if bar is not None:
            if seconds > bar.total:
                bar.total = seconds
            bar.update(seconds - previous)
        self.overall.update(seconds - previous)
        self.seen[index] = seconds

    def end(self, index: int, seconds_expected: float) -> None:
        bar = self.bars.pop(index, None)
        if bar is not None:
            bar.close()
        remaining = seconds_expected - self.seen.pop(index, 0.0)
        if remaining > 0:
            self.overall.update(remaining)

    def write(self, message: str) -> None:
        from tqdm import tqdm

        tqdm.write(message, file=sys.stderr)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
        self.overall.close()


class _Ranks:
    """This process's place under torchrun (``WORLD_SIZE`` > 1): which inputs it takes and how the ranks
    agree on one summary. Without torchrun it is a single rank and does nothing."""

    def __init__(self) -> None:
        from unet_sep.distributed import Ranks

        env = Ranks.from_env()
        self.world, self.rank, self.local_rank, self.local_world = env.world, env.rank, env.local_rank, env.local_world
        self.group = False
        if self.world > 1:
            import datetime

            import torch.distributed as dist

            # gloo for the few small messages (the summary), whatever device separates.
            dist.init_process_group("gloo", timeout=datetime.timedelta(hours=12))
            self.group = True

    def shard(self, items: list) -> list:
        """Every ``world``-th input from this rank's index on: the ranks split the inputs without talking."""
        return items[self.rank :: self.world]

    def device(self, requested: str) -> str:
        import torch

        if self.world > 1 and requested in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{self.local_rank % torch.cuda.device_count()}"
        return requested

    def gather(self, stats: dict) -> list[dict]:
        if not self.group:
            return [stats]
        import torch.distributed as dist

        everyone: list = [None] * self.world
        dist.all_gather_object(everyone, stats)
        return everyone

    def close(self) -> None:
        if self.group:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.group = False


def _raise_keyboard_interrupt(signum, frame):  # SIGTERM is handled like Ctrl-C: clean up, then leave
    raise KeyboardInterrupt


@app.command()
def separate(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Audio files, folders (searched recursively) or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write the stems to."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="A registered model name (see `unet-sep models`) or a model folder. Default: the bundled model."),
    stems: Optional[str] = typer.Option(None, "--stems", help="Comma-separated subset of the model's stems to write, e.g. vocals."),
    fmt: str = typer.Option("wav", "--format", "-f", help="Output format: wav, flac, ogg or mp3."),
    bit_depth: Optional[str] = typer.Option(None, "--bit-depth", help="16, 24 or float (wav); 16 or 24 (flac). Default 16."),
    template: str = typer.Option("{track}/{stem}.{ext}", "--template", help="Output path under --out; fields {track}, {stem}, {ext}, {model}."),
    offset: float = typer.Option(0.0, "--offset", help="Start this many seconds into each input."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Separate only this many seconds (default: to the end; nothing is cut silently)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Segments per U-Net batch (default: 2 on the CPU, 8 on a GPU)."),
    overlap: float = typer.Option(0.25, "--overlap", min=0.0, max=0.75, help="Overlap between segments, as a fraction of a segment (cross-faded)."),
    segmentation: str = typer.Option("overlap", "--segmentation", help="overlap (default) or spleeter (back-to-back segments, Spleeter's exact output)."),
    mask_extension: Optional[str] = typer.Option(None, "--mask-extension", help="Masks above the model's band: last, average or zeros (Spleeter). Default: the model's."),
    sample_rate: Optional[int] = typer.Option(None, "--sample-rate", help="Write stems at this rate (default: each input's own rate)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: the cores this process may use, shared out among torchrun's local ranks)."),
    readers: int = typer.Option(2, "--readers", min=1, help="Threads decoding the next inputs while the model computes."),
    precision: str = typer.Option("fp32", "--precision", help="U-Net arithmetic: fp32, bf16 or fp16 (autocast; for GPUs)."),
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
    ranks = _Ranks()
    try:
        _separate(ranks, inputs, out, model, stems, fmt, bit_depth, template, offset, duration, ranks.device(device),
                  batch_size, overlap, segmentation, mask_extension, sample_rate, threads, readers, precision, compile_net,
                  overwrite, quiet)
    finally:
        ranks.close()


def _separate(ranks, inputs, out, model, stems, fmt, bit_depth, template, offset, duration, device, batch_size, overlap,
              segmentation, mask_extension, sample_rate, threads, readers, precision, compile_net, overwrite, quiet) -> None:
    import os

    import torch

    from unet_sep.audio.decode import AudioDecodeError, open_audio
    from unet_sep.audio.encode import AudioEncodeError, subtype_for
    from unet_sep.config import ConfigError
    from unet_sep.separate.separator import Separator
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.registry import ModelNotFoundError, default_model_name

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(threads or max(1, cores // ranks.local_world))  # default: the cores this process may use
    fmt = fmt.lower().lstrip(".")
    try:
        subtype_for(fmt, bit_depth)
    except AudioEncodeError as error:
        _error(str(error))
        raise typer.Exit(2)
    if segmentation not in ("overlap", "spleeter"):
        _error(f"--segmentation must be overlap or spleeter, got {segmentation!r}")
        raise typer.Exit(2)
    if offset < 0 or (duration is not None and duration <= 0):
        _error("--offset must be >= 0 and --duration > 0")
        raise typer.Exit(2)

    files, input_errors = expand_inputs(inputs)
    lead = ranks.rank == 0  # messages about the whole batch come from one rank
    if lead:
        for message in input_errors:
            _error(message)

    model_name = model or default_model_name()
    if model_name is None:
        _error("no model given and no bundled default model is installed; pass --model NAME_OR_FOLDER (see `unet-sep models`)")
        raise typer.Exit(2)
    try:
        separator = Separator.from_pretrained(
            model_name, device=device, segmentation=segmentation, overlap=overlap, batch_size=batch_size,
            mask_extension=mask_extension, precision=precision, compile=compile_net,
        )
        selected = None if stems is None else [s.strip() for s in stems.split(",") if s.strip()]
        separator.output_paths(Path("x"), out, template, fmt, selected)  # validates --stems and --template
    except (ModelNotFoundError, CheckpointError, ConfigError, RuntimeError, ValueError) as error:
        _error(str(error))
        raise typer.Exit(2)
    if not files and not ranks.group:
        raise typer.Exit(1)

    # No output may replace an input of the batch, and no two inputs may share an output file.
    inputs_by_target = {path.resolve(): path for path in files}
    claimed: dict[Path, Path] = {}
    accepted: list[Path] = []
    failed: list[tuple[Path, str]] = []
    for path in files:
        targets = [t.resolve() for t in separator.output_paths(path, out, template, fmt, selected).values()]
        victim = next((inputs_by_target[t] for t in targets if t in inputs_by_target), None)
        owner = next((claimed[t] for t in targets if t in claimed), None)
        if victim is not None:
            message = f"an output would overwrite the input {victim}" if victim != path else "an output would overwrite the input itself"
        elif owner is not None:
            message = f"its outputs would be the same files as those of {owner}; add {{model}} or a folder to --template"
        else:
            claimed.update((t, path) for t in targets)
            accepted.append(path)
            continue
        failed.append((path, message))
        if lead:
            _error(f"{path}: {message}")

    # Probe this rank's inputs, so the overall bar knows the total audio and its ETA means something.
    planned: dict[Path, float] = {}
    for path in ranks.shard(accepted):
        try:
            info = open_audio(path).info
            seconds = max(info.duration - offset, 0.0) if info.frames > 0 else 0.0
            planned[path] = seconds if duration is None else min(seconds, duration)
        except AudioDecodeError as error:
            failed.append((path, str(error)))
            _error(f"{path}: {error}")
    order = list(planned)

    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    progress = _Progress(len(order), sum(planned.values()), enabled=not quiet and sys.stderr.isatty() and lead)
    done: list[tuple[Path, float]] = []
    skipped: list[Path] = []
    started = time.perf_counter()
    interrupted = False
    log.info("model %s: stems %s at %d Hz on %s", model_name, ", ".join(separator.stems), separator.sample_rate, separator.device)

    def on_event(event) -> None:
        expected = planned.get(event.path, 0.0)
        if event.kind == "progress":
            progress.update(event.index, event.path, event.done, event.total, event.sample_rate)
            return
        progress.end(event.index, expected)
        if event.kind == "skipped":
            skipped.append(event.path)
            progress.write(f"skipped {event.path}: outputs exist (use --overwrite to replace them)")
        elif event.kind == "failed":
            error = event.error
            if isinstance(error, (AudioDecodeError, AudioEncodeError, ValueError, OSError)):
                text = str(error)
            else:  # a bug, but one file's: report it in one line and go on with the batch
                log.info("%s: unexpected error", event.path, exc_info=error)
                text = f"unexpected {type(error).__name__}: {' '.join(str(error).split())} (use --verbose for details)"
            failed.append((event.path, text))
            progress.write(f"error: {event.path}: {text}")
        else:
            done.append((event.path, event.done / event.sample_rate if event.sample_rate else expected))
            if not quiet:
                progress.write(f"{event.path} -> {', '.join(str(p) for p in event.outputs.values())}")

    try:
        separator.separate_files(order, out, on_event=on_event, readers=readers, template=template, fmt=fmt,
                                 bit_depth=bit_depth, stems=selected, offset=offset, duration=duration,
                                 overwrite=overwrite, sample_rate=sample_rate)
    except KeyboardInterrupt as error:
        progress.close()
        for path in getattr(error, "unfinished", []):
            _error(f"{path}: interrupted; its partial outputs were removed")
        interrupted = True
    finally:
        progress.close()
        signal.signal(signal.SIGTERM, previous)

    wall = time.perf_counter() - started
    mine = {"done": len(done), "audio": sum(s for _, s in done), "skipped": len(skipped),
            "failed": len(failed) + (len(input_errors) if lead else 0), "wall": wall, "interrupted": interrupted}
    everyone = ranks.gather(mine) if not interrupted else [mine]
    if lead:
        total = {key: sum(r[key] for r in everyone) for key in ("done", "audio", "skipped", "failed")}
        wall = max(r["wall"] for r in everyone)
        speed = f", {total['audio'] / wall:.1f}x real time" if total["done"] and wall > 0 else ""
        where = f" on {ranks.world} ranks" if ranks.world > 1 else ""
        summary = f"separated {total['done']} file(s) ({total['audio']:.1f} s of audio) in {wall:.1f} s{where}{speed}"
        if total["skipped"]:
            summary += f"; skipped {total['skipped']} already done"
        if total["failed"]:
            summary += f"; {total['failed']} failed"
        typer.echo(summary, err=True)
    if interrupted:
        raise typer.Exit(130)
    if any(r["failed"] for r in everyone):
        raise typer.Exit(1)


@app.command()
def train(
    recipe: Path = typer.Argument(..., help="A recipe JSON file (or a folder holding one), e.g. recipes/mir1k/vocals-accompaniment.json."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<recipe name>). It becomes a model folder: unet-sep separate --model runs/NAME."),
    data_root: Optional[str] = typer.Option(None, "--data-root", help="Dataset root, overriding the recipe's data.root."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest checkpoint (same step, same data order)."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set train.steps=200 --set model.unet.filters=[8,16,32,64,128,256]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun each process uses cuda:LOCAL_RANK)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: all cores)."),
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
    from unet_sep.train.loop import Trainer, TrainingError
    from unet_sep.train.recipe import load_recipe

    if threads:
        torch.set_num_threads(threads)
    main_process = int(os.environ.get("RANK", "0")) == 0
    try:
        loaded = load_recipe(recipe, overrides, data_root)
    except (ConfigError, TypeError, ValueError) as error:
        _error(str(error))
        raise typer.Exit(2)
    run_folder = out or Path("runs") / (recipe.stem if recipe.is_file() else recipe.name)
    try:
        result = Trainer(loaded, run_folder, device=device, resume=resume, progress=not quiet).run()
    except (TrainingError, ConfigError, ValueError, OSError) as error:
        _error(str(error))
        raise typer.Exit(1)
    except KeyboardInterrupt:
        _error(f"{run_folder}: interrupted; continue with --resume from the last checkpoint")
        raise typer.Exit(130)
    if main_process:
        best = "no validation data" if result.best_score is None else f"best validation SDR {result.best_score:.2f} dB at step {result.best_step}"
        stop = " (stopped early)" if result.stopped_early else ""
        loss = "-" if result.final_loss is None else f"{result.final_loss:.4f}"
        typer.echo(f"trained {result.steps} steps{stop} in {result.seconds:.0f} s; last loss {loss}; {best}", err=True)
        typer.echo(f"model: {result.out} (unet-sep separate SONG --model {result.out}); curves: {result.out / 'curves.png'}", err=True)
        sys.stderr.flush()


@app.command()
def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The model to score: a registered name or a model folder; its stems are the targets."),
    musdb_root: Optional[Path] = typer.Option(None, "--musdb-root", help="A MUSDB18 root (.stem.mp4), or MUSDB18-HQ with --is-wav."),
    subset: Optional[str] = typer.Option(None, "--subset", help="MUSDB split: test (default), train, valid or train+valid."),
    is_wav: bool = typer.Option(False, "--is-wav", help="--musdb-root is MUSDB18-HQ (one WAV per source)."),
    stems_dir: Optional[Path] = typer.Option(None, "--stems-dir", help="A folder of <track>/<stem>.<ext> files, e.g. MIR-1K as vocals.ogg + accompaniment.ogg."),
    split_file: Optional[Path] = typer.Option(None, "--split-file", help="JSON split file for --stems-dir: {split: [track, ...]} or {group: {split: [...]}}."),
    split_group: Optional[str] = typer.Option(None, "--split-group", help="Group of a grouped split file (MIR-1K: singers or literature)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of --split-file to score (default: test)."),
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
    from tqdm import tqdm

    from unet_sep.evaluate import EvaluationError, plan_evaluation
    from unet_sep.evaluate.report import format_table, write_reports

    if model is None or out is None:
        _error("--model and --out are required (see unet-sep evaluate --help)")
        raise typer.Exit(2)
    if (tracks is not None and tracks < 1) or (threads is not None and threads < 1):
        _error("--tracks and --threads must be positive numbers")
        raise typer.Exit(2)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        evaluation = plan_evaluation(
            model, out, musdb_root=musdb_root, subset=subset, is_wav=is_wav, stems_dir=stems_dir, split_file=split_file,
            split_group=split_group, split=split, compare=compare, max_tracks=tracks, mir1k_mixing=mir1k_mixing, device=device,
        )
    except EvaluationError as error:
        _error(str(error))
        raise typer.Exit(2)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        result = evaluation.run(progress=not quiet and sys.stderr.isatty(), notify=lambda m: tqdm.write(m, file=sys.stderr))
        if not result.tracks:
            _error(f"no track could be scored ({len(result.failed)} failed)")
            raise typer.Exit(1)
        rows, paths = write_reports(result.scores, out, result.stems, mir1k=mir1k_mixing, title=result.title)
    except KeyboardInterrupt:
        _error(f"interrupted; the tracks scored so far are in {out}: run the same command again to resume")
        raise typer.Exit(130)
    except OSError as error:
        _error(f"{out}: {error.strerror or error}")
        raise typer.Exit(1)
    finally:
        signal.signal(signal.SIGTERM, previous)
    typer.echo(format_table(rows, mir1k=mir1k_mixing))
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
    """List the registered models with their stems, sample rate and source."""
    if ctx.invoked_subcommand is not None:
        return
    from unet_sep.weights.registry import cache_dir, registered_models

    entries = registered_models()
    if not entries:
        typer.echo("no registered models; pass a model folder to --model")
        return
    rows = [("name", "stems", "rate", "source")]
    for entry in entries.values():
        rows.append((entry.name, ",".join(entry.stems), f"{entry.sample_rate} Hz", entry.source))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    typer.echo(f"\ndownloads are cached in {cache_dir()}")


@models_app.command("import-spleeter")
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
    from unet_sep.weights.registry import extract_tar

    spleeter_config = config if config in spleeter.embedded_names() else Path(config)
    if isinstance(spleeter_config, Path) and not spleeter_config.is_file():
        _error(f"{config}: neither an embedded Spleeter config ({', '.join(spleeter.embedded_names())}) nor a file")
        raise typer.Exit(2)
    try:
        with tempfile.TemporaryDirectory(prefix=".unet-sep-import-") as tmp:
            source = checkpoint
            if checkpoint.is_file() and checkpoint.name.endswith((".tar.gz", ".tgz", ".tar")):
                extract_tar(checkpoint, Path(tmp))
                source = spleeter.find_checkpoint_folder(Path(tmp))
            folder = spleeter.convert_spleeter(source, spleeter_config, out, name=name or out.name)
    except (spleeter.TFCheckpointError, spleeter.SpleeterCheckpointError, ConfigError, OSError, ValueError) as error:
        _error(f"{checkpoint}: {error}")
        raise typer.Exit(1)
    typer.echo(f"wrote {folder} (use it with: unet-sep separate SONG --model {folder})")


def main() -> None:
    """Console-script entry point."""
    try:
        app(prog_name="unet-sep")
    except KeyboardInterrupt:  # Ctrl-C outside a command (typer turns one inside a command into exit 130)
        sys.stderr.write("interrupted\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
