"""Thin Celery tasks: translate a message into one call on the runner or the service.

``conveyor.run_step`` is acknowledged after it returned (``task_acks_late``) whatever the
step's fate: failures are recorded in the store by the runner, and a message for a step
that is not QUEUED (a duplicate, or one the reconciler already re-sent) returns
``"ignored"`` and is acknowledged. Only an unreachable store makes it retry, shortly, so a
brief outage does not wait for the reconciler.
"""

from __future__ import annotations

import structlog
from celery import Task, shared_task
from structlog.contextvars import bound_contextvars

from engine.adapters.dispatcher_celery import EPOCH_HEADER
from engine.errors import StoreUnavailable
from tasks.app import runner

log = structlog.get_logger("conveyor.tasks")


@shared_task(  # type: ignore[untyped-decorator]  # celery is untyped
    name="conveyor.run_step",
    bind=True,
    autoretry_for=(StoreUnavailable,),
    max_retries=3,
    retry_backoff=1,
    retry_backoff_max=4,
)
def run_step(self: Task, tenant: str, execution_id: str, step_key: str) -> str:
    """Claim and run one step; returns the runner's outcome (``succeeded``, ``ignored``, ...).

    The broker marks a message it delivers again (its worker died holding it) as
    redelivered; only a first delivery, not a retry of this task, may run before its claim.
    The step's epoch when the message was sent comes in a header (absent from an older
    publisher's messages); it tells a stale copy from an early timer message.
    """
    delivery = self.request.delivery_info or {}
    first_delivery = not delivery.get("redelivered") and not self.request.retries
    epoch = self.request.get(EPOCH_HEADER)
    with bound_contextvars(tenant=tenant, execution_id=execution_id, step_key=step_key):
        report = runner().run(
            tenant,
            execution_id,
            step_key,
            first_delivery=first_delivery,
            epoch=epoch if isinstance(epoch, int) else None,
        )
        log.debug("step message handled", outcome=report.outcome)
        return report.outcome
