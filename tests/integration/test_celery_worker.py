"""Workflows run by real Celery workers over Redis: in process, and as `conveyor worker`/`beat` processes."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from engine.adapters.celery_config import queue_keys
from engine.bootstrap import build_service
from engine.settings import Settings
from engine.states import ExecutionStatus, StepStatus
from tests.integration import flows
from tests.integration.conftest import TENANT, DroppingDispatcher, World, delete_queue_keys

ROOT = Path(__file__).resolve().parents[2]
#: The console script installed with the package, next to this interpreter.
CONVEYOR = Path(sys.executable).parent / "conveyor"

pytestmark = pytest.mark.backend


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_pipeline_with_retry_switch_and_foreach_succeeds_on_a_real_worker(
    store: str, make_world: Callable[..., World]
) -> None:
    world = make_world(store)
    world.apply(flows.PIPELINE)
    with world.worker():
        execution_id = world.start("it-pipeline", {"n": 5})
        execution = world.wait(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert execution.output == flows.PIPELINE_OUTPUT
    steps = {s.key: s for s in world.service.list_steps(TENANT, execution_id)}
    assert steps["small"].status is StepStatus.SKIPPED
    assert steps["flaky"].attempt == 3
    assert steps["squares"].output == [1, 4, 9, 16, 25]
    history = world.service.events_after(TENANT, execution_id, None)
    flaky_types = [e.type for e in history if e.step_key == "flaky"]
    assert flaky_types.count("step.retry_wait") == 2
    assert flaky_types[-1] == "step.succeeded"


def test_a_lost_step_message_is_sent_again_by_the_reconciler(make_world: Callable[..., World]) -> None:
    world = make_world(wrap=lambda inner: DroppingDispatcher(inner, drop=1), redispatch_after=0.2)
    world.apply({"name": "it-lost", "steps": [flows.task("only", "whoami", args={"label": "x"})]})
    with world.worker():
        execution_id = world.start("it-lost")
        time.sleep(0.5)
        assert world.service.get_execution(TENANT, execution_id).status is ExecutionStatus.RUNNING
        assert world.service.reconcile().redispatched == 1  # what beat runs
        execution = world.wait(execution_id, timeout=30)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert [d.step_key for d in world.dispatcher.dropped] == ["only"]
    assert world.runner.outcomes == {"succeeded": 1}


# --- the real commands, as separate processes ----------------------------------------------


def _env(settings: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    for key, value in settings.items():
        env[f"CONVEYOR_{key.upper()}"] = json.dumps(value) if isinstance(value, list) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Starts `conveyor ...` processes logging to tmp_path; stops them (SIGTERM, then kill) after."""
    started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([str(CONVEYOR), *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        started.append((proc, log))
        return proc

    yield start
    for proc, log in started:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"--- {log.name} ---\n{log.read_text(errors='replace')[-3000:]}")


def test_conveyor_worker_process_runs_steps_on_default_and_extra_queues(
    tmp_path: Path,
    redis_server_url: str,
    redis_client: redis.Redis,
    run_id: str,
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    queue, gpu_queue = f"conveyor-it-{run_id}", f"conveyor-it-{run_id}-gpu"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": str(tmp_path / "proc.db"),
        "broker_url": redis_server_url,
        "redis_url": redis_server_url,
        "default_queue": queue,
        "imports": [flows.__name__],
    }
    service = build_service(Settings(**options))
    try:
        service.apply_workflow(
            TENANT,
            {
                "name": "it-queues",
                "steps": [
                    flows.task("cpu", "whoami", args={"label": "default queue"}),
                    flows.task("gpu", "whoami", ("cpu",), args={"label": "gpu queue"}, queue=gpu_queue),
                ],
                "outputs": {"cpu": "steps.cpu.output.label", "gpu": "steps.gpu.output.label"},
            },
        )
        worker = processes(
            ["worker", "--pool", "threads", "--concurrency", "2", "-Q", gpu_queue, "--loglevel", "INFO"],
            _env(options),
            "worker",
        )
        execution_id = service.start(TENANT, "it-queues").execution.id
        deadline = time.monotonic() + 60
        while service.get_execution(TENANT, execution_id).status is ExecutionStatus.RUNNING:
            assert worker.poll() is None, "the worker process exited"
            assert time.monotonic() < deadline, "the execution did not finish within 60s"
            time.sleep(0.1)
        execution = service.get_execution(TENANT, execution_id)
        assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
        assert execution.output == {"cpu": "default queue", "gpu": "gpu queue"}
    finally:
        service.store.close()
        delete_queue_keys(redis_client, queue)


def test_conveyor_beat_process_reconciles_itself_and_resends_lost_messages_first(
    tmp_path: Path,
    redis_server_url: str,
    redis_client: redis.Redis,
    run_id: str,
    processes: Callable[..., subprocess.Popen[bytes]],
) -> None:
    """Beat runs the pass in its own process (no reconcile message waits in the step queue),
    and the step whose message was lost is sent on the urgent lane, ahead of a backlog."""
    queue = f"conveyor-it-{run_id}"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": str(tmp_path / "beat.db"),
        "broker_url": redis_server_url,
        "default_queue": queue,
        "reconcile_interval": 0.5,
        "redispatch_after": 1.0,
    }
    settings = Settings(**options)
    service = build_service(settings)
    lost = build_service(settings, dispatcher=DroppingDispatcher(service.dispatcher, drop=1))
    try:
        service.apply_workflow(TENANT, {"name": "it-beat", "steps": [flows.task("only", "whoami", args={"label": "x"})]})
        backlog = [service.start(TENANT, "it-beat").execution.id for _ in range(3)]  # published, never consumed
        execution_id = lost.start(TENANT, "it-beat").execution.id
        normal, urgent = queue_keys(queue)[::-1]
        assert redis_client.llen(normal) == 3 and redis_client.llen(urgent) == 0
        processes(["beat", "--loglevel", "INFO"], _env(options), "beat")
        deadline = time.monotonic() + 30
        while redis_client.llen(urgent) < 1:
            assert time.monotonic() < deadline, "beat did not re-send the lost message within 30s"
            time.sleep(0.1)
        message = json.loads(redis_client.lindex(urgent, 0) or b"{}")
        assert message["headers"]["task"] == "conveyor.run_step"
        assert json.loads(base64.b64decode(message["body"]))[0] == [TENANT, execution_id, "only"]
        time.sleep(2.0)  # more passes: the backlog's messages are held by the broker, not lost
        assert redis_client.llen(urgent) == 1 and redis_client.llen(normal) == 3
        assert all(service.list_steps(TENANT, e)[0].lease_epoch == 0 for e in backlog)
    finally:
        service.store.close()
        delete_queue_keys(redis_client, queue)
        redis_client.delete(f"conveyor:beat:lease:{queue}")
