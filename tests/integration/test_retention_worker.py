"""Execution retention end to end: executions with a logging step and an ``ai.agent`` step that
remembers a note run in a real Celery worker (Redis broker, scripted ``fake:`` models, real
LangGraph checkpoints and memory); once the workflow's one-hour retention has passed for one of
them, the reconciler (a clock an hour later, no sleeping) deletes it, with its step logs,
checkpointed thread, memory note and history, and the other execution keeps all of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from engine.adapters.ai_memory import TenantStore, sqlite_memory
from engine.bootstrap import build_agent_data, build_step_log_store
from engine.ports import StepLogStore
from engine.service import Service
from engine.states import ExecutionStatus
from tests.integration.conftest import TENANT, CountingRunner, World

pytestmark = pytest.mark.backend

HOUR = 3600.0


def _workflow(key: str) -> dict[str, Any]:
    """Logs a few lines, then an agent remembers a note under ``key`` (kept one hour)."""
    return {
        "name": f"keeper-{key}",
        "retention": "1h",
        "models": {
            "writer": {
                "script": [
                    {"tool_calls": [{"name": "remember", "args": {"key": key, "note": f"note of {key}"}}]},
                    {"content": "remembered"},
                ]
            }
        },
        "steps": [
            {
                "id": "talk",
                "type": "task",
                "with": {"function": "tests.unit.fixtures.logfns.chatty", "args": {"lines": 3}},
            },
            {
                "id": "agent",
                "type": "ai.agent",
                "needs": ["talk"],
                "with": {"model": "fake:writer", "prompt": "remember", "memory": {"namespace": ["accounts"]}},
            },
        ],
    }


class Later:
    """The system clock moved ``by`` seconds ahead."""

    def __init__(self, by: float) -> None:
        self.by = by

    def now(self) -> float:
        return time.time() + self.by


def _logged(logs: StepLogStore, execution_id: str) -> int:
    return len(logs.list_step_logs(TENANT, execution_id, "talk"))


def _wait_for_logs(logs: StepLogStore, execution_id: str) -> None:
    """The shipping thread stores an attempt's logs a moment after the step ends."""
    deadline = time.monotonic() + 10
    while not _logged(logs, execution_id):
        assert time.monotonic() < deadline, f"no logs of {execution_id} were stored"
        time.sleep(0.1)


def _memory(world: World) -> Any:
    if world.settings.store == "firestore":
        from engine.adapters.memory_firestore import FirestoreMemoryStore

        return TenantStore(FirestoreMemoryStore(world.store.client), TENANT)  # type: ignore[attr-defined]
    checkpoints = world.settings.resolved_ai_checkpoint_path()
    return TenantStore(sqlite_memory(str(checkpoints.with_name(f"{checkpoints.stem}-memory.db"))), TENANT)


def _thread_exists(world: World, execution_id: str) -> bool:
    thread = {"configurable": {"thread_id": f"{TENANT}/{execution_id}/agent"}}
    if world.settings.store == "firestore":
        from engine.adapters.checkpoint_firestore import FirestoreSaver

        return FirestoreSaver(world.store.client).get_tuple(thread) is not None  # type: ignore[attr-defined, arg-type]
    import sqlite3

    from langgraph.checkpoint.sqlite import SqliteSaver

    with sqlite3.connect(str(world.settings.resolved_ai_checkpoint_path())) as conn:
        return SqliteSaver(conn).get_tuple(thread) is not None  # type: ignore[arg-type]


@pytest.mark.parametrize("store", ["sqlite", "firestore"])
def test_the_reconciler_deletes_an_expired_agent_execution_and_everything_it_left(
    store: str, make_world: Callable[..., World]
) -> None:
    world = make_world(store)
    logs = build_step_log_store(world.settings, world.store)
    # the worker's service captures step logs (a World's does not by default)
    world.service = Service(
        world.store, world.dispatcher, world.events, world.settings, step_logs=logs, decisions=world.decisions
    )
    world.runner = CountingRunner(world.service)
    world.apply(_workflow("first"))
    world.apply(_workflow("second"))
    with world.worker():
        first = world.start("keeper-first")
        assert world.wait(first).status is ExecutionStatus.SUCCEEDED, world.wait(first).error
        time.sleep(1.0)  # the second ends a second later: only the first is past the cut below
        second = world.start("keeper-second")
        assert world.wait(second).status is ExecutionStatus.SUCCEEDED, world.wait(second).error
    for execution_id in (first, second):
        _wait_for_logs(logs, execution_id)
        assert _thread_exists(world, execution_id)
    memory = _memory(world)
    assert {item.key for item in memory.search(("accounts",))} == {"first", "second"}
    second_ends = world.service.get_execution(TENANT, second).expires_at
    first_ends = world.service.get_execution(TENANT, first).expires_at
    assert first_ends is not None and second_ends is not None and first_ends < second_ends

    reconciler = Service(
        world.store,
        world.dispatcher,
        world.events,
        world.settings,
        clock=Later(first_ends - time.time() + 0.5),  # past the first's hour, not the second's
        step_logs=logs,
        agent_data=build_agent_data(world.settings, world.store),
    )
    report = reconciler.reconcile()
    assert report.purged_executions == 1, report

    assert world.store.get_execution(TENANT, first) is None
    assert world.store.list_steps(TENANT, first) == [] and world.store.list_events(TENANT, first).items == []
    assert _logged(logs, first) == 0
    assert not _thread_exists(world, first)
    assert [item.key for item in memory.search(("accounts",))] == ["second"]
    # the other execution keeps everything
    assert world.store.get_execution(TENANT, second) is not None
    assert len(world.store.list_steps(TENANT, second)) == 2 and world.store.list_events(TENANT, second).items
    assert _logged(logs, second) == 1 and _thread_exists(world, second)
    assert second_ends - world.service.get_execution(TENANT, second).finished_at == pytest.approx(HOUR)  # type: ignore[operator]
