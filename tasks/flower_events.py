"""Steps run inline are findable in Flower: each gets task events of its own.

A chain of steps on one queue runs from one step message (the completion of each claims the
next; see :mod:`engine.runner`), so Celery's own events show one long task named after the
first step. With ``CONVEYOR_FLOWER_INLINE_EVENTS`` the worker sends, for every step it ran
inline, what the task events of a message of its own would have told (received, started, then
succeeded or failed, with their real times): Flower lists it as a ``conveyor.run_step`` task
whose args are ``[tenant, execution id, step key]`` and whose parent is the message that ran
it. The price is one event publish per inline step (``bench/step_overhead.py`` measures it).
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from celery import Celery, current_task

from engine.adapters.dispatcher_celery import RUN_STEP_TASK
from engine.ports import StepAttempt, Telemetry

#: How an inline attempt's outcome shows in Flower.
FINAL_EVENT = {"succeeded": "task-succeeded", "waiting": "task-succeeded"}


class InlineStepEvents:
    """A :class:`~engine.ports.Telemetry` that also sends Flower task events for inline steps."""

    def __init__(self, inner: Telemetry, app: Celery) -> None:
        self.inner = inner
        self.app = app
        self._local = threading.local()

    def _dispatcher(self, hostname: str | None) -> Any:
        """One event dispatcher per thread, on a connection of its own kept open (publishing
        through a fresh one per step would cost more than the step)."""
        dispatcher = getattr(self._local, "dispatcher", None)
        if dispatcher is None or dispatcher.hostname != hostname:
            connection = self.app.connection_for_write()
            dispatcher = self._local.dispatcher = self.app.events.Dispatcher(
                connection, hostname=hostname, enabled=True
            )
        return dispatcher

    def step_attempt(self, attempt: StepAttempt) -> None:
        self.inner.step_attempt(attempt)
        request = getattr(current_task, "request", None)
        if attempt.followed and request is not None and request.id:
            self._send(attempt, request.id, request.hostname)

    def execution_started(self, workflow: str) -> None:
        self.inner.execution_started(workflow)

    def execution_settled(self, workflow: str, status: str, seconds: float) -> None:
        self.inner.execution_settled(workflow, status, seconds)

    def reconciled(self, repairs: dict[str, int]) -> None:
        self.inner.reconciled(repairs)

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
        self._dispatcher(hostname).send(final, **fields)
