"""``python -m conveyor``: the same command line as the ``conveyor`` entry point."""

from conveyor.cli import main

main()
