"""The Store contract: every backend must pass this file unchanged.

Each test gets a fresh, empty ``store`` (see conftest.py). Records are built by the small
factories below with fixed timestamps, so every assertion is deterministic.

Where ``engine.ports`` leaves a choice open, the contract pins one answer:
- ``list_steps`` is ordered by step key;
- ``list_executions`` treats ``created_after`` as inclusive and ``created_before`` as exclusive;
- ``list_events(...).next_cursor`` is the id of the page's last event (it is passed as ``after``);
- ``add_event`` with an id already stored keeps the first version.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from engine.errors import AlreadyExists, InvalidRequest, NotFound
from engine.ports import DUE_FIELD, Reads, Store, Transaction
from engine.records import (
    SCHEMA_VERSION,
    ApiKeyRecord,
    EventRecord,
    ExecutionRecord,
    Page,
    StepRecord,
    TriggerRecord,
    WorkflowVersionRecord,
)
from engine.search import ExecutionFilter
from engine.states import STEP_ACTIVE, ExecutionStatus, StepStatus

A, B = "tenant-a", "tenant-b"
T0 = 1_700_000_000.0

Record = WorkflowVersionRecord | ExecutionRecord | StepRecord | EventRecord | TriggerRecord | ApiKeyRecord


# factories


def workflow(name: str = "orders", version: int = 1, tenant: str = A, **fields: Any) -> WorkflowVersionRecord:
    definition = {"name": name, "steps": [{"id": "fetch", "type": "http", "with": {"url": "https://x"}}]}
    values: dict[str, Any] = {
        "definition": definition,
        "digest": f"sha256:{name}:{version}",
        "created_at": T0 + version,
    }
    return WorkflowVersionRecord(tenant=tenant, name=name, version=version, **(values | fields))


def execution(execution_id: str = "ex-1", tenant: str = A, **fields: Any) -> ExecutionRecord:
    values: dict[str, Any] = {
        "workflow": "orders",
        "version": 1,
        "status": ExecutionStatus.RUNNING,
        "input": {"order_id": "o-1"},
        "created_at": T0,
        "updated_at": T0,
    }
    return ExecutionRecord(id=execution_id, tenant=tenant, **(values | fields))


def step(key: str = "fetch", execution_id: str = "ex-1", tenant: str = A, **fields: Any) -> StepRecord:
    values: dict[str, Any] = {"step_id": key.split("[")[0], "status": StepStatus.QUEUED, "created_at": T0}
    return StepRecord(execution_id=execution_id, tenant=tenant, key=key, **(values | fields))


def event(event_id: str, execution_id: str = "ex-1", tenant: str = A, **fields: Any) -> EventRecord:
    values: dict[str, Any] = {"type": "step.status", "at": T0}
    return EventRecord(id=event_id, execution_id=execution_id, tenant=tenant, **(values | fields))


def trigger(trigger_id: str = "tr-1", tenant: str = A, **fields: Any) -> TriggerRecord:
    values: dict[str, Any] = {"workflow": "orders", "kind": "schedule", "spec": {"cron": "*/5 * * * *"}}
    return TriggerRecord(id=trigger_id, tenant=tenant, **(values | fields))


def api_key(key_id: str = "key-1", tenant: str = A, **fields: Any) -> ApiKeyRecord:
    values: dict[str, Any] = {
        "role": "operator",
        "key_hash": f"hash-{tenant}-{key_id}",
        "name": "ci",
        "created_at": T0,
    }
    return ApiKeyRecord(id=key_id, tenant=tenant, **(values | fields))


def put(tx: Transaction, record: Record) -> None:
    """Buffer any transactional record in ``tx``."""
    if isinstance(record, WorkflowVersionRecord):
        tx.put_workflow_version(record)
    elif isinstance(record, ExecutionRecord):
        tx.put_execution(record)
    elif isinstance(record, StepRecord):
        tx.put_step(record)
    elif isinstance(record, EventRecord):
        tx.add_event(record)
    else:
        raise TypeError(f"{type(record).__name__} is not written through a transaction")


def save(store: Store, *records: Record) -> None:
    """Write ``records``: transactional ones in one transaction, the others directly."""
    buffered = [r for r in records if not isinstance(r, TriggerRecord | ApiKeyRecord)]

    def write(tx: Transaction) -> None:
        for record in buffered:
            put(tx, record)

    if buffered:
        store.atomic(write)
    for record in records:
        if isinstance(record, TriggerRecord):
            store.put_trigger(record)
        elif isinstance(record, ApiKeyRecord):
            store.put_api_key(record)


def read(store: Store, fn: Callable[[Transaction], Any]) -> Any:
    """Run a read inside a transaction."""
    return store.atomic(fn)


def collect(fetch: Callable[[str | None], Page], limit: int) -> list[Any]:
    """Follow ``next_cursor`` to the end; every page but the last must be full."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(1000):
        page = fetch(cursor)
        assert len(page.items) <= limit
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        assert len(page.items) == limit, "a page before the last one must be full"
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


class Boom(Exception):
    """Raised inside a transaction to force a rollback."""


# round trips


def test_workflow_version_round_trips(store: Store) -> None:
    first = workflow(version=1)
    second = workflow(version=2, definition={"nested": {"list": [1, 2.5, None, True, {"x": "y"}]}})
    save(store, first, second)

    assert store.get_workflow_version(A, "orders", 1) == first
    assert store.get_workflow_version(A, "orders", 2) == second
    assert store.get_workflow_version(A, "orders") == second
    assert store.get_workflow_version(A, "orders", 3) is None
    assert store.get_workflow_version(A, "missing") is None
    assert read(store, lambda tx: tx.latest_workflow_version(A, "orders")) == second
    assert read(store, lambda tx: tx.latest_workflow_version(A, "missing")) is None


def test_execution_round_trips_with_every_field_set(store: Store) -> None:
    record = execution(
        status=ExecutionStatus.PAUSED,
        input={"order": {"items": [{"sku": "a", "qty": 2}], "note": "ünïcödé ✓"}, "flags": []},
        output=[1, "two", {"three": 3.0}],
        error={"type": "Boom", "message": "failed", "details": {"attempt": 3}},
        deadline_at=T0 + 60,
        finished_at=T0 + 30,
        idempotency_key="client-key",
        run=2,
        parent={"execution_id": "ex-0", "step_key": "sub"},
        labels={"team": "payments"},
    )
    save(store, record)

    loaded = store.get_execution(A, "ex-1")
    assert loaded == record
    assert loaded is not None and type(loaded.status) is ExecutionStatus
    assert read(store, lambda tx: tx.get_execution(A, "ex-1")) == record
    assert read(store, lambda tx: tx.find_execution_by_key(A, "client-key")) == record


def test_executions_are_found_by_several_keys_at_once(store: Store) -> None:
    first, second = execution("ex-1", idempotency_key="k-1"), execution("ex-2", idempotency_key="k-2")
    save(store, first)
    save(store, second)
    save(store, execution("ex-3", tenant=B, idempotency_key="k-1"))

    def find(tx: Transaction) -> dict[str, ExecutionRecord]:
        tx.put_execution(execution("ex-4", idempotency_key="k-4"))
        return tx.find_executions_by_keys(A, ["k-1", "k-2", "k-4", "absent"])

    found = store.atomic(find)
    assert sorted(found) == ["k-1", "k-2", "k-4"]
    assert (found["k-1"], found["k-2"], found["k-4"].id) == (first, second, "ex-4")
    assert {key: e.id for key, e in read(store, lambda tx: tx.find_executions_by_keys(B, ["k-1", "k-2"])).items()} == {
        "k-1": "ex-3"
    }
    assert read(store, lambda tx: tx.find_executions_by_keys(A, [])) == {}


def test_execution_round_trips_with_defaults_and_nones(store: Store) -> None:
    record = execution(input=None)
    save(store, record)

    assert store.get_execution(A, "ex-1") == record
    assert store.get_execution(A, "missing") is None
    assert read(store, lambda tx: tx.get_execution(A, "missing")) is None
    assert read(store, lambda tx: tx.find_execution_by_key(A, "missing")) is None


@pytest.mark.parametrize("status", list(StepStatus))
def test_step_round_trips_in_every_status(store: Store, status: StepStatus) -> None:
    record = step(
        "ship[3]",
        status=status,
        attempt=2,
        lease_epoch=7,
        lease_until=T0 + 30,
        dispatched_at=T0 + 1,
        wake_at=T0 + 90,
        queue="shipping",
        index=3,
        item={"sku": "a"},
        items=[{"sku": "a"}, None, 3],
        item_count=3,
        output={"tracking": "T-1"},
        error={"type": "Timeout"},
        wait={"event": "order.paid", "match": "event.id == 1"},
        started_at=T0 + 2,
        finished_at=T0 + 3,
        run=2,
    )
    save(store, record)

    assert store.list_steps(A, "ex-1") == [record]
    loaded = read(store, lambda tx: tx.get_steps(A, "ex-1", ["ship[3]"]))
    assert loaded == {"ship[3]": record}
    assert type(loaded["ship[3]"].status) is StepStatus


def test_step_round_trips_with_defaults(store: Store) -> None:
    record = step()
    save(store, record)

    assert store.list_steps(A, "ex-1") == [record]
    assert read(store, lambda tx: tx.get_steps(A, "ex-1", [record.key])) == {record.key: record}


def test_event_trigger_and_api_key_round_trip(store: Store) -> None:
    full_event = event(
        "e-1", step_key="fetch", status="SUCCEEDED", attempt=1, data={"output": {"a": [1, 2]}, "n": None}
    )
    bare_event = event("e-2")
    schedule = trigger(enabled=False, input={"region": "eu"}, created_at=T0, updated_at=T0 + 1, next_fire_at=T0 + 300)
    key = api_key(expires_at=T0 + 86400, revoked=True)
    save(store, full_event, bare_event, schedule, key)

    assert store.list_events(A, "ex-1").items == [full_event, bare_event]
    assert store.get_trigger(A, "tr-1") == schedule
    assert store.get_trigger(A, "missing") is None
    assert store.find_api_key(key.key_hash) == key
    assert store.find_api_key("unknown-hash") is None
    assert store.list_api_keys(A) == [key]


def test_a_700_kib_step_output_round_trips(store: Store) -> None:
    big = {"rows": [{"id": i, "text": "x" * 700} for i in range(1000)]}
    record = step(status=StepStatus.RUNNING, lease_until=T0, output=big)
    save(store, record)

    assert store.list_steps(A, "ex-1") == [record]
    assert read(store, lambda tx: tx.get_steps(A, "ex-1", ["fetch"])) == {"fetch": record}
    assert read(store, lambda tx: tx.get_steps(A, "ex-1", [record.key])) == {record.key: record}
    assert store.due_steps(StepStatus.RUNNING, T0) == [record]


def test_a_large_output_can_be_replaced_by_a_small_one_and_back(store: Store) -> None:
    big = step(output="y" * 700 * 1024)
    small = replace(big, output={"ok": True})
    save(store, big)
    save(store, small)
    assert store.list_steps(A, "ex-1") == [small]

    save(store, big)
    assert store.list_steps(A, "ex-1") == [big]


# transactions


def test_atomic_returns_the_value_of_fn(store: Store) -> None:
    assert store.atomic(lambda tx: 42) == 42


def test_reads_inside_a_transaction_see_its_own_writes(store: Store) -> None:
    stored = step("fetch", status=StepStatus.RUNNING)
    save(store, execution(), stored, workflow(version=1))

    def work(tx: Transaction) -> None:
        header = replace(execution(), status=ExecutionStatus.SUCCEEDED, idempotency_key="k-1")
        tx.put_execution(header)
        assert tx.get_execution(A, "ex-1") == header
        assert tx.find_execution_by_key(A, "k-1") == header

        done = replace(stored, status=StepStatus.SUCCEEDED, output={"v": 1})
        added = step("charge")
        tx.put_step(done)
        tx.put_step(added)
        assert tx.get_steps(A, "ex-1", ["fetch", "charge", "absent"]) == {"fetch": done, "charge": added}

        newer = workflow(version=2)
        tx.put_workflow_version(newer)
        assert tx.latest_workflow_version(A, "orders") == newer

    store.atomic(work)
    assert store.get_execution(A, "ex-1") == replace(
        execution(), status=ExecutionStatus.SUCCEEDED, idempotency_key="k-1"
    )
    assert [s.key for s in store.list_steps(A, "ex-1")] == ["charge", "fetch"]


def test_a_record_changed_after_put_is_not_changed_in_the_transaction(store: Store) -> None:
    def work(tx: Transaction) -> ExecutionRecord | None:
        record = execution(labels={"a": "1"})
        tx.put_execution(record)
        record.labels["a"] = "changed"
        return tx.get_execution(A, "ex-1")

    assert store.atomic(work) == execution(labels={"a": "1"})
    assert store.get_execution(A, "ex-1") == execution(labels={"a": "1"})


def test_an_exception_in_fn_rolls_everything_back(store: Store) -> None:
    save(store, execution("ex-0"))
    error = Boom("stop")

    def work(tx: Transaction) -> None:
        tx.put_workflow_version(workflow())
        tx.put_execution(execution(idempotency_key="k"))
        tx.put_execution(replace(execution("ex-0"), status=ExecutionStatus.FAILED))
        tx.put_step(step())
        tx.add_event(event("e-1"))
        raise error

    with pytest.raises(Boom) as raised:
        store.atomic(work)

    assert raised.value is error
    assert store.get_workflow_version(A, "orders") is None
    assert store.get_execution(A, "ex-1") is None
    assert store.get_execution(A, "ex-0") == execution("ex-0")
    assert store.list_steps(A, "ex-1") == []
    assert store.list_events(A, "ex-1").items == []
    assert read(store, lambda tx: tx.find_execution_by_key(A, "k")) is None


def test_an_idempotency_key_belongs_to_one_execution_per_tenant(store: Store) -> None:
    first = execution("ex-1", idempotency_key="order-o-1")
    save(store, first, step("fetch", "ex-1"))

    with pytest.raises(AlreadyExists):
        save(
            store,
            execution("ex-2", idempotency_key="order-o-1"),
            step("fetch", "ex-2"),
            event("e-1", "ex-2"),
        )

    assert store.get_execution(A, "ex-2") is None
    assert store.list_steps(A, "ex-2") == []
    assert store.list_events(A, "ex-2").items == []
    assert read(store, lambda tx: tx.find_execution_by_key(A, "order-o-1")) == first

    # The owner may rewrite its header with the same key, and another tenant may use the key.
    updated = replace(first, status=ExecutionStatus.SUCCEEDED, output={"done": True})
    other = execution("ex-2", tenant=B, idempotency_key="order-o-1")
    save(store, updated, other)
    assert read(store, lambda tx: tx.find_execution_by_key(A, "order-o-1")) == updated
    assert read(store, lambda tx: tx.find_execution_by_key(B, "order-o-1")) == other


def test_a_key_given_up_in_a_transaction_is_not_found_in_it(store: Store) -> None:
    save(store, execution(idempotency_key="old"))

    def rekey(tx: Transaction) -> list[ExecutionRecord | None]:
        tx.put_execution(execution(idempotency_key="new"))
        return [tx.find_execution_by_key(A, "old"), tx.find_execution_by_key(A, "new")]

    assert store.atomic(rekey) == [None, execution(idempotency_key="new")]


def test_two_executions_with_one_key_in_one_transaction_fail(store: Store) -> None:
    with pytest.raises(AlreadyExists):
        save(store, execution("ex-1", idempotency_key="k"), execution("ex-2", idempotency_key="k"))

    assert store.get_execution(A, "ex-1") is None
    assert store.get_execution(A, "ex-2") is None


def test_a_taken_workflow_version_number_fails_and_writes_nothing(store: Store) -> None:
    original = workflow(version=1)
    save(store, original)

    with pytest.raises(AlreadyExists):
        save(store, workflow(version=1, digest="sha256:other"), execution())

    assert store.get_workflow_version(A, "orders", 1) == original
    assert store.get_execution(A, "ex-1") is None
    save(store, workflow(version=1, tenant=B))
    assert store.get_workflow_version(B, "orders", 1) == workflow(version=1, tenant=B)


def test_headers_and_steps_are_replaced_by_put(store: Store) -> None:
    save(store, execution(), step())
    header = replace(execution(), status=ExecutionStatus.CANCELLED, finished_at=T0 + 5)
    claimed = replace(step(), status=StepStatus.RUNNING, lease_epoch=1, lease_until=T0 + 30)
    save(store, header, claimed)

    assert store.get_execution(A, "ex-1") == header
    assert store.list_steps(A, "ex-1") == [claimed]


def test_concurrent_read_modify_write_transactions_are_serialized(store: Store) -> None:
    save(store, step(status=StepStatus.RUNNING))
    workers = 8

    def claim(tx: Transaction) -> None:
        current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
        tx.put_step(replace(current, lease_epoch=current.lease_epoch + 1))

    assert at_once(workers, lambda: store.atomic(claim)) == []
    assert store.list_steps(A, "ex-1")[0].lease_epoch == workers


def at_once(workers: int, work: Callable[[], object]) -> list[BaseException]:
    """Run ``work`` on ``workers`` threads released together; what they raised."""
    barrier = threading.Barrier(workers)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            work()
        except BaseException as exc:  # returned to the test's assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_two_writers_incrementing_one_record_are_serialized(store: Store) -> None:
    save(store, step(status=StepStatus.RUNNING))
    rounds = 10
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def increment(tx: Transaction) -> None:
        current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
        tx.put_step(replace(current, attempt=current.attempt + 1))

    def writer() -> None:
        try:
            barrier.wait(timeout=10)
            for _ in range(rounds):
                store.atomic(increment)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)

    assert errors == []
    assert store.list_steps(A, "ex-1")[0].attempt == 2 * rounds


def test_get_execution_and_steps_answers_like_the_separate_reads(store: Store) -> None:
    header = execution(input={"big": "x" * 300 * 1024})
    stored = [step("fetch", output={"big": "y" * 300 * 1024}), step("ship[0]", index=0), step("fetch", "ex-2")]
    save(store, header, *stored, execution("ex-1", tenant=B))

    def both(tx: Transaction) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        return tx.get_execution_and_steps(A, "ex-1", ["fetch", "ship[0]", "absent"])

    assert read(store, both) == (header, {"fetch": stored[0], "ship[0]": stored[1]})
    assert read(store, lambda tx: tx.get_execution_and_steps(A, "ex-1", [])) == (header, {})
    assert read(store, lambda tx: tx.get_execution_and_steps(A, "missing", ["fetch"])) == (None, {})
    assert read(store, lambda tx: tx.get_execution_and_steps(B, "ex-2", ["fetch"])) == (None, {})


def test_reads_outside_a_transaction_answer_like_reads_inside_one(store: Store) -> None:
    header = execution(input={"big": "x" * 300 * 1024})
    stored = [step("fetch", output={"big": "y" * 300 * 1024}), step("ship[0]", index=0), step("fetch", "ex-2")]
    save(store, header, *stored, execution("ex-1", tenant=B))

    def both(reads: Reads) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        return reads.get_execution_and_steps(A, "ex-1", ["fetch", "ship[0]", "absent"])

    assert store.read(both) == read(store, both) == (header, {"fetch": stored[0], "ship[0]": stored[1]})
    assert store.read(lambda reads: reads.get_steps(A, "ex-1", ["ship[0]"])) == {"ship[0]": stored[1]}
    assert store.read(lambda reads: reads.get_execution_and_steps(B, "ex-2", ["fetch"])) == (None, {})


def test_reads_outside_a_transaction_see_each_commit(store: Store) -> None:
    save(store, execution(), step("fetch"))
    done = replace(step("fetch"), status=StepStatus.SUCCEEDED)
    save(store, done)

    assert store.read(lambda reads: reads.get_steps(A, "ex-1", ["fetch"])) == {"fetch": done}


def test_get_execution_and_steps_sees_the_transactions_own_writes(store: Store) -> None:
    save(store, execution(), step("fetch"), step("charge"))
    header = replace(execution(), status=ExecutionStatus.SUCCEEDED)
    done = replace(step("fetch"), status=StepStatus.SUCCEEDED)
    added = step("ship[0]", index=0)

    def work(tx: Transaction) -> list[Any]:
        before = tx.get_execution_and_steps(A, "ex-1", ["charge"])
        tx.put_execution(header)
        tx.put_step(done)
        tx.put_step(added)
        return [before, tx.get_execution_and_steps(A, "ex-1", ["fetch", "charge", "ship[0]"])]

    assert store.atomic(work) == [
        (execution(), {"charge": step("charge")}),
        (header, {"fetch": done, "charge": step("charge"), "ship[0]": added}),
    ]


# events


def test_an_event_id_is_written_once(store: Store) -> None:
    original = event("e-1", data={"v": 1})
    save(store, original)
    save(store, event("e-1", data={"v": 2}), event("e-2"))

    def twice(tx: Transaction) -> None:
        tx.add_event(event("e-3"))
        tx.add_event(event("e-3"))

    store.atomic(twice)
    assert store.list_events(A, "ex-1").items == [original, event("e-2"), event("e-3")]


def test_events_are_ordered_by_id_and_paged_after_an_id(store: Store) -> None:
    ids = [f"e-{n:04d}" for n in (7, 1, 10, 3, 2, 9, 4, 8, 6, 5)]
    save(store, *[event(i, at=T0 + int(i[2:])) for i in ids], event("e-0001", "ex-2"))

    everything = store.list_events(A, "ex-1")
    assert [e.id for e in everything.items] == sorted(ids)
    assert everything.next_cursor is None
    assert [e.id for e in store.list_events(A, "ex-1", after="e-0004").items] == sorted(ids)[4:]
    assert store.list_events(A, "ex-1", after="e-0010").items == []

    pages = collect(lambda cursor: store.list_events(A, "ex-1", after=cursor, limit=3), 3)
    assert pages == everything.items
    first = store.list_events(A, "ex-1", limit=3)
    assert first.next_cursor == "e-0003"


# listings


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "e30=",
        "W251bGwsbnVsbCxudWxsXQ==",
        "W05hTiwgIngiXQ==",  # [NaN, "x"]: an execution cursor's shape with a time that is no number
        "WzFlOTk5LCAieCJd",  # [1e999, "x"]: infinity
        "Wy1JbmZpbml0eSwgIngiXQ==",  # [-Infinity, "x"]
    ],
)
def test_an_invalid_cursor_is_an_invalid_request(store: Store, cursor: str) -> None:
    save(store, workflow(), execution(), trigger())

    listings: list[Callable[[], Page]] = [
        lambda: store.list_workflows(A, cursor=cursor),
        lambda: store.list_workflow_versions(A, "orders", cursor=cursor),
        lambda: store.list_executions(A, cursor=cursor),
        lambda: store.list_triggers(A, cursor=cursor),
    ]
    for listing in listings:
        with pytest.raises(InvalidRequest):
            listing()


def test_list_workflows_gives_the_latest_version_of_each_name(store: Store) -> None:
    names = ["delta", "alpha", "echo", "charlie", "bravo"]
    save(store, *[workflow(name, v) for i, name in enumerate(names) for v in range(1, i + 2)])
    store.set_workflow_archived(A, "charlie", True)

    listed = collect(lambda cursor: store.list_workflows(A, cursor=cursor, limit=2), 2)
    assert [(w.name, w.version) for w in listed] == [
        ("alpha", 2),
        ("bravo", 5),
        ("charlie", 4),
        ("delta", 1),
        ("echo", 3),
    ]
    assert [w.archived for w in listed] == [False, False, True, False, False]
    assert store.list_workflows(A).items == listed
    assert store.list_workflows(B).items == []


def test_list_workflow_versions_newest_first(store: Store) -> None:
    save(store, *[workflow("orders", v) for v in range(1, 8)], workflow("other", 9))

    listed = collect(lambda cursor: store.list_workflow_versions(A, "orders", cursor=cursor, limit=3), 3)
    assert [w.version for w in listed] == [7, 6, 5, 4, 3, 2, 1]
    assert listed[0] == workflow("orders", 7)
    assert store.list_workflow_versions(A, "missing").items == []


def test_archiving_applies_to_every_version_and_can_be_undone(store: Store) -> None:
    save(store, workflow(version=1), workflow(version=2))

    store.set_workflow_archived(A, "orders", True)
    assert [w.archived for w in store.list_workflow_versions(A, "orders").items] == [True, True]
    assert store.get_workflow_version(A, "orders", 1) == workflow(version=1, archived=True)

    store.set_workflow_archived(A, "orders", False)
    assert store.get_workflow_version(A, "orders") == workflow(version=2)
    with pytest.raises(NotFound):
        store.set_workflow_archived(A, "missing", True)


def _executions_for_listing() -> list[ExecutionRecord]:
    statuses = [ExecutionStatus.RUNNING, ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED]
    return [
        execution(
            f"ex-{n:02d}",
            workflow="orders" if n % 2 else "refunds",
            status=statuses[n % 3],
            # Pairs share a timestamp, so paging must break ties without losing rows.
            created_at=T0 + n // 2,
        )
        for n in range(12)
    ]


def test_list_executions_newest_first_with_pagination(store: Store) -> None:
    records = _executions_for_listing()
    save(store, *records, execution("ex-b", tenant=B))

    listed = collect(lambda cursor: store.list_executions(A, cursor=cursor, limit=5), 5)
    assert sorted(r.id for r in listed) == sorted(r.id for r in records)
    assert [r.created_at for r in listed] == sorted((r.created_at for r in records), reverse=True)
    assert store.list_executions(A, limit=50).items == listed


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"status": ExecutionStatus.RUNNING}, lambda r: r.status is ExecutionStatus.RUNNING),
        ({"workflow": "refunds"}, lambda r: r.workflow == "refunds"),
        ({"created_after": T0 + 2}, lambda r: r.created_at >= T0 + 2),
        ({"created_before": T0 + 2}, lambda r: r.created_at < T0 + 2),
        (
            {"status": ExecutionStatus.FAILED, "workflow": "orders", "created_after": T0 + 1},
            lambda r: r.status is ExecutionStatus.FAILED and r.workflow == "orders" and r.created_at >= T0 + 1,
        ),
        (
            {"created_after": T0 + 1, "created_before": T0 + 4},
            lambda r: T0 + 1 <= r.created_at < T0 + 4,
        ),
    ],
)
def test_list_executions_filters(
    store: Store, filters: dict[str, Any], expected: Callable[[ExecutionRecord], bool]
) -> None:
    records = _executions_for_listing()
    save(store, *records)

    listed = collect(lambda cursor: store.list_executions(A, ExecutionFilter(**filters), cursor=cursor, limit=2), 2)
    wanted = [r for r in records if expected(r)]
    assert wanted, "the filter case must select something"
    assert sorted(r.id for r in listed) == sorted(r.id for r in wanted)
    assert [r.created_at for r in listed] == sorted((r.created_at for r in wanted), reverse=True)


def test_count_active_executions_counts_running_and_paused(store: Store) -> None:
    save(
        store,
        *[execution(f"ex-{s.value}", status=s) for s in ExecutionStatus],
        execution("ex-other", tenant=B),
    )

    assert store.count_active_executions(A) == 2
    assert store.count_active_executions(B) == 1
    assert store.count_active_executions("tenant-c") == 0


def test_list_steps_is_ordered_by_key_and_scoped_to_the_execution(store: Store) -> None:
    keys = ["ship[1]", "fetch", "ship[0]", "charge", "route"]
    save(store, *[step(k) for k in keys], step("fetch", "ex-2"))

    assert [s.key for s in store.list_steps(A, "ex-1")] == sorted(keys)
    assert read(store, lambda tx: tx.get_steps(A, "ex-1", ["fetch", "nope"])) == {"fetch": step("fetch")}
    assert read(store, lambda tx: tx.get_steps(A, "ex-1", [])) == {}
    assert store.list_steps(A, "ex-3") == []


def test_count_active_items_counts_active_foreach_items_only(store: Store) -> None:
    statuses = list(StepStatus)
    items = [step(f"ship[{i}]", index=i, status=s) for i, s in enumerate(statuses)]
    save(
        store,
        step("ship", status=StepStatus.RUNNING, items=[1, 2, 3]),  # the parent: never counted
        *items,
        step("ship[99]", "ex-2", index=99),
        step("ship[98]", tenant=B, index=98),
        step("shipping[0]", index=0),
        step("fetch"),
    )

    assert store.count_active_items(A, "ex-1", "ship") == len(STEP_ACTIVE)
    assert store.count_active_items(A, "ex-2", "ship") == 1
    assert store.count_active_items(B, "ex-1", "ship") == 1
    assert store.count_active_items(A, "ex-1", "shipping") == 1
    assert store.count_active_items(A, "ex-1", "fetch") == 0
    assert store.count_active_items(A, "ex-3", "ship") == 0


def test_mark_once_elects_the_first_caller_per_execution_and_tenant(store: Store) -> None:
    assert store.mark_once(A, "ex-1", "fanin:ship:1") is True
    assert store.mark_once(A, "ex-1", "fanin:ship:1") is False
    assert store.mark_once(A, "ex-1", "fanin:ship:2") is True
    assert store.mark_once(A, "ex-2", "fanin:ship:1") is True
    assert store.mark_once(B, "ex-1", "fanin:ship:1") is True


def test_count_active_items_follows_status_changes(store: Store) -> None:
    save(store, step("ship", status=StepStatus.RUNNING), step("ship[0]", index=0), step("ship[1]", index=1))
    assert store.count_active_items(A, "ex-1", "ship") == 2

    save(store, step("ship[0]", index=0, status=StepStatus.SUCCEEDED), step("ship[2]", index=2))
    assert store.count_active_items(A, "ex-1", "ship") == 2
    save(store, step("ship[1]", index=1, status=StepStatus.FAILED), step("ship[2]", index=2, status=StepStatus.SKIPPED))
    assert store.count_active_items(A, "ex-1", "ship") == 0


def test_triggers_put_get_list_delete(store: Store) -> None:
    save(store, *[trigger(f"tr-{n}", created_at=T0 + n) for n in (3, 1, 4, 0, 2)])
    changed = trigger("tr-2", enabled=False, spec={"cron": "0 * * * *"}, updated_at=T0 + 9)
    store.put_trigger(changed)

    listed = collect(lambda cursor: store.list_triggers(A, cursor=cursor, limit=2), 2)
    assert [t.id for t in listed] == ["tr-0", "tr-1", "tr-2", "tr-3", "tr-4"]
    assert store.get_trigger(A, "tr-2") == changed

    assert store.delete_trigger(A, "tr-2") is True
    assert store.delete_trigger(A, "tr-2") is False
    assert store.get_trigger(A, "tr-2") is None
    assert [t.id for t in store.list_triggers(A).items] == ["tr-0", "tr-1", "tr-3", "tr-4"]


def test_a_trigger_is_read_and_written_in_a_transaction_with_its_runtime_state(store: Store) -> None:
    save(store, trigger("tr-1", next_fire_at=T0))
    fired = trigger(
        "tr-1",
        next_fire_at=T0 + 60,
        last_fire_at=T0,
        last_error="tr-1:2023-11-14T22:13:20Z: workflow 'orders' not found",
        fired=3,
        missed=2,
        skipped=1,
        buffered=4,
        running=["ex-1", "ex-2"],
        pending=[T0 - 60, T0],
    )

    def fire(tx: Transaction) -> list[TriggerRecord | None]:
        before = tx.get_trigger(A, "tr-1")
        tx.put_trigger(fired)
        return [before, tx.get_trigger(A, "tr-1"), tx.get_trigger(B, "tr-1"), tx.get_trigger(A, "missing")]

    assert store.atomic(fire) == [trigger("tr-1", next_fire_at=T0), fired, None, None]
    assert store.get_trigger(A, "tr-1") == fired
    assert read(store, lambda reads: reads.get_trigger(A, "tr-1")) == fired
    assert store.due_triggers(T0) == [] and store.due_triggers(T0 + 60) == [fired]


def test_a_trigger_created_in_a_transaction_is_due_and_a_failed_transaction_writes_none(store: Store) -> None:
    store.atomic(lambda tx: tx.put_trigger(trigger("tr-new", next_fire_at=T0)))
    assert store.due_triggers(T0) == [trigger("tr-new", next_fire_at=T0)]

    def fail(tx: Transaction) -> None:
        tx.put_trigger(trigger("tr-new", next_fire_at=T0 + 999, fired=1))
        raise NotFound("abort")

    with pytest.raises(NotFound):
        store.atomic(fail)
    assert store.get_trigger(A, "tr-new") == trigger("tr-new", next_fire_at=T0)


def test_concurrent_fires_of_one_trigger_are_serialized(store: Store) -> None:
    save(store, trigger(next_fire_at=T0))
    workers = 4

    def fire(tx: Transaction) -> None:
        current = tx.get_trigger(A, "tr-1")
        assert current is not None and current.next_fire_at is not None
        tx.put_trigger(replace(current, next_fire_at=current.next_fire_at + 1, fired=current.fired + 1))

    assert at_once(workers, lambda: store.atomic(fire)) == []
    stored = store.get_trigger(A, "tr-1")
    assert stored is not None and stored.fired == workers and stored.next_fire_at == T0 + workers


def test_api_keys_are_found_by_hash_and_listed_per_tenant(store: Store) -> None:
    keys = [api_key("key-1"), api_key("key-2", created_at=T0 + 1), api_key("key-3", tenant=B)]
    save(store, *keys)

    assert store.find_api_key("hash-tenant-b-key-3") == keys[2]
    assert store.list_api_keys(A) == keys[:2]
    revoked = replace(keys[0], revoked=True)
    store.put_api_key(revoked)
    assert store.find_api_key(keys[0].key_hash) == revoked
    assert store.list_api_keys(A) == [revoked, keys[1]]


# reconciler scans


@pytest.mark.parametrize("status", list(DUE_FIELD))
def test_due_steps_uses_the_due_field_of_each_status(store: Store, status: StepStatus) -> None:
    def at(moment: float) -> dict[str, Any]:
        return {DUE_FIELD[status]: moment}

    other_status = next(s for s in StepStatus if s is not status)
    due_early = step("a", status=status, **at(T0 - 10))
    due_now = step("b", "ex-2", tenant=B, status=status, **at(T0))
    save(
        store,
        due_early,
        due_now,
        step("c", status=status, **at(T0 + 1)),
        step("d", status=status),
        step("e", status=other_status, **at(T0 - 10)),
    )

    due = store.due_steps(status, T0)
    assert sorted(due, key=lambda s: s.key) == [due_early, due_now]
    assert len(store.due_steps(status, T0, limit=1)) == 1
    assert store.due_steps(status, T0 - 11) == []


@pytest.mark.parametrize("status", list(DUE_FIELD))
def test_due_steps_pages_through_ties_in_a_stable_order(store: Store, status: StepStatus) -> None:
    """``after`` resumes a scan: every due step once, also among steps due at the same moment."""
    field = DUE_FIELD[status]
    records = [
        step(f"k{i}", f"ex-{i % 3}", tenant=(A if i % 2 else B), status=status, **{field: T0 - (i % 2)})
        for i in range(7)
    ]
    save(store, *records)
    first = store.due_steps(status, T0)
    assert [getattr(r, field) for r in first] == sorted(getattr(r, field) for r in first)
    seen: list[StepRecord] = []
    while True:
        page = store.due_steps(status, T0, limit=2, after=seen[-1] if seen else None)
        if not page:
            break
        assert len(page) <= 2
        seen.extend(page)
    assert seen == first
    assert sorted((r.tenant, r.execution_id, r.key) for r in seen) == sorted(
        (r.tenant, r.execution_id, r.key) for r in records
    )
    assert store.due_steps(status, T0, after=seen[-1]) == []


def test_overdue_executions_are_active_ones_past_their_deadline(store: Store) -> None:
    overdue = [
        execution("ex-run", status=ExecutionStatus.RUNNING, deadline_at=T0 - 5),
        execution("ex-pause", tenant=B, status=ExecutionStatus.PAUSED, deadline_at=T0),
    ]
    save(
        store,
        *overdue,
        execution("ex-later", deadline_at=T0 + 1),
        execution("ex-none"),
        execution("ex-done", status=ExecutionStatus.SUCCEEDED, deadline_at=T0 - 5),
        execution("ex-failed", status=ExecutionStatus.FAILED, deadline_at=T0 - 5),
    )

    assert sorted(store.overdue_executions(T0), key=lambda r: r.id) == sorted(overdue, key=lambda r: r.id)
    assert len(store.overdue_executions(T0, limit=1)) == 1


def test_due_triggers_are_enabled_ones_whose_time_has_come(store: Store) -> None:
    due = [trigger("tr-1", next_fire_at=T0 - 60), trigger("tr-2", tenant=B, next_fire_at=T0)]
    save(
        store,
        *due,
        trigger("tr-3", next_fire_at=T0 + 1),
        trigger("tr-4", enabled=False, next_fire_at=T0 - 60),
        trigger("tr-5"),
    )

    assert sorted(store.due_triggers(T0), key=lambda t: t.id) == due
    assert len(store.due_triggers(T0, limit=1)) == 1


# tenant isolation


def test_records_of_one_tenant_are_invisible_to_another(store: Store) -> None:
    save(
        store,
        workflow(),
        execution(idempotency_key="k", status=ExecutionStatus.RUNNING),
        step(),
        event("e-1"),
        trigger(),
        api_key(),
    )

    assert store.get_workflow_version(B, "orders") is None
    assert store.get_workflow_version(B, "orders", 1) is None
    assert store.list_workflows(B).items == []
    assert store.list_workflow_versions(B, "orders").items == []
    with pytest.raises(NotFound):
        store.set_workflow_archived(B, "orders", True)
    assert store.get_execution(B, "ex-1") is None
    assert store.list_executions(B).items == []
    assert store.count_active_executions(B) == 0
    assert store.count_active_items(B, "ex-1", "fetch") == 0
    assert store.list_steps(B, "ex-1") == []
    assert store.list_events(B, "ex-1").items == []
    assert store.get_trigger(B, "tr-1") is None
    assert store.list_triggers(B).items == []
    assert store.delete_trigger(B, "tr-1") is False
    assert store.list_api_keys(B) == []

    def transactional_reads(tx: Transaction) -> list[Any]:
        return [
            tx.get_execution(B, "ex-1"),
            tx.find_execution_by_key(B, "k"),
            tx.get_steps(B, "ex-1", ["fetch"]),
            tx.latest_workflow_version(B, "orders"),
            tx.get_execution_and_steps(B, "ex-1", ["fetch"]),
        ]

    assert read(store, transactional_reads) == [None, None, {}, None, (None, {})]
    # Tenant A's records are untouched by B's attempts.
    assert store.get_trigger(A, "tr-1") == trigger()
    assert store.get_workflow_version(A, "orders") == workflow()


def test_tenants_may_use_the_same_identities_independently(store: Store) -> None:
    save(store, workflow(), execution(), step(), event("e-1"), trigger())
    theirs: list[Record] = [
        workflow(tenant=B, digest="sha256:b"),
        execution(tenant=B, input={"b": True}),
        step(tenant=B, status=StepStatus.SUCCEEDED),
        event("e-1", tenant=B, type="b"),
        trigger(tenant=B, workflow="b"),
    ]
    save(store, *theirs)

    assert store.get_workflow_version(A, "orders") == workflow()
    assert store.get_workflow_version(B, "orders") == theirs[0]
    assert store.get_execution(A, "ex-1") == execution()
    assert store.get_execution(B, "ex-1") == theirs[1]
    assert store.list_steps(A, "ex-1") == [step()]
    assert store.list_steps(B, "ex-1") == [theirs[2]]
    assert store.list_events(A, "ex-1").items == [event("e-1")]
    assert store.list_events(B, "ex-1").items == [theirs[3]]
    assert store.get_trigger(A, "tr-1") == trigger()
    assert store.get_trigger(B, "tr-1") == theirs[4]


# operations


def test_a_fresh_store_is_at_the_current_schema_version(store: Store) -> None:
    store.ping()
    assert store.schema_version() == SCHEMA_VERSION

    store.set_schema_version(SCHEMA_VERSION + 1)
    assert store.schema_version() == SCHEMA_VERSION + 1


def test_a_commit_that_does_not_wait_for_the_disk_is_committed_all_the_same(store: Store) -> None:
    # durable=False only spares waiting for the disk: readers see the commit at once.
    store.atomic(lambda tx: tx.put_execution(execution("ex-progress")), durable=False)

    assert store.read(lambda reads: reads.get_execution(A, "ex-progress")) is not None
    store.sync()  # makes it durable; nothing to do where commits always are
