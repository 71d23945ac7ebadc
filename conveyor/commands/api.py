"""``conveyor api``, ``conveyor dev`` and ``conveyor keys``: serve the API and manage API keys."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from conveyor.jsontimes import api_time
from engine.auth import Role, parse_role
from engine.errors import ConveyorError
from engine.keys import ApiKeys
from engine.settings import Settings

keys_app = typer.Typer(
    help="Create, list and revoke API keys (stored hashed; a key is shown once).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add ``api``, ``dev`` and ``keys`` to the ``conveyor`` app."""
    app.command("api")(api)
    app.command("dev")(dev)
    app.add_typer(keys_app, name="keys")


def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: CONVEYOR_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: CONVEYOR_API_PORT).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Server processes.")] = 1,
) -> None:
    """Serve the REST, GraphQL and streaming API (never runs steps: start workers separately)."""
    import uvicorn

    settings = Settings()
    uvicorn.run(
        "api:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )


def dev(
    host: Annotated[str | None, typer.Option(help="Bind address (default: CONVEYOR_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: CONVEYOR_API_PORT).")] = None,
    tenant: Annotated[str, typer.Option(help="Tenant of the generated admin key.")] = "default",
    queues: Annotated[
        list[str] | None, typer.Option("--queues", "-Q", help="Extra queues for the in-process worker.")
    ] = None,
) -> None:
    """API, worker, reconciler and schedule triggers in one process on the embedded defaults.

    SQLite and an in-memory broker: no Redis needed.

    Prints the URL and a freshly generated admin key.
    """
    import uvicorn

    from api import create_app
    from conveyor.embedded import embedded_service

    settings = Settings()
    host = host or settings.api_host
    port = port or settings.api_port
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    with embedded_service(settings, queues=queues or [], schedules=True) as service:
        created = ApiKeys(service.store, service.clock).create(tenant, Role.ADMIN, "conveyor dev")
        url = f"http://{host}:{port}"
        console.print(f"[bold green]Conveyor dev[/bold green] on [link={url}]{url}[/link]  (docs: {url}/docs)")
        console.print(f"admin key for tenant [bold]{tenant}[/bold]: [bold]{created.token}[/bold]")
        console.print(f'try: curl -H "Authorization: Bearer {created.token}" {url}/v1/workflows')
        server = uvicorn.Server(
            uvicorn.Config(create_app(settings, service=service), host=host, port=port, log_level="warning")
        )
        server.run()


def _keys() -> ApiKeys:
    from engine.bootstrap import build_store
    from engine.service import SystemClock

    return ApiKeys(build_store(Settings()), SystemClock())


def _when(timestamp: float | None) -> str:
    return "-" if timestamp is None else datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key acts for.")],
    role: Annotated[str, typer.Option(help="viewer, operator, editor or admin.")] = "viewer",
    name: Annotated[str, typer.Option(help="A label shown in listings.")] = "cli",
    ttl: Annotated[float | None, typer.Option(help="Lifetime in seconds (default: no expiry).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Create a key and print it (it cannot be shown again)."""
    try:
        created = _keys().create(tenant, parse_role(role), name, ttl_seconds=ttl)
    except (ValueError, ConveyorError) as exc:
        Console(stderr=True).print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps({"id": created.record.id, "tenant": tenant, "role": role, "token": created.token}))
        return
    typer.echo(created.token)
    Console(stderr=True).print(f"key [bold]{created.record.id}[/bold] for {tenant} ({role}); store it now")


#: The tenant ``conveyor dev`` and an API without authentication act for.
DEFAULT_TENANT = "default"
TenantOption = Annotated[str, typer.Option(help="Tenant of the keys (default: the default tenant).")]


@keys_app.command("list")
def keys_list(
    tenant: TenantOption = DEFAULT_TENANT,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one array).")] = False,
) -> None:
    """List a tenant's keys (ids, roles, expiry; never secrets)."""
    records = _keys().for_tenant(tenant)
    if as_json:
        rows = [
            {
                "id": r.id,
                "name": r.name,
                "role": r.role,
                "created_at": api_time(r.created_at),
                "expires_at": api_time(r.expires_at),
                "revoked": r.revoked,
            }
            for r in records
        ]
        typer.echo(json.dumps(rows))
        return
    # Ids are what `keys revoke` takes: never shortened, whatever the terminal's width.
    id_column = Column("id", no_wrap=True, min_width=max((len(r.id) for r in records), default=2))
    table = Table(id_column, "name", "role", "created", "expires", "revoked")
    for record in records:
        table.add_row(
            record.id,
            record.name,
            record.role,
            _when(record.created_at),
            _when(record.expires_at),
            "yes" if record.revoked else "",
        )
    Console().print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (the part after cvk_).")],
    tenant: TenantOption = DEFAULT_TENANT,
) -> None:
    """Revoke a key; API processes stop accepting it within seconds."""
    try:
        _keys().revoke(tenant, key_id)
    except ConveyorError as exc:
        Console(stderr=True).print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    Console(stderr=True).print(f"revoked {key_id}")
