"""``conveyor flower``: Flower over Conveyor's Celery app, with the workers' settings and auth on.

Flower shows the broker's queues, the workers and the step tasks they ran. It must not be
reachable without credentials: the command refuses to start unless basic auth
(``CONVEYOR_FLOWER_BASIC_AUTH``) or Flower's OAuth (``FLOWER_AUTH_PROVIDER`` and ``FLOWER_AUTH``)
is configured, or auth is explicitly turned off (``--no-auth`` / ``CONVEYOR_FLOWER_AUTH_DISABLED``,
for a laptop). Credentials reach Flower through its environment, never its command line (which
``ps`` shows to every user of the machine).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.console import Console

from engine.settings import Settings


def register(app: typer.Typer) -> None:
    """Add ``flower`` to the ``conveyor`` app."""
    app.command("flower")(flower)


class FlowerAuthMissing(Exception):
    """Flower would start without authentication."""


def flower_environment(settings: Settings, environ: dict[str, str], *, no_auth: bool) -> dict[str, str]:
    """The environment Flower runs with; raises ``FlowerAuthMissing`` when it would be open."""
    env = dict(environ)
    if settings.flower_basic_auth:
        env["FLOWER_BASIC_AUTH"] = ",".join(settings.flower_basic_auth)
    has_basic = bool(env.get("FLOWER_BASIC_AUTH"))
    has_oauth = bool(env.get("FLOWER_AUTH_PROVIDER") and env.get("FLOWER_AUTH"))
    open_api = env.get("FLOWER_UNAUTHENTICATED_API", "").lower() in {"1", "true", "yes"}
    disabled = no_auth or settings.flower_auth_disabled
    if disabled:
        return env
    if not (has_basic or has_oauth):
        raise FlowerAuthMissing(
            "Flower needs authentication: set CONVEYOR_FLOWER_BASIC_AUTH='[\"user:password\"]' (or Flower's "
            "OAuth: FLOWER_AUTH_PROVIDER and FLOWER_AUTH), or pass --no-auth on a machine only you can reach."
        )
    if open_api:
        raise FlowerAuthMissing(
            "FLOWER_UNAUTHENTICATED_API would open Flower's REST API to anyone; unset it (or pass --no-auth)."
        )
    return env


def flower(
    port: Annotated[int | None, typer.Option("--port", help="Port (default: CONVEYOR_FLOWER_PORT).")] = None,
    address: Annotated[
        str | None, typer.Option("--address", help="Address to listen on (default: CONVEYOR_FLOWER_ADDRESS).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Run without authentication (only where nobody else can connect).")
    ] = False,
) -> None:
    """Run Flower for Conveyor's workers, with the same settings and authentication required."""
    settings = Settings()
    try:
        env = flower_environment(settings, dict(os.environ), no_auth=no_auth)
    except FlowerAuthMissing as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    os.environ.clear()
    os.environ.update(env)
    from tasks.app import app as celery_app

    celery_app.start(
        [
            "flower",
            f"--port={port or settings.flower_port}",
            f"--address={address or settings.flower_address}",
        ]
    )
