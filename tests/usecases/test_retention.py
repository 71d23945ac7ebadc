"""Execution retention over each real store, with a manual clock: when an execution expires,
the reconciler deleting it with everything derived from it (children, step logs, agent
checkpoints and memory notes), and explicit deletion."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from engine.adapters.ai_memory import TenantStore, sqlite_memory
from engine.errors import ExecutionActive, NotFound, StoreUnavailable, TransitionRefused
from engine.migrations import migrate
from engine.records import StepLogRecord
from engine.states import ExecutionStatus
from tests.contract.test_store_retention import written_before_retention
from tests.harness import Harness

DAY = 86_400.0

QUICK = {"name": "quick", "steps": [{"id": "only", "type": "transform", "with": {"value": "${input}"}}]}
FAILING = {"name": "failing", "steps": [{"id": "boom", "type": "fail", "with": {"message": "no"}}]}
HOLDING = {"name": "holding", "steps": [{"id": "hold", "type": "wait", "with": {"duration": "1h"}}]}
CHILD = {"name": "child", "steps": [{"id": "only", "type": "transform", "with": {"value": 2}}]}
PARENT = {
    "name": "parent",
    "retention": "1h",
    "steps": [{"id": "sub", "type": "subworkflow", "with": {"workflow": "child", "input": {}}}],
}


def _run(h: Harness, workflow: str, input: Any = None) -> str:
    execution_id = h.start(workflow, input)
    h.drain()
    return execution_id


def _gone(h: Harness, execution_id: str, tenant: str = "t1") -> bool:
    return (
        h.store.get_execution(tenant, execution_id) is None
        and h.store.list_steps(tenant, execution_id) == []
        and h.store.list_events(tenant, execution_id).items == []
    )


def test_an_ended_execution_expires_after_the_default_or_its_workflows_retention(make_harness) -> None:
    h = make_harness(execution_retention_days=30)
    h.apply(QUICK)
    h.apply({**QUICK, "name": "brief", "retention": "2h"})
    h.apply({**QUICK, "name": "forever", "retention": 0})
    default, brief, forever = _run(h, "quick"), _run(h, "brief"), _run(h, "forever")
    now = h.clock.now()
    assert h.execution(default).expires_at == pytest.approx(now + 30 * DAY)
    assert h.execution(brief).expires_at == pytest.approx(now + 2 * 3600)
    assert h.execution(forever).expires_at is None
    h.apply(HOLDING)
    waiting = h.start("holding")
    h.drain()
    assert h.execution(waiting).expires_at is None


def test_retention_zero_keeps_executions_forever(make_harness) -> None:
    h = make_harness(execution_retention_days=0)
    h.apply(QUICK)
    kept = _run(h, "quick")
    assert h.execution(kept).expires_at is None
    h.clock.advance(10_000 * DAY)
    assert h.service.reconcile().purged_executions == 0
    assert h.execution(kept).status is ExecutionStatus.SUCCEEDED


def test_a_retry_clears_the_expiry_and_an_expired_execution_cannot_be_retried(make_harness) -> None:
    h = make_harness(execution_retention_days=1)
    h.apply(FAILING)
    failed = _run(h, "failing")
    assert h.execution(failed).expires_at is not None
    h.service.retry("t1", failed)
    assert h.execution(failed).expires_at is None  # running again: never deleted
    h.drain()
    h.clock.advance(2 * DAY)
    with pytest.raises(TransitionRefused, match="retention"):
        h.service.retry("t1", failed)


def test_the_reconciler_deletes_expired_executions_only(make_harness) -> None:
    h = make_harness(execution_retention_days=1)
    h.apply(QUICK)
    h.apply({**QUICK, "name": "longer", "retention": "3d"})
    h.apply(HOLDING)
    expiring, longer = _run(h, "quick", {"n": 1}), _run(h, "longer")
    waiting = h.start("holding")
    h.drain()
    h.clock.advance(DAY + 1)
    report = h.service.reconcile()
    assert report.purged_executions == 1 and report.complete
    assert _gone(h, expiring)
    assert h.execution(longer).status is ExecutionStatus.SUCCEEDED
    assert h.store.get_execution("t1", waiting) is not None  # waiting on its timer: never deleted
    assert [e.id for e in h.service.list_executions("t1").items if e.id == expiring] == []


def test_a_child_is_kept_as_long_as_its_parent_and_deleted_with_it(make_harness) -> None:
    h = make_harness(execution_retention_days=1)
    h.apply(CHILD)
    h.apply(PARENT)
    parent = _run(h, "parent")
    assert h.execution(parent).status is ExecutionStatus.SUCCEEDED, h.execution(parent).error
    child = h.store.read(lambda r: r.find_execution_by_key("t1", f"{parent}/sub"))
    assert child is not None and child.expires_at is None
    h.clock.advance(3601)
    assert h.service.reconcile().purged_executions == 1
    assert _gone(h, parent) and _gone(h, child.id)


def test_delete_refuses_unknown_and_active_executions_and_deletes_a_finished_one(make_harness) -> None:
    h = make_harness(step_logs=True)
    h.apply(QUICK)
    h.apply(HOLDING)
    done, waiting = _run(h, "quick"), h.start("holding")
    h.drain()
    logs = h.service.step_logs
    assert logs is not None
    logs.put_step_logs([StepLogRecord("t1", done, "only", 1, 1, [{"seq": 0, "message": "hi"}], 0, 1.0, 2.0)])
    with pytest.raises(NotFound):
        h.service.delete_execution("t1", "nope")
    with pytest.raises(NotFound):
        h.service.delete_execution("t2", done)  # another tenant's
    with pytest.raises(ExecutionActive):
        h.service.delete_execution("t1", waiting)
    h.service.delete_execution("t1", done)
    assert _gone(h, done)
    assert logs.list_step_logs("t1", done, "only") == []
    assert h.store.get_execution("t1", waiting) is not None


# ----------------------------------------------------------------- AI: checkpoints and memory

WRITER = {
    "name": "remembering",
    "retention": "1h",
    "inputs": {"type": "object", "properties": {"key": {"type": "string"}}},
    "models": {
        "writer": {
            "script": [
                {"tool_calls": [{"name": "remember", "args": {"key": "${input.key}", "note": "noted"}}]},
                {"content": "done"},
            ]
        }
    },
    "steps": [
        {
            "id": "agent",
            "type": "ai.agent",
            "with": {"model": "fake:writer", "prompt": "remember", "memory": {"namespace": ["customers", "c1"]}},
        }
    ],
}


def _script_for(key: str) -> dict[str, Any]:
    """The writer workflow whose scripted model remembers under ``key`` (scripts are not templated)."""
    definition = json.loads(json.dumps(WRITER).replace("${input.key}", key))
    definition["name"] = f"remembering-{key}"
    return definition


def test_an_expired_agent_execution_loses_its_thread_and_notes_and_another_keeps_its_own(tmp_path) -> None:
    h = Harness(tmp_path)
    h.apply(_script_for("first"))
    first = _run(h, "remembering-first")
    h.clock.advance(1800)
    h.apply(_script_for("second"))
    second = _run(h, "remembering-second")
    for execution_id in (first, second):
        assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED, h.execution(execution_id).error
    memory = TenantStore(sqlite_memory(str(tmp_path / "core-checkpoints-memory.db")), "t1")
    assert {item.key for item in memory.search(("customers", "c1"))} == {"first", "second"}

    h.clock.advance(1801)  # the first is past its hour, the second is not
    assert h.service.reconcile().purged_executions == 1

    assert _gone(h, first)
    assert [item.key for item in memory.search(("customers", "c1"))] == ["second"]
    with pytest.raises(AssertionError, match="no checkpointed thread"):
        h.agent_messages(first)
    assert h.agent_messages(second)  # the other execution's thread is whole
    assert h.history(second)


def test_a_store_failure_while_deleting_is_counted_and_left_to_the_next_pass(make_harness, monkeypatch) -> None:
    h = make_harness(execution_retention_days=1)
    h.apply(QUICK)
    first, second = _run(h, "quick", {"n": 1}), _run(h, "quick", {"n": 2})
    h.clock.advance(DAY + 1)
    purge = h.store.purge_execution

    def failing_for_first(tenant: str, execution_id: str, limit: int = 200) -> bool:
        if execution_id == first:
            raise StoreUnavailable("the store went away")
        return purge(tenant, execution_id, limit)

    monkeypatch.setattr(h.store, "purge_execution", failing_for_first)
    report = h.service.reconcile()
    assert (report.purged_executions, report.failed) == (1, 1)
    assert _gone(h, second) and h.store.get_execution("t1", first) is not None

    def unavailable(before: float, limit: int = 200) -> list[Any]:
        raise StoreUnavailable("the store went away")

    monkeypatch.setattr(h.store, "expired_executions", unavailable)
    assert (h.service.reconcile().failed, h.store.get_execution("t1", first) is not None) == (1, True)
    monkeypatch.undo()
    assert h.service.reconcile().purged_executions == 1
    assert _gone(h, first)


def test_migration_3_gives_executions_that_ended_before_retention_their_expiry(make_harness, monkeypatch) -> None:
    h = make_harness()
    h.apply(QUICK)
    h.apply({**QUICK, "name": "brief", "retention": "2h"})
    old, brief = _run(h, "quick"), _run(h, "brief")
    for execution_id in (old, brief):
        written_before_retention(h.store, "t1", execution_id)
    h.store.set_schema_version(2)
    monkeypatch.setenv("CONVEYOR_EXECUTION_RETENTION_DAYS", "10")  # as `conveyor migrate` runs with
    # The harness clock is in 2023: both executions ended years before this upgrade, so their
    # retention counts from the upgrade (nothing is deleted at once), not from when they ended.
    before = time.time()
    assert [m.version for m in migrate(h.store)] == [3]
    after = time.time()
    expiries = h.execution(old).expires_at, h.execution(brief).expires_at
    assert before + 10 * DAY <= expiries[0] <= after + 10 * DAY
    assert before + 7200 <= expiries[1] <= after + 7200
    h.clock.value = before  # the first pass after the upgrade deletes nothing
    assert h.service.reconcile().purged_executions == 0
    h.clock.value = after + 7201
    assert h.service.reconcile().purged_executions == 1
    assert _gone(h, brief) and h.store.get_execution("t1", old) is not None


def test_migration_3_counts_from_the_end_of_an_execution_that_ended_after_the_upgrade_began(
    make_harness, monkeypatch
) -> None:
    h = make_harness()
    h.clock.value = time.time() + 3600  # ended "later" than the migration's own clock reading
    h.apply(QUICK)
    recent = _run(h, "quick")
    written_before_retention(h.store, "t1", recent)
    h.store.set_schema_version(2)
    monkeypatch.setenv("CONVEYOR_EXECUTION_RETENTION_DAYS", "10")
    assert [m.version for m in migrate(h.store)] == [3]
    assert h.execution(recent).expires_at == pytest.approx(h.execution(recent).finished_at + 10 * DAY)
