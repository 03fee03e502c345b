"""``python -m unet_sep``: the same as the ``unet-sep`` command."""

from unet_sep.cli import main

main()
