"""Firestore-specific promises of the adapter, checked on the raw documents in the emulator.

The contract suite checks behaviour through the port; this file checks what the port cannot
see: where documents live (ARCHITECTURE §5), that no document nears the 1 MiB limit, that
tenants never share a subtree, that generated ids are random, and that the hot transactions
cost the round trips we budget for.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from google.cloud import firestore

from engine.adapters.store_firestore import BLOB_MARK, CHUNK_BYTES, BlobCache, BlobRef, FirestoreStore, encode_id
from engine.ports import Transaction
from engine.records import (
    ApiKeyRecord,
    EventRecord,
    ExecutionRecord,
    TriggerRecord,
    WorkflowVersionRecord,
)
from engine.states import ExecutionStatus, StepStatus
from tests.contract.firestore_rpcs import RpcCounter
from tests.contract.test_store_contract import T0, A, B, save, step

MIB = 1024 * 1024


@pytest.fixture
def firestore_store(firestore_emulator: str, unique_project: str) -> Iterator[FirestoreStore]:
    store = FirestoreStore(project=unique_project, wire="raw")  # these tests record the raw path's calls
    yield store
    store.close()


# ------------------------------------------------------------------ records


def execution(execution_id: str = "ex-1", tenant: str = A, **fields: Any) -> ExecutionRecord:
    values: dict[str, Any] = {"workflow": "orders", "version": 1, "status": ExecutionStatus.RUNNING}
    values |= {"input": {"order": 1}, "created_at": T0, "updated_at": T0}
    return ExecutionRecord(id=execution_id, tenant=tenant, **(values | fields))


def event(event_id: str, execution_id: str = "ex-1", tenant: str = A) -> EventRecord:
    return EventRecord(event_id, execution_id, tenant, "step.status", T0, data={"n": 1})


# ------------------------------------------------------------------ raw documents


def all_documents(client: firestore.Client) -> dict[str, dict[str, Any]]:
    """Every stored document of the project by path (parents that only hold collections too)."""
    found: dict[str, dict[str, Any]] = {}

    def walk(collection: Any) -> None:
        for ref in collection.list_documents():
            snap = ref.get()
            if snap.exists:
                found[ref.path] = snap.to_dict() or {}
            for child in ref.collections():
                walk(child)

    for collection in client.collections():
        walk(collection)
    return found


def value_size(value: Any) -> int:
    """Storage size of a value, per Firestore's documented size calculation."""
    if value is None or isinstance(value, bool):
        return 1
    if isinstance(value, int | float):
        return 8
    if isinstance(value, str):
        return len(value.encode()) + 1
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, dict):
        return sum(len(k.encode()) + 1 + value_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(value_size(v) for v in value)
    raise TypeError(f"unexpected stored type {type(value).__name__}")


def document_size(path: str, data: dict[str, Any]) -> int:
    name = sum(len(part.encode()) + 1 for part in path.split("/")) + 16
    return name + value_size(data) + 32


def blob_paths(documents: dict[str, dict[str, Any]]) -> list[str]:
    return sorted(path for path in documents if "/blobs/" in path)


# ------------------------------------------------------------------ layout


def test_step_documents_live_under_their_execution(firestore_store: FirestoreStore) -> None:
    save(firestore_store, execution(), step("fetch"), step("ship[3]", index=3), event("e-1"))

    docs = all_documents(firestore_store.client)
    base = "tenants/tenant-a/executions/ex-1"
    assert set(docs) == {
        "meta/schema",
        base,
        f"{base}/steps/fetch",
        f"{base}/steps/ship%5B3%5D",
        f"{base}/events/e-1",
    }
    shipped = docs[f"{base}/steps/ship%5B3%5D"]
    assert (shipped["tenant"], shipped["execution_id"], shipped["key"]) == (A, "ex-1", "ship[3]")
    # The header stays small: no step data is folded into it.
    assert document_size(base, docs[base]) < 2048


def test_workflows_keep_versions_under_a_summary_of_the_latest(firestore_store: FirestoreStore) -> None:
    versions = [WorkflowVersionRecord(A, "orders", v, {"v": v}, f"d{v}", T0 + v) for v in (1, 2)]
    save(firestore_store, *versions)

    docs = all_documents(firestore_store.client)
    summary = docs["tenants/tenant-a/workflows/orders"]
    assert summary["latest"] == 2 and summary["record"]["version"] == 2
    assert {"tenants/tenant-a/workflows/orders/versions/0000000001"} <= set(docs)
    assert {"tenants/tenant-a/workflows/orders/versions/0000000002"} <= set(docs)


def test_keys_and_idempotency_are_found_by_hash(firestore_store: FirestoreStore) -> None:
    save(firestore_store, execution(idempotency_key="client/key 1"))
    firestore_store.put_api_key(ApiKeyRecord("key-1", A, "admin", "abc123", "ci", T0))

    docs = all_documents(firestore_store.client)
    digest = hashlib.sha256(b"client/key 1").hexdigest()
    assert docs[f"tenants/tenant-a/idempotency/{digest}"]["execution_id"] == "ex-1"
    assert docs["api_keys/abc123"]["tenant"] == A


def test_a_key_given_up_is_released_for_another_execution(firestore_store: FirestoreStore) -> None:
    save(firestore_store, execution(idempotency_key="old"))

    def rekey(tx: Transaction) -> None:
        current = tx.get_execution(A, "ex-1")
        assert current is not None
        tx.put_execution(replace(current, idempotency_key="new"))

    firestore_store.atomic(rekey)
    old = f"tenants/tenant-a/idempotency/{hashlib.sha256(b'old').hexdigest()}"
    assert old not in all_documents(firestore_store.client)

    save(firestore_store, execution("ex-2", idempotency_key="old"))
    found = firestore_store.atomic(lambda tx: tx.find_execution_by_key(A, "old"))
    assert found is not None and found.id == "ex-2"


# ------------------------------------------------------------------ claim-check


def test_a_700_kib_output_leaves_no_document_over_1_mib(firestore_store: FirestoreStore) -> None:
    big = {"rows": [{"id": i, "text": "x" * 700} for i in range(1000)]}
    record = step(status=StepStatus.SUCCEEDED, output=big)
    save(firestore_store, execution(), record)

    docs = all_documents(firestore_store.client)
    sizes = {path: document_size(path, data) for path, data in docs.items()}
    assert max(sizes.values()) < MIB
    step_doc = docs["tenants/tenant-a/executions/ex-1/steps/fetch"]
    assert BLOB_MARK in step_doc["output"], "the output must be stored out of line"
    assert sizes["tenants/tenant-a/executions/ex-1/steps/fetch"] < 4096
    blobs = blob_paths(docs)
    assert len(blobs) == 2  # the blob document (first chunk) and one more chunk
    assert all(len(docs[p]["data"]) <= CHUNK_BYTES for p in blobs)
    assert firestore_store.list_steps(A, "ex-1") == [record]


def test_payloads_just_under_the_threshold_still_fit_one_document(firestore_store: FirestoreStore) -> None:
    near = "y" * (250 * 1024)
    record = step(item=near, items=[near], output=near, error={"m": near}, wait={"w": near})
    save(firestore_store, record)

    docs = all_documents(firestore_store.client)
    assert max(document_size(path, data) for path, data in docs.items()) < MIB
    assert firestore_store.list_steps(A, "ex-1") == [record]


def test_unchanged_payloads_are_reused_and_replaced_ones_freed(firestore_store: FirestoreStore) -> None:
    save(firestore_store, step(status=StepStatus.RUNNING, output="z" * 300 * 1024))
    before = blob_paths(all_documents(firestore_store.client))

    def update(**changes: Any) -> Callable[[Transaction], None]:
        def work(tx: Transaction) -> None:
            current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
            tx.put_step(replace(current, **changes))

        return work

    firestore_store.atomic(update(status=StepStatus.SUCCEEDED))
    assert blob_paths(all_documents(firestore_store.client)) == before  # not rewritten

    firestore_store.atomic(update(output={"small": True}))
    assert blob_paths(all_documents(firestore_store.client)) == []  # freed with its record
    assert firestore_store.list_steps(A, "ex-1")[0].output == {"small": True}


# ------------------------------------------------------------------ tenants and ids


def test_each_tenant_has_its_own_subtree(firestore_store: FirestoreStore) -> None:
    for tenant in (A, B, "odd/tenant.."):
        save(
            firestore_store,
            WorkflowVersionRecord(tenant, "orders", 1, {}, "d", T0),
            execution(tenant=tenant, idempotency_key="k", output="o" * 300 * 1024),
            step(tenant=tenant),
            event("e-1", tenant=tenant),
        )
        firestore_store.put_trigger(TriggerRecord("tr-1", tenant, "orders", "schedule", {}))
        firestore_store.put_api_key(ApiKeyRecord("key", tenant, "admin", f"hash-{tenant}", "ci", T0))

    docs = all_documents(firestore_store.client)
    outside = sorted(p for p in docs if not p.startswith("tenants/"))
    assert outside == [
        "api_keys/hash-odd%2Ftenant%2E%2E",
        "api_keys/hash-tenant-a",
        "api_keys/hash-tenant-b",
        "meta/schema",
    ]
    for path, data in docs.items():
        if path.startswith("tenants/"):
            owner = path.split("/")[1]
            if "/chunks/" not in path:  # chunks hold bytes only; their blob names the tenant
                assert encode_id(data["tenant"]) == owner, path
    per_tenant = Counter(p.split("/")[1] for p in docs if p.startswith("tenants/"))
    assert len(set(per_tenant.values())) == 1, per_tenant
    assert firestore_store.get_execution("odd/tenant..", "ex-1") is not None
    assert firestore_store.get_execution(A, "ex-1") != firestore_store.get_execution(B, "ex-1")


def test_generated_document_ids_are_random(firestore_emulator: str, unique_project: str) -> None:
    store = FirestoreStore(project=unique_project, inline_payload_bytes=64)
    try:
        ids: list[str] = []
        for n in range(10):
            save(store, step(f"s{n}", output="p" * 100))
            docs = all_documents(store.client)
            new = {p.split("/")[3] for p in blob_paths(docs)} - set(ids)
            assert len(new) == 1
            ids.extend(new)
    finally:
        store.close()

    assert all(re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{19}", i) for i in ids), ids  # uuid4
    assert ids != sorted(ids), "generated ids must not grow monotonically"


ODD_NAMES = ["", ".", "..", "a/b", "__id__", "_id_", "ship[3]", "x" * 2000, "ünï", "%41", "A", "a", "tab\tbed"]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_names_become_valid_distinct_document_ids(name: str) -> None:
    encoded = encode_id(name)
    assert encoded and "/" not in encoded and encoded not in {".", ".."}
    assert not re.fullmatch(r"__.*__", encoded)
    assert len(encoded.encode()) <= 1500
    assert [encode_id(other) for other in ODD_NAMES].count(encoded) == 1


def test_plain_names_keep_readable_ids() -> None:
    assert [encode_id(n) for n in ("ex-1", "fetch", "tenant_a", "ship[3]")] == [
        "ex-1",
        "fetch",
        "tenant_a",
        "ship%5B3%5D",
    ]


def test_odd_names_round_trip(firestore_store: FirestoreStore) -> None:
    record = step("a/../b[0]", "..", tenant="t/1")
    save(firestore_store, execution("..", tenant="t/1"), record)
    assert firestore_store.list_steps("t/1", "..") == [record]
    loaded = firestore_store.atomic(lambda tx: tx.get_steps("t/1", "..", ["a/../b[0]"]))
    assert loaded == {"a/../b[0]": record}


def test_references_follow_the_layout_and_are_built_once(firestore_store: FirestoreStore) -> None:
    paths, client = firestore_store.paths, firestore_store.client
    ref = paths.step("t/1", "ex 1", "ship[3]")
    chained = client.collection("tenants").document("t%2F1").collection("executions").document("ex%201")
    assert ref == chained.collection("steps").document("ship%5B3%5D")
    assert ref.path == "tenants/t%2F1/executions/ex%201/steps/ship%5B3%5D"
    assert paths.step("t/1", "ex 1", "ship[3]") is ref  # reused: a transaction names it often
    assert paths.steps("t/1", "ex 1") == chained.collection("steps")


# ------------------------------------------------------------------ round trips


def test_hot_transactions_cost_two_round_trips(
    firestore_store: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first read begins the transaction (no BeginTransaction); the commit ends it."""
    counter = RpcCounter(firestore_store, monkeypatch)
    budget = {"batch_get_documents": 1, "commit": 1}

    def start(tx: Transaction) -> None:
        if tx.find_execution_by_key(A, "order-1") is None:
            tx.put_execution(execution(idempotency_key="order-1"))
            tx.put_step(step("fetch"))
            tx.put_step(step("ship[0]"))
            tx.add_event(event("e-1"))

    def claim(tx: Transaction) -> None:
        current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
        tx.put_step(replace(current, status=StepStatus.RUNNING, lease_epoch=current.lease_epoch + 1))
        tx.add_event(event("e-2"))

    def complete(tx: Transaction) -> None:
        header, steps = tx.get_execution_and_steps(A, "ex-1", ["fetch", "ship[0]"])
        assert header is not None and len(steps) == 2
        tx.put_step(replace(steps["fetch"], status=StepStatus.SUCCEEDED))
        tx.put_step(replace(steps["ship[0]"], dispatched_at=T0))
        tx.add_event(event("e-3"))

    def settle(tx: Transaction) -> None:
        header = tx.get_execution(A, "ex-1")
        assert header is not None
        tx.put_execution(replace(header, status=ExecutionStatus.SUCCEEDED))
        tx.add_event(event("e-4"))

    for work in (start, claim, complete, settle):
        firestore_store.atomic(work)
        assert counter.take() == budget, work.__name__

    def record_only(tx: Transaction) -> None:
        tx.put_step(step("fetch", status=StepStatus.SUCCEEDED))
        tx.add_event(event("e-5"))

    firestore_store.atomic(record_only)
    assert counter.take() == {"commit": 1}, "a transaction that reads nothing is one batch commit"


def test_an_out_of_line_payload_is_fetched_once_per_process(
    firestore_emulator: str, unique_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blobs never change and references carry their checksum: a second read of one is local."""
    writer = FirestoreStore(project=unique_project, inline_payload_bytes=64)
    reader = FirestoreStore(project=unique_project, inline_payload_bytes=64)
    try:
        big_input = {"items": list(range(100))}
        save(writer, execution(input=big_input))
        counter = RpcCounter(reader, monkeypatch)

        def header(reads: Any) -> ExecutionRecord | None:
            return reads.get_execution(A, "ex-1")

        assert reader.read(header) == execution(input=big_input)
        assert counter.take() == {"batch_get_documents": 2}, "the header, then its blob"
        assert reader.read(header) == execution(input=big_input)
        assert reader.atomic(header) == execution(input=big_input)
        assert counter.take() == {"batch_get_documents": 2, "commit": 1}, "the header twice, never its blob"

        changed = {"items": list(range(200))}
        save(writer, execution(input=changed))
        assert reader.read(header) == execution(input=changed), "a new payload is a new blob"
        assert counter.take() == {"batch_get_documents": 2}
    finally:
        writer.close()
        reader.close()


def test_the_payload_cache_keeps_the_most_recently_used_within_its_bytes() -> None:
    cache = BlobCache(max_bytes=25)
    refs = [BlobRef(f"b{n}", 1, 10, f"sha{n}") for n in range(3)]
    cache.put(A, refs[0], b"0" * 10)
    cache.put(A, refs[1], b"1" * 10)
    assert cache.get(A, refs[0]) == b"0" * 10  # now the most recently used
    cache.put(A, refs[2], b"2" * 10)

    assert cache.get(A, refs[1]) is None, "the least recently used went first"
    assert cache.get(A, refs[0]) == b"0" * 10 and cache.get(A, refs[2]) == b"2" * 10
    assert cache.get(B, refs[0]) is None, "another tenant's reference never hits"
    assert cache.get(A, BlobRef("b0", 1, 10, "other-sha")) is None, "a checksum must match"
    cache.put(A, BlobRef("huge", 1, 26, "sha"), b"x" * 26)
    assert cache.get(A, BlobRef("huge", 1, 26, "sha")) is None, "larger than the whole cache: not kept"
