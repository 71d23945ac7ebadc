"""The retention part of the Store contract: the scan for expired executions and the purge.

After ``purge_execution`` reports done, nothing of the execution is readable through any
port (get, key lookup, listings, label search, counts, steps, events, item chunks, signals,
waiters, markers), its out-of-line payloads are gone too, and other executions and other
tenants are untouched. A purge is refused while the execution is active, and one cut short
(a small ``limit``, or a crash between calls) leaves the header readable and finishes on the
next call.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.adapters.store_sqlite import SqliteStore
from engine.errors import ExecutionActive
from engine.ports import Store, Transaction
from engine.records import ExecutionRecord, ItemChunkRecord, SignalRecord, WaiterRecord
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus, StepStatus
from tests.contract.test_store_contract import T0, A, B, event, execution, step

#: Every read of :func:`leftovers` that finds a populated execution.
EVERY_READ = {"header", "steps", "events", "by_key", "chunk", "signal", "waiters", "listed", "labelled"}
#: Large enough to be stored out of line by every backend (both keep 256 KiB inline at most).
BIG = "x" * (300 * 1024)


def finished(execution_id: str, tenant: str = A, expires_at: float | None = T0 + 10, **fields: Any) -> ExecutionRecord:
    values: dict[str, Any] = {"status": ExecutionStatus.SUCCEEDED, "finished_at": T0, "expires_at": expires_at}
    return execution(execution_id, tenant, **(values | fields))


def populate(store: Store, record: ExecutionRecord, steps: int = 3) -> None:
    """The execution with every kind of record an execution has, some of them out of line."""
    tenant, execution_id = record.tenant, record.id
    record.labels = {"team": "a"}
    record.output = {"report": BIG}

    def write(tx: Transaction) -> None:
        tx.put_execution(record)
        for n in range(steps):
            output = {"blob": BIG} if n == 0 else {"n": n}
            tx.put_step(step(f"s{n}", execution_id, tenant, status=StepStatus.SUCCEEDED, output=output, finished_at=T0))
            tx.add_event(event(f"e-{n:03d}", execution_id, tenant, data={"n": n}))
        tx.put_item_chunk(ItemChunkRecord(tenant, execution_id, "s1", 0, [1, 2, 3]))
        tx.put_signal(SignalRecord(tenant, execution_id, "s2", {"ok": True}, T0))
        tx.put_waiter(WaiterRecord(tenant, execution_id, "s2", "orders.paid", T0))

    store.atomic(write)
    assert store.mark_once(tenant, execution_id, "fanin:s1:1")


def leftovers(store: Store, tenant: str, execution_id: str) -> dict[str, Any]:
    """Everything of the execution any port still answers (empty once it is purged)."""
    found: dict[str, Any] = {
        "header": store.get_execution(tenant, execution_id),
        "steps": store.list_steps(tenant, execution_id),
        "events": store.list_events(tenant, execution_id).items,
        "by_key": store.read(lambda r: r.find_execution_by_key(tenant, f"key-{execution_id}")),
        "chunk": store.read(lambda r: r.get_item_chunk(tenant, execution_id, "s1", 0)),
        "signal": store.atomic(lambda tx: tx.get_signal(tenant, execution_id, "s2")),
        "waiters": [w for w in store.list_waiters(tenant, "orders.paid") if w.execution_id == execution_id],
        "listed": [e.id for e in store.list_executions(tenant, limit=100).items if e.id == execution_id],
        "labelled": [
            e.id
            for e in store.list_executions(tenant, ExecutionFilter(labels=(("team", "a"),)), limit=100).items
            if e.id == execution_id
        ],
    }
    return {name: value for name, value in found.items() if value}


def stored_payloads(store: Store, tenant: str) -> int:
    """Out-of-line payloads the backend holds for ``tenant`` (what a purge must not leave behind)."""
    if isinstance(store, SqliteStore):
        return int(
            store.run_read(lambda c: c.execute("SELECT COUNT(*) FROM payloads WHERE tenant = ?", (tenant,)).fetchone())[
                0
            ]
        )
    return sum(1 for _ in store.paths.tenant(tenant).collection("blobs").stream())  # type: ignore[attr-defined]


def purge_all(store: Store, tenant: str, execution_id: str, limit: int = 200) -> int:
    """Call ``purge_execution`` until it reports done; how many calls it took."""
    calls = 1
    while not store.purge_execution(tenant, execution_id, limit):
        calls += 1
        assert calls < 100, "the purge makes no progress"
    return calls


def test_a_purged_execution_is_gone_from_every_read(store: Store) -> None:
    populate(store, finished("ex-1", idempotency_key="key-ex-1"))
    populate(store, finished("ex-2", idempotency_key="key-ex-2"))
    assert set(leftovers(store, A, "ex-1")) == EVERY_READ
    payloads_of_two = stored_payloads(store, A)
    assert payloads_of_two >= 4  # each execution: the header's output and one step's output
    counted = store.count_executions(A)[ExecutionStatus.SUCCEEDED]

    assert purge_all(store, A, "ex-1") >= 1

    assert leftovers(store, A, "ex-1") == {}
    assert store.count_executions(A)[ExecutionStatus.SUCCEEDED] == counted - 1
    assert store.count_executions(A, ExecutionFilter(labels=(("team", "a"),)))[ExecutionStatus.SUCCEEDED] == 1
    assert stored_payloads(store, A) == payloads_of_two // 2
    assert store.mark_once(A, "ex-1", "fanin:s1:1")  # the marker went with it
    # the other execution is whole, its payloads included
    kept = store.get_execution(A, "ex-2")
    assert kept is not None and kept.output == {"report": BIG}
    assert store.list_steps(A, "ex-2")[0].output == {"blob": BIG}
    assert set(leftovers(store, A, "ex-2")) == EVERY_READ
    assert not store.mark_once(A, "ex-2", "fanin:s1:1")


def test_a_purge_touches_no_other_tenant(store: Store) -> None:
    populate(store, finished("ex-1", A))
    populate(store, finished("ex-1", B))
    purge_all(store, A, "ex-1")
    assert leftovers(store, A, "ex-1") == {}
    assert {"header", "steps", "events", "chunk", "signal", "waiters"} <= set(leftovers(store, B, "ex-1"))
    assert stored_payloads(store, A) == 0 and stored_payloads(store, B) >= 2


def test_an_idempotency_key_is_free_again_after_the_purge(store: Store) -> None:
    populate(store, finished("ex-1", idempotency_key="key-1"))
    purge_all(store, A, "ex-1")
    store.atomic(lambda tx: tx.put_execution(execution("ex-9", idempotency_key="key-1")))
    found = store.read(lambda r: r.find_execution_by_key(A, "key-1"))
    assert found is not None and found.id == "ex-9"


@pytest.mark.parametrize("status", [ExecutionStatus.RUNNING, ExecutionStatus.PAUSED])
def test_an_active_execution_is_never_purged(store: Store, status: ExecutionStatus) -> None:
    populate(store, execution("ex-1", status=status))
    with pytest.raises(ExecutionActive):
        store.purge_execution(A, "ex-1")
    assert {"header", "steps", "events", "chunk", "signal", "waiters"} <= set(leftovers(store, A, "ex-1"))


def test_a_purge_in_small_batches_keeps_the_header_until_the_end_and_is_resumable(store: Store) -> None:
    populate(store, finished("ex-1"), steps=7)
    assert not store.purge_execution(A, "ex-1", limit=2)
    # cut short here (a crash, or the end of a reconciler pass): the header still reaches the rest
    middle = leftovers(store, A, "ex-1")
    assert "header" in middle and "listed" in middle
    assert purge_all(store, A, "ex-1", limit=2) > 1
    assert leftovers(store, A, "ex-1") == {}
    assert stored_payloads(store, A) == 0


def test_purging_an_unknown_or_purged_execution_is_done_at_once(store: Store) -> None:
    assert store.purge_execution(A, "nope")
    populate(store, finished("ex-1"))
    purge_all(store, A, "ex-1")
    assert store.purge_execution(A, "ex-1")


def test_expired_executions_are_terminal_ones_past_their_expiry_of_every_tenant(store: Store) -> None:
    records = [
        finished("late", A, expires_at=T0 + 30),
        finished("soon", B, expires_at=T0 + 10, status=ExecutionStatus.FAILED),
        finished("later", A, expires_at=T0 + 100, status=ExecutionStatus.CANCELLED),
        finished("kept", A, expires_at=None),
        execution("running", A),
    ]

    def write(tx: Transaction) -> None:
        for record in records:
            tx.put_execution(record)

    store.atomic(write)
    assert [(e.tenant, e.id) for e in store.expired_executions(T0 + 50)] == [(B, "soon"), (A, "late")]
    assert [e.id for e in store.expired_executions(T0 + 50, limit=1)] == ["soon"]
    assert store.expired_executions(T0) == []
    assert {e.id for e in store.expired_executions(T0 + 1000)} == {"soon", "late", "later"}


def written_before_retention(store: Store, tenant: str, execution_id: str) -> None:
    """Make a stored header look as written before ``expires_at`` existed (no such field)."""
    if isinstance(store, SqliteStore):
        sql = "UPDATE executions SET doc = json_remove(doc, '$.expires_at') WHERE tenant = ? AND id = ?"
        store.run_write(lambda c: c.execute(sql, (tenant, execution_id)))
        return
    from google.cloud import firestore

    store.paths.execution(tenant, execution_id).update({"expires_at": firestore.DELETE_FIELD})  # type: ignore[attr-defined]


def test_backfill_gives_executions_ended_before_retention_their_expiry(store: Store) -> None:
    records = [
        finished("old", A, expires_at=None, finished_at=T0 + 5),
        finished("old-b", B, expires_at=None, finished_at=T0 + 6, status=ExecutionStatus.FAILED),
        finished("child", A, expires_at=None, parent={"execution_id": "old", "step_key": "sub", "depth": 1}),
        finished("forever", A, expires_at=None),  # written since: its null expiry is a decision
        finished("set", A, expires_at=T0 + 99),
        execution("running", A),
    ]

    def write(tx: Transaction) -> None:
        for record in records:
            tx.put_execution(record)

    store.atomic(write)
    for tenant, execution_id in ((A, "old"), (B, "old-b"), (A, "child"), (A, "set"), (A, "running")):
        written_before_retention(store, tenant, execution_id)
    assert store.get_execution(A, "old").expires_at is None  # type: ignore[union-attr]

    def retention(record: ExecutionRecord) -> float | None:
        return None if record.parent else 100.0

    assert store.backfill_expiry(retention) == 3  # old, old-b and the one whose field was removed
    expiries = {(t, i): store.get_execution(t, i).expires_at for t, i in [(A, "old"), (B, "old-b"), (A, "child")]}  # type: ignore[union-attr]
    assert expiries == {(A, "old"): T0 + 105, (B, "old-b"): T0 + 106, (A, "child"): None}
    assert store.get_execution(A, "forever").expires_at is None  # type: ignore[union-attr]
    assert store.get_execution(A, "running").expires_at is None  # type: ignore[union-attr]
    assert store.get_execution(A, "set").expires_at == T0 + 100  # type: ignore[union-attr]
    assert store.backfill_expiry(retention) == 0  # idempotent
