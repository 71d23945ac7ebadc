"""``conveyor logs EXECUTION [STEP] [--follow]``: what an execution's steps logged and printed.

Lines come from the step log store (every finished attempt) of the configured store, as
``conveyor executions`` reads it. ``--follow`` then waits for new lines until the execution
ends: from the live event stream as they are logged when ``CONVEYOR_REDIS_URL`` names the
Redis the workers publish to, and from the store as each attempt ends (a process running
steps with no Redis, such as ``conveyor run``, stores each attempt's lines when it ends).

Exit codes: 0 done; 1 the execution or step is not found, or the store cannot be read; 2 bad usage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from conveyor.commands.executions import AsJson, ExecutionId, StateDir, Tenant, _service
from conveyor.jsontimes import api_time
from engine.errors import NotFound
from engine.records import StepRecord
from engine.service import Service
from engine.states import EXECUTION_TERMINAL
from engine.steplogs.shipper import iso

#: Seconds between two looks at the store while following.
POLL_SECONDS = 1.0
#: A step whose record changed is read again for this long: its logs are stored just after its outcome.
SETTLE_SECONDS = 3.0
LEVEL_STYLES = {"DEBUG": "dim", "WARNING": "yellow", "ERROR": "red", "CRITICAL": "bold red"}

Key = tuple[str, int, int]  # step key, run, attempt


def register(app: typer.Typer) -> None:
    """Add ``logs`` to the ``conveyor`` app."""
    app.command("logs")(logs)


def logs(
    execution_id: ExecutionId,
    step: Annotated[
        str | None, typer.Argument(help="Only this step (a step id, or a foreach item like each[3]).")
    ] = None,
    run: Annotated[
        int | None, typer.Option(min=1, help="Only this run of the execution (retries start new runs).")
    ] = None,
    attempt: Annotated[int | None, typer.Option(min=1, help="Only this attempt.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the execution ends.")
    ] = False,
    tenant: Tenant = "default",
    state_dir: StateDir = None,
    as_json: AsJson = False,
) -> None:
    """Print what an execution's steps logged (logging records and print output), attempt by attempt."""
    printer = _Printer(as_json, with_step=step is None)
    with _service(state_dir) as service:
        watch = _Watch(service, tenant, execution_id, step, run, attempt, printer)
        watch.read_stored(watch.steps())
        if follow:
            watch.follow()


class _Printer:
    def __init__(self, as_json: bool, *, with_step: bool) -> None:
        self.as_json = as_json
        self.with_step = with_step
        self.console = Console(highlight=False, soft_wrap=True)

    def line(self, key: Key, line: dict[str, Any]) -> None:
        step_key, run, attempt = key
        at = line["at"] if isinstance(line["at"], str) else iso(line["at"])
        if self.as_json:
            typer.echo(json.dumps({"step": step_key, "run": run, "attempt": attempt, **line, "at": api_time(at)}))
            return
        where = f"{step_key} " if self.with_step else ""
        where += f"#{attempt}" if run == 1 else f"run {run} #{attempt}"
        style = LEVEL_STYLES.get(line["level"], "")
        level = f"[{style}]{line['level']:<8}[/{style}]" if style else f"{line['level']:<8}"
        self.console.print(f"{at[11:23]} {level} [cyan]{escape(where)}[/cyan] {escape(line['logger'])}: "
                           f"{escape(line['message'])}")  # fmt: skip

    def dropped(self, key: Key, count: int) -> None:
        if count and not self.as_json:
            self.console.print(f"[dim]… {count} more lines of {escape(key[0])} attempt {key[2]} were dropped "
                               f"(over CONVEYOR_STEP_LOGS_MAX_LINES / _MAX_BYTES)[/dim]")  # fmt: skip


class _Watch:
    """What was printed so far, so lines from the store and the live stream are printed once, in order."""

    def __init__(
        self,
        service: Service,
        tenant: str,
        execution_id: str,
        step: str | None,
        run: int | None,
        attempt: int | None,
        printer: _Printer,
    ) -> None:
        self.service, self.tenant, self.execution_id = service, tenant, execution_id
        self.step, self.run, self.attempt = step, run, attempt
        self.printer = printer
        self.printed: dict[Key, int] = {}
        self.ended: set[Key] = set()
        self.seen: dict[str, tuple[str, int, int]] = {}
        self.settling: dict[str, float] = {}

    def steps(self) -> list[StepRecord]:
        found = self.service.list_steps(self.tenant, self.execution_id)  # NotFound for another tenant's
        if self.step is not None:
            found = [s for s in found if s.key == self.step]
            if not found:
                raise NotFound(f"step {self.step!r} not found in execution {self.execution_id!r}")
        return sorted(found, key=lambda s: (s.created_at, s.key))

    def _wanted(self, run: int, attempt: int) -> bool:
        return (self.run is None or run == self.run) and (self.attempt is None or attempt == self.attempt)

    def _print(self, key: Key, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            if line["seq"] == self.printed.get(key, 0):  # in order, once; a gap waits for the store
                self.printer.line(key, line)
                self.printed[key] = line["seq"] + 1

    def read_stored(self, steps: list[StepRecord]) -> None:
        for record in steps:
            cursor = None
            while True:
                page = self.service.step_logs_page(
                    self.tenant,
                    self.execution_id,
                    record.key,
                    run=self.run,
                    attempt=self.attempt,
                    cursor=cursor,
                    limit=1000,
                )
                for summary in page.attempts:
                    key = (record.key, summary.run, summary.attempt)
                    lines = [vars(line) for line in page.items if (line.run, line.attempt) == key[1:]]
                    self._print(key, lines)
                    if key not in self.ended and self.printed.get(key, 0) >= summary.lines:
                        self.ended.add(key)
                        self.printer.dropped(key, summary.dropped)
                cursor = page.next_cursor
                if cursor is None:
                    break

    def follow(self) -> None:
        live = self.service.events
        reader = getattr(live, "read", None)  # a live log this process can read (Redis), else the store alone
        cursor: str | None = None
        last_poll = 0.0
        while True:
            if callable(reader):
                for item in reader(self.tenant, self.execution_id, after=cursor, block_ms=int(POLL_SECONDS * 1000)):
                    cursor = item.stream_id
                    if item.event.type == "step.log":
                        self._live(item.event.step_key, item.event.attempt, item.event.data)
            else:
                time.sleep(POLL_SECONDS)
            if time.monotonic() - last_poll < POLL_SECONDS:
                continue
            last_poll = time.monotonic()
            execution = self.service.get_execution(self.tenant, self.execution_id)
            self.read_stored(list(self._changed()))
            if execution.status in EXECUTION_TERMINAL and not self.settling:
                return

    def _live(self, step_key: str | None, attempt: int | None, data: dict[str, Any]) -> None:
        run = int(data.get("run", 1))
        if step_key is None or attempt is None or (self.step is not None and step_key != self.step):
            return
        if self._wanted(run, attempt):
            self._print((step_key, run, attempt), list(data.get("lines", [])))

    def _changed(self) -> Iterator[StepRecord]:
        """Steps whose attempts may have new stored logs: changed lately, or still settling."""
        now = time.monotonic()
        for record in self.steps():
            state = (str(record.status), record.run, record.attempt)
            if self.seen.get(record.key) != state:
                self.seen[record.key] = state
                self.settling[record.key] = now + SETTLE_SECONDS
            until = self.settling.get(record.key)
            if until is not None:
                if now >= until:
                    del self.settling[record.key]
                yield record
