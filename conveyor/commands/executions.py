"""``conveyor executions list|counts|show|cancel|delete|retry``: operate executions in the configured store.

The store is the one every other command uses: SQLite under ``--state-dir`` (the embedded
default, where ``conveyor run`` keeps its executions) or Firestore with
``CONVEYOR_STORE=firestore``. ``retry`` runs the retried steps the way ``conveyor run``
does: in this process (an embedded worker), unless ``--no-worker`` leaves them to
``conveyor worker`` processes through ``CONVEYOR_BROKER_URL``.

Exit codes: 0 done; 1 the execution is not found, the store refused the change (it cannot
be cancelled, deleted or retried in its state), a deletion was not confirmed, or a retried
execution failed again; 2 bad usage
(an invalid filter or cursor among them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from conveyor import exit_codes, progress
from conveyor.commands.run import NoWorkerOption, QuietOption, TimeoutOption, follow_here
from conveyor.jsontimes import api_time, with_api_times
from engine.adapters.payloads import record_to_dict
from engine.bootstrap import build_service
from engine.errors import ConveyorError, InvalidRequest
from engine.records import ExecutionRecord
from engine.service import Service
from engine.settings import Settings
from engine.states import EXECUTION_TERMINAL, ExecutionStatus

executions = typer.Typer(
    name="executions",
    help="List, inspect, cancel, delete and retry executions in the configured store.",
    no_args_is_help=True,
)

Tenant = Annotated[str, typer.Option(help="Tenant whose executions to use.")]
StateDir = Annotated[
    Path | None, typer.Option(help="Folder of the local store (default: CONVEYOR_STATE_DIR or .conveyor).")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ExecutionId = Annotated[str, typer.Argument(help="The execution's id.")]


def register(app: typer.Typer) -> None:
    """Add ``executions`` to the ``conveyor`` app."""
    app.add_typer(executions)


def _settings(state_dir: Path | None) -> Settings:
    return Settings(state_dir=state_dir) if state_dir is not None else Settings()


@contextmanager
def _service(state_dir: Path | None) -> Iterator[Service]:
    """A service on the configured store; any Conveyor error is printed and exits 1."""
    service = None
    try:
        service = build_service(_settings(state_dir))
        yield service
    except InvalidRequest as exc:  # the command line asked for something that means nothing (a filter, a cursor)
        _err().print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(exit_codes.INVALID) from None
    except ConveyorError as exc:
        _err().print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(exit_codes.FAILED) from None
    finally:
        if service is not None:
            service.store.close()


def _moment(value: str | None) -> float | None:
    """An ISO 8601 date-time (UTC when it names no offset) as epoch seconds."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 date-time such as 2026-05-01T12:00:00Z") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


WorkflowFilter = Annotated[str | None, typer.Option(help="Only executions of this workflow.")]
VersionFilter = Annotated[int | None, typer.Option(min=1, help="Only this version of --workflow (requires it).")]
LabelFilter = Annotated[
    list[str] | None,
    typer.Option("--label", help="key:value (split on the first ':'); repeat it to require several labels."),
]
TriggerFilter = Annotated[str | None, typer.Option(help="Only executions started by this trigger (its id).")]
Since = Annotated[str | None, typer.Option(help="Created at or after this ISO 8601 date-time (UTC if no offset).")]
Until = Annotated[str | None, typer.Option(help="Created before this ISO 8601 date-time (UTC if no offset).")]


def _filters(
    workflow: str | None,
    version: int | None,
    label: list[str] | None,
    trigger: str | None,
    since: str | None,
    until: str | None,
) -> dict[str, Any]:
    created_after, created_before = _moment(since), _moment(until)
    if created_after is not None and created_before is not None and created_after >= created_before:
        # Said here in the command's own words (the search would name its REST parameters).
        raise typer.BadParameter(f"--since {since} is not before --until {until}: no execution can match")
    return {
        "workflow": workflow,
        "version": version,
        "labels": label or (),
        "trigger_id": trigger,
        "created_after": created_after,
        "created_before": created_before,
    }


@executions.command("list")
def list_executions(
    status: Annotated[
        ExecutionStatus | None, typer.Option(case_sensitive=False, help="Only executions in this status.")
    ] = None,
    workflow: WorkflowFilter = None,
    version: VersionFilter = None,
    label: LabelFilter = None,
    trigger: TriggerFilter = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many, newest first.")] = 20,
    cursor: Annotated[
        str | None, typer.Option(help="Continue a listing after its last page: the cursor that page printed.")
    ] = None,
    tenant: Tenant = "default",
    state_dir: StateDir = None,
    as_json: AsJson = False,
) -> None:
    """List executions, newest first; every filter given must match.

    When more match than ``--limit``, the command says so and prints the ``--cursor`` that lists
    the next page (on stderr with ``--json``, so standard output stays one JSON list).
    """
    filters = _filters(workflow, version, label, trigger, since, until)
    with _service(state_dir) as service:
        page = service.list_executions(tenant, cursor=cursor, status=status, limit=limit, **filters)
    found: list[ExecutionRecord] = list(page.items)
    more = f"more executions match: add --cursor {page.next_cursor} for the next page" if page.next_cursor else None
    if as_json:
        _print_json([_summary(execution) for execution in found])
        if more:
            _err().print(more)
        return
    table = Table(title=f"{len(found)} execution{'s' if len(found) != 1 else ''}", title_justify="left")
    table.add_column("id", no_wrap=True)  # ids are copied into other commands: never cut
    for column in ("workflow", "status", "created", "finished", "labels", "error"):
        table.add_column(column)
    for execution in found:
        error = execution.error or {}
        table.add_row(
            execution.id,
            f"{execution.workflow} v{execution.version}",
            str(execution.status),
            _when(execution.created_at),
            _when(execution.finished_at),
            escape(" ".join(f"{k}:{v}" for k, v in sorted(execution.labels.items()))),
            escape(str(error.get("type") or "")),
        )
    _out().print(table)
    if more:
        _out().print(more)


@executions.command("counts")
def counts(
    workflow: WorkflowFilter = None,
    version: VersionFilter = None,
    label: LabelFilter = None,
    trigger: TriggerFilter = None,
    since: Since = None,
    until: Until = None,
    tenant: Tenant = "default",
    state_dir: StateDir = None,
    as_json: AsJson = False,
) -> None:
    """Count executions per status; every filter given must match."""
    filters = _filters(workflow, version, label, trigger, since, until)
    with _service(state_dir) as service:
        per_status = service.count_executions(tenant, **filters)
    total = sum(per_status.values())
    if as_json:
        _print_json({"counts": {str(status): n for status, n in per_status.items()}, "total": total})
        return
    table = Table(title=f"{total} execution{'s' if total != 1 else ''}", title_justify="left")
    table.add_column("status")
    table.add_column("count", justify="right")
    for status, n in per_status.items():
        table.add_row(str(status), str(n))
    _out().print(table)


@executions.command("show")
def show(
    execution_id: ExecutionId, tenant: Tenant = "default", state_dir: StateDir = None, as_json: AsJson = False
) -> None:
    """Show one execution: its status, steps, outputs and error."""
    with _service(state_dir) as service:
        execution = service.get_execution(tenant, execution_id)
        steps = service.list_steps(tenant, execution_id)
        order = list(service.compiled(tenant, execution.workflow, execution.version).order)
        # Built while the store is open: a record reads its payloads only when first asked
        # (this reads them all, so the table below needs the store no more).
        document = {
            **with_api_times(record_to_dict(execution)),
            "steps": [with_api_times(record_to_dict(step)) for step in steps],
        }
    if as_json:
        _print_json(document)
        return
    now = time.time()
    rows = progress.step_rows(order, steps, now, ended=execution.status in EXECUTION_TERMINAL)
    out = _out()
    out.print(progress.render(execution, rows, now))
    if execution.status is ExecutionStatus.SUCCEEDED:
        out.print_json(data=execution.output, indent=2)
    elif execution.error:
        where = f" at step {execution.error['step']}" if execution.error.get("step") else ""
        out.print(f"{escape(str(execution.error.get('type', 'Error')))}{escape(where)}: "
                  f"{escape(str(execution.error.get('message', '')))}")  # fmt: skip
    if execution.expires_at is not None:
        out.print(f"[dim]kept until {_when(execution.expires_at)} UTC (retention), then deleted[/dim]")


@executions.command("cancel")
def cancel(
    execution_id: ExecutionId, tenant: Tenant = "default", state_dir: StateDir = None, as_json: AsJson = False
) -> None:
    """Cancel a running or paused execution and every step still active in it."""
    with _service(state_dir) as service:
        execution = service.cancel(tenant, execution_id)
    if as_json:
        _print_json(_summary(execution))
        return
    _err().print(f"[green]✓[/green] execution {execution.id} {execution.status}")


@executions.command("delete")
def delete(
    execution_id: ExecutionId,
    tenant: Tenant = "default",
    state_dir: StateDir = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a finished execution now, with its steps, history, payloads, step logs, agent
    checkpoints, the memory notes it wrote and its child executions. A running or paused
    execution is refused (exit 1). Finished executions are also deleted once their retention
    (CONVEYOR_EXECUTION_RETENTION_DAYS or the workflow's retention:) has passed."""
    if not yes:
        typer.confirm(f"Delete execution {execution_id} and everything derived from it?", abort=True)
    with _service(state_dir) as service:
        service.delete_execution(tenant, execution_id)
    _err().print(f"[green]✓[/green] execution {execution_id} deleted")


@executions.command("retry")
def retry(
    execution_id: ExecutionId,
    tenant: Tenant = "default",
    state_dir: StateDir = None,
    timeout: TimeoutOption = None,
    quiet: QuietOption = False,
    no_worker: NoWorkerOption = False,
) -> None:
    """Retry a failed or timed-out execution from its failed steps and follow it to its end.

    Successful steps keep their outputs; the failed and cancelled ones (a deadline cancels the
    steps still active) run again. A cancelled execution stays cancelled (exit 1). As with
    ``conveyor run``, steps run in this process unless ``--no-worker``; the step modules must
    be importable from the current folder or ``CONVEYOR_IMPORTS``. Exits 0 if it succeeds.
    """
    err = _err()

    def begin(service: Service) -> ExecutionRecord:
        return service.retry(tenant, execution_id)

    follow_here(_settings(state_dir), begin, no_worker=no_worker, timeout=timeout, quiet=quiet, err=err)


def _summary(execution: ExecutionRecord) -> dict[str, Any]:
    return {
        "id": execution.id,
        "workflow": execution.workflow,
        "version": execution.version,
        "status": str(execution.status),
        "labels": execution.labels,
        "trigger_id": execution.trigger_id,
        "created_at": api_time(execution.created_at),
        "finished_at": api_time(execution.finished_at),
        "expires_at": api_time(execution.expires_at),
        "error": execution.error,
    }


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _out() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)
