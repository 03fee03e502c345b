"""``unet-sep evaluate``: a model scored beside the baselines (and other methods), the table printed and the
reports written."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from unet_sep.cli.common import MAX_THREADS, print_error, setting_error_exit, setup_logging
from unet_sep.cli.process import interrupted_exit_code
from unet_sep.config import MAX_WIENER_ITERATIONS
from unet_sep.separate.settings import SeparationSettings

if TYPE_CHECKING:
    from unet_sep.evaluate.evaluation import Evaluation, EvaluationResult


def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The model to score: a registered name or a "
                                        "model folder; its stems are the targets."),
    data: Optional[Path] = typer.Option(None, "--data", help="A data set's folder in any known format (MUSDB18, "
                                        "MUSDB18-HQ, a folder of <track>/<stem>.<ext> files), recognised from what it "
                                        "holds."),
    data_option: List[str] = typer.Option([], "--data-option", metavar="KEY=VALUE", help="A data setting by its name "
                                          "in a recipe's data section, e.g. kind=musdb, is_wav=true, "
                                          "split_file=splits.json, split_group=singers; repeatable."),
    musdb_root: Optional[Path] = typer.Option(None, "--musdb-root", help="A MUSDB18 root (.stem.mp4), or MUSDB18-HQ "
                                              "with --is-wav (--data ROOT --data-option kind=musdb)."),
    subset: Optional[str] = typer.Option(None, "--subset",
                                         help="MUSDB split: test (default), train, valid or train+valid."),
    is_wav: bool = typer.Option(False, "--is-wav", help="--musdb-root is MUSDB18-HQ (one WAV per source)."),
    stems_dir: Optional[Path] = typer.Option(None, "--stems-dir", help="A folder of <track>/<stem>.<ext> files, e.g. "
                                             "MIR-1K as vocals.ogg + accompaniment.ogg (--data FOLDER --data-option "
                                             "kind=folder)."),
    split_file: Optional[Path] = typer.Option(None, "--split-file", help="JSON split file for --stems-dir: {split: "
                                              "[track, ...]} or {group: {split: [...]}}."),
    split_group: Optional[str] = typer.Option(None, "--split-group", help="Group of a grouped split file (MIR-1K: "
                                              "singers or literature)."),
    split: Optional[str] = typer.Option(None, "--split", help="The split to score: one of --split-file, or of MUSDB "
                                        "with --data (default: test)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Results folder: <method>/<track>.json (museval "
                                       "format), summary.csv, tracks.csv, sdr_boxplot.png. Running again resumes."),
    compare: List[str] = typer.Option([], "--compare", help="Another model (name or folder) or a folder of another "
                                      "method's museval per-track JSON; repeatable."),
    tracks: Optional[int] = typer.Option(None, "--tracks", help="Score only the first N tracks (quick checks)."),
    mir1k_mixing: bool = typer.Option(False, "--mir1k-mixing", help="MIR-1K protocol: voice and accompaniment mixed "
                                      "at 0 dB; adds GNSDR, GSIR, GSAR (whole-clip BSS Eval, length-weighted)."),
    wiener_iterations: Optional[int] = typer.Option(SeparationSettings.wiener_iterations, "--wiener-iterations",
                                                    metavar="N", help="Multichannel "
                                                    f"Wiener filter iterations (0 to {MAX_WIENER_ITERATIONS}) for "
                                                    "every model scored; "
                                                    "default: each model's own. Another value is scored as its own "
                                                    "method, <model>-wiener<N>."),
    device: str = typer.Option(SeparationSettings.device, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS,
                                          help="CPU threads for torch (default: all cores)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail."),
) -> None:
    """Score separators like the field does: museval BSSEval v4 (SDR, SIR, SAR, ISR in 1 s windows; median over
    windows, then over tracks, as SiSEC18), beside the mixture and oracle ratio-mask baselines.

    Example: unet-sep evaluate --model runs/mir1k --stems-dir data/mir1k --split-file data/mir1k/splits.json --split-group singers --mir1k-mixing --out eval/mir1k
    """  # noqa: E501 (the example is one command line)
    setup_logging(verbose)
    from unet_sep.evaluate.evaluation import EvaluationError
    from unet_sep.evaluate.plan import plan_evaluation

    model_name, out_dir, settings = _check_evaluate_options(model, out, tracks, threads, device, wiener_iterations)
    try:
        evaluation = plan_evaluation(
            model_name, out_dir, data=data, data_options=data_option, musdb_root=musdb_root, subset=subset,
            is_wav=is_wav, stems_dir=stems_dir, split_file=split_file, split_group=split_group, split=split,
            compare=compare, max_tracks=tracks, mir1k_mixing=mir1k_mixing, settings=settings,
        )
    except EvaluationError as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    result, rows, paths = _run_evaluation(evaluation, out_dir, progress=not quiet and sys.stderr.isatty())
    _print_evaluation(result, rows, paths, out_dir)


def _check_evaluate_options(model: Optional[str], out: Optional[Path], tracks: Optional[int], threads: Optional[int],
                            device: str, wiener_iterations: Optional[int]) -> tuple[str, Path, SeparationSettings]:
    """The options of ``evaluate`` that need no data or model: exit 2 with one line if one is missing or wrong;
    the model, the results folder and the separation's settings (a device the machine lacks is an option error,
    before models and data load)."""
    if model is None or out is None:
        print_error("--model and --out are required (see unet-sep evaluate --help)")
        raise typer.Exit(2)
    if (tracks is not None and tracks < 1) or (threads is not None and threads < 1):
        print_error("--tracks and --threads must be positive numbers")
        raise typer.Exit(2)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from unet_sep.errors import SettingError

    try:
        settings = SeparationSettings(device=device, wiener_iterations=wiener_iterations)
    except SettingError as error:
        raise setting_error_exit(error) from None
    return model, out, settings


def _run_evaluation(evaluation: Evaluation, out: Path, progress: bool) -> tuple[EvaluationResult, list, dict]:
    """Run a planned evaluation and write its reports: (result, summary rows, report paths); exits 1 when no track
    could be scored or the results cannot be written, 128 + the signal's number when interrupted (130 for Ctrl-C)."""
    from tqdm import tqdm

    from unet_sep.evaluate.report import write_reports

    try:
        result = evaluation.run(progress=progress, notify=lambda m: tqdm.write(m, file=sys.stderr))
        if not result.tracks:
            print_error(f"no track could be scored ({len(result.failed)} failed)")
            raise typer.Exit(1)
        rows, paths = write_reports(result.scores, out, result.stems, mir1k=result.mir1k_mixing, title=result.title)
    except KeyboardInterrupt as error:  # Ctrl-C, or a signal that ends a run (cli.process)
        print_error(f"interrupted; the tracks scored so far are in {out}: run the same command again to resume")
        raise typer.Exit(interrupted_exit_code(error)) from None
    except OSError as error:
        print_error(f"{out}: {error.strerror or error}")
        raise typer.Exit(1) from None
    return result, rows, paths


def _print_evaluation(result: EvaluationResult, rows: list, paths: dict, out: Path) -> None:
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
