"""``unet-sep models``: the registered models listed, and ``models import-spleeter``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from unet_sep.cli.common import print_error, setup_logging


def list_models(ctx: typer.Context) -> None:
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
        where = ("bundled" if entry.bundled is not None else "on disk" if local is not None
                 else f"download from {entry.url}")
        band = f"0-{entry.band_hz / 1000:.1f} kHz" if entry.band_hz else "?"
        rows.append((entry.name, ",".join(entry.stems), f"{entry.sample_rate} Hz", band, where))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1])
    typer.echo(
        "\nThe U-Nets see the band shown; above it the masks are extended (--mask-extension), so stems are full band."
        "\n-16kHz is the top of that band (the same weights on 1536 bins), not a sample rate: those models run at "
        "44.1 kHz."
        f"\nDownloads are converted once and kept in {cache_dir()}."
    )


def import_spleeter(
    checkpoint: Path = typer.Argument(..., help="Folder with Spleeter's checkpoint files (checkpoint, model.index, "
                                      "model.data-00000-of-00001), or a release .tar.gz."),
    out: Path = typer.Option(..., "--out", "-o", help="Model folder to write (config.json + model.safetensors)."),
    config: str = typer.Option("spleeter:2stems", "--config", "-c", help="The Spleeter config: an embedded name "
                               "(spleeter:2stems, spleeter:4stems-16kHz, ...) or a Spleeter config JSON file."),
    name: Optional[str] = typer.Option(None, "--name",
                                       help="Name stored in the converted config (default: the folder's name)."),
) -> None:
    """Convert a Spleeter TensorFlow checkpoint into a unet-sep model folder (no TensorFlow needed).

    Example: unet-sep models import-spleeter pretrained_models/4stems --config spleeter:4stems --out models/4stems
    """
    setup_logging(False)
    import tempfile

    from unet_sep.config import ConfigError
    from unet_sep.weights import spleeter
    from unet_sep.weights.download import extract_tar
    from unet_sep.weights.tf_checkpoint import TFCheckpointError, find_checkpoint_folder

    spleeter_config = config if config in spleeter.embedded_names() else Path(config)
    if isinstance(spleeter_config, Path) and not spleeter_config.is_file():
        print_error(f"{config}: neither an embedded Spleeter config ({', '.join(spleeter.embedded_names())}) "
                    "nor a file")
        raise typer.Exit(2)
    try:
        with tempfile.TemporaryDirectory(prefix=".unet-sep-import-") as tmp:
            source = checkpoint
            if checkpoint.is_file() and checkpoint.name.endswith((".tar.gz", ".tgz", ".tar")):
                extract_tar(checkpoint, Path(tmp))
                source = find_checkpoint_folder(Path(tmp))
            folder = spleeter.convert_spleeter(source, spleeter_config, out, name=name or out.name)
    except (TFCheckpointError, spleeter.SpleeterCheckpointError, ConfigError, OSError, ValueError) as error:
        print_error(f"{checkpoint}: {error}")
        raise typer.Exit(1) from None
    typer.echo(f"wrote {folder} (use it with: unet-sep separate SONG --model {folder})")
