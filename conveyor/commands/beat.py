"""``conveyor beat``: run the periodic jobs (the reconciler, schedule triggers) under Celery Beat."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from engine.settings import Settings


def register(app: typer.Typer) -> None:
    """Add ``beat`` to the ``conveyor`` app."""
    app.command("beat")(beat)


def beat(
    local: Annotated[
        bool | None,
        typer.Option(
            "--local/--send",
            help="Run jobs in this process (default without a broker) or send them to workers (default with one).",
        ),
    ] = None,
    loglevel: Annotated[
        str | None, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING... (default: CONVEYOR_LOG_LEVEL).")
    ] = None,
) -> None:
    """Run Celery Beat: a reconciler pass every CONVEYOR_RECONCILE_INTERVAL seconds, and schedule triggers.

    The reconciler re-queues steps of dead workers, wakes due timers and re-sends lost messages.
    Schedule triggers fire from this process (polled every second, sooner when a fire is closer).

    Run two for availability: with Redis, only the holder of the beat lease fires.
    """
    # Jobs run locally import user modules (CONVEYOR_IMPORTS) from the working directory.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    from beat.scheduler import run_beat

    run_beat(Settings(), local=local, loglevel=loglevel)
