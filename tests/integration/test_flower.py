"""``conveyor flower`` against a real prefork worker on the test Redis: its REST API lists the
worker and the step tasks of a finished execution (the steps run inline after the first
included, each with its own task), and answers 401 without credentials."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.bootstrap import build_service
from engine.settings import Settings
from engine.states import ExecutionStatus
from tests.chaos.conftest import WorkerProcess, forget_run, tail, worker_env
from tests.services import free_port, wait_for

pytestmark = pytest.mark.backend

TENANT = "flower"
CREDENTIALS = ("operator", "s3cret-flower")
#: A chain: b and c run inline in the worker that ran a, from a's message.
WORKFLOW: dict[str, Any] = {
    "name": "flower-chain",
    "steps": [
        {"id": "a", "type": "transform", "with": {"value": 1}},
        {"id": "b", "type": "transform", "needs": ["a"], "with": {"value": 2}},
        {"id": "c", "type": "transform", "needs": ["b"], "with": {"value": 3}},
    ],
}




@pytest.mark.timeout(180)
def test_flower_shows_workers_and_step_tasks_behind_auth(tmp_path: Path, redis_server_url: str) -> None:
    run_id = uuid.uuid4().hex[:10]
    queue = f"conveyor-flower-{run_id}"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": tmp_path / "flower.db",
        "broker_url": redis_server_url,
        "redis_url": redis_server_url,
        "default_queue": queue,
    }
    env = worker_env(options, redis_server_url, f"conveyor-flower:{run_id}")
    # `conveyor worker` as deployed: with worker heartbeats, so Flower can switch task events on.
    command = [sys.executable, "-m", "conveyor", "worker", "--concurrency", "1", "--loglevel", "INFO"]
    worker = WorkerProcess([*command, "--hostname", f"flower-{run_id}@%h"], env, tmp_path / "worker.log")
    port = free_port()
    flower_env = {
        **env,
        "CONVEYOR_FLOWER_BASIC_AUTH": f'["{CREDENTIALS[0]}:{CREDENTIALS[1]}"]',
        # Flower asks workers with a 1 s default; a loaded CI machine may answer slower.
        "FLOWER_INSPECT_TIMEOUT": "5000",
    }
    flower_log = (tmp_path / "flower.log").open("wb")
    flower = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "flower", "--port", str(port)],
        env=flower_env,
        stdout=flower_log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    service = build_service(Settings(**options))
    base = f"http://127.0.0.1:{port}"
    try:
        worker.start()
        worker.wait_ready()
        with httpx.Client(base_url=base, timeout=10) as anonymous:
            wait_for(lambda: _answers(anonymous), 60, "Flower listens")
            assert anonymous.get("/api/workers").status_code == 401
            assert anonymous.get("/api/tasks").status_code == 401
            assert anonymous.get("/").status_code == 401
        with httpx.Client(base_url=base, timeout=30, auth=CREDENTIALS) as client:
            workers = wait_for(
                lambda: [name for name in client.get("/api/workers", params={"refresh": 1}).json() if run_id in name],
                60,
                "Flower lists the worker",
            )
            assert workers == [f"flower-{run_id}@{os.uname().nodename}"]
            # Flower turns task events on in the workers (a broadcast every 5 s); run after that.
            wait_for(
                lambda: "enabled by remote" in (tmp_path / "worker.log").read_text(errors="replace"),
                30,
                "Flower enables task events in the worker",
            )
            service.apply_workflow(TENANT, WORKFLOW)
            execution_id = service.start(TENANT, "flower-chain", None).execution.id
            wait_for(
                lambda: service.get_execution(TENANT, execution_id).status is ExecutionStatus.SUCCEEDED,
                60,
                "the execution succeeds",
            )

            def step_tasks() -> dict[str, dict[str, Any]]:
                tasks = client.get("/api/tasks", params={"taskname": "conveyor.run_step"}).json()
                return {
                    key: {**task, "uuid": uuid_}
                    for uuid_, task in tasks.items()
                    for key in "abc"
                    if task.get("args") == repr([TENANT, execution_id, key])
                }

            tasks = wait_for(lambda: len(step_tasks()) == 3 and step_tasks(), 30, "Flower lists every step's task")
            assert all(t["state"] == "SUCCESS" and t["worker"] == workers[0] for t in tasks.values()), tasks
            # b and c ran inline from a's message: their tasks name it as parent.
            assert tasks["b"]["parent_id"] == tasks["a"]["uuid"] == tasks["c"]["parent_id"], tasks
            execution = service.get_execution(TENANT, execution_id)
            assert execution.status is ExecutionStatus.SUCCEEDED
    except BaseException:
        print(f"\n--- worker log ---\n{tail(tmp_path / 'worker.log')}\n--- flower log ---\n{tail(tmp_path / 'flower.log')}")
        raise
    finally:
        flower.terminate()
        flower.wait(timeout=30)
        flower_log.close()
        worker.stop()
        import redis

        forget_run(redis.Redis.from_url(redis_server_url), f"conveyor-flower:{run_id}", queue)
        service.store.close()


def _answers(client: httpx.Client) -> bool:
    try:
        client.get("/healthcheck")
    except httpx.TransportError:
        return False
    return True
