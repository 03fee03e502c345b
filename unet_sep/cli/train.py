"""``unet-sep train``: a recipe, trained into a run folder that is a model folder."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from unet_sep.cli.common import MAX_THREADS, print_error, setting_error_exit, setup_logging
from unet_sep.cli.process import interrupted_exit_code

if TYPE_CHECKING:
    from unet_sep.train.recipe import Recipe
    from unet_sep.train.result import TrainResult


def train(
    recipe: Path = typer.Argument(..., help="A recipe JSON file (or a folder holding one), e.g. "
                                  "recipes/mir1k/vocals-accompaniment.json."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default: runs/<recipe name>). It "
                                       "becomes a model folder: unet-sep separate --model runs/NAME."),
    data_root: Optional[str] = typer.Option(None, "--data-root",
                                            help="Dataset root, overriding the recipe's data.root."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's latest checkpoint (same step, "
                                "same data order). A finished run has nothing to do."),
    allow_changes: bool = typer.Option(False, "--allow-changes", help="With --resume: continue even though the recipe "
                                       "differs from the run's recipe.json in keys that change the training (batch "
                                       "size, learning rate, data, ...; train.steps may change freely unless the "
                                       "schedule is cosine). The old recipe is kept as recipe.until-step-N.json."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe field: --set train.steps=200 --set "
                                        "model.unet.filters=[8,16,32,64,128,256]."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps (under torchrun each process "
                               "uses cuda:LOCAL_RANK)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS,
                                          help="CPU threads for torch. Default: as many as "
                                          "the cores other processes leave free, counted again every 5 s (at most "
                                          "torch's default, shared among torchrun's local processes): threads sharing "
                                          "a core with a busy process slow every step down (2 cores, one busy: 0.50 s "
                                          "per step by default, 1.03 s with 2 threads; recipes/README.md has the "
                                          "table). A number fixes the count, e.g. for bit-for-bit reproducible runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log every logged step."),
) -> None:
    """Train a separator from a recipe, on one device or many (torchrun --nproc-per-node N -m unet_sep train ...).

    Example: unet-sep train recipes/mir1k/vocals-accompaniment.json --out runs/mir1k --set train.steps=2000
    """
    setup_logging(verbose)
    import torch

    from unet_sep.config import ConfigError
    from unet_sep.distributed import Ranks
    from unet_sep.train.recipe import load_recipe

    if threads:
        torch.set_num_threads(threads)
    main_process = Ranks.from_env().main
    try:
        loaded = load_recipe(recipe, overrides, data_root)
    except (ConfigError, TypeError, ValueError) as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    run_folder = out or Path("runs") / (recipe.stem if recipe.is_file() else recipe.name)
    if allow_changes and not resume:
        print_error("--allow-changes applies to --resume only")
        raise typer.Exit(2)
    result = _run_training(loaded, run_folder, device, resume, not quiet, allow_changes, threads is None)
    if main_process:
        _print_result(result)


def _run_training(loaded: Recipe, run_folder: Path, device: str, resume: bool, progress: bool, allow_changes: bool,
                  adapt_threads: bool) -> TrainResult:
    """Train; a bad setting or a changed recipe exits 2, a failed run 1, an interrupted one 128 + the signal's number
    (130: Ctrl-C), with one line."""
    from unet_sep.config import ConfigError
    from unet_sep.errors import SettingError
    from unet_sep.train.checkpoints import resume_advice
    from unet_sep.train.loop import Trainer
    from unet_sep.train.result import RecipeChangedError, TrainingError

    try:
        return Trainer(loaded, run_folder, device=device, resume=resume, progress=progress,
                       allow_changes=allow_changes, adapt_threads=adapt_threads).run()
    except SettingError as error:
        raise setting_error_exit(error) from None
    except RecipeChangedError as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    except (TrainingError, ConfigError, ValueError, OSError) as error:
        print_error(str(error))
        raise typer.Exit(1) from None
    except KeyboardInterrupt as error:  # Ctrl-C, or a signal that ends a run (cli.process)
        print_error(f"{run_folder}: interrupted; {resume_advice(run_folder, loaded.train.checkpoint_every)}")
        raise typer.Exit(interrupted_exit_code(error)) from None


def _print_result(result: TrainResult) -> None:
    """The run's summary and where its model (and training curves) are, on stderr."""
    from unet_sep.train.metrics import CURVES_FILE

    typer.echo(result.summary(), err=True)
    curves = result.out / CURVES_FILE  # absent when matplotlib is not installed
    typer.echo(f"model: {result.out} (unet-sep separate SONG --model {result.out})"
               + (f"; curves: {curves}" if curves.is_file() else ""), err=True)
    sys.stderr.flush()
