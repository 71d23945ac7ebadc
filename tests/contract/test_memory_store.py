"""Agents' long-term memory: the tenant-scoped LangGraph store over SQLite (LangGraph's own
SqliteStore) and Firestore (Conveyor's adapter) behaves the same, and never crosses tenants."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from langgraph.store.base import BaseStore

from engine.adapters.ai_memory import WRITER, TenantStore, forget_notes, sqlite_memory, sweep_expired
from engine.adapters.store_sqlite import SqliteStore
from engine.ports import Store


@pytest.fixture
def memory(store: Store, tmp_path: Path) -> BaseStore:
    if isinstance(store, SqliteStore):
        return sqlite_memory(str(tmp_path / "memory.db"))
    from engine.adapters.memory_firestore import FirestoreMemoryStore

    return FirestoreMemoryStore(store.client)  # type: ignore[attr-defined]


def test_items_are_put_read_searched_and_deleted(memory: BaseStore) -> None:
    a = TenantStore(memory, "tenant-a")
    a.put(("customers", "c1"), "tone", {"note": "prefers short answers"})
    a.put(("customers", "c1"), "refunds", {"note": "one refund in 2025", "kind": "history"})
    a.put(("customers", "c2"), "tone", {"note": "formal"})
    item = a.get(("customers", "c1"), "tone")
    assert item is not None and (item.namespace, item.key, item.value) == (
        ("customers", "c1"),
        "tone",
        {"note": "prefers short answers"},
    )
    assert {i.key for i in a.search(("customers", "c1"))} == {"tone", "refunds"}
    assert {(i.namespace, i.key) for i in a.search(("customers",))} == {
        (("customers", "c1"), "tone"),
        (("customers", "c1"), "refunds"),
        (("customers", "c2"), "tone"),
    }
    assert [i.key for i in a.search(("customers",), filter={"kind": "history"})] == ["refunds"]
    assert sorted(a.list_namespaces(prefix=("customers",))) == [("customers", "c1"), ("customers", "c2")]
    a.put(("customers", "c1"), "tone", {"note": "changed"})
    assert a.get(("customers", "c1"), "tone").value == {"note": "changed"}  # type: ignore[union-attr]
    a.delete(("customers", "c1"), "tone")
    assert a.get(("customers", "c1"), "tone") is None


def test_a_tenant_never_sees_or_touches_another_tenants_memory(memory: BaseStore) -> None:
    a, b = TenantStore(memory, "tenant-a"), TenantStore(memory, "tenant-b")
    a.put(("customers", "c1"), "tone", {"note": "secret of a"})
    assert b.get(("customers", "c1"), "tone") is None
    assert b.search(("customers",)) == [] and b.search(()) == []
    assert b.list_namespaces() == []
    # a namespace that looks like another tenant's scope is still inside the caller's own
    assert b.get(("tenant", "tenant-a", "customers", "c1"), "tone") is None
    b.put(("tenant", "tenant-a", "customers", "c1"), "tone", {"note": "b's own"})
    assert a.get(("customers", "c1"), "tone").value == {"note": "secret of a"}  # type: ignore[union-attr]
    b.delete(("customers", "c1"), "tone")
    assert a.get(("customers", "c1"), "tone") is not None
    assert a.list_namespaces() == [("customers", "c1")]


def test_tenant_ids_with_dots_are_scoped_too(memory: BaseStore) -> None:
    dotted = TenantStore(memory, "acme.eu")
    dotted.put(("notes",), "k", {"note": "x"})
    assert dotted.get(("notes",), "k") is not None
    assert TenantStore(memory, "acme").search(()) == []


def test_an_item_past_its_time_to_live_is_swept_and_one_without_is_kept(memory: BaseStore) -> None:
    a = TenantStore(memory, "tenant-a")
    a.put(("notes",), "brief", {"note": "gone soon"}, ttl=0.01)  # minutes, as LangGraph counts them
    a.put(("notes",), "kept", {"note": "no time to live"})
    # The SQLite backend compares with SQLite's own clock, CURRENT_TIMESTAMP, which has whole
    # seconds: an item is past it once the clock's second is past the expiry's, up to 1 s after
    # its 0.6 s. The time must really pass: 0.6 s + 1 s + a margin.
    time.sleep(2.0)
    assert sweep_expired(memory) == 1
    assert a.get(("notes",), "brief") is None
    assert [item.key for item in a.search(("notes",))] == ["kept"]


def test_an_expired_item_is_never_read_even_before_the_next_run_sweeps(memory: BaseStore) -> None:
    a = TenantStore(memory, "tenant-a")
    a.put(("notes",), "brief", {"note": "gone soon"}, ttl=0.01)  # minutes, as LangGraph counts them
    a.put(("notes",), "kept", {"note": "no time to live"})
    assert a.get(("notes",), "brief") is not None
    # The SQLite backend compares with SQLite's own clock, CURRENT_TIMESTAMP, which has whole
    # seconds: an item is past it once the clock's second is past the expiry's, up to 1 s after
    # its 0.6 s. The time must really pass: 0.6 s + 1 s + a margin.
    time.sleep(2.0)
    assert a.get(("notes",), "brief") is None
    assert [item.key for item in a.search(("notes",))] == ["kept"]
    assert a.list_namespaces() == [("notes",)]


def test_forgetting_an_execution_deletes_the_notes_it_wrote_last_in_its_tenant_only(memory: BaseStore) -> None:
    a, b = TenantStore(memory, "tenant-a"), TenantStore(memory, "tenant-b")
    a.put(("customers", "c1"), "tone", {"note": "short", WRITER: "ex-1"})
    a.put(("customers", "c2"), "tone", {"note": "formal", WRITER: "ex-1"})
    a.put(("customers", "c1"), "refunds", {"note": "one", WRITER: "ex-1"})
    a.put(("customers", "c1"), "refunds", {"note": "two", WRITER: "ex-2"})  # replaced by a later execution
    a.put(("notes",), "manual", {"note": "written without an execution"})
    b.put(("customers", "c1"), "tone", {"note": "b's", WRITER: "ex-1"})
    assert forget_notes(memory, "tenant-a", "ex-1") == 2
    assert {(i.namespace, i.key) for i in a.search(())} == {(("customers", "c1"), "refunds"), (("notes",), "manual")}
    assert b.get(("customers", "c1"), "tone") is not None
    assert forget_notes(memory, "tenant-a", "ex-1") == 0


def test_on_firestore_an_expired_item_is_never_read_even_before_it_is_swept(
    firestore_emulator: str, unique_project: str
) -> None:
    """With the store's own clock (SQLite's is the real one: see the test above)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    from engine.adapters.memory_firestore import FirestoreMemoryStore

    now = [1_000_000.0]
    memory = FirestoreMemoryStore(
        firestore.Client(project=unique_project, credentials=AnonymousCredentials()),  # type: ignore[no-untyped-call]
        clock=lambda: now[0],
    )
    a = TenantStore(memory, "tenant-a")
    a.put(("notes",), "brief", {"note": "gone soon"}, ttl=1.0)  # one minute
    a.put(("notes",), "kept", {"note": "no time to live"})
    assert a.get(("notes",), "brief") is not None
    now[0] += 61.0
    assert a.get(("notes",), "brief") is None
    assert [item.key for item in a.search(("notes",))] == ["kept"]
    assert sweep_expired(memory) == 1  # it was still stored: reading skipped it
