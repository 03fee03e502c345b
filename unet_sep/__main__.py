"""``python -m unet_sep``: the same as the ``unet-sep`` command."""

import sys

try:
    from unet_sep.cli import main
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    sys.exit(130)

main()
