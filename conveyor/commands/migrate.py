"""``conveyor migrate``: bring the store's schema up to this version of Conveyor."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from engine.bootstrap import build_store
from engine.errors import ConveyorError
from engine.migrations import MIGRATIONS, Migration, migrate, pending
from engine.settings import Settings


def register(app: typer.Typer) -> None:
    """Add ``migrate`` to the ``conveyor`` app."""
    app.command("migrate")(migrate_command)


def migrate_command(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would run without changing anything.")] = False,
) -> None:
    """Apply pending schema migrations to the configured store (safe to run repeatedly)."""
    console = Console()
    store = build_store(Settings())
    try:
        before = store.schema_version()
        todo = pending(store) if dry_run else migrate(store)
        after = store.schema_version()
    except ConveyorError as exc:
        Console(stderr=True).print(f"[red]migrate failed:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        store.close()
    console.print(_table(todo, "would apply" if dry_run else "applied"))
    if not todo:
        console.print(f"[green]Schema is up to date[/green] (version {after}).")
    elif dry_run:
        console.print(f"Schema version {before}; {len(todo)} migration(s) pending. Run without --dry-run to apply.")
    else:
        console.print(f"[green]Migrated[/green] from schema version {before} to {after}.")


def _table(todo: list[Migration], verb: str) -> Table:
    table = Table(title="Schema migrations")
    table.add_column("version", justify="right")
    table.add_column("description")
    table.add_column("status")
    ran = {m.version for m in todo}
    for migration in MIGRATIONS:
        status = f"[yellow]{verb}[/yellow]" if migration.version in ran else "[dim]already applied[/dim]"
        table.add_row(str(migration.version), migration.description, status)
    return table
