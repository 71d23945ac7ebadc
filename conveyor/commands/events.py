"""``conveyor events publish``: send an external event to the local store or the configured one."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from conveyor import exit_codes
from engine.errors import ConveyorError, InvalidRequest
from engine.settings import Settings

events_app = typer.Typer(help="External events: publish one to event triggers and waiting steps.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``events`` to the ``conveyor`` app."""
    app.add_typer(events_app, name="events")


@events_app.command("publish")
def publish(
    type: Annotated[str, typer.Argument(help="Event type, e.g. payment.settled.")],
    key: Annotated[
        str | None, typer.Option("--key", "-k", help="Correlation key: resumes wait_for_event steps waiting for it.")
    ] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="Event data: a JSON object, or @file.json.")] = None,
    event_id: Annotated[str | None, typer.Option("--id", help="Event id (an id sent again is ignored).")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant of the event.")] = "default",
) -> None:
    """Publish an event into the tenant's event log.

    With a broker configured (CONVEYOR_BROKER_URL) it is routed here at once. On the embedded
    defaults it is stored in the local store, and the running `conveyor run` routes it within
    CONVEYOR_EVENT_ROUTE_AFTER seconds (steps only run in that process). Exit 0 accepted (or
    already published), 2 the event is invalid (nothing stored), 1 the store refused or failed.
    """
    from conveyor.commands.run import parse_input
    from engine import eventlog
    from engine.adapters.celery_config import is_embedded
    from engine.bootstrap import build_service
    from engine.router import EventRouter

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    settings = Settings()
    service = build_service(settings)
    try:
        payload = parse_input(data, "--data")
        if is_embedded(settings):
            event = eventlog.new_event(
                tenant,
                type=type,
                accepted_at=service.clock.now(),
                data=payload,
                event_id=event_id,
                source="cli",
                correlation_key=key,
                max_bytes=settings.max_payload_bytes,
            )
            accepted = service.store.atomic(lambda tx: eventlog.accept(tx, event))
        else:
            accepted = EventRouter(service).publish(
                tenant, type=type, data=payload, event_id=event_id, source="cli", correlation_key=key
            )
    except InvalidRequest as exc:  # the command line's fault: nothing was stored
        err.print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(exit_codes.INVALID) from None
    except ConveyorError as exc:
        err.print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(exit_codes.FAILED) from None
    finally:
        service.store.close()
    note = " (already published)" if accepted.duplicate else ""
    err.print(f"[green]✓[/green] event {escape(accepted.event.id)} accepted{note}")
