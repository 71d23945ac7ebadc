"""A step that kills every worker that runs it ends FAILED, its attempts counted.

A step's first delivery runs before its claim (see ``engine.runner``), so nothing in the
store counts that run. The test pins what keeps this from looping: the broker redelivers the
message of a worker that died (marked redelivered), a redelivered message is claimed before
its step runs, and from then on each crash spends an attempt (lease expiry, then
``WorkerLost`` once the allowance is spent). The step's body runs exactly once more than its
counted attempts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.orchestration.steps import LOST_WORKER_ALLOWANCE
from engine.states import ExecutionStatus, StepStatus
from tests.chaos import chaos_steps
from tests.chaos.conftest import (
    OneWorker,
    Reconciler,
    WorkerProcess,
    tail,
    wait_ended,
)

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
    run = OneWorker.prepare("poison", tmp_path, redis_server_url, worker_factory, [chaos_steps.__name__], 1.0)
    service, client, prefix, worker, log_path = run.service, run.client, run.prefix, run.worker, run.log_path
    service.apply_workflow(TENANT, WORKFLOW)
    try:
        worker.start()
        worker.wait_ready()
        with Reconciler(service):
            execution_id = service.start(TENANT, "poison", None).execution.id
            execution = wait_ended(service, TENANT, execution_id, timeout=120)
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
        run.close()
