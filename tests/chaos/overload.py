"""Recovery under overload, in the production topology: the scenario behind the chaos test
``test_recovery_overload.py`` and the figure of ``bench/recovery.py``.

Real processes share a SQLite store and a Redis broker: Celery prefork workers
(``tasks.app``) and ``conveyor beat`` (which runs the reconciler). A feeder in this process
starts one-step executions so that at least ``backlog`` step messages wait in the queue, far
above what the workers can run, for ``overload_seconds``. Meanwhile two probes:

* **lost start message**: an execution is started by a service whose dispatcher drops the
  message (the API died between commit and publish). Measured: from its commit until its
  step starts (the step's ``started_at``).
* **SIGKILLed worker**: the worker running a step that blocks (``chaos_steps.hang``) is
  SIGKILLed (its whole process group) and restarted. Measured: from the kill until the store
  shows the step re-queued (the ``QUEUED`` event recorded by the lease expiry).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from engine.adapters.celery_config import queue_keys
from engine.adapters.ledger_redis import LEDGER_KEY, PLACES_KEY
from engine.bootstrap import build_service
from engine.ports import Dispatch
from engine.service import Service
from engine.settings import Settings
from engine.states import StepStatus
from tests.chaos import chaos_steps
from tests.chaos.conftest import WorkerProcess, forget_run, stop_all, tail, worker_command, worker_env
from tests.services import poll

#: Seconds of overload (the issue's 90 by default; CI may shorten it, see the chaos test).
OVERLOAD_SECONDS = float(os.environ.get("CONVEYOR_CHAOS_OVERLOAD_SECONDS", "90"))
#: Step messages kept waiting in the queue throughout.
BACKLOG = int(os.environ.get("CONVEYOR_CHAOS_BACKLOG", "500"))

LEASE_SECONDS = 4.0
RECONCILE_INTERVAL = 1.0
REDISPATCH_AFTER = 6.0
#: How long past its bound a probe is still waited for (so a miss is measured, not cut off).
GRACE = 60.0


class _Dropping:
    """A dispatcher that loses every message: the publisher died right after its commit."""

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        return None


@dataclass
class OverloadReport:
    """What one overload run measured (seconds); ``None``: not seen within bound + grace."""

    lost_start_run: float | None = None
    killed_step_requeued: float | None = None
    lost_start_bound: float = REDISPATCH_AFTER + 5
    requeue_bound: float = LEASE_SECONDS + RECONCILE_INTERVAL + 5
    #: The fewest step messages waiting in the queue, sampled after the first burst.
    min_backlog: int | None = None
    started: int = 0
    overload_seconds: float = 0.0
    #: Steps the reconciler re-sent (sum of its log lines): a backlog must not be re-sent.
    redispatched: int = 0
    notes: list[str] = field(default_factory=list)


class Overload:
    """One run of the scenario; use as a context manager, then call :meth:`run`."""

    def __init__(
        self,
        tmp: Path,
        redis_url: str,
        *,
        backlog: int = BACKLOG,
        overload_seconds: float = OVERLOAD_SECONDS,
        workers: int = 2,
        concurrency: int = 2,
    ) -> None:
        run = uuid.uuid4().hex[:8]
        self.tmp = tmp
        self.backlog = backlog
        self.overload_seconds = overload_seconds
        self.tenant = f"overload-{run}"
        self.queue = f"conveyor-overload-{run}"
        self.prefix = f"chaos-overload:{run}"
        self.redis = redis.Redis.from_url(redis_url)
        options: dict[str, Any] = {
            "store": "sqlite",
            "sqlite_path": str(tmp / "overload.db"),
            "broker_url": redis_url,
            "redis_url": redis_url,
            "default_queue": self.queue,
            "imports": [chaos_steps.__name__],
            "lease_seconds": LEASE_SECONDS,
            "reconcile_interval": RECONCILE_INTERVAL,
            "redispatch_after": REDISPATCH_AFTER,
            "log_level": "INFO",
        }
        self.settings = Settings(**options)
        self.env = worker_env(options, redis_url, self.prefix)
        self.service: Service = build_service(self.settings)
        self.lost_service: Service = build_service(self.settings, dispatcher=_Dropping())
        self.workers = [
            WorkerProcess(worker_command(self.queue, f"overload{i}-{run}@%h", concurrency), self.env, tmp / f"w{i}.log")
            for i in range(workers)
        ]
        self.beat = WorkerProcess(
            [sys.executable, "-m", "conveyor", "beat", "--loglevel", "INFO"], self.env, tmp / "beat.log"
        )
        self.report = OverloadReport(overload_seconds=overload_seconds)
        self._stop = threading.Event()
        self._feeder = threading.Thread(target=self._feed, name="overload-feeder", daemon=True)
        self._samples: list[int] = []

    # ------------------------------------------------------------------ setup and teardown

    def __enter__(self) -> Overload:
        step = {
            "function": f"{chaos_steps.__name__}.work",
            "args": {"label": "b", "min_seconds": 0.15, "max_seconds": 0.25},
        }
        self.service.apply_workflow(
            self.tenant, {"name": "backlog", "steps": [{"id": "b", "type": "task", "with": step}]}
        )
        hang = {"function": f"{chaos_steps.__name__}.hang"}
        self.service.apply_workflow(
            self.tenant,
            {"name": "hang", "steps": [{"id": "h", "type": "task", "retry": {"max_attempts": 5}, "with": hang}]},
        )
        for worker in self.workers:
            worker.start()
        for worker in self.workers:
            worker.wait_ready()
        self.beat.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._feeder.is_alive():
            self._feeder.join(timeout=30)
        stop_all([self.beat, *self.workers])
        forget_run(self.redis, self.prefix, self.queue)
        self.redis.delete(f"conveyor:beat:lease:{self.queue}")
        with contextlib.suppress(redis.RedisError):
            # "[" would open a character class in Redis's glob: escaped, the members of this tenant
            for member, _ in self.redis.zscan_iter(LEDGER_KEY, match=f'\\["{self.tenant}"*'):
                self.redis.zrem(LEDGER_KEY, member)
                self.redis.hdel(PLACES_KEY, member)
        self.service.store.close()
        self.lost_service.store.close()

    def logs(self) -> str:
        return "\n".join(f"--- {p.log_path.name} ---\n{tail(p.log_path, 40)}" for p in (self.beat, *self.workers))

    # ------------------------------------------------------------------ load

    def waiting(self) -> int:
        """Step messages waiting in the queue, on every priority list of it."""
        return sum(int(self.redis.llen(key)) for key in queue_keys(self.queue))

    def _start_backlog(self, count: int) -> None:
        for _ in range(count):
            self.service.start(self.tenant, "backlog")
            self.report.started += 1

    def _feed(self) -> None:
        """Keep at least ``backlog`` messages waiting: top up to backlog + 300 below backlog + 200."""
        while not self._stop.wait(0.25):
            waiting = self.waiting()
            self._samples.append(waiting)
            if waiting < self.backlog + 200:
                self._start_backlog(self.backlog + 300 - waiting)

    # ------------------------------------------------------------------ probes

    def _hang_started(self) -> tuple[str, int] | None:
        raw = self.redis.get(chaos_steps.hang_key(self.prefix))
        if raw is None:
            return None
        note = json.loads(raw)
        return note["execution_id"], int(note["pgid"])

    def _probe_lost_start(self) -> None:
        execution = self.lost_service.start(self.tenant, "backlog").execution

        def started() -> float | None:
            step = {s.key: s for s in self.service.list_steps(self.tenant, execution.id)}.get("b")
            return step.started_at if step is not None and step.started_at else None

        started_at = poll(started, self.report.lost_start_bound + GRACE, 0.2)
        if started_at is not None:
            self.report.lost_start_run = started_at - execution.created_at

    def _probe_killed_worker(self, execution_id: str, pgid: int) -> None:
        victim = next(w for w in self.workers if w.proc is not None and w.proc.pid == pgid)

        def claimed() -> bool:
            step = {s.key: s for s in self.service.list_steps(self.tenant, execution_id)}.get("h")
            return step is not None and step.status is StepStatus.RUNNING and step.lease_epoch >= 1

        if not poll(claimed, 30, 0.1):
            self.report.notes.append("the hang step was never claimed")
            return
        killed_at = time.time()
        victim.kill()
        victim.start()  # a supervisor restarts it; capacity stays the same

        def requeued() -> float | None:
            for event in self.service.events_after(self.tenant, execution_id, None):
                if (
                    event.step_key == "h"
                    and event.status == "QUEUED"
                    and (event.data or {}).get("reason") == "lease expired"
                ):
                    return event.at
            return None

        requeued_at = poll(requeued, self.report.requeue_bound + GRACE, 0.2)
        if requeued_at is not None:
            self.report.killed_step_requeued = requeued_at - killed_at

    # ------------------------------------------------------------------ the run

    def run(self) -> OverloadReport:
        hang_id = self.service.start(self.tenant, "hang").execution.id
        if not poll(self._hang_started, 60, 0.1):
            raise AssertionError(f"the hang step did not start:\n{self.logs()}")
        _, pgid = self._hang_started() or ("", 0)
        self._start_backlog(self.backlog + 300)
        began = time.monotonic()
        self._feeder.start()
        poll(lambda: time.monotonic() - began >= max(REDISPATCH_AFTER + 2, 0.25 * self.overload_seconds), 3600, 0.5)
        self._probe_lost_start()
        poll(lambda: time.monotonic() - began >= 0.5 * self.overload_seconds, 3600, 0.5)
        self._probe_killed_worker(hang_id, pgid)
        poll(lambda: time.monotonic() - began >= self.overload_seconds, 3600, 0.5)
        self._stop.set()
        self._feeder.join(timeout=30)
        self.report.overload_seconds = time.monotonic() - began
        self.report.min_backlog = min(self._samples) if self._samples else None
        self.report.redispatched = sum(
            int(n)
            for p in (self.beat, *self.workers)
            for n in re.findall(r"redispatched=(\d+)", p.log_path.read_text(errors="replace"))
        )
        return self.report


def run_overload(tmp: Path, redis_url: str, **options: Any) -> OverloadReport:
    """Set up, run and tear down one overload scenario."""
    with Overload(tmp, redis_url, **options) as scenario:
        return scenario.run()
