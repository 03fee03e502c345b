"""What the ``unet-sep`` commands share: logging, one-line errors, option names, the usage line, and the bound of
``--threads`` (signals and the standard streams are :mod:`unet_sep.cli.process`'s)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import typer
import typer.core

from unet_sep.errors import printable

if TYPE_CHECKING:
    from unet_sep.errors import SettingError


class UsageCommand(typer.core.TyperCommand):
    """Usage lines in the usual notation: ``unet-sep separate [OPTIONS] INPUT...`` (this typer writes required
    arguments in braces, ``{INPUT}...``)."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if isinstance(param, typer.core.TyperArgument):
                name = param.display_name_raw.upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


def print_error(message: str) -> None:
    """``error: <message>`` on stderr, on one line whatever file names it holds (:func:`~unet_sep.errors.printable`)."""
    typer.echo(f"error: {printable(message)}", err=True)


# Most CPU threads --threads gives torch: more than the cores of any machine in use (OpenMP ran out of memory
# making 100000).
MAX_THREADS = 512

# The command-line spelling of the API's settings where it is not "--" + the name with dashes.
OPTION_NAMES = {"fmt": "--format", "out_dir": "--out"}


def option_name(setting: str) -> str:
    """The command-line option of an API setting: ``"sample_rate"`` -> ``"--sample-rate"``."""
    return OPTION_NAMES.get(setting, "--" + setting.replace("_", "-"))


def setting_error_exit(error: SettingError) -> typer.Exit:
    """Print a :class:`~unet_sep.errors.SettingError` in one line naming the option; the exit (2) to raise."""
    print_error(f"{option_name(error.setting)}: {error.reason}")
    return typer.Exit(2)


def setup_logging(verbose: bool) -> None:
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
