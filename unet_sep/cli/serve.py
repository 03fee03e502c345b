"""``unet-sep serve``: the HTTP API and the page over one loaded model, on uvicorn, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import List, Optional

import typer

from unet_sep.cli.common import MAX_THREADS, print_error, setting_error_exit, setup_logging
from unet_sep.cli.process import interrupted_exit_code
from unet_sep.separate.settings import SeparationSettings
from unet_sep.serve.config import DEFAULT_MAX_QUEUED, DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, TOKEN_ENV

log = logging.getLogger("unet_sep")
_DEFAULT = SeparationSettings
# Seconds a stop waits for open requests (an event stream, a growing WAV follow a job to its end) before it ends them.
GRACEFUL_SECONDS = 5


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. One other machines can reach needs "
                             f"--token (or {TOKEN_ENV})."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="Port to listen on, 1 to 65535."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The model every job uses: a registered name, "
                                        "a model folder, hf://ORG/REPO or a .onnx file. Default: the bundled model."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder of the job database, uploads and stems. "
                                        "Default: the user's data folder (platformdirs), unet-sep/serve."),
    max_upload_mb: float = typer.Option(DEFAULT_MAX_UPLOAD_MB, "--max-upload-mb",
                                        help="Largest upload in MB (413 beyond)."),
    max_queued: int = typer.Option(DEFAULT_MAX_QUEUED, "--max-queued",
                                   help="Jobs waiting at most (429 with Retry-After beyond)."),
    token: Optional[str] = typer.Option(None, "--token", show_default=False, help="Every API request must carry "
                                        f"it (Authorization: Bearer TOKEN, or ?token=TOKEN). Default: ${TOKEN_ENV}."),
    cors_origin: Optional[List[str]] = typer.Option(None, "--cors-origin", help="An origin whose pages may call the "
                                                    "API (repeat for several). Default: none, CORS off."),
    device: str = typer.Option(_DEFAULT.device, "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: Optional[int] = typer.Option(_DEFAULT.batch_size, "--batch-size",
                                             help="Segments per U-Net batch. Default: 2 on the CPU, 8 on a GPU."),
    precision: str = typer.Option(_DEFAULT.precision, "--precision", help="fp32, bf16 or fp16 (GPUs)."),
    backend: Optional[str] = typer.Option(_DEFAULT.backend, "--backend", help="torch or onnxruntime."),
    segmentation: str = typer.Option(_DEFAULT.segmentation, "--segmentation", help="overlap or spleeter: the jobs' "
                                     "default (a job may choose its own)."),
    wiener_iterations: Optional[int] = typer.Option(_DEFAULT.wiener_iterations, "--wiener-iterations", metavar="N",
                                                    help="The jobs' default Wiener iterations (a job may choose)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, max=MAX_THREADS,
                                          help="CPU threads for torch (default: torch's)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log more detail (each request, each job)."),
) -> None:
    """Serve the separation over HTTP: an API for pipelines and a page for people (docs/serve.md).

    Example: unet-sep serve --port 8000 --data ~/stems-server
    """
    setup_logging(verbose)
    from unet_sep.errors import SettingError
    from unet_sep.serve.config import ServeConfig

    try:
        config = ServeConfig(
            host=host, port=port, model=model, data_dir=data, max_upload_mb=max_upload_mb, max_queued=max_queued,
            token=token if token is not None else os.environ.get(TOKEN_ENV), cors_origins=tuple(cors_origin or ()),
            separation=SeparationSettings(device=device, batch_size=batch_size, precision=precision, backend=backend,
                                          segmentation=segmentation, wiener_iterations=wiener_iterations),
            threads=threads)
    except SettingError as error:
        raise setting_error_exit(error) from None
    _run(config, verbose)


def _run(config, verbose: bool) -> None:
    """Load the model, open the store and serve until a signal; one line and exit 2 for what stops the start."""
    import torch

    from unet_sep.config import ConfigError
    from unet_sep.extras import import_extra
    from unet_sep.serve.app import create_app
    from unet_sep.weights.checkpoint import CheckpointError
    from unet_sep.weights.entries import ModelNotFoundError

    uvicorn = import_extra("uvicorn", "serve", "unet-sep serve")
    listening = _listen(config.host, config.port)  # before the model loads: a port in use fails at once
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        app = create_app(config)
    except (ModelNotFoundError, CheckpointError, ConfigError, ValueError) as error:
        print_error(str(error))
        raise typer.Exit(2) from None
    except OSError as error:
        print_error(f"{config.data_folder()}: cannot keep the jobs there: {error.strerror or error}")
        raise typer.Exit(2) from None
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, lifespan="on",
                                           log_level="info" if verbose else "warning", access_log=verbose,
                                           timeout_graceful_shutdown=GRACEFUL_SECONDS))
    shown_host = f"[{config.host}]" if ":" in config.host else config.host
    typer.echo(f"unet-sep serve: http://{shown_host}:{config.port}/ (model {app.state.api.model.name}, jobs in "
               f"{config.data_folder()}); Ctrl-C stops", err=True)
    try:
        server.run(sockets=[listening])
    except KeyboardInterrupt as error:  # uvicorn stopped cleanly on the signal, then raised it again
        typer.echo("unet-sep serve: stopped", err=True)
        raise typer.Exit(interrupted_exit_code(error)) from None
    finally:
        listening.close()
    typer.echo("unet-sep serve: stopped", err=True)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port``; one line and exit 2 where it cannot be."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listening = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        print_error(f"could not listen on {host}:{port}: {error.strerror or error}")
        raise typer.Exit(2) from None
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        print_error(f"could not listen on {host}:{port}: {error.strerror or error}")
        raise typer.Exit(2) from None
    return listening
