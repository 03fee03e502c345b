"""The ``unet-sep`` command: thin wrappers that parse options, call the API and print.

One module per command (:mod:`~unet_sep.cli.separate`, :mod:`~unet_sep.cli.live`, :mod:`~unet_sep.cli.train`,
:mod:`~unet_sep.cli.evaluate`, :mod:`~unet_sep.cli.serve`, :mod:`~unet_sep.cli.models`, :mod:`~unet_sep.cli.hub`
for ``models push``, :mod:`~unet_sep.cli.export` for ``models export``), what they share in
:mod:`~unet_sep.cli.common`. The commands are plain functions registered on ``app`` here, in the order ``unet-sep
--help`` lists them; nothing imports this package back.
"""

from __future__ import annotations

import sys

import typer

from unet_sep import __version__
from unet_sep.cli import evaluate, export, hub, live, models, separate, serve, train
from unet_sep.cli.common import UsageCommand, print_error
from unet_sep.cli.process import (
    ending_signals_interrupt,
    guard_standard_streams,
    interrupted_exit_code,
    output_exit_code,
)

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    help="Split music into stems (vocals, accompaniment, drums, bass, ...) with spectrogram U-Nets.",
)
models_app = typer.Typer(add_completion=False, rich_markup_mode=None, help="List and manage separation models.")
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"unet-sep {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Split music into stems with spectrogram U-Nets."""


app.command(cls=UsageCommand)(separate.separate)
app.command(cls=UsageCommand)(live.live)
app.command(cls=UsageCommand)(train.train)
app.command(cls=UsageCommand)(evaluate.evaluate)
app.command(cls=UsageCommand)(serve.serve)
models_app.callback(invoke_without_command=True)(models.list_models)
models_app.command("import-spleeter", cls=UsageCommand)(models.import_spleeter)
models_app.command("export", cls=UsageCommand)(export.export)
models_app.command("push", cls=UsageCommand)(hub.push)


def main() -> None:
    """Console-script entry point: the command, with standard streams that cannot break it and the signals that
    end it cleanly (:mod:`unet_sep.cli.process`)."""
    guard_standard_streams()
    with ending_signals_interrupt():
        code = _run_app()
    sys.exit(output_exit_code(code))


def _run_app() -> int:
    """Run the command line; its exit status."""
    try:
        app(prog_name="unet-sep", standalone_mode=True)
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        # typer ends a command that a signal interrupted with 130 whatever the signal: say which it was
        return interrupted_exit_code(done) if code == 130 else code
    except KeyboardInterrupt as error:  # a signal outside a command's own handling (while starting, say)
        sys.stderr.write("interrupted\n")
        return interrupted_exit_code(error)
    except ImportError as error:
        from unet_sep.extras import MissingExtraError

        if not isinstance(error, MissingExtraError):
            raise
        print_error(str(error))  # an optional extra (train, eval) that this command needs is not installed
        return 1
    return 0
