"""``conveyor run FILE``: run one execution to completion on this machine, with live progress.

No services needed: the workflow is applied to the local store (SQLite under
``--state-dir``), and an embedded Celery worker plus the reconciler run in this process
(:mod:`conveyor.embedded`). With ``CONVEYOR_BROKER_URL`` set, messages go through that
broker; ``--no-worker`` then leaves them to ``conveyor worker`` processes sharing the store.

Progress goes to stderr and the outputs (JSON) to stdout, so ``conveyor run ... > out.json``
keeps only the result. Exit codes: 0 succeeded; 1 failed, timed out or cancelled (Ctrl-C
cancels the execution); 2 the definition or the input is invalid.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn

import structlog
import typer
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from conveyor import exit_codes, progress
from conveyor.process import exit_promptly
from engine.adapters.celery_config import is_embedded
from engine.compile import CompiledWorkflow, compile_workflow
from engine.errors import ConveyorError, InvalidRequest, PayloadTooLarge, Problem
from engine.logging import configure_logging
from engine.model import parse_definition_text
from engine.orchestration.approvals import Decision
from engine.records import ExecutionRecord, StepRecord
from engine.runner import INTERNAL_PATHS
from engine.service import Service
from engine.settings import Settings
from engine.states import EXECUTION_TERMINAL, ExecutionStatus, StepStatus

#: Seconds between refreshes of the table (the store is read each time).
REFRESH_INTERVAL = 0.1


@dataclass(frozen=True)
class RunOutcome:
    """How a watched execution ended; ``reason`` says why this command cancelled it, if it did."""

    execution: ExecutionRecord
    reason: str | None = None


#: Options of every command that follows an execution here (``run``, ``executions retry``).
TimeoutOption = Annotated[
    float | None, typer.Option(help="Cancel the execution if it has not finished after this many seconds.")
]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No live table: print only outputs or errors.")]
NoWorkerOption = Annotated[
    bool, typer.Option("--no-worker", help="Do not run steps here; leave them to `conveyor worker` processes.")
]


def register(app: typer.Typer) -> None:
    """Add ``run`` to the ``conveyor`` app."""
    app.command("run")(run)


def run(
    file: Annotated[Path, typer.Argument(help="Workflow definition file (YAML or JSON).")],
    input: Annotated[
        str | None, typer.Option("--input", "-i", help="Execution input: JSON text, or @path to a JSON file.")
    ] = None,
    tenant: Annotated[str, typer.Option(help="Tenant to run under in the local store.")] = "default",
    state_dir: Annotated[
        Path | None, typer.Option(help="Folder for the local store (default: CONVEYOR_STATE_DIR or .conveyor).")
    ] = None,
    timeout: TimeoutOption = None,
    quiet: QuietOption = False,
    no_worker: NoWorkerOption = False,
    reconcile: Annotated[
        bool | None,
        typer.Option(
            "--reconcile/--no-reconcile",
            help="Run the reconciler (timers, retries, lost workers) here; default: yes, unless --no-worker "
            "(then `conveyor beat` does it). With Redis it shares beat's lease: never two at once.",
        ),
    ] = None,
    signals: Annotated[
        list[str] | None,
        typer.Option(
            "--signal",
            "-s",
            help="STEP=JSON or STEP=@file.json: signal this payload to STEP once it waits (e.g. an agent's "
            'question). For an approval step the payload is a decision: {"decision": "approve" or "reject", '
            '"comment": "..."}. Repeatable.',
        ),
    ] = None,
) -> None:
    """Run a workflow to completion on this machine and print its outputs."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    definition, compiled, payload = _prepare(file, input, err)
    try:
        answers = parse_signals(signals or [])
        check_approval_answers(compiled, answers)
    except InvalidRequest as exc:
        _print_problems(err, "--signal", exc)
        raise typer.Exit(exit_codes.INVALID) from None
    # Step modules sit beside the workflow file (`function: order_steps.reserve`).
    sys.path.insert(0, str(file.resolve().parent))
    settings = Settings(state_dir=state_dir) if state_dir is not None else Settings()

    def begin(service: Service) -> ExecutionRecord:
        try:
            return _start(service, tenant, definition, payload)
        except (InvalidRequest, PayloadTooLarge) as exc:
            _print_problems(err, _input_source(input), exc)
            raise typer.Exit(exit_codes.INVALID) from None

    queues = {step.queue for step in compiled.definition.steps if step.queue}
    follow_here(
        settings,
        begin,
        queues=queues,
        no_worker=no_worker,
        timeout=timeout,
        quiet=quiet,
        err=err,
        answers=answers,
        reconcile=reconcile,
    )


def follow_here(
    settings: Settings,
    begin: Callable[[Service], ExecutionRecord],
    *,
    queues: Iterable[str] = (),
    no_worker: bool,
    timeout: float | None,
    quiet: bool,
    err: Console,
    answers: dict[str, Any] | None = None,
    reconcile: bool | None = None,
) -> NoReturn:
    """Start an execution with ``begin``, run its steps in this process (unless ``no_worker``), follow it
    to its end and exit with its code: 0 succeeded, 1 failed, timed out or cancelled.

    ``conveyor run`` starts a new execution; ``conveyor executions retry`` retries one.
    ``answers`` are signals for steps once they wait (``--signal``). The reconciler runs here
    if ``reconcile``, by default unless ``no_worker``.
    """
    # Imported here: loading a Celery worker would slow down every other command.
    from conveyor.embedded import embedded_service

    if no_worker and is_embedded(settings):
        err.print(
            "[red]✗[/red] --no-worker needs CONVEYOR_BROKER_URL: without a broker only this process can run steps"
        )
        raise typer.Exit(exit_codes.INVALID)
    _quiet_logging(settings)
    try:
        # Once the watched execution has ended, a step still running here belongs to it and its
        # outcome would be refused: stop without waiting for it (stop_grace=0).
        run_reconciler = not no_worker if reconcile is None else reconcile
        with (
            _restoring_sigint(),
            embedded_service(
                settings, worker=not no_worker, reconcile=run_reconciler, queues=queues, stop_grace=0
            ) as service,
        ):
            _quiet_logging(settings)  # again: Celery's worker_init signal configured logging anew
            execution = begin(service)
            compiled = service.compiled(execution.tenant, execution.workflow, execution.version)
            outcome = watch(
                service, compiled, execution, timeout=timeout, console=None if quiet else err, answers=answers
            )
    except ConveyorError as exc:  # the store or the broker cannot be used, or `begin` was refused
        err.print(f"[red]✗[/red] {escape(exc.message)}")
        raise typer.Exit(exit_codes.FAILED) from None
    exit_promptly()  # steps still running belong to the ended execution: do not wait for their threads
    raise typer.Exit(_report(outcome, err, Console(highlight=False, soft_wrap=True), quiet=quiet))


def _prepare(file: Path, input: str | None, err: Console) -> tuple[dict[str, Any], CompiledWorkflow, Any]:
    """Read, check and compile the definition and the input; exit 2 listing every problem.

    Nothing is started and nothing is written before both are known to be valid.
    """
    try:
        definition = _load_definition(file)
        compiled = compile_workflow(definition)
    except InvalidRequest as exc:
        _print_problems(err, str(file), exc)
        raise typer.Exit(exit_codes.INVALID) from None
    try:
        payload = parse_input(input)
        compiled.validate_input(payload)
    except InvalidRequest as exc:
        _print_problems(err, _input_source(input), exc)
        raise typer.Exit(exit_codes.INVALID) from None
    return definition, compiled, payload


def _load_definition(file: Path) -> dict[str, Any]:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise InvalidRequest("cannot read the workflow file", [Problem("", reason)]) from None
    return parse_definition_text(text, source=str(file))


def parse_input(value: str | None, option: str = "--input") -> Any:
    """A JSON value given to ``option``: JSON text, ``@file.json``, or ``{}`` when absent.

    Problems name ``option`` (or the file), so ``conveyor events publish --data`` does not
    report a ``--input`` it was never given.
    """
    if value is None:
        return {}
    where = _input_source(value, option)
    if value.startswith("@"):
        try:
            value = Path(where).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise InvalidRequest("cannot read the input file", [Problem(where, reason)]) from None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        problem = Problem(where, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})")
        raise InvalidRequest(f"{option} is not valid JSON", [problem]) from None


def check_approval_answers(compiled: CompiledWorkflow, answers: dict[str, Any]) -> None:
    """An answer for an approval step must be a decision (checked before anything runs)."""
    for key, answer in answers.items():
        step_id = key.split("[", 1)[0]
        if step_id not in compiled.successors or compiled.step(step_id).type != "approval":
            continue
        if not isinstance(answer, dict) or answer.get("decision") not in ("approve", "reject"):
            expected = 'a decision: {"decision": "approve" or "reject", "comment": "..."}'
            raise InvalidRequest("an approval step is answered with a decision", [Problem(key, f"expected {expected}")])


def parse_signals(values: list[str]) -> dict[str, Any]:
    """``--signal STEP=JSON`` options as ``{step key: payload}``."""
    answers: dict[str, Any] = {}
    for value in values:
        key, separator, payload = value.partition("=")
        if not separator or not key:
            raise InvalidRequest("a --signal is STEP=JSON", [Problem(value, "expected STEP=JSON or STEP=@file.json")])
        answers[key] = parse_input(payload, "--signal")
    return answers


def _input_source(value: str | None, option: str = "--input") -> str:
    return value[1:] if value is not None and value.startswith("@") else option


def _quiet_logging(settings: Settings) -> None:
    """Keep logs from drawing over the live table unless a log level was asked for."""
    if "log_level" in settings.model_fields_set:
        return
    configure_logging(settings.model_copy(update={"log_level": "WARNING"}))
    for name in ("celery", "kombu"):
        # kombu warns that memory:// has no host name, which is expected here.
        logging.getLogger(name).setLevel(logging.ERROR)


def _start(service: Service, tenant: str, definition: dict[str, Any], payload: Any) -> ExecutionRecord:
    """Apply the definition (a new version only if it changed) and start an execution of it."""
    version = service.apply_workflow(tenant, definition).version
    return service.start(tenant, version.name, payload, version=version.version).execution


def watch(
    service: Service,
    compiled: CompiledWorkflow,
    execution: ExecutionRecord,
    *,
    timeout: float | None = None,
    console: Console | None = None,
    answers: dict[str, Any] | None = None,
) -> RunOutcome:
    """Follow ``execution`` until it ends, showing the table on ``console`` (none: no table).

    A terminal gets a live table; a pipe or a file only the final one. Ctrl-C, or ``timeout``
    seconds passing, cancels the execution: steps that run in this process could not progress
    once it exits.
    """
    step_ids = list(compiled.order)
    live = Live(console=console, refresh_per_second=10) if console is not None and console.is_terminal else None
    with live or nullcontext():
        outcome = _follow(service, execution, step_ids, timeout, live, console, dict(answers or {}))
    if console is not None and live is None:
        console.print(_table(outcome.execution, service.list_steps(execution.tenant, execution.id), step_ids))
    return outcome


def _follow(
    service: Service,
    execution: ExecutionRecord,
    step_ids: list[str],
    timeout: float | None,
    live: Live | None,
    console: Console | None = None,
    answers: dict[str, Any] | None = None,
) -> RunOutcome:
    deadline = None if timeout is None else time.monotonic() + timeout
    reason: str | None = None
    hinted: set[str] = set()
    while True:
        try:
            execution = service.get_execution(execution.tenant, execution.id)
            records = service.list_steps(execution.tenant, execution.id)
            if answers:
                _answer_waiting(service, execution, records, answers)
            if console is not None:
                for hint in progress.event_hints(execution, records, hinted):
                    console.print(hint)
            if live is not None:
                live.update(_table(execution, records, step_ids), refresh=True)
            if execution.status in EXECUTION_TERMINAL:
                return RunOutcome(execution, reason)
            if reason is None and deadline is not None and time.monotonic() >= deadline:
                reason = f"gave up after --timeout {timeout:g}s"
                execution = _cancel(service, execution)
                continue
            time.sleep(REFRESH_INTERVAL)
        except KeyboardInterrupt:
            reason = "interrupted"
            _exit_on_next_interrupt()
            execution = _cancel(service, execution)


def _answer_waiting(
    service: Service, execution: ExecutionRecord, records: list[StepRecord], answers: dict[str, Any]
) -> None:
    """Signal each step named in ``answers`` once it waits; an answered step is dropped.

    An approval step is decided instead: the person running ``conveyor run`` owns the local
    store, so they decide in the first role the step allows, recorded as ``cli:<user>``.
    """
    for record in records:
        if record.key not in answers or record.status is not StepStatus.WAITING:
            continue
        answer = answers.pop(record.key)
        wait = record.wait or {}
        if wait.get("kind") != "approval":
            service.signal(execution.tenant, execution.id, record.key, answer)
            continue
        comment = answer.get("comment")
        decision = Decision(
            answer["decision"] == "approve",
            f"cli:{os.environ.get('USER') or os.environ.get('USERNAME') or 'local'}",
            str((wait.get("roles") or ["admin"])[0]),
            comment if isinstance(comment, str) else None,
            via="cli",
        )
        service.decide_approval(execution.tenant, execution.id, record.key, decision)


@contextmanager
def _restoring_sigint() -> Iterator[None]:
    """Put back the SIGINT handler :func:`_exit_on_next_interrupt` may replace (the CLI may run in-process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _exit_on_next_interrupt() -> None:
    """After the first Ctrl-C (which cancels, then lets this process stop), a second one exits at once, quietly.

    Nothing is lost by not waiting: every change is a committed store transaction, and the
    cancel is either recorded or not (``conveyor executions cancel`` can do it later).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def exit_now(signum: int, frame: FrameType | None) -> None:
        sys.stdout.flush()
        sys.stderr.write("\ninterrupted again: exiting without waiting\n")
        sys.stderr.flush()
        os._exit(exit_codes.INTERRUPTED)

    signal.signal(signal.SIGINT, exit_now)


def _table(execution: ExecutionRecord, records: list[StepRecord], step_ids: list[str]) -> Table:
    now = time.time()
    rows = progress.step_rows(step_ids, records, now, ended=execution.status in EXECUTION_TERMINAL)
    return progress.render(execution, rows, now)


def _cancel(service: Service, execution: ExecutionRecord) -> ExecutionRecord:
    """Cancel unless it already ended (the race is harmless: the end state wins)."""
    current = service.get_execution(execution.tenant, execution.id)
    if current.status in EXECUTION_TERMINAL:
        return current
    structlog.get_logger("conveyor.run").debug("cancelling execution", execution_id=execution.id)
    return service.cancel(execution.tenant, execution.id)


def _report(outcome: RunOutcome, err: Console, out: Console, *, quiet: bool) -> int:
    """Print the outputs (success) or what went wrong; return the exit code."""
    execution = outcome.execution
    if execution.status is ExecutionStatus.SUCCEEDED:
        out.print_json(data=execution.output, indent=2)
        return 0
    error = execution.error or {}
    headline = f"[bold red]✗[/bold red] execution {execution.id} {execution.status}"
    if error.get("step"):
        headline += f" at step [bold]{escape(error['step'])}[/bold]"
    err.print(headline)
    if error.get("type") or error.get("message"):
        err.print(f"  {escape(str(error.get('type', 'Error')))}: {escape(str(error.get('message', '')))}")
    if outcome.reason:
        err.print(f"  {escape(outcome.reason)}")
    elif execution.status is ExecutionStatus.TIMED_OUT:
        err.print("  the workflow's deadline passed")
    shown = "" if quiet else user_traceback(str(error.get("traceback") or ""))
    if shown:
        err.print(escape(shown), style="dim")
    return exit_codes.FAILED


def user_traceback(text: str) -> str:
    """The stored traceback without the frames of Conveyor's runner and of the standard library.

    What is left points at the user's step function. If nothing is left (a ``type: fail`` step,
    a configuration error: Conveyor failed the step on purpose), the result is empty: the
    error's type and message say everything, and an engine traceback would only bury them.
    """
    blocks = re.split(r"(?m)^(?=  File \")", text.rstrip())
    header, frames = blocks[0], blocks[1:]
    if not frames:
        return text.rstrip()
    # The last frame block also carries the exception line(s) after the frame.
    last_lines = frames[-1].splitlines()
    exception = [line for line in last_lines[1:] if not line.startswith(" ")]
    frames[-1] = "\n".join(line for line in last_lines if line not in exception) + "\n"
    mine = [frame for frame in frames if not _internal(frame)]
    if not mine:
        return ""
    return (header + "".join(mine) + "\n".join(exception)).rstrip()


def _internal(frame: str) -> bool:
    match = re.match(r'  File "([^"]+)"', frame)
    path = match.group(1) if match else ""
    return path.startswith(INTERNAL_PATHS)


def _print_problems(console: Console, where: str, exc: InvalidRequest | PayloadTooLarge) -> None:
    problems = getattr(exc, "problems", ())
    headline = exc.message.splitlines()[0]
    count = f" ({len(problems)} problem{'s' if len(problems) != 1 else ''})" if problems else ""
    console.print(f"[red]✗[/red] {escape(where)}: {escape(headline)}{count}")
    for problem in problems:
        lines = str(problem).splitlines() or [""]
        console.print("  " + escape(lines[0]))
        for line in lines[1:]:
            console.print("      " + escape(line))
