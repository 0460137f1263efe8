"""``python -m pnc_cli``: the same as the ``pnc`` command."""

from pnc_cli.cli import main

main()
