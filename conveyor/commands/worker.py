"""``conveyor worker``: run a Celery worker for Conveyor's step tasks."""

from __future__ import annotations

import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from engine.adapters.celery_config import is_embedded
from engine.settings import Settings


class Pool(StrEnum):
    prefork = "prefork"
    threads = "threads"
    solo = "solo"


def register(app: typer.Typer) -> None:
    """Add ``worker`` to the ``conveyor`` app."""
    app.command("worker")(worker)


def worker_argv(
    settings: Settings,
    *,
    queues: list[str],
    concurrency: int | None,
    pool: Pool,
    loglevel: str | None,
    hostname: str | None,
) -> list[str]:
    """The ``celery worker`` arguments: the default queue always comes first."""
    names = [settings.default_queue]
    for value in queues:
        names.extend(name.strip() for name in value.split(",") if name.strip() and name.strip() not in names)
    argv = ["worker", f"--loglevel={loglevel or settings.log_level}", f"--pool={pool}", f"--queues={','.join(names)}"]
    if concurrency is not None:
        argv.append(f"--concurrency={concurrency}")
    if hostname:
        argv.append(f"--hostname={hostname}")
    return argv


def enable_multiprocess_metrics(port: int | None) -> None:
    """Count metrics per pool process in files the main process sums up for /metrics.

    Must run before prometheus_client is imported (it picks its value class from the
    environment at import), hence before ``tasks.app``.
    """
    os.environ["CONVEYOR_WORKER_METRICS_PORT"] = str(port)
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="conveyor-metrics-")


def worker(
    queues: Annotated[
        list[str] | None,
        typer.Option(
            "--queues",
            "-Q",
            help="Also consume these queues (steps with 'queue:' in their definition); repeat or comma-separate.",
        ),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", min=1, help="Steps run at once (default: number of CPUs)."),
    ] = None,
    pool: Annotated[
        Pool, typer.Option(help="prefork: processes (CPU-bound steps); threads: I/O-bound steps; solo: one at a time.")
    ] = Pool.prefork,
    loglevel: Annotated[
        str | None, typer.Option("--loglevel", "-l", help="DEBUG, INFO, WARNING... (default: CONVEYOR_LOG_LEVEL).")
    ] = None,
    hostname: Annotated[
        str | None, typer.Option("--hostname", "-n", help="Node name, e.g. gpu@%h (needed for two workers per host).")
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option("--metrics-port", help="Serve Prometheus /metrics here (default: CONVEYOR_WORKER_METRICS_PORT)."),
    ] = None,
) -> None:
    """Run a worker: claims queued steps from the default queue and the -Q queues.

    Needs a message broker shared with the API: set CONVEYOR_BROKER_URL.

    Step modules listed in CONVEYOR_IMPORTS are imported when the worker starts.
    """
    settings = Settings()
    if is_embedded(settings):
        Console(stderr=True).print(
            "[red]conveyor worker needs a message broker shared with the API:[/red] set CONVEYOR_BROKER_URL "
            "(e.g. redis://localhost:6379/0), or run everything in one process with [bold]conveyor dev[/bold]."
        )
        raise typer.Exit(2)
    # Like the `celery` command: user modules (CONVEYOR_IMPORTS) import from the working directory.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if metrics_port is not None or settings.worker_metrics_port is not None:
        enable_multiprocess_metrics(metrics_port or settings.worker_metrics_port)
    from tasks.app import app as celery_app

    celery_app.worker_main(
        worker_argv(
            settings, queues=queues or [], concurrency=concurrency, pool=pool, loglevel=loglevel, hostname=hostname
        )
    )
