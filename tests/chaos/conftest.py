"""Real worker processes for the chaos tests: start, SIGKILL (the whole process group), restart."""

from __future__ import annotations

import abc
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import pytest

from engine.adapters.celery_config import queue_keys
from engine.adapters.ledger_redis import PUSHED_KEY
from engine.service import Service

ROOT = Path(__file__).resolve().parents[2]


def worker_command(queue: str, node: str, concurrency: int = 2) -> list[str]:
    """The Celery worker (prefork) over Conveyor's app, consuming only ``queue``."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks.app",
        "worker",
        "--pool",
        "prefork",
        "--concurrency",
        str(concurrency),
        "-Q",
        queue,
        "-n",
        node,
        "--loglevel",
        "INFO",
        # no gossip/mingle/heartbeat: a restart is ready sooner and never talks to other workers
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def tail(path: Path, lines: int = 80) -> str:
    if not path.exists():
        return f"({path} does not exist)"
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def group_running(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Exited members count as gone: the pool
    children of a killed worker are orphans, left as zombies until the machine's init reaps
    them (on some machines once a second), and a zombie runs no step and holds no lock."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited meanwhile
            continue
        # after "pid (comm) ": state, ppid, pgrp, ...; comm may contain spaces and parentheses
        state, _, pgrp = text[text.rindex(")") + 2 :].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


class WorkerProcess:
    """One worker at a time, in its own process group so SIGKILL takes the pool children too."""

    def __init__(self, command: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.command = command
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        assert not self.running
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"\n===== worker start #{self.starts} at {time.time():.3f} =====\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 60) -> None:
        """Wait for Celery's "ready." line of the current start."""
        deadline = time.monotonic() + timeout
        marker = f"===== worker start #{self.starts} "
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            current = text[text.rfind(marker) :]
            if " ready." in current:
                return
            if not self.running:
                raise AssertionError(
                    f"worker exited with {self.proc.returncode if self.proc else None}:\n{tail(self.log_path)}"
                )
            time.sleep(0.05)
        raise AssertionError(f"worker not ready after {timeout}s:\n{tail(self.log_path)}")

    def kill(self) -> None:
        """SIGKILL the worker's whole process group and wait until every member is gone."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and group_running(pgid):
            time.sleep(0.02)
        with self.log_path.open("ab") as log:
            log.write(f"===== SIGKILL at {time.time():.3f} =====\n".encode())

    def stop(self) -> None:
        """Warm shutdown, then SIGKILL whatever is left."""
        stop_all([self])


def stop_all(processes: list[WorkerProcess]) -> None:
    """Stop ``processes`` like :meth:`WorkerProcess.stop`, all at once: each warm shutdown
    (restoring a worker's prefetched messages takes a while) overlaps the others."""
    asked = []
    for process in processes:
        if process.proc is not None and process.running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.proc.pid, signal.SIGTERM)
            asked.append(process.proc)
    deadline = time.monotonic() + 15
    for proc in asked:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(deadline - time.monotonic(), 0.01))
    for process in processes:
        process.kill()


def worker_env(options: Mapping[str, Any], redis_url: str, prefix: str) -> dict[str, str]:
    """The environment of a worker process: ``options`` as ``CONVEYOR_*`` settings (none
    inherited from this process), plus where the chaos steps leave their side effects."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({f"CONVEYOR_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v) for k, v in options.items()})
    env.update(CONVEYOR_CHAOS_REDIS=redis_url, CONVEYOR_CHAOS_PREFIX=prefix, PYTHONUNBUFFERED="1")
    return env


def forget_run(client: Any, prefix: str, queue: str) -> None:
    """Delete a run's side-effect keys and its messages, so nothing of it outlives the test."""
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    purge_broker(client, queue)


def purge_broker(client: Any, queue: str) -> None:
    """Drop ``queue`` (and the ledger's count of its messages) and the unacknowledged messages
    killed workers left for it in kombu's shared ``unacked`` hash, so nothing of this run is
    restored into Redis later."""
    client.delete(*queue_keys(queue))
    client.hdel(PUSHED_KEY, *queue_keys(queue))
    for tag, payload in client.hscan_iter("unacked"):
        with contextlib.suppress(ValueError, TypeError, IndexError):
            if json.loads(payload)[2] == queue:
                client.hdel("unacked", tag)
                client.zrem("unacked_index", tag)


class Periodic(abc.ABC):
    """A job (:meth:`tick`) run every ``interval`` on a thread of the test process, as a context
    manager; what it raises is collected in ``errors`` and the job goes on."""

    def __init__(self, interval: float, name: str) -> None:
        self.interval = interval
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    @abc.abstractmethod
    def tick(self) -> None:
        """One run of the job."""

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception as exc:  # keep going; the test reports what went wrong
                self.errors.append(repr(exc))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class Reconciler(Periodic):
    """The reconciler (beat's job) in a thread of the test process: one pass every ``interval``."""

    def __init__(self, service: Service, interval: float = 0.3) -> None:
        super().__init__(interval, "chaos-reconciler")
        self.service = service
        self.passes = 0
        self.expired = 0
        self.redispatched = 0

    def tick(self) -> None:
        report = self.service.reconcile()
        self.passes += 1
        self.expired += report.expired_leases
        self.redispatched += report.redispatched


@dataclass
class OneWorker:
    """A run with one prefork worker process over SQLite and Redis, for a single-step chaos test."""

    prefix: str
    queue: str
    service: Service
    client: Any
    log_path: Path
    worker: WorkerProcess

    @classmethod
    def prepare(
        cls,
        name: str,
        tmp_path: Path,
        redis_url: str,
        workers: list[WorkerProcess],
        imports: list[str],
        lease_seconds: float,
        env: Mapping[str, str] | None = None,
        firestore_project: str | None = None,
    ) -> OneWorker:
        """Settings, service and worker (not started yet) of a run named ``name``: on SQLite, or
        on the Firestore emulator under ``firestore_project``."""
        import redis

        from engine.bootstrap import build_service
        from engine.settings import Settings

        run_id = uuid.uuid4().hex[:10]
        prefix, queue = f"conveyor-{name}:{run_id}", f"conveyor-{name}-{run_id}"
        options: dict[str, Any] = {
            "store": "sqlite",
            "sqlite_path": tmp_path / f"{name}.db",
            "broker_url": redis_url,
            "redis_url": redis_url,
            "default_queue": queue,
            "lease_seconds": lease_seconds,
            "redispatch_after": 3.0,
            "imports": imports,
        }
        if firestore_project is not None:
            options.update(store="firestore", firestore_project=firestore_project)
            del options["sqlite_path"]
        log_path = tmp_path / "worker.log"
        command = worker_command(queue, f"{name}-{run_id}@%h", concurrency=1)
        worker = WorkerProcess(command, worker_env(options, redis_url, prefix) | dict(env or {}), log_path)
        workers.append(worker)
        service = build_service(Settings(**options))
        return cls(prefix, queue, service, redis.Redis.from_url(redis_url), log_path, worker)

    def close(self) -> None:
        self.worker.stop()
        forget_run(self.client, self.prefix, self.queue)
        self.service.store.close()


def wait_ended(service: Service, tenant: str, execution_id: str, timeout: float) -> Any:
    """Poll the store until the execution is neither running nor paused."""
    from engine.states import ExecutionStatus

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = service.get_execution(tenant, execution_id)
        if execution.status not in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED):
            return execution
        time.sleep(0.2)
    raise AssertionError(f"execution {execution_id} still running after {timeout}s")


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    """Collects every worker a test starts and makes sure none outlives it."""
    workers: list[WorkerProcess] = []
    yield workers
    stop_all(workers)
