"""Integration fixtures: real Redis (db 15), real Celery workers, real stores.

Each test gets queues and keys of its own (a random run id in every name), so tests never
consume each other's messages, even when several test sessions share the Redis database.
The worker runs in this process (``celery.contrib.testing.worker.start_worker``) with a
:class:`~engine.runner.StepRunner` over the same :class:`~engine.service.Service` the test
uses, so a test can wrap the dispatcher or count what the worker did.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker

import tasks.steps  # noqa: F401  (registers the shared tasks on every app)
from engine.adapters.celery_config import make_celery
from engine.adapters.dispatcher_celery import CeleryDispatcher
from engine.adapters.events_memory import MemoryEventLog
from engine.bootstrap import build_decision_stats, build_step_ports, build_store
from engine.ports import Dispatch, Dispatcher, EventSink
from engine.records import ExecutionRecord
from engine.runner import RunReport, StepRunner
from engine.service import Service
from engine.settings import Settings
from engine.states import EXECUTION_TERMINAL
from tasks.app import use_runner
from tests.integration import flows

TENANT = "it"


class CountingRunner(StepRunner):
    """A StepRunner that counts the outcome of every message it handled, and what it raised."""

    def __init__(self, service: Service) -> None:
        super().__init__(service, ports=build_step_ports(service.settings, service.store))
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()

    def run(
        self, tenant: str, execution_id: str, step_key: str, *, first_delivery: bool = False, epoch: int | None = None
    ) -> RunReport:
        try:
            report = super().run(tenant, execution_id, step_key, first_delivery=first_delivery, epoch=epoch)
        except Exception as exc:
            with self._lock:
                self.errors.append(f"{step_key}: {type(exc).__name__}: {exc}")
            raise
        with self._lock:
            self.outcomes[report.outcome] += 1
        return report


class RepeatingDispatcher:
    """Sends every step message ``times`` times: the broker delivering duplicates."""

    def __init__(self, inner: Dispatcher, times: int) -> None:
        self.inner = inner
        self.times = times
        self.sent = 0

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        repeated = [d for d in dispatches for _ in range(self.times)]
        self.sent += len(repeated)
        self.inner.dispatch(repeated)


class DroppingDispatcher:
    """Loses the first ``drop`` step messages: the broker losing them after commit."""

    def __init__(self, inner: Dispatcher, drop: int) -> None:
        self.inner = inner
        self.drop = drop
        self.dropped: list[Dispatch] = []

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        keep = []
        for item in dispatches:
            if len(self.dropped) < self.drop:
                self.dropped.append(item)
            else:
                keep.append(item)
        self.inner.dispatch(keep)


def celery_app_for(settings: Settings) -> Celery:
    """A Celery app of its own for one test; remote control off keeps broadcasts out of db 15."""
    app = make_celery(settings, "conveyor-it", include=["tasks.steps"])
    app.conf.update(worker_enable_remote_control=False, worker_hijack_root_logger=False)
    return app


class World:
    """One test's Conveyor: settings, a Celery app, a store, a service and its runner."""

    def __init__(
        self,
        settings: Settings,
        *,
        wrap: Callable[[Dispatcher], Dispatcher] | None = None,
        events: EventSink | None = None,
    ) -> None:
        self.settings = settings
        self.queue = settings.default_queue
        self.app = celery_app_for(settings)
        self.celery_dispatcher = CeleryDispatcher(self.app, settings.default_queue)
        # Any: tests read what their wrapper recorded (sent, dropped).
        self.dispatcher: Any = wrap(self.celery_dispatcher) if wrap else self.celery_dispatcher
        self.store = build_store(settings)
        self.events = events or MemoryEventLog()
        self.decisions = build_decision_stats(self.store)
        self.service = Service(self.store, self.dispatcher, self.events, settings, decisions=self.decisions)
        self.runner = CountingRunner(self.service)

    @contextlib.contextmanager
    def worker(self, pool: str = "threads", concurrency: int = 4) -> Iterator[Any]:
        """A real Celery worker consuming this world's queue, running steps with its runner."""
        use_runner(self.runner)
        try:
            with start_worker(
                self.app,
                pool=pool,
                concurrency=concurrency,
                perform_ping_check=False,
                loglevel="WARNING",
                shutdown_timeout=30,
            ) as worker:
                yield worker
        finally:
            use_runner(None)

    def apply(self, definition: dict[str, Any]) -> None:
        self.service.apply_workflow(TENANT, definition)

    def start(self, workflow: str, input: Any = None) -> str:
        return self.service.start(TENANT, workflow, input).execution.id

    def wait_handled(self, messages: int, timeout: float = 30) -> None:
        """Wait until the worker handled ``messages`` step messages (duplicates included)."""
        deadline = time.monotonic() + timeout
        while sum(self.runner.outcomes.values()) < messages:
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker handled {self.runner.outcomes} of {messages} messages")
            time.sleep(0.05)

    def wait(self, execution_id: str, timeout: float = 60) -> ExecutionRecord:
        """Poll the store until the execution is terminal."""
        deadline = time.monotonic() + timeout
        while True:
            execution = self.service.get_execution(TENANT, execution_id)
            if execution.status in EXECUTION_TERMINAL:
                return execution
            if time.monotonic() > deadline:
                steps = {s.key: str(s.status) for s in self.service.list_steps(TENANT, execution_id)}
                raise AssertionError(
                    f"execution {execution_id} still {execution.status} after {timeout}s: {steps}; "
                    f"messages handled: {dict(self.runner.outcomes)}; raised: {self.runner.errors}"
                )
            time.sleep(0.05)


def delete_queue_keys(client: redis.Redis, queue: str) -> None:
    """Remove a test queue's list (and priority lists) and its kombu binding."""
    for pattern in (f"{queue}*", f"_kombu.binding*.{queue}*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_client(redis_server_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server_url)
    yield client
    client.close()


@pytest.fixture
def make_settings(
    tmp_path: Path, redis_server_url: str, run_id: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings for one test: its own queue, a real Redis broker and the chosen store."""

    def make(store: str = "sqlite", **overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "store": store,
            "broker_url": redis_server_url,
            "redis_url": redis_server_url,
            "default_queue": f"conveyor-it-{run_id}",
            "imports": [flows.__name__],
        }
        if store == "sqlite":
            options["sqlite_path"] = tmp_path / f"it-{uuid.uuid4().hex[:8]}.db"
        else:
            request.getfixturevalue("firestore_emulator")
            options["firestore_project"] = request.getfixturevalue("unique_project")
        options.update(overrides)
        return Settings(**options)

    return make


@pytest.fixture
def make_world(make_settings: Callable[..., Settings], redis_client: redis.Redis) -> Iterator[Callable[..., World]]:
    """Builds Worlds; afterwards closes their stores and deletes their queues."""
    worlds: list[World] = []

    def make(store: str = "sqlite", *, wrap: Any = None, events: Any = None, **overrides: Any) -> World:
        world = World(make_settings(store, **overrides), wrap=wrap, events=events)
        worlds.append(world)
        return world

    yield make
    for world in worlds:
        world.store.close()
        delete_queue_keys(redis_client, world.queue)
