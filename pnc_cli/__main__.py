"""``python -m pnc_cli``: the same entry as the ``pnc`` script (signal handlers before any import)."""

from pnc_cli.entry import main

main()
