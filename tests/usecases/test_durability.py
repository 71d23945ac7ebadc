"""What must survive a power loss is synced before anyone is told; the engine's own progress waits.

Over each real store: a start (acknowledged to its caller) and an execution's end are made
durable before they are reported; a claim and the outcome of a step that does not end the
execution are committed with ``durable=False`` (recovery redoes them after a power loss, as
after a worker crash) and cause no sync.
"""

from __future__ import annotations

from engine.states import ExecutionStatus
from tests.usecases.test_usecases import task

TWO_STEPS = {
    "name": "two",
    "steps": [task("first", "echo", value="a"), task("second", "echo", ["first"], value="b")],
}


class DurabilityLog:
    """Each commit's ``durable`` flag and each ``sync()``, in order, around the real store."""

    def __init__(self, harness, monkeypatch):
        self.calls: list[str] = []
        real_atomic, real_sync = harness.store.atomic, harness.store.sync

        def atomic(fn, *, durable=True):
            result = real_atomic(fn, durable=durable)
            self.calls.append("durable" if durable else "progress")
            return result

        def sync():
            real_sync()
            self.calls.append("sync")

        monkeypatch.setattr(harness.store, "atomic", atomic)
        monkeypatch.setattr(harness.store, "sync", sync)


def test_a_start_is_durable_and_step_progress_is_not_until_the_execution_ends(h, monkeypatch):
    h.apply(TWO_STEPS)
    log = DurabilityLog(h, monkeypatch)

    execution_id = h.start("two")
    assert log.calls == ["durable"]

    log.calls.clear()
    h.drain()

    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    # The first step's outcome (which claims the second) waits for no disk; the second's ends
    # the execution, so it is synced before the end is published.
    assert log.calls[-2:] == ["progress", "sync"]
    assert "durable" not in log.calls
    assert log.calls.count("sync") == 1


def test_a_failed_execution_is_synced_when_it_ends(h, monkeypatch):
    h.apply({"name": "broken", "steps": [{"id": "boom", "type": "fail", "with": {"message": "no"}}]})
    log = DurabilityLog(h, monkeypatch)

    execution_id = h.start("broken")
    h.drain()

    assert h.execution(execution_id).status is ExecutionStatus.FAILED
    assert log.calls[-2:] == ["progress", "sync"]
