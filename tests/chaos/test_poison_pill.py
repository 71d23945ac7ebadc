"""A step that kills every worker that runs it ends FAILED, its attempts counted.

A step's first delivery runs before its claim (see ``engine.runner``), so nothing in the
store counts that run. The test pins what keeps this from looping: the broker redelivers the
message of a worker that died (marked redelivered), a redelivered message is claimed before
its step runs, and from then on each crash spends an attempt (lease expiry, then
``WorkerLost`` once the allowance is spent). The step's body runs exactly once more than its
counted attempts.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.bootstrap import build_service
from engine.orchestration.steps import LOST_WORKER_ALLOWANCE
from engine.settings import Settings
from engine.states import ExecutionStatus, StepStatus
from tests.chaos import chaos_steps
from tests.chaos.conftest import Reconciler, WorkerProcess, forget_run, tail, worker_command, worker_env

TENANT = "poison"
WORKFLOW: dict[str, Any] = {
    "name": "poison",
    "steps": [{"id": "fatal", "type": "task", "with": {"function": f"{chaos_steps.__name__}.kill_worker"}}],
}


@pytest.mark.backend
@pytest.mark.timeout(300)
def test_a_step_that_kills_every_worker_fails_after_its_attempts(
    tmp_path: Path, redis_server_url: str, worker_factory: list[WorkerProcess]
) -> None:
    run_id = uuid.uuid4().hex[:10]
    prefix, queue = f"conveyor-poison:{run_id}", f"conveyor-poison-{run_id}"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": tmp_path / "poison.db",
        "broker_url": redis_server_url,
        "redis_url": redis_server_url,
        "default_queue": queue,
        "lease_seconds": 1.0,
        "redispatch_after": 3.0,
        "imports": [chaos_steps.__name__],
    }
    env = worker_env(options, redis_server_url, prefix)
    service = build_service(Settings(**options))
    service.apply_workflow(TENANT, WORKFLOW)
    client = redis.Redis.from_url(redis_server_url)
    log_path = tmp_path / "worker.log"
    worker = WorkerProcess(worker_command(queue, f"poison-{run_id}@%h", concurrency=1), env, log_path)
    worker_factory.append(worker)
    try:
        worker.start()
        worker.wait_ready()
        with Reconciler(service):
            execution_id = service.start(TENANT, "poison", None).execution.id
            execution = _wait_ended(service, execution_id, timeout=120)
        step = {s.key: s for s in service.list_steps(TENANT, execution_id)}["fatal"]
        runs = int(client.get(chaos_steps.runs_key(prefix, execution_id, "fatal")) or 0)
        assert execution.status is ExecutionStatus.FAILED
        assert (step.status, (step.error or {}).get("type")) == (StepStatus.FAILED, "WorkerLost")
        assert step.attempt == 1 + LOST_WORKER_ALLOWANCE  # the default policy's one attempt, plus the allowance
        assert runs == step.attempt + 1, "only the first delivery may run uncounted"
    except BaseException:
        print(f"\n--- worker log tail ({log_path}) ---\n{tail(log_path, 80)}")
        raise
    finally:
        worker.stop()
        forget_run(client, prefix, queue)
        service.store.close()


def _wait_ended(service: Any, execution_id: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = service.get_execution(TENANT, execution_id)
        if execution.status not in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED):
            return execution
        time.sleep(0.2)
    raise AssertionError(f"execution {execution_id} still running after {timeout}s")
