"""Steps run inline are findable in Flower: each gets task events of its own.

A chain of steps on one queue runs from one step message (the completion of each claims the
next; see :mod:`engine.runner`), so Celery's own events show one long task named after the
first step. With ``CONVEYOR_FLOWER_INLINE_EVENTS`` the worker sends, for every step it ran
inline, what the task events of a message of its own would have told (received, started, then
succeeded or failed, with their real times): Flower lists it as a ``conveyor.run_step`` task
whose args are ``[tenant, execution id, step key]`` and whose parent is the message that ran
it.

The events of a message's inline steps are published together, as one message of Celery's
``task.multi`` kind (a list of events, which every event receiver, Flower's included, takes
apart): when the message ends (:meth:`InlineStepEvents.flush`, on ``task_postrun``), or
earlier once the oldest has waited ``FLUSH_AFTER`` seconds or ``MAX_BUFFERED`` are waiting. A
chain of short steps thus costs one publish per message instead of one per step
(``bench/step_overhead.py`` prints the cost per inline step).
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import structlog
from celery import Celery, current_task

from engine.adapters.dispatcher_celery import RUN_STEP_TASK
from engine.ports import StepAttempt, Telemetry

log = structlog.get_logger("conveyor.flower")

#: How an inline attempt's outcome shows in Flower.
FINAL_EVENT = {"succeeded": "task-succeeded", "waiting": "task-succeeded"}
#: Seconds the oldest buffered event may wait for the next inline step's before all are published.
FLUSH_AFTER = 0.5
#: Events buffered at most: the one that fills the buffer publishes them all.
MAX_BUFFERED = 100


class InlineStepEvents:
    """A :class:`~engine.ports.Telemetry` that also sends Flower task events for inline steps."""

    def __init__(self, inner: Telemetry, app: Celery) -> None:
        self.inner = inner
        self.app = app
        self._local = threading.local()

    def _dispatcher(self, hostname: str | None) -> Any:
        """One event dispatcher per thread, on a connection of its own kept open (publishing
        through a fresh one per step would cost more than the step), buffering task events."""
        dispatcher = getattr(self._local, "dispatcher", None)
        if dispatcher is None or dispatcher.hostname != hostname:
            if dispatcher is not None:
                self.flush()
            connection = self.app.connection_for_write()
            dispatcher = self._local.dispatcher = self.app.events.Dispatcher(
                connection, hostname=hostname, enabled=True, buffer_group={"task"}, buffer_limit=MAX_BUFFERED
            )
        return dispatcher

    def step_attempt(self, attempt: StepAttempt) -> None:
        self.inner.step_attempt(attempt)
        request = getattr(current_task, "request", None)
        if attempt.followed and request is not None and request.id:
            self._send(attempt, request.id, request.hostname)
            oldest = getattr(self._local, "oldest", None)
            now = time.monotonic()
            if oldest is None:
                self._local.oldest = now
            elif now - oldest >= FLUSH_AFTER:
                self.flush()

    def flush(self) -> None:
        """Publish the events this thread buffered (best effort: Flower is a monitor)."""
        dispatcher = getattr(self._local, "dispatcher", None)
        self._local.oldest = None
        if dispatcher is None:
            return
        try:
            dispatcher.flush(errors=True, groups=True)
        except Exception as exc:  # a broker hiccup must not fail the message that ran the steps
            log.warning("could not publish Flower events of inline steps", error=str(exc))

    def execution_started(self, workflow: str) -> None:
        self.inner.execution_started(workflow)

    def execution_settled(self, workflow: str, status: str, seconds: float) -> None:
        self.inner.execution_settled(workflow, status, seconds)

    def reconciled(self, repairs: dict[str, int]) -> None:
        self.inner.reconciled(repairs)

    def executions_purged(self, count: int, reason: str) -> None:
        self.inner.executions_purged(count, reason)

    def _send(self, attempt: StepAttempt, parent_id: str, hostname: str | None) -> None:
        # One event carries the whole task (monitors merge every event's fields into the task's
        # record): name, args and parent as task-received would, the start time as task-started
        # would, and the end. One publish per inline step instead of three.
        fields: dict[str, Any] = {
            "uuid": str(uuid.uuid4()),
            "name": RUN_STEP_TASK,
            "args": repr([attempt.tenant, attempt.execution_id, attempt.step_key]),
            "kwargs": "{}",
            "root_id": parent_id,
            "parent_id": parent_id,
            "retries": max(attempt.attempt - 1, 0),
            "received": attempt.started_at,
            "started": attempt.started_at,
            "runtime": attempt.seconds,
            "timestamp": attempt.started_at + attempt.seconds,
        }
        final = FINAL_EVENT.get(attempt.outcome, "task-failed")
        if final == "task-failed":
            fields.update(exception=f"step attempt {attempt.outcome}", traceback="")
        else:
            fields.update(result=repr(attempt.outcome))
        self._dispatcher(hostname).send(final, **fields)  # buffered (see the module docstring)
