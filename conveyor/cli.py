"""The ``conveyor`` command line (Typer + Rich)."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import structlog
import typer

from conveyor.process import run_app
from engine.logging import configure_logging
from engine.settings import Settings, unknown_variables

app = typer.Typer(
    name="conveyor",
    help="Durable workflows on Celery: run, validate and operate Conveyor.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def root() -> None:
    """Durable workflows on Celery. Settings come from CONVEYOR_* environment variables."""
    # The console script does not put the working directory on sys.path as `python -m`
    # does; CONVEYOR_IMPORTS names modules of the user's project, relative to it.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    configure_logging(Settings())
    unknown = unknown_variables(os.environ)
    if unknown:
        structlog.get_logger("conveyor").warning(
            "these CONVEYOR_ variables name no setting and are ignored", variables=unknown
        )


#: Command modules under conveyor.commands; each exposes register(app).
COMMAND_MODULES = [
    "definitions",
    "run",
    "executions",
    "logs",
    "worker",
    "beat",
    "migrate",
    "api",
    "flower",
    "events",
    "bridge",
    "triggers",
    "decisions",
]

for _module in COMMAND_MODULES:
    importlib.import_module(f"conveyor.commands.{_module}").register(app)


def main() -> None:
    """The ``conveyor`` console script (see :mod:`conveyor.process`)."""
    run_app(app, prog_name="conveyor")
