"""``conveyor decisions``: what a bandit has learned, and rewarding its decisions."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from engine.errors import ConveyorError
from engine.settings import Settings

decisions_app = typer.Typer(help="Routing decisions of ai.route bandits: estimates and rewards.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``decisions`` to the ``conveyor`` app."""
    app.add_typer(decisions_app, name="decisions")


@decisions_app.command("show")
def show(
    workflow: Annotated[str, typer.Argument(help="Workflow name.")],
    step: Annotated[str, typer.Argument(help="Id of its ai.route or switch step (strategy: bandit).")],
    tenant: Annotated[str, typer.Option(help="Tenant whose statistics to read.")] = "default",
) -> None:
    """Each route's successes, failures and estimated success rate (posterior mean); for a
    bandit with a half-life, the counts decayed to now."""
    from engine.bootstrap import build_service

    service = build_service(Settings())
    try:
        found = service.rewards.estimates(tenant, workflow, step)
    except ConveyorError as exc:
        Console(stderr=True).print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    finally:
        service.store.close()
    decay = f" (half-life {found['half_life']:g} s, decayed to now)" if found.get("half_life") else ""
    table = Table(title=f"bandit {found['bandit']}{decay}")
    for column in ("route", "successes", "failures", "estimated success rate"):
        table.add_column(column)
    for route, arm in found["arms"].items():
        table.add_row(escape(route), f"{arm['successes']:g}", f"{arm['failures']:g}", f"{arm['mean']:.3f}")
    Console().print(table)


@decisions_app.command("reward")
def reward(
    execution_id: Annotated[str, typer.Argument(help="Execution whose decision is rewarded.")],
    step: Annotated[str, typer.Argument(help="Key of the ai.route or switch step that decided.")],
    value: Annotated[float, typer.Argument(help="Reward between 0 (failure) and 1 (success).")],
    tenant: Annotated[str, typer.Option(help="Tenant of the execution.")] = "default",
) -> None:
    """Count how a bandit decision turned out (exactly once per step and execution)."""
    from engine.bootstrap import build_service

    err = Console(stderr=True, highlight=False)
    service = build_service(Settings())
    try:
        counted = service.rewards.count(tenant, execution_id, step, value)
    except ConveyorError as exc:
        err.print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(1) from None
    finally:
        service.store.close()
    err.print("[green]✓[/green] reward counted" if counted else "reward was counted before: unchanged")
