"""Live progress of one execution as a Rich table: one row per step, foreach items folded.

:func:`step_rows` turns step records into display rows (pure: no terminal needed);
:func:`render` draws them. A foreach step is one row, ``reserve[*]``, whose detail reads
``4/6 done · 2 running``: items are not listed one by one, so a fan-out of a thousand
stays readable.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from engine.orchestration import planner
from engine.records import ExecutionRecord, StepRecord
from engine.states import STEP_TERMINAL, ExecutionStatus, StepStatus

#: Shown for a step that has no record yet (its needs have not finished).
PENDING = "PENDING"
#: Shown instead of PENDING once the execution ended: the step will never run.
NOT_RUN = "NOT RUN"

STEP_STYLES: dict[str, str] = {
    PENDING: "dim",
    NOT_RUN: "dim",
    StepStatus.QUEUED: "cyan",
    StepStatus.RUNNING: "bold yellow",
    StepStatus.RETRY_WAIT: "magenta",
    StepStatus.WAITING: "blue",
    StepStatus.SUCCEEDED: "green",
    StepStatus.FAILED: "bold red",
    StepStatus.SKIPPED: "dim",
    StepStatus.CANCELLED: "red",
}

EXECUTION_STYLES: dict[ExecutionStatus, str] = {
    ExecutionStatus.RUNNING: "bold yellow",
    ExecutionStatus.PAUSED: "blue",
    ExecutionStatus.SUCCEEDED: "bold green",
    ExecutionStatus.FAILED: "bold red",
    ExecutionStatus.CANCELLED: "bold red",
    ExecutionStatus.TIMED_OUT: "bold red",
}

#: Longest error text shown in the table; the full message is printed when the run fails.
MAX_DETAIL = 70


@dataclass(frozen=True)
class StepRow:
    """One line of the table."""

    key: str
    status: str
    attempt: int | None
    seconds: float | None
    detail: str = ""


def step_rows(
    step_ids: Sequence[str], records: Iterable[StepRecord], now: float, *, ended: bool = False
) -> list[StepRow]:
    """Rows for ``step_ids`` in that order.

    A step without a record is ``PENDING``, or ``NOT RUN`` once the execution has ``ended``.
    """
    by_step: dict[str, list[StepRecord]] = defaultdict(list)
    for record in records:
        by_step[record.step_id].append(record)
    return [_row(step_id, by_step.get(step_id, []), now, ended) for step_id in step_ids]


def _row(step_id: str, records: list[StepRecord], now: float, ended: bool) -> StepRow:
    parent = next((record for record in records if record.index is None), None)
    if parent is None:
        return StepRow(step_id, NOT_RUN if ended else PENDING, None, None)
    if not planner.is_foreach_parent(parent):
        return StepRow(step_id, str(parent.status), parent.attempt or None, _seconds(parent, now), _detail(parent, now))
    items = [record for record in records if record.index is not None]
    return _foreach_row(parent, items, now)


def _foreach_row(parent: StepRecord, items: list[StepRecord], now: float) -> StepRow:
    """The parent of a foreach with a count of its items instead of one row each."""
    total = planner.item_count(parent) or 0
    done = sum(item.status in STEP_TERMINAL for item in items)
    running = sum(item.status is StepStatus.RUNNING for item in items)
    retrying = sum(item.status is StepStatus.RETRY_WAIT for item in items)
    parts = [f"{done}/{total} done"]
    if running:
        parts.append(f"{running} running")
    if retrying:
        parts.append(f"{retrying} retrying")
    failed = sorted((item for item in items if item.status is StepStatus.FAILED), key=lambda item: item.index or 0)
    if failed:
        parts.append(f"{failed[0].key}: {_short(_message(failed[0]))}")
    attempt = max((item.attempt for item in items), default=0)
    label = f"{parent.key}[*]"  # every item, folded into one row
    return StepRow(label, str(parent.status), attempt or None, _seconds(parent, now), " · ".join(parts))


def _detail(record: StepRecord, now: float) -> str:
    if record.status is StepStatus.RETRY_WAIT and record.wake_at is not None:
        return f"retry in {max(0.0, record.wake_at - now):.1f}s · {_short(_message(record))}"
    if record.status is StepStatus.WAITING and (record.wait or {}).get("event"):
        wait = record.wait or {}
        return f"waiting for event {wait['event']} with key {wait.get('correlation_key')}"
    if record.status is StepStatus.WAITING and record.wake_at is None:
        return "waiting for a signal"
    if record.status is StepStatus.WAITING and record.wake_at is not None:
        return f"wakes in {max(0.0, record.wake_at - now):.1f}s"
    if record.error:
        return _short(_message(record))
    return ""


def _message(record: StepRecord) -> str:
    error = record.error or {}
    kind, message = error.get("type", ""), error.get("message", "")
    return f"{kind}: {message}" if kind and message else str(kind or message)


def _short(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= MAX_DETAIL else line[: MAX_DETAIL - 1] + "…"


def _seconds(record: StepRecord, now: float) -> float | None:
    if record.started_at is None:
        return None
    return max(0.0, (record.finished_at or now) - record.started_at)


def render(execution: ExecutionRecord, rows: Sequence[StepRow], now: float) -> Table:
    """The table for one refresh: a title with the execution's state, one row per step."""
    elapsed = (execution.finished_at or now) - execution.created_at
    title = Text.assemble(
        (f"{execution.workflow} v{execution.version}", "bold"),
        f"  execution {execution.id}  ",
        (str(execution.status), EXECUTION_STYLES.get(execution.status, "")),
        f"  {elapsed:.1f}s",
    )
    table = Table(title=title, title_justify="left")
    table.add_column("step", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempt", justify="right")
    table.add_column("time", justify="right")
    table.add_column("detail", overflow="fold")
    for row in rows:
        table.add_row(
            row.key,
            Text(row.status, style=STEP_STYLES.get(row.status, "")),
            "" if row.attempt is None else str(row.attempt),
            "" if row.seconds is None else f"{row.seconds:.1f}s",
            Text(row.detail, style="red" if row.status == StepStatus.FAILED else ""),
        )
    return table


def event_hints(execution: ExecutionRecord, records: Sequence[StepRecord], hinted: set[str]) -> list[str]:
    """How to send the event each step newly waiting for one expects (once per step, in ``hinted``)."""
    hints = []
    for record in records:
        wait = record.wait or {}
        if record.status is not StepStatus.WAITING or not wait.get("event") or record.key in hinted:
            continue
        hinted.add(record.key)
        command = f"conveyor events publish {wait['event']} --key {wait.get('correlation_key')} --data '{{...}}'"
        if execution.tenant != "default":
            command += f" --tenant {execution.tenant}"
        body = json.dumps({"type": wait["event"], "correlation_key": wait.get("correlation_key"), "data": {}})
        hints.append(
            f"[blue]⏸[/blue] step [bold]{escape(record.key)}[/bold] waits for event "
            f"[bold]{escape(str(wait['event']))}[/bold] with correlation key "
            f"[bold]{escape(str(wait.get('correlation_key')))}[/bold]. Send it from another terminal:\n"
            f"    {escape(command)}\n"
            f"  or POST /v1/events {escape(body)}"
        )
    return hints
