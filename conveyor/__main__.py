"""``python -m conveyor``: the same command line as the ``conveyor`` entry point."""

from conveyor.cli import app

app(prog_name="conveyor")
