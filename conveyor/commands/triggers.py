"""``conveyor triggers``: inspect triggers in the configured store."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.table import Table

from conveyor.jsontimes import api_time
from engine.errors import ConveyorError
from engine.settings import Settings

triggers_app = typer.Typer(help="Inspect triggers (create and change them through the API).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``triggers`` to the ``conveyor`` app."""
    app.add_typer(triggers_app, name="triggers")


@triggers_app.command("next")
def triggers_next(
    trigger_id: Annotated[str, typer.Argument(help="The trigger's id.")],
    tenant: Annotated[str, typer.Option(help="Tenant the trigger belongs to.")] = "default",
    count: Annotated[int, typer.Option(min=1, max=100, help="How many fire times to print.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a schedule's next fire times, in UTC and in its time zone, with daylight-saving notes."""
    from engine.bootstrap import build_store
    from engine.service import SystemClock
    from engine.trigger_admin import Triggers, next_fires

    err = Console(stderr=True)
    store = build_store(Settings())
    try:
        record = Triggers(store, SystemClock()).get(tenant, trigger_id)
    except ConveyorError as exc:
        err.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    finally:
        store.close()
    if record.kind != "schedule":
        err.print(f"[red]trigger {trigger_id} is an event trigger: it has no fire times[/red]")
        raise typer.Exit(2)
    fires = next_fires(record, count)
    if as_json:
        typer.echo(json.dumps([{"at": api_time(fire.at), "note": fire.note} for fire in fires]))
        return
    if not fires:
        err.print(f"trigger {trigger_id} is disabled: it does not fire")
        return
    zone = ZoneInfo(str(record.spec.get("timezone", "UTC")))
    table = Table("#", "UTC", f"local ({zone.key})", "note")
    for number, fire in enumerate(fires, start=1):
        local = datetime.fromtimestamp(fire.at, zone).strftime("%Y-%m-%d %H:%M:%S %Z")
        table.add_row(str(number), _iso(fire.at), local, fire.note or "")
    Console().print(table)


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
