"""Store contract of the external event log, waiters and kept signals (every backend)."""

from __future__ import annotations

from dataclasses import replace

from engine.ports import Store, Transaction
from engine.records import InboundEventRecord, SignalRecord, WaiterRecord

A, B = "tenant-a", "tenant-b"
T0 = 1_700_000_000.0


def inbound(event_id: str, tenant: str = A, **fields: object) -> InboundEventRecord:
    values: dict[str, object] = {"type": "order.created", "accepted_at": T0, "route": "r1", "data": {"n": 1}}
    return InboundEventRecord(tenant=tenant, id=event_id, **(values | fields))  # type: ignore[arg-type]


def test_inbound_events_round_trip_and_are_replaced_by_put(store: Store) -> None:
    event = inbound("e-1", source="shop", correlation_key="A-1", data={"nested": [1, {"x": None}]})
    store.atomic(lambda tx: tx.put_inbound_event(event))
    assert store.atomic(lambda tx: tx.get_inbound_event(A, "e-1")) == event
    assert store.atomic(lambda tx: tx.get_inbound_event(B, "e-1")) is None

    def route(tx: Transaction) -> InboundEventRecord | None:
        stored = tx.get_inbound_event(A, "e-1")
        assert stored is not None
        tx.put_inbound_event(replace(stored, routed=True))
        return tx.get_inbound_event(A, "e-1")

    seen = store.atomic(route)
    assert seen is not None and seen.routed is True
    stored = store.atomic(lambda tx: tx.get_inbound_event(A, "e-1"))
    assert stored is not None and stored.routed is True


def test_list_inbound_events_by_route_since_oldest_first(store: Store) -> None:
    events = [
        inbound("e-3", accepted_at=T0 + 3),
        inbound("e-1", accepted_at=T0 + 1),
        inbound("e-0", accepted_at=T0 - 1),
        inbound("e-2", accepted_at=T0 + 1, route="r2"),
        inbound("e-4", tenant=B, accepted_at=T0 + 4),
    ]

    def put_all(tx: Transaction) -> None:
        for event in events:
            tx.put_inbound_event(event)

    store.atomic(put_all)
    assert [e.id for e in store.list_inbound_events(A, "r1", since=T0)] == ["e-1", "e-3"]
    assert [e.id for e in store.list_inbound_events(A, "r1", since=T0, limit=1)] == ["e-1"]
    assert [e.id for e in store.list_inbound_events(B, "r1", since=0)] == ["e-4"]


def test_due_inbound_events_are_unrouted_ones_of_every_tenant(store: Store) -> None:
    events = [
        inbound("e-1", accepted_at=T0 - 5),
        inbound("e-2", tenant=B, accepted_at=T0),
        inbound("e-3", accepted_at=T0 - 9, routed=True),
        inbound("e-4", accepted_at=T0 + 1),
    ]

    def put_all(tx: Transaction) -> None:
        for event in events:
            tx.put_inbound_event(event)

    store.atomic(put_all)
    assert [(e.tenant, e.id) for e in store.due_inbound_events(T0)] == [(A, "e-1"), (B, "e-2")]
    assert len(store.due_inbound_events(T0, limit=1)) == 1


def test_waiters_are_listed_by_route_and_deleted(store: Store) -> None:
    def put_all(tx: Transaction) -> None:
        tx.put_waiter(WaiterRecord(A, "ex-1", "wait", "r1", T0))
        tx.put_waiter(WaiterRecord(A, "ex-2", "wait[0]", "r1", T0))
        tx.put_waiter(WaiterRecord(A, "ex-3", "wait", "r2", T0))
        tx.put_waiter(WaiterRecord(B, "ex-4", "wait", "r1", T0))

    store.atomic(put_all)
    assert sorted((w.execution_id, w.step_key) for w in store.list_waiters(A, "r1")) == [
        ("ex-1", "wait"),
        ("ex-2", "wait[0]"),
    ]
    store.atomic(lambda tx: tx.delete_waiter(A, "ex-1", "wait"))
    store.atomic(lambda tx: tx.delete_waiter(A, "ex-9", "absent"))
    assert [w.execution_id for w in store.list_waiters(A, "r1")] == ["ex-2"]
    assert [w.execution_id for w in store.list_waiters(B, "r1")] == ["ex-4"]


def test_a_kept_signal_is_read_in_its_transaction_and_deleted(store: Store) -> None:
    signal = SignalRecord(A, "ex-1", "hold", {"ok": [1, 2]}, T0)
    store.atomic(lambda tx: tx.put_signal(signal))
    assert store.atomic(lambda tx: tx.get_signal(A, "ex-1", "hold")) == signal
    assert store.atomic(lambda tx: tx.get_signal(B, "ex-1", "hold")) is None

    def take(tx: Transaction) -> SignalRecord | None:
        tx.delete_signal(A, "ex-1", "hold")
        return tx.get_signal(A, "ex-1", "hold")

    assert store.atomic(take) is None
    assert store.atomic(lambda tx: tx.get_signal(A, "ex-1", "hold")) is None


def test_inbound_events_are_read_by_ids_in_one_call_buffered_writes_included(store: Store) -> None:
    store.atomic(lambda tx: [tx.put_inbound_event(inbound(i)) for i in ("e-1", "e-2")])
    store.atomic(lambda tx: tx.put_inbound_event(inbound("e-1", tenant=B, source="other")))

    def read(tx: Transaction) -> dict[str, InboundEventRecord]:
        tx.put_inbound_event(inbound("e-3", source="new"))
        return tx.get_inbound_events(A, ["e-1", "e-3", "e-9", "e-1"])

    found = store.atomic(read)
    assert sorted(found) == ["e-1", "e-3"]
    assert found["e-1"] == inbound("e-1") and found["e-3"].source == "new"
    assert store.atomic(lambda tx: tx.get_inbound_events(B, ["e-1", "e-2"])) == {"e-1": inbound("e-1", B, source="other")}
    assert store.atomic(lambda tx: tx.get_inbound_events(A, [])) == {}


def test_trim_deletes_routed_events_accepted_before_oldest_first_and_never_unrouted_ones(store: Store) -> None:
    events = [
        inbound("old-1", accepted_at=T0 - 30, routed=True, data={"big": "x" * 300_000}),  # stored out of line
        inbound("old-2", tenant=B, accepted_at=T0 - 20, routed=True),
        inbound("old-3", accepted_at=T0 - 10, routed=True),
        inbound("unrouted", accepted_at=T0 - 40),
        inbound("recent", accepted_at=T0, routed=True),
    ]
    store.atomic(lambda tx: [tx.put_inbound_event(event) for event in events])
    assert store.trim_inbound_events(T0, limit=2) == 2
    assert store.atomic(lambda tx: tx.get_inbound_events(A, ["old-1", "old-3", "unrouted", "recent"])).keys() == {
        "old-3",
        "unrouted",
        "recent",
    }
    assert store.atomic(lambda tx: tx.get_inbound_events(B, ["old-2"])) == {}
    assert store.trim_inbound_events(T0) == 1
    assert store.trim_inbound_events(T0) == 0
    remaining = store.atomic(lambda tx: tx.get_inbound_events(A, ["old-3", "unrouted", "recent"]))
    assert sorted(remaining) == ["recent", "unrouted"]
    assert [e.id for e in store.due_inbound_events(T0)] == ["unrouted"]
