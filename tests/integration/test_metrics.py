"""Prometheus metrics from the production processes: an execution with a retry, started through
the API and run by a prefork ``conveyor worker --metrics-port``, is counted with its workflow,
step types and outcomes by the worker's /metrics (every pool process summed) and the API's."""

from __future__ import annotations

import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from api import create_app
from engine.auth import Role
from engine.bootstrap import build_service
from engine.settings import Settings
from engine.states import ExecutionStatus
from tests.api.support import bearer, issue_keys
from tests.chaos.conftest import Reconciler, WorkerProcess, forget_run, tail, worker_env
from tests.integration import flows
from tests.services import free_port

pytestmark = pytest.mark.backend

TENANT = "metrics"


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of the exposition ``text`` (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or "")) == labels:
            return float(match.group(2))
    return 0.0


@pytest.mark.timeout(180)
def test_metrics_of_an_execution_with_a_retry(tmp_path: Path, redis_server_url: str) -> None:
    run_id = uuid.uuid4().hex[:10]
    workflow, queue = f"metrics-{run_id}", f"conveyor-metrics-{run_id}"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": tmp_path / "metrics.db",
        "broker_url": redis_server_url,
        "default_queue": queue,
        "imports": [flows.__name__],
    }
    definition = {
        "name": workflow,
        "steps": [
            flows.task(
                "flaky",
                "flaky",
                retry={"max_attempts": 3, "backoff": "fixed", "initial": "100ms"},
                args={"fail_times": 1},
            ),
            {"id": "done", "type": "transform", "needs": ["flaky"], "with": {"value": 1}},
        ],
    }
    port = free_port()
    env = worker_env(options, redis_server_url, f"conveyor-metrics:{run_id}")
    command = [sys.executable, "-m", "conveyor", "worker", "--concurrency", "2", "--metrics-port", str(port)]
    worker = WorkerProcess(command, env, tmp_path / "worker.log")
    settings = Settings(_env_file=None, **options)  # type: ignore[call-arg]
    service = build_service(settings)
    try:
        worker.start()
        worker.wait_ready()
        key = issue_keys(service, [TENANT])[(TENANT, Role.ADMIN)]
        service.apply_workflow(TENANT, definition)
        with TestClient(create_app(settings)) as api, Reconciler(service):
            response = api.post("/v1/executions", json={"workflow": workflow}, headers=bearer(key))
            assert response.status_code == 201, response.text
            execution_id = response.json()["id"]
            deadline = time.monotonic() + 60
            while service.get_execution(TENANT, execution_id).status is not ExecutionStatus.SUCCEEDED:
                assert time.monotonic() < deadline, "the execution did not succeed"
                time.sleep(0.2)
            api_metrics = api.get("/metrics").text
        assert sample(api_metrics, "conveyor_executions_started_total", workflow=workflow) == 1
        assert sample(api_metrics, "conveyor_api_executions_started_total") >= 1

        worker_metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        labels = {"workflow": workflow, "step_type": "task"}
        assert sample(worker_metrics, "conveyor_step_attempts_total", **labels, outcome="failed") == 1
        assert sample(worker_metrics, "conveyor_step_attempts_total", **labels, outcome="succeeded") == 1
        assert sample(worker_metrics, "conveyor_step_retries_total", **labels) == 1
        assert (
            sample(
                worker_metrics,
                "conveyor_step_attempts_total",
                workflow=workflow,
                step_type="transform",
                outcome="succeeded",
            )
            == 1
        )
        assert sample(worker_metrics, "conveyor_step_attempt_seconds_count", **labels) == 2
        assert sample(worker_metrics, "conveyor_step_queue_wait_seconds_count", workflow=workflow) == 3
        assert sample(worker_metrics, "conveyor_executions_finished_total", workflow=workflow, status="SUCCEEDED") == 1
        assert sample(worker_metrics, "conveyor_execution_seconds_count", workflow=workflow, status="SUCCEEDED") == 1
    except BaseException:
        print(f"\n--- worker log ---\n{tail(tmp_path / 'worker.log')}")
        raise
    finally:
        worker.stop()
        forget_run(redis.Redis.from_url(redis_server_url), f"conveyor-metrics:{run_id}", queue)
        service.store.close()
