"""``unet-sep models export``: a model's U-Nets written as one ONNX file, for ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import typer

from unet_sep.cli.common import print_error, setup_logging


def export(
    model: str = typer.Argument(..., metavar="FOLDER", help="A model folder, or a registered model name (see "
                                "`unet-sep models`)."),
    onnx: Path = typer.Option(..., "--onnx", metavar="OUT.onnx", help="The ONNX file to write (replaced if it "
                              "exists; its name ends in .onnx)."),
) -> None:
    """Export a model's U-Nets to ONNX, with the model's config.json and a digest of its weights in the file's
    metadata (checked when the file is loaded).

    The file maps magnitudes [N, C, T, F] to per-stem estimates [S, N, C, T, F]; N and T are dynamic, T a multiple
    of 2**depth (64 for six layers). The STFT, masks and inverse STFT are not in it: unet-sep does them, so run it
    with unet-sep separate SONG --model OUT.onnx (needs unet-sep[onnx]).

    Example: unet-sep models export spleeter:4stems --onnx 4stems.onnx
    """
    setup_logging(False)
    if onnx.suffix.lower() != ".onnx":
        print_error(f"--onnx: {onnx}: the file name must end in .onnx (that is how --model recognises ONNX files)")
        raise typer.Exit(2)
    if onnx.is_dir():
        print_error(f"--onnx: {onnx} is a folder; give the path of the file to write")
        raise typer.Exit(2)
    from unet_sep.config import ConfigError
    from unet_sep.extras import import_extra
    from unet_sep.weights.checkpoint import CheckpointError, load_model
    from unet_sep.weights.entries import ModelNotFoundError
    from unet_sep.weights.onnx_export import export_onnx
    from unet_sep.weights.registry import resolve_model

    import_extra("onnx", "onnx", "ONNX export")  # before the model is loaded (and its digest remembered)
    try:
        config, net = load_model(resolve_model(model))
    except (ModelNotFoundError, CheckpointError, ConfigError) as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    try:
        path = export_onnx(net, config, onnx)
    except OSError as error:
        print_error(f"--onnx: {onnx}: cannot write it ({error.strerror or error})")
        raise typer.Exit(2) from None
    multiple = 2 ** config.unet.depth
    typer.echo(f"wrote {path}: stems {', '.join(config.stems)}, magnitudes [N, {config.n_channels}, T, "
               f"{config.frequency_bins}] with T a multiple of {multiple} (use it with: unet-sep separate SONG "
               f"--model {path})")
