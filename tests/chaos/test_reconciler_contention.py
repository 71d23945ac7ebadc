"""Recovery work that must not stall progress (issue 9, items 2 and 3).

* Two reconcilers, ``conveyor beat`` and what ``conveyor run --no-worker --reconcile`` runs
  (:class:`conveyor.embedded.Reconciler` on the same lease), beside real worker processes on
  the Firestore emulator: 50 executions with a 2 s ``wait`` timer and a retry with a 2 s
  backoff (both longer than the short-timer threshold, so the reconcilers wake them) all
  succeed, no timer or retry fires more than 5 s late, and progress never stops for 5 s.
* A broker flush (the deployment's queues, unacknowledged messages and message ledger)
  during 100 executions, with ``conveyor beat`` running the reconciler: completions never
  stop for more than 10 s, and every execution succeeds.
"""

from __future__ import annotations

import itertools
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from conveyor.embedded import Reconciler as EmbeddedReconciler
from engine.adapters.ledger_redis import LEDGER_KEY, PLACES_KEY
from engine.bootstrap import build_service, reconciler_lease
from engine.records import EventRecord
from engine.service import Service
from engine.settings import Settings
from engine.states import ExecutionStatus
from tests.chaos import chaos_steps
from tests.chaos.conftest import WorkerProcess, forget_run, purge_broker, stop_all, tail, worker_command, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.backend, pytest.mark.timeout(300)]

TENANT = "contention"
BEAT = [sys.executable, "-m", "conveyor", "beat", "--loglevel", "INFO"]
LONE_RECONCILER = [sys.executable, "-m", "tests.chaos.lone_reconciler"]
STEPS = chaos_steps.__name__


def _work(step_id: str, needs: list[str], **extra: Any) -> dict[str, Any]:
    args = {"label": step_id, "min_seconds": 0.05, "max_seconds": 0.15}
    return {"id": step_id, "type": "task", "needs": needs, "with": {"function": f"{STEPS}.work", "args": args}, **extra}


TIMERS: dict[str, Any] = {
    "name": "timers",
    "steps": [
        _work("a", []),
        {"id": "nap", "type": "wait", "needs": ["a"], "with": {"duration": "2s"}},
        {
            "id": "flaky",
            "type": "task",
            "needs": ["nap"],
            "retry": {"max_attempts": 3, "initial": "2s", "jitter": False},
            "with": {"function": f"{STEPS}.fail_first", "args": {"label": "flaky"}},
        },
    ],
}
CHAIN: dict[str, Any] = {"name": "chain", "steps": [_work("a", []), _work("b", ["a"]), _work("c", ["b"])]}


class Deployment:
    """Worker processes (and the options they share with this process's services) on one queue."""

    def __init__(self, tmp_path: Path, redis_url: str, store_options: dict[str, Any], **settings: Any) -> None:
        run = uuid.uuid4().hex[:8]
        self.queue = f"conveyor-contention-{run}"
        self.prefix = f"chaos-contention:{run}"
        self.redis = redis.Redis.from_url(redis_url)
        self.options: dict[str, Any] = {
            "broker_url": redis_url,
            "redis_url": redis_url,
            "default_queue": self.queue,
            "imports": [STEPS],
            "lease_seconds": 4.0,
            "redispatch_after": 3.0,
            "reconcile_interval": 0.5,
            **store_options,
            **settings,
        }
        self.env = worker_env(self.options, redis_url, self.prefix)
        self.processes = [
            WorkerProcess(worker_command(self.queue, f"contention{i}-{run}@%h"), self.env, tmp_path / f"w{i}.log")
            for i in range(2)
        ]
        self.services: list[Service] = []

    def service(self) -> Service:
        self.services.append(build_service(Settings(**self.options)))
        return self.services[-1]

    def start(self) -> None:
        for process in self.processes:
            process.start()
        for process in self.processes:
            if "celery" in process.command or process.command == LONE_RECONCILER:
                process.wait_ready()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} ---\n{tail(p.log_path, 30)}" for p in self.processes)

    def close(self) -> None:
        stop_all(self.processes)
        forget_run(self.redis, self.prefix, self.queue)
        self.redis.delete(f"conveyor:beat:lease:{self.queue}")
        for service in self.services:
            service.store.close()


@pytest.fixture
def deployments() -> Iterator[list[Deployment]]:
    made: list[Deployment] = []
    yield made
    for deployment in made:
        deployment.close()


def _wait_all(service: Service, ids: list[str], timeout: float, logs: Any) -> None:
    deadline = time.monotonic() + timeout
    while any(service.get_execution(TENANT, e).status is ExecutionStatus.RUNNING for e in ids):
        assert time.monotonic() < deadline, f"executions still running after {timeout}s:\n{logs()}"
        time.sleep(0.25)
    failed = [e for e in ids if service.get_execution(TENANT, e).status is not ExecutionStatus.SUCCEEDED]
    assert not failed, [service.get_execution(TENANT, e).error for e in failed[:3]]


def _history(service: Service, ids: list[str]) -> list[EventRecord]:
    return sorted((e for i in ids for e in service.events_after(TENANT, i, None)), key=lambda e: e.at)


def _longest_gap(moments: list[float]) -> float:
    ordered = sorted(moments)
    return max((b - a for a, b in itertools.pairwise(ordered)), default=0.0)


def _firestore_timers(tmp_path: Path, redis_url: str, request: pytest.FixtureRequest) -> Deployment:
    request.getfixturevalue("firestore_emulator")
    store = {"store": "firestore", "firestore_project": request.getfixturevalue("unique_project")}
    return Deployment(tmp_path, redis_url, store, short_timer_threshold=0.5)


def _run_timers(deployment: Deployment, count: int = 50) -> list[EventRecord]:
    """Start ``count`` TIMERS executions, wait until all succeed, return their history."""
    service = deployment.services[0]
    ids = [service.start(TENANT, "timers").execution.id for _ in range(count)]
    _wait_all(service, ids, 150, deployment.logs)
    return _history(service, ids)


def _timer_lateness(history: list[EventRecord]) -> list[float]:
    """Seconds each timer and retry fired after it was due (when its step left the wait)."""
    lateness: list[float] = []
    due: dict[tuple[str, str], float] = {}
    for event in history:
        key = (event.execution_id, event.step_key or "")
        data = event.data or {}
        if event.status == "WAITING" and data.get("until") is not None:
            due[key] = float(data["until"])
        elif event.status == "RETRY_WAIT":
            due[key] = event.at + float(data["delay"])
        elif key in due and event.status in ("QUEUED", "SUCCEEDED"):
            lateness.append(event.at - due.pop(key))
    return lateness


def _check_no_stall(history: list[EventRecord], count: int) -> str:
    """Assert the issue's bound (no stall over 5 s) and describe the lateness distribution."""
    lateness = sorted(_timer_lateness(history))
    assert len(lateness) == 2 * count, f"expected a timer and a retry per execution, saw {len(lateness)}"
    pause = _longest_gap([e.at for e in history])
    summary = (
        f"timers/retries late p50 {statistics.median(lateness):.2f}s, "
        f"p99 {lateness[int(0.99 * (len(lateness) - 1))]:.2f}s, max {lateness[-1]:.2f}s; longest pause {pause:.2f}s"
    )
    print(summary)
    assert lateness[-1] <= 5.0, summary
    assert pause <= 5.0, summary
    return summary


def test_beat_and_a_run_reconciler_on_firestore_fire_timers_and_retries_on_time(
    tmp_path: Path,
    redis_server_url: str,
    request: pytest.FixtureRequest,
    deployments: list[Deployment],
) -> None:
    deployment = _firestore_timers(tmp_path, redis_server_url, request)
    deployments.append(deployment)
    deployment.processes.append(WorkerProcess(BEAT, deployment.env, tmp_path / "beat.log"))
    deployment.start()
    service = deployment.service()
    service.apply_workflow(TENANT, TIMERS)
    run_reconciler = EmbeddedReconciler(deployment.service(), 0.5, lease=reconciler_lease(service.settings))
    run_reconciler.start()
    try:
        history = _run_timers(deployment)
    finally:
        run_reconciler.stop()
    _check_no_stall(history, 50)


def test_two_reconcilers_without_a_lease_on_firestore_fire_timers_and_retries_on_time(
    tmp_path: Path,
    redis_server_url: str,
    request: pytest.FixtureRequest,
    deployments: list[Deployment],
) -> None:
    deployment = _firestore_timers(tmp_path, redis_server_url, request)
    deployments.append(deployment)
    for i in range(2):  # two processes whose passes run at once, as two beats whose lease failed
        deployment.processes.append(WorkerProcess(LONE_RECONCILER, deployment.env, tmp_path / f"reconciler{i}.log"))
    deployment.start()
    deployment.service().apply_workflow(TENANT, TIMERS)
    _check_no_stall(_run_timers(deployment), 50)


def test_a_broker_flush_never_stops_completions_for_more_than_10s(
    tmp_path: Path, redis_server_url: str, deployments: list[Deployment]
) -> None:
    deployment = Deployment(tmp_path, redis_server_url, {"store": "sqlite", "sqlite_path": str(tmp_path / "flush.db")})
    deployments.append(deployment)
    deployment.processes.append(WorkerProcess(BEAT, deployment.env, tmp_path / "beat.log"))
    deployment.start()
    service = deployment.service()
    service.apply_workflow(TENANT, CHAIN)
    ids = [service.start(TENANT, "chain").execution.id for _ in range(100)]
    deadline = time.monotonic() + 60
    while sum(service.get_execution(TENANT, e).status is ExecutionStatus.SUCCEEDED for e in ids) < 10:
        assert time.monotonic() < deadline, deployment.logs()
        time.sleep(0.2)
    flushed_at = time.time()
    purge_broker(deployment.redis, deployment.queue)  # the queues and unacknowledged messages...
    deployment.redis.delete(LEDGER_KEY, PLACES_KEY)  # ...and the ledger beside them: what FLUSHDB does
    _wait_all(service, ids, 120, deployment.logs)
    completions = [e.at for e in _history(service, ids) if e.status == "SUCCEEDED" and e.step_key]
    after = [t for t in completions if t >= flushed_at - 10]
    gap = _longest_gap(after)
    print(f"longest pause in completions around the flush: {gap:.2f}s")
    assert gap <= 10.0
