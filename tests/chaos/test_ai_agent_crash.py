"""An ``ai.agent`` step whose worker process is SIGKILLed right after a tool completed.

The scripted agent looks an order up (a tool with a counted side effect), then calls a
tool that SIGKILLs the worker process the first time. The next attempt continues the
checkpointed thread: the finished lookup is not run again (its counter stays at one), the
interrupted tool runs again, and the agent answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.states import ExecutionStatus
from tests.chaos.conftest import (
    OneWorker,
    Reconciler,
    WorkerProcess,
    tail,
    wait_ended,
)
from tests.integration import ai_tools
from tests.integration.ai_flows import TOOLS, agent_workflow

TENANT = "ai-crash"
SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "lookup_order", "args": {"order_id": "A1"}}]},
    {"tool_calls": [{"name": "crash_once", "args": {"note": "after lookup"}}]},
    {"content": "Order A1 was delivered."},
]


@pytest.mark.backend
@pytest.mark.timeout(240)
@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_a_sigkilled_agent_resumes_from_its_checkpoint_without_rerunning_a_finished_tool(
    store: str,
    tmp_path: Path,
    redis_server_url: str,
    worker_factory: list[WorkerProcess],
    request: pytest.FixtureRequest,
) -> None:
    project = None
    if store == "firestore":
        request.getfixturevalue("firestore_emulator")
        project = request.getfixturevalue("unique_project")
    run = OneWorker.prepare(
        "ai-crash",
        tmp_path,
        redis_server_url,
        worker_factory,
        [ai_tools.__name__],
        2.0,
        env={"CONVEYOR_TEST_REDIS_URL": redis_server_url},
        firestore_project=project,
    )
    service, worker, log_path = run.service, run.worker, run.log_path
    tools = [f"{TOOLS}.lookup_order", f"{TOOLS}.crash_once"]
    service.apply_workflow(TENANT, agent_workflow("ai-crash", SCRIPT, tools=tools))
    execution_id = ""
    try:
        worker.start()
        worker.wait_ready()
        with Reconciler(service):
            execution_id = service.start(TENANT, "ai-crash", {"order": "A1"}).execution.id
            execution = wait_ended(service, TENANT, execution_id, timeout=150)
        assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
        assert execution.output == {"answer": "Order A1 was delivered."}
        assert ai_tools.calls(execution_id, "crash_once") == 2, "the killed tool call runs again"
        assert ai_tools.calls(execution_id, "lookup_order") == 1, "the finished tool is not run again"
        step = service.list_steps(TENANT, execution_id)[0]
        assert step.output["turns"] == 3
    except BaseException:
        print(f"\n--- worker log tail ({log_path}) ---\n{tail(log_path, 80)}")
        raise
    finally:
        run.close()
        if execution_id:
            ai_tools.forget(execution_id)
