"""``conveyor bridge``: turn Pub/Sub messages into events (triggers start, waiting steps resume)."""

from __future__ import annotations

import signal
import threading
from types import FrameType

import typer
from rich.console import Console
from rich.markup import escape

from engine.errors import ConveyorError
from engine.settings import Settings


def register(app: typer.Typer) -> None:
    """Add ``bridge`` to the ``conveyor`` app."""
    app.command("bridge")(bridge)


def bridge() -> None:
    """Pull the subscriptions of CONVEYOR_BRIDGE_SUBSCRIPTIONS into the tenants' event logs.

    Each message is acknowledged only after its event is committed; one that cannot be an
    event goes to CONVEYOR_BRIDGE_DEAD_LETTER_TOPIC with the reason. SIGTERM or Ctrl-C stops
    pulling, finishes the messages in flight and exits.
    """
    from engine.bootstrap import build_bridge

    settings = Settings()
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        streaming = build_bridge(settings)
        assert settings.bridge_dead_letter_topic is not None
        streaming.ensure_subscriptions(settings.bridge_dead_letter_topic, settings.bridge_max_attempts)
        streaming.run(stop)
    except ConveyorError as exc:
        Console(stderr=True, highlight=False).print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
