"""The Dispatcher port on Celery: one ``conveyor.run_step`` message per step to run.

Dispatch happens after the transaction that queued the steps committed (ARCHITECTURE §2,
transactional outbox): every QUEUED step carries ``dispatched_at``, and the reconciler
sends again any step still QUEUED ``settings.redispatch_after`` seconds later. A message
that cannot be published is therefore late, never lost. That is why :meth:`dispatch` logs a
failed publish and returns instead of raising: raising would turn a committed, durable
success (an execution was started, a step completed) into an error for the caller, who
would then retry and do the work twice. :meth:`ping` is there for health checks that do
want to know whether the broker is reachable.

Urgent dispatches (steps the reconciler recovers) are published with a higher priority:
kombu's Redis transport keeps one list per priority step and workers drain the urgent one
first (see :func:`~engine.adapters.celery_config.celery_config`). On Redis every message names
its step in a header, and the broker transport records it in the message ledger in the same
script that queues it (:mod:`engine.adapters.broker_redis`), so the reconciler can tell a lost
message from a queued one.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import kombu.exceptions
import redis.exceptions
import structlog
from celery import Celery

from engine.adapters.broker_redis import STEP_HEADER
from engine.adapters.celery_config import NORMAL_PRIORITY, URGENT_PRIORITY, make_celery
from engine.adapters.ledger_redis import member
from engine.errors import StoreUnavailable
from engine.ports import Dispatch
from engine.settings import Settings

log = structlog.get_logger("conveyor.dispatcher")

#: The task a worker registers for running one step (see ``tasks/steps.py``).
RUN_STEP_TASK = "conveyor.run_step"
#: The message header carrying :attr:`~engine.ports.Dispatch.epoch`. A header, not an argument:
#: a worker of an older version ignores it instead of refusing the message.
EPOCH_HEADER = "conveyor_epoch"

#: Redis commands one pipeline of a dispatch batch holds at most (a message is one or two).
PUBLISH_BATCH_COMMANDS = 1000
#: What a broker outage looks like from kombu and redis-py.
BROKER_ERRORS: tuple[type[BaseException], ...] = (
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    ConnectionError,
    TimeoutError,
)


class CeleryDispatcher:
    """Publishes step messages by task name; the publisher never imports the task code."""

    def __init__(self, app: Celery, default_queue: str | None = None) -> None:
        self.app = app
        self.default_queue: str = default_queue or app.conf.task_default_queue

    @classmethod
    def from_settings(cls, settings: Settings) -> CeleryDispatcher:
        return cls(make_celery(settings, "conveyor-dispatcher"), settings.default_queue)

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        """Publish one message per dispatch through one pooled producer.

        On a broker error the remaining messages are not attempted (each would wait out the
        same publish retries) and the reconciler re-sends them all; see the module docstring.
        """
        if not dispatches:
            return
        sent = 0
        batched = False
        try:
            with self.app.producer_pool.acquire(block=True) as producer:
                # On Redis the messages go out in one pipeline when the batch closes (a round
                # trip for all of them); other transports publish each at once. A lone message
                # skips the batch: sent at once, its ledger push is an EVALSHA, not a pipeline's
                # EVAL of the whole script.
                batched = len(dispatches) > 1 and producer.supports_batch_publish
                with producer.batch(max_size=PUBLISH_BATCH_COMMANDS) if batched else nullcontext():
                    for item in dispatches:
                        self._send(item, producer)
                        sent += 1
        except BROKER_ERRORS as exc:
            # A failed batch may have sent none of its messages (or only its first pipelines).
            unsent = dispatches if batched else dispatches[sent:]
            log.warning(
                "could not publish step messages; the reconciler will send them again",
                unsent=len(unsent),
                first_execution_id=unsent[0].execution_id,
                error=str(exc),
            )

    def _send(self, item: Dispatch, producer: object) -> None:
        args = [item.tenant, item.execution_id, item.step_key]
        self.app.send_task(
            RUN_STEP_TASK,
            args=args,
            # Plain strings: repr is what Celery's saferepr would make of them, at a fraction of its cost.
            argsrepr=repr(args),
            kwargsrepr="{}",
            queue=item.queue or self.default_queue,
            countdown=item.countdown if item.countdown > 0 else None,
            priority=URGENT_PRIORITY if item.urgent else NORMAL_PRIORITY,
            headers=self._headers(item),
            producer=producer,
        )

    @staticmethod
    def _headers(item: Dispatch) -> dict[str, object]:
        headers: dict[str, object] = {STEP_HEADER: member(item.tenant, item.execution_id, item.step_key)}
        if item.epoch is not None:
            headers[EPOCH_HEADER] = item.epoch
        return headers

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the broker accepts a connection."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0)
        except BROKER_ERRORS as exc:
            raise StoreUnavailable(f"the message broker is unreachable: {exc}") from exc
