"""``unet-sep models push``: a model folder uploaded to the Hugging Face Hub with a generated model card.

The card (:func:`unet_sep.weights.hub.model_card`) states the model's stems and rate, its training data (the
config's provenance, and the run's ``recipe.json`` when the folder is a training run) and its scores (an
evaluation's ``summary.csv``: ``--scores``, or one found in the folder).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

import typer

from unet_sep.cli.common import print_error, setup_logging


def push(
    folder: Path = typer.Argument(..., metavar="FOLDER", help="A model folder (config.json + model.safetensors), "
                                  "e.g. a training run's folder."),
    repo: str = typer.Argument(..., metavar="ORG/REPO", help="The Hub repository to upload to (created if absent)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="The branch to commit to (created if absent; "
                                           "default: the repository's default branch)."),
    private: bool = typer.Option(False, "--private", help="Create the repository private (an existing one keeps "
                                 "its visibility)."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="An evaluation's summary.csv for the card's scores "
                                          "(default: FOLDER/summary.csv, or the one FOLDER/*/summary.csv)."),
    message: str = typer.Option("Upload a unet-sep model", "--message", help="The commit message."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the model card and the files to upload; upload "
                                 "nothing."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail."),
) -> None:
    """Upload a model folder to the Hugging Face Hub: config.json, model.safetensors and a generated README.md.

    The weights must have the sha256 their config.json records; a config.json written before unet-sep recorded
    one is uploaded with it.

    The token is huggingface_hub's: HF_TOKEN, or `hf auth login`. Then anyone loads the model with
    unet-sep separate SONG --model hf://ORG/REPO, or Separator.from_pretrained("hf://ORG/REPO").
    A folder, repository name or scores file that cannot be used exits 2; an upload the Hub refuses exits 1.

    Example: unet-sep models push runs/my-model my-org/my-model --scores eval/summary.csv
    """
    setup_logging(verbose)
    from unet_sep.config import CONFIG_FILE, WEIGHTS_FILE
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.hub import (
        CARD_FILE,
        HUB_PREFIX,
        HubError,
        HubModelRef,
        check_model_folder,
        check_repo_id,
        model_card,
        push_model,
    )

    repo_id = repo.removeprefix(HUB_PREFIX)
    reference = HubModelRef(repo_id, revision)
    try:
        check_repo_id(repo_id)
        config = check_model_folder(folder, str(folder))
        scores_file = scores if scores is not None else _found_scores(folder)
        rows = _read_scores(scores_file) if scores_file is not None else []
    except (HubError, CheckpointError, ValueError) as error:  # CheckpointError: weights not the config's digest
        print_error(str(error))
        raise typer.Exit(2) from None
    notes_file = folder / "MODEL_CARD.md"
    card = model_card(config, repo_id, _training_data(folder), rows,
                      scores_file.name if scores_file is not None else "",
                      notes_file.read_text(encoding="utf-8") if notes_file.is_file() else "")
    files = (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE)
    if dry_run:
        typer.echo(card, nl=False)
        typer.echo(f"would upload {', '.join(files)} to {reference}", err=True)
        return
    try:
        url = push_model(folder, repo_id, card, revision=revision, private=private, message=message)
    except CheckpointError as error:  # the weights changed since the check above
        print_error(str(error))
        raise typer.Exit(2) from None
    except HubError as error:
        print_error(str(error))
        raise typer.Exit(1) from None
    typer.echo(f"uploaded {', '.join(files)}: {url}")
    typer.echo(f"load it with: unet-sep separate SONG --model {reference}")


def _found_scores(folder: Path) -> Path | None:
    """The evaluation ``summary.csv`` in ``folder``, or in exactly one of its subfolders; None when there is none.
    Several in subfolders: a ``ValueError`` asking for ``--scores``."""
    from unet_sep.evaluate.report import SUMMARY_FILE

    if (folder / SUMMARY_FILE).is_file():
        return folder / SUMMARY_FILE
    found = sorted(folder.glob(f"*/{SUMMARY_FILE}"))
    if len(found) > 1:
        raise ValueError(f"{folder}: several evaluations ({', '.join(str(p) for p in found)}); choose one with "
                         "--scores")
    return found[0] if found else None


def _read_scores(path: Path) -> list[dict[str, str]]:
    """The rows of an evaluation's ``summary.csv`` (``method,stem,tracks,SDR,...``); a ``ValueError`` naming the
    file when it is not one."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"--scores {path}: cannot read it ({error})") from None
    if not rows or not {"method", "stem", "SDR"} <= set(rows[0]):
        raise ValueError(f"--scores {path}: not an evaluation's summary.csv (needs the columns method, stem, SDR "
                         "and a row)")
    return rows


def _training_data(folder: Path) -> list[str]:
    """Lines on the training data from the data and training sections of the run's ``recipe.json`` when ``folder``
    is a training run (a data root by its last folder name only: no local paths go into a public card)."""
    from unet_sep.errors import ConfigError
    from unet_sep.fields import read_json
    from unet_sep.train.resume import RECIPE_FILE
    from unet_sep.weights.hub import is_hub_ref

    lines: list[str] = []
    try:
        recipe = read_json(folder / RECIPE_FILE, RECIPE_FILE)
    except ConfigError:
        return lines
    data, train = recipe.get("data"), recipe.get("train")
    if isinstance(data, dict):
        root = Path(str(data.get("root") or "")).name or "?"
        split = str(data.get("train_split", "train")) + (f" of group {data['split_group']}"
                                                         if data.get("split_group") else "")
        lines.append(f"{RECIPE_FILE}: data.kind {data.get('kind', '?')}, data set folder {root}, training split "
                     f"{split}, targets {', '.join(map(str, data.get('targets') or []))}")
    if isinstance(train, dict):
        source = str(train.get("init_from") or "")
        source = source if is_hub_ref(source) else Path(source).name
        start = f", initialised from {source}" if source else ""
        lines.append(f"{RECIPE_FILE}: {train.get('steps', '?')} steps of batch {train.get('batch_size', '?')}, "
                     f"loss {train.get('loss', '?')}, seed {train.get('seed', '?')}{start}")
    return lines
