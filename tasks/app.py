"""The Celery app workers run: ``conveyor worker``, or ``celery -A tasks.app worker``.

Settings come from the environment (``CONVEYOR_*``). Each worker process builds one
:class:`~engine.service.Service` and one :class:`~engine.runner.StepRunner`, after the
prefork pool forked it: store clients (SQLite connections, gRPC channels) must not cross a
fork. Embedded mode and tests may install a runner of their own with :func:`use_runner`.

The tasks live in :mod:`tasks.steps` as shared tasks, so any Celery app configured with
:func:`~engine.adapters.celery_config.make_celery` runs them (tests build one per test with
a queue of its own).
"""

from __future__ import annotations

import gc
import threading
from typing import Any

from celery import signals

from engine.adapters.celery_config import make_celery
from engine.adapters.dispatcher_celery import RUN_STEP_TASK
from engine.adapters.ledger_redis import RedisMessageLedger
from engine.bootstrap import (
    build_ledger,
    build_service,
    build_step_ports,
    build_telemetry,
    configure_error_reporting,
    configure_tracing,
    forget_worker_process,
    serve_worker_metrics,
)
from engine.logging import configure_logging
from engine.runner import StepRunner
from engine.settings import Settings
from tasks import liveness
from tasks.flower_events import InlineStepEvents

settings = Settings()
app = make_celery(settings, "conveyor", include=["tasks.steps"])
liveness.install(app)

_runner: StepRunner | None = None
_runner_lock = threading.Lock()
#: The Flower events of inline steps this process sends (``CONVEYOR_FLOWER_INLINE_EVENTS``).
_inline_events: InlineStepEvents | None = None


def runner() -> StepRunner:
    """This process's step runner, built from ``settings`` on first use."""
    global _runner, _inline_events
    with _runner_lock:
        if _runner is None:
            telemetry = build_telemetry(settings)
            if settings.flower_inline_events:
                telemetry = _inline_events = InlineStepEvents(telemetry, app)
            service = build_service(settings, telemetry=telemetry)
            _runner = StepRunner(service, ports=build_step_ports(settings, service.store))
        return _runner


def use_runner(step_runner: StepRunner | None) -> None:
    """Run tasks in this process with ``step_runner`` (``None``: build from settings again)."""
    global _runner
    with _runner_lock:
        _runner = step_runner


def _configure_logging(**_: Any) -> None:
    configure_logging(settings)


def _configure_observability(**_: Any) -> None:
    # In the main process, before the pool forks (the children inherit both).
    configure_tracing(settings, "worker")
    configure_error_reporting(settings, "conveyor-worker")


def _build_runner_in_child(**_: Any) -> None:
    # Build eagerly in each pool process: user modules (CONVEYOR_IMPORTS) load and a broken
    # configuration shows up at start, not on the first message.
    runner()
    _freeze_startup_objects()


def _freeze_startup_objects(**_: Any) -> None:
    """Leave the objects made at start (modules, app, runner, clients) out of garbage collection.

    They live as long as the process, yet each full collection walked all of them again: a few
    percent of a short step's CPU in a pool process. Frozen before the pool forks, the parent's
    objects are not written to by the children's collections either, so their memory pages stay
    shared (the use ``gc.freeze`` is documented for).
    """
    gc.freeze()


#: The message ledger of each broker this process's consumer took messages from.
_ledgers: dict[str, RedisMessageLedger | None] = {}


def _ledger(broker_url: str) -> RedisMessageLedger | None:
    if broker_url not in _ledgers:
        _ledgers[broker_url] = build_ledger(Settings(broker_url=broker_url))
    return _ledgers[broker_url]


def _message_taken(sender: Any = None, request: Any = None, **_: Any) -> None:
    """A step message left the broker for this worker: drop its record from the ledger.

    Runs in the consumer, when the message arrives, before a pool process runs it. Only
    housekeeping: the ledger already stops trusting a record once its message left the
    queue's list (see ``engine/adapters/ledger_redis.py``), so a worker that dies before this
    runs costs nothing. The removal itself is left to the ledger's thread
    (``RedisMessageLedger.taken_soon``), so the consumer hands the message on without waiting
    for Redis.
    """
    if request is None or request.name != RUN_STEP_TASK:
        return
    ledger = _ledger(str(sender.app.conf.broker_url))
    if ledger is not None:
        tenant, execution_id, step_key = request.args[:3]
        ledger.taken_soon(tenant, execution_id, step_key, str(request.id))


def _flush_ledgers(**_: Any) -> None:
    # A warm shutdown removes what was taken before it (a crash leaves it: see the ledger).
    for ledger in _ledgers.values():
        if ledger is not None:
            ledger.flush(timeout=2.0)


def _publish_inline_events(**_: Any) -> None:
    # After each message, on the thread that ran it: the events of the steps it ran inline.
    if _inline_events is not None:
        _inline_events.flush()


def _serve_metrics(**_: Any) -> None:
    # In the main process, before the pool forks: it serves the sum of every pool process's metrics.
    if settings.worker_metrics_port is not None:
        serve_worker_metrics(settings.worker_metrics_port, settings.worker_metrics_address)


def _ship_step_logs(**_: Any) -> None:
    """A worker process stops: store the logs of the attempts it finished (they ship in the background)."""
    if _runner is not None and _runner.step_logs is not None:
        _runner.step_logs.flush()


def _forget_pool_process(pid: int | None = None, **_: Any) -> None:
    if pid is not None:
        forget_worker_process(pid)


signals.worker_init.connect(_configure_logging, weak=False)
signals.worker_init.connect(_serve_metrics, weak=False)
signals.worker_init.connect(_configure_observability, weak=False)
signals.worker_init.connect(_freeze_startup_objects, weak=False)  # last: after what they build
signals.task_received.connect(_message_taken, weak=False)
signals.worker_shutdown.connect(_flush_ledgers, weak=False)
signals.worker_process_init.connect(_build_runner_in_child, weak=False)
signals.task_postrun.connect(_publish_inline_events, weak=False)
signals.worker_process_shutdown.connect(_forget_pool_process, weak=False)
signals.worker_process_shutdown.connect(_ship_step_logs, weak=False)
signals.worker_shutdown.connect(_ship_step_logs, weak=False)
