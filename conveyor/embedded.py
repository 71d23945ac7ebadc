"""Embedded mode: a Celery worker and the reconciler running inside this process.

``conveyor run`` (and ``conveyor dev``) use it so one command runs workflows with no
services: steps are still Celery task messages, published by the real
:class:`~engine.adapters.dispatcher_celery.CeleryDispatcher` and executed by the real
``conveyor.run_step`` task, but the broker is kombu's in-memory transport (whose queues are
shared by every connection in the process) and the worker consumes in a background thread.
With ``CONVEYOR_BROKER_URL`` set, the same worker consumes from that broker instead.

The reconciler pass that Beat runs in production runs here every
:data:`RECONCILE_INTERVAL` seconds, so long retry delays, ``wait`` timers, expired leases
and deadlines progress; for ``conveyor dev`` a second thread runs Beat's schedule job (the
:class:`~beat.schedules.SchedulePoller`), so a reconciler pass never delays a fire. With
Redis configured both run only while holding the reconciler lease beat uses, so they never
overlap a beat's (or another process's) passes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from celery import Celery
from celery.utils.nodenames import anon_nodename
from celery.worker import WorkController, loops
from celery.worker import state as worker_state
from celery.worker.consumer import Consumer

from beat.schedules import SchedulePoller
from engine.adapters.celery_config import make_celery
from engine.adapters.dispatcher_celery import BROKER_ERRORS
from engine.adapters.lease_redis import RedisLease
from engine.bootstrap import build_service, build_step_ports, reconciler_lease
from engine.errors import ConveyorError, StoreUnavailable
from engine.runner import StepRunner
from engine.service import Service
from engine.settings import Settings

log = structlog.get_logger("conveyor.embedded")

#: Threads running steps at once: enough for a foreach to visibly run in parallel.
WORKER_CONCURRENCY = 8
#: Seconds between reconciler passes; Beat's production interval is far too slow for a CLI run.
RECONCILE_INTERVAL = 0.5
#: How long to wait for the worker to connect, and for it to stop once no step runs.
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
#: How long a stopping worker lets running steps end (a cancelled one notices within
#: ``cancel_check_seconds``) before it stops waiting for them.
STOP_GRACE = 1.0
#: Longest wait for a message in one cycle of the consumer loop (Celery's own is 2s).
DRAIN_TIMEOUT = 0.1


def _responsive_synloop(obj: Any, connection: Any, *args: Any, **kwargs: Any) -> Any:
    """Celery's blocking consumer loop, but seeing a stop request within :data:`DRAIN_TIMEOUT`.

    The loop checks for shutdown between drains and drains once more after the check, each
    drain waiting up to 2s for the in-memory transport: stopping would take up to 4s at the
    end of every ``conveyor run``.
    """
    drain = connection.drain_events
    connection.drain_events = lambda timeout=None, **kw: drain(
        timeout=DRAIN_TIMEOUT if timeout is None else min(timeout, DRAIN_TIMEOUT), **kw
    )
    return loops.synloop(obj, connection, *args, **kwargs)


class _Consumer(Consumer):  # type: ignore[misc]  # Celery ships no type hints
    """The worker's consumer with a responsive blocking loop (the in-memory transport uses it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if getattr(self, "loop", None) is loops.synloop:
            self.loop = _responsive_synloop


class _WorkController(WorkController):  # type: ignore[misc]  # Celery ships no type hints
    """A Celery worker that reports when its consumer is ready to receive messages."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.consuming = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.consuming.set()


class EmbeddedWorker:
    """A thread-pool Celery worker in a background thread, running steps with ``service``."""

    def __init__(self, service: Service, queues: Iterable[str], concurrency: int = WORKER_CONCURRENCY) -> None:
        self.service = service
        self.queues = sorted(set(queues))
        self.concurrency = concurrency
        self._controller: _WorkController | None = None
        self._thread: threading.Thread | None = None
        self._runner: StepRunner | None = None

    def start(self) -> None:
        """Start consuming; returns once the worker is connected (raises if it cannot connect)."""
        # Imported here: tasks.steps registers the conveyor.* shared tasks; the CLI's other
        # commands should not pay for importing the worker side.
        import tasks.steps  # noqa: F401
        from tasks.app import use_runner

        ports = build_step_ports(self.service.settings, self.service.store)
        self._runner = StepRunner(self.service, ports=ports)
        use_runner(self._runner)
        app = make_celery(self.service.settings, "conveyor-embedded", include=["tasks.steps"])
        _check_broker(app)
        self._controller = _WorkController(
            app=app,
            hostname=anon_nodename(hostname="conveyor-embedded"),
            pool="threads",
            concurrency=self.concurrency,
            queues=self.queues,
            loglevel="WARNING",
            consumer_cls=_Consumer,
            # Nothing else listens to this worker: no heartbeats, no broadcast handshakes.
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._thread = threading.Thread(target=self._controller.start, name="conveyor-worker", daemon=True)
        self._thread.start()
        if not self._controller.consuming.wait(START_TIMEOUT) or not self._thread.is_alive():
            self.stop()
            raise ConveyorError(f"the embedded worker did not start consuming within {START_TIMEOUT:g}s")

    def stop(self, grace: float = STOP_GRACE) -> bool:
        """Stop consuming; running steps get ``grace`` seconds to end, then are abandoned.

        An abandoned step is left as a crash would leave it (the reconciler re-queues it when its
        lease expires) and its sync function to its daemon thread: the process exits at once,
        whatever the step does. False if one had to be abandoned.
        """
        if self._thread is None:
            return True
        from tasks.app import use_runner

        abandoned = 0
        if self._runner is not None and not self._runner.leases.wait_idle(grace):
            abandoned = self._runner.leases.abandon()
        if self._runner is not None and self._runner.step_logs is not None:
            self._runner.step_logs.flush()  # the finished attempts' logs are stored before the run ends

        # The consumer loop checks this process-wide flag between polls. It is reset once the
        # worker stopped, so a later worker in the same process (tests) can start; a worker
        # still busy keeps seeing it and stops after its step.
        worker_state.should_terminate = 0
        self._thread.join(STOP_TIMEOUT)
        stopped = not self._thread.is_alive()
        if stopped:
            worker_state.should_terminate = None
            use_runner(None)
        self._thread = None
        return stopped and not abandoned


def _check_broker(app: Celery) -> None:
    """Fail at once on an unreachable broker: the worker itself would keep retrying for minutes."""
    try:
        with app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
    except BROKER_ERRORS as exc:
        raise StoreUnavailable(f"cannot reach the message broker: {exc}") from exc


class Reconciler:
    """Runs ``service.reconcile()`` every ``interval`` seconds in a background thread.

    With ``schedules``, a second thread fires the schedule triggers that are due (polling as
    beat does: every second, sooner when a fire is closer), so a pass never delays a fire.
    With a ``lease`` (Redis), both run only while this process holds it. Stopping waits for
    the current pass, which checks the stop request between items: the thread is never left
    inside a store transaction (an abandoned Firestore transaction keeps its locks for a
    minute).
    """

    def __init__(
        self,
        service: Service,
        interval: float = RECONCILE_INTERVAL,
        *,
        schedules: bool = False,
        lease: RedisLease | None = None,
    ) -> None:
        self.service = service
        self.interval = interval
        self.schedules = schedules
        self.lease = lease
        self._stop = threading.Event()
        self._lease_lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, name="conveyor-reconciler", daemon=True)]
        if schedules:
            poller = SchedulePoller(lambda: service, interval=service.settings.schedule_poll_interval)
            self._threads.append(
                threading.Thread(target=self._fire_loop, args=(poller,), name="conveyor-schedules", daemon=True)
            )

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(STOP_TIMEOUT + self.service.settings.reconcile_pass_seconds)
        if self.lease is not None:
            self.lease.release()

    def _holds_lease(self) -> bool:
        if self.lease is None:
            return True
        with self._lease_lock:  # one RedisLease, two threads
            return self.lease.hold()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if not self._holds_lease():
                continue
            try:
                self.service.reconcile(should_stop=self._stop.is_set)
            except Exception:  # the thread must outlive one bad pass: without it timers never fire
                log.exception("reconcile pass failed; retrying on the next one")

    def _fire_loop(self, poller: SchedulePoller) -> None:
        """Beat's schedule job: fire due triggers, then sleep until the next poll (at most 1 s)."""
        delay = 0.0
        while not self._stop.wait(delay):
            delay = poller.tick() if self._holds_lease() else self.interval


@contextmanager
def embedded_service(
    settings: Settings,
    *,
    worker: bool = True,
    reconcile: bool = True,
    queues: Iterable[str] = (),
    schedules: bool = False,
    stop_grace: float = STOP_GRACE,
) -> Iterator[Service]:
    """A service built from ``settings`` with (unless turned off) a worker and the reconciler.

    With ``schedules`` (``conveyor dev``), due schedule triggers fire too.

    The worker consumes the default queue plus ``queues`` (those named by ``queue:`` in a
    definition). On exit both stop; a step still running after ``stop_grace`` seconds is
    abandoned (see :meth:`EmbeddedWorker.stop`) and logged.
    """
    service = build_service(settings)
    embedded = EmbeddedWorker(service, [settings.default_queue, *queues]) if worker else None
    reconciler = (
        Reconciler(service, schedules=schedules, lease=reconciler_lease(settings)) if reconcile else None
    )
    try:
        if embedded is not None:
            embedded.start()
        if reconciler is not None:
            reconciler.start()
        yield service
    finally:
        if reconciler is not None:
            reconciler.stop()
        if embedded is not None and not embedded.stop(stop_grace):
            # Expected without a grace (the caller knows the steps' outcomes are not wanted).
            (log.warning if stop_grace else log.info)("running steps were abandoned when the embedded worker stopped")
        service.store.close()
