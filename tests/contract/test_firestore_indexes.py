"""Every query the Firestore adapter issues has its index declared in firestore.indexes.json.

The emulator answers any query without an index, production answers FAILED_PRECONDITION. So
this test records the queries the adapter really sends (by wrapping the client's RunQuery and
RunAggregationQuery calls, whatever code path built them) while it runs every listing and
scan of the Store port, and checks each one against the declared indexes with Firestore's
matching rules. A new query without its index fails here; so does an index nothing uses.

Index merging is modelled as Firestore documents it: a query with several equality (or
array-contains) filters and a sort is served by declared indexes that each hold some of its
equality fields followed by exactly its sort, when together they hold all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud.firestore_v1.types import StructuredQuery
from google.protobuf import json_format

from engine.adapters.store_firestore import FirestoreStore
from engine.ports import DUE_FIELD, Store, Transaction
from engine.records import (
    ApiKeyRecord,
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus, StepStatus

INDEX_FILE = Path(__file__).resolve().parents[2] / "firestore.indexes.json"
A, B = "tenant-a", "tenant-b"
LABELS = (("n", "1"), ("team", "a"))
T0 = 1_700_000_000.0
ASC, DESC = "ASCENDING", "DESCENDING"
EQUALITY_OPS = {"EQUAL", "IN", "ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY", "IS_NULL", "IS_NAN"}


@dataclass(frozen=True)
class QueryShape:
    """What decides the index of a query: where it looks and which fields it filters/sorts."""

    collection_group: str
    scope: str  # COLLECTION or COLLECTION_GROUP, as in firestore.indexes.json
    equality: frozenset[str]
    orders: tuple[tuple[str, str], ...]  # normalized: implicit orders added, trailing __name__ dropped

    def fields(self) -> set[str]:
        return set(self.equality) | {field for field, _ in self.orders}


def shape_of(query: StructuredQuery) -> QueryShape:
    """The index-relevant shape of a query as sent on the wire."""
    data = json_format.MessageToDict(StructuredQuery.pb(query), preserving_proto_field_name=True)
    source = data["from_"][0]
    equality: set[str] = set()
    inequality: set[str] = set()
    for field, op in _filters(data.get("where")):
        (equality if op in EQUALITY_OPS else inequality).add(field)
    orders = [(o["field"]["field_path"], o.get("direction", ASC)) for o in data.get("order_by", [])]
    # Firestore orders by inequality fields not ordered explicitly, then by __name__.
    ordered = {field for field, _ in orders}
    orders += [(field, ASC) for field in sorted(inequality - ordered)]
    if orders and orders[-1][0] == "__name__":
        implicit = orders[-2][1] if len(orders) > 1 else orders[-1][1]
        if orders[-1][1] == implicit:
            orders.pop()
    scope = "COLLECTION_GROUP" if source.get("all_descendants") else "COLLECTION"
    return QueryShape(source["collection_id"], scope, frozenset(equality), tuple(orders))


def _filters(node: dict[str, Any] | None) -> Iterator[tuple[str, str]]:
    if not node:
        return
    if "composite_filter" in node:
        for child in node["composite_filter"].get("filters", []):
            yield from _filters(child)
    elif "field_filter" in node:
        yield node["field_filter"]["field"]["field_path"], node["field_filter"]["op"]
    elif "unary_filter" in node:
        yield node["unary_filter"]["field"]["field_path"], node["unary_filter"]["op"]


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(INDEX_FILE.read_text())
    return spec


def covering_index(shape: QueryShape, spec: dict[str, Any]) -> dict[str, Any] | None:
    """The declared composite index serving ``shape``: equality fields first, then the orders."""
    for index in spec["indexes"]:
        if (index["collectionGroup"], index["queryScope"]) != (shape.collection_group, shape.scope):
            continue
        fields = [(f["fieldPath"], f.get("order")) for f in index["fields"]]
        if fields and fields[-1][0] == "__name__":
            fields.pop()
        prefix, rest = fields[: len(shape.equality)], fields[len(shape.equality) :]
        if {name for name, _ in prefix} == shape.equality and tuple(rest) == shape.orders:
            return dict(index)
    return None


def merged_indexes(shape: QueryShape, spec: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Declared indexes Firestore can merge to serve ``shape``, or None if they cannot cover it."""
    usable = []
    for index in spec["indexes"]:
        if (index["collectionGroup"], index["queryScope"]) != (shape.collection_group, shape.scope):
            continue
        fields = [(f["fieldPath"], f.get("order")) for f in index["fields"]]
        prefix, rest = fields[: len(fields) - len(shape.orders)], fields[len(fields) - len(shape.orders) :]
        names = {name for name, _ in prefix}
        if prefix and names <= shape.equality and tuple(rest) == shape.orders:
            usable.append((names, dict(index)))
    covered = set().union(*(names for names, _ in usable)) if usable else set()
    return [index for _, index in usable] if shape.equality and covered == shape.equality else None


def serving_indexes(shape: QueryShape, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The declared indexes serving ``shape``: its exact composite index, else those merged."""
    exact = covering_index(shape, spec)
    if exact is not None:
        return [exact]
    return merged_indexes(shape, spec) or []


def exempted(spec: dict[str, Any], collection_group: str, field: str) -> bool:
    """Whether a field override turns off single-field indexing of ``field``."""
    return any(
        o["collectionGroup"] == collection_group and o["fieldPath"] == field and o.get("indexes") == []
        for o in spec.get("fieldOverrides", [])
    )


def problem(shape: QueryShape, spec: dict[str, Any]) -> str | None:
    """Why ``shape`` would fail in production, or None when an index serves it."""
    off = sorted(f for f in shape.fields() if exempted(spec, shape.collection_group, f))
    if off:
        return f"{shape}: fields {off} are exempted from indexing by a field override"
    if not shape.fields():  # no filter and no sort but the document name: every scope serves it
        return None
    automatic = shape.scope == "COLLECTION" and (len(shape.fields()) <= 1 or not shape.orders)
    if automatic:  # one field, or equalities only (single-field indexes merge)
        return None
    if not serving_indexes(shape, spec):
        return f"{shape}: no composite index in {INDEX_FILE.name} (nor indexes to merge)"
    return None


# ------------------------------------------------------------------ recording


class QueryRecorder:
    """Wraps the client's query RPCs and keeps the shape of every query sent."""

    def __init__(self, store: FirestoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.shapes: list[QueryShape] = []
        api = store.client._firestore_api
        for name, key in (
            ("run_query", "structured_query"),
            ("run_aggregation_query", "structured_aggregation_query"),
        ):
            monkeypatch.setattr(api, name, self._wrap(getattr(api, name), key))

    def _wrap(self, call: Callable[..., Any], key: str) -> Callable[..., Any]:
        def recording(*args: Any, request: dict[str, Any], **kwargs: Any) -> Any:
            query = request[key]
            self.shapes.append(shape_of(query if key == "structured_query" else query.structured_query))
            return call(*args, request=request, **kwargs)

        return recording


@pytest.fixture
def firestore_store(firestore_emulator: str, unique_project: str) -> Iterator[FirestoreStore]:
    store = FirestoreStore(project=unique_project)
    yield store
    store.close()


# ------------------------------------------------------------------ workload


def _workflow(name: str, version: int) -> WorkflowVersionRecord:
    return WorkflowVersionRecord(A, name, version, {"name": name}, f"sha256:{version}", T0)


def _execution(execution_id: str, tenant: str = A, **fields: Any) -> ExecutionRecord:
    values: dict[str, Any] = {"workflow": "orders", "version": 1, "status": ExecutionStatus.RUNNING}
    values |= {"input": {}, "created_at": T0, "updated_at": T0}
    return ExecutionRecord(id=execution_id, tenant=tenant, **(values | fields))


def _step(key: str, status: StepStatus, **fields: Any) -> StepRecord:
    return StepRecord("ex-0", A, key, key.split("[")[0], status, **fields)


def _seed(store: Store) -> None:
    """A little of everything, so every query returns rows and pages have a next cursor."""
    executions = [
        _execution(
            f"ex-{n}", status=status, workflow=wf, created_at=T0 + n, deadline_at=T0 - 1, labels={"team": "a", "n": "1"}
        )
        for n, (status, wf) in enumerate((s, w) for s in ExecutionStatus for w in ("orders", "refunds"))
    ]
    steps = [_step(f"s{n}[{n}]", s, **{f: T0 - 1}) for n, (s, f) in enumerate(DUE_FIELD.items())]
    events = [EventRecord(f"e-{n}", "ex-0", A, "step.status", T0) for n in range(3)]
    versions = [_workflow("orders", 1), _workflow("orders", 2), _workflow("refunds", 1)]
    keyed = _execution("ex-b", tenant=B, idempotency_key="k")

    def write(tx: Transaction) -> None:
        for version in versions:
            tx.put_workflow_version(version)
        for header in [*executions, keyed]:
            tx.put_execution(header)
        for record in steps:
            tx.put_step(record)
        for entry in events:
            tx.add_event(entry)

    store.atomic(write)
    store.atomic(lambda tx: tx.put_inbound_event(InboundEventRecord(A, "ev-1", "t", T0 - 1, route="r1")))
    store.atomic(lambda tx: tx.put_waiter(WaiterRecord(A, "ex-0", "s0", "r1", T0)))
    for n in range(3):
        store.put_trigger(TriggerRecord(f"tr-{n}", A, "orders", "schedule", {}, next_fire_at=T0 - 1))
    for n in range(2):
        store.put_api_key(ApiKeyRecord(f"key-{n}", A, "viewer", f"hash-{n}", "ci", T0 + n))


def _follow(fetch: Callable[[str | None], Any]) -> None:
    """Read a listing's first page and the page after it (cursor queries differ in shape)."""
    page = fetch(None)
    if page.next_cursor is not None:
        fetch(page.next_cursor)


def _forget_notes(store: Store) -> None:
    """Agents' memory shares the store's database: deleting an execution's notes queries it too."""
    from engine.adapters.ai_memory import TenantStore, forget_notes
    from engine.adapters.memory_firestore import FirestoreMemoryStore

    memory = FirestoreMemoryStore(store.client)  # type: ignore[attr-defined]
    TenantStore(memory, A).put(("notes",), "k", {"note": "x", "execution_id": "ex-3"})
    assert forget_notes(memory, A, "ex-3") == 1


def _listings(store: Store) -> dict[str, Callable[[], object]]:
    """One entry per query-issuing operation of the port; each runs its representative variants."""

    def searches() -> list[ExecutionFilter]:
        found = []
        for status in (None, ExecutionStatus.RUNNING):
            for scope in ({}, {"workflow": "orders"}, {"workflow": "orders", "version": 1}):
                for extra in ({}, {"trigger_id": "tr-0"}, {"labels": (("team", "a"),)}, {"labels": LABELS}):
                    for after, before in ((None, None), (T0, None), (None, T0 + 5), (T0, T0 + 5)):
                        where = {**scope, **extra, "created_after": after, "created_before": before}
                        found.append(ExecutionFilter(status=status, **where))  # type: ignore[arg-type]
        return found

    def list_executions() -> None:
        for where in searches():

            def page(cursor: str | None, w: ExecutionFilter = where) -> Any:
                return store.list_executions(A, w, cursor=cursor, limit=1)

            _follow(page)

    def count_executions() -> None:
        for where in searches():
            if where.status is None:
                store.count_executions(A, where)

    def in_transaction(tx: Transaction) -> None:
        tx.get_steps(A, "ex-0", ["s0[0]"])
        tx.get_execution_and_steps(A, "ex-0", ["s1[1]"])
        tx.find_execution_by_key(B, "k")
        tx.find_executions_by_keys(B, ["k"])
        tx.get_inbound_events(A, ["ev-1"])
        tx.latest_workflow_version(A, "orders")
        tx.put_step(_step("s0[0]", StepStatus.QUEUED))
        tx.put_execution(_execution("ex-1", idempotency_key="fresh"))
        tx.add_event(EventRecord("e-9", "ex-0", A, "step.status", T0))

    return {
        "list_workflows": lambda: _follow(lambda c: store.list_workflows(A, cursor=c, limit=1)),
        "list_workflow_versions": lambda: _follow(
            lambda c: store.list_workflow_versions(A, "orders", cursor=c, limit=1)
        ),
        "set_workflow_archived": lambda: store.set_workflow_archived(A, "orders", True),
        "list_executions": list_executions,
        "count_executions": count_executions,
        "backfill_search_fields": store.backfill_search_fields,
        "count_active_executions": lambda: store.count_active_executions(A),
        "count_active_items": lambda: store.count_active_items(A, "ex-0", "s0"),
        "list_steps": lambda: store.list_steps(A, "ex-0"),
        "list_steps_many": lambda: store.list_steps_many(A, ["ex-0", "ex-1"]),
        "list_events": lambda: _follow(lambda c: store.list_events(A, "ex-0", after=c, limit=1)),
        "due_steps": lambda: [store.due_steps(s, T0) for s in StepStatus],
        "overdue_executions": lambda: store.overdue_executions(T0),
        "expired_executions": lambda: store.expired_executions(T0),
        "purge_execution": lambda: store.purge_execution(A, "ex-4"),  # SUCCEEDED
        "backfill_expiry": lambda: store.backfill_expiry(lambda record: 1.0),
        "forget_notes": lambda: _forget_notes(store),
        "list_triggers": lambda: _follow(lambda c: store.list_triggers(A, cursor=c, limit=1)),
        "due_triggers": lambda: store.due_triggers(T0),
        "list_inbound_events": lambda: store.list_inbound_events(A, "r1", since=T0),
        "list_waiters": lambda: store.list_waiters(A, "r1"),
        "due_inbound_events": lambda: store.due_inbound_events(T0),
        "trim_inbound_events": lambda: store.trim_inbound_events(T0),
        "list_api_keys": lambda: store.list_api_keys(A),
        "transaction": lambda: store.atomic(in_transaction),
    }


def _query_operations() -> set[str]:
    """Port operations that may query rather than read documents by id."""
    prefixes = ("list_", "due_", "overdue_", "expired_", "count_", "trim_", "purge_")
    others = {"set_workflow_archived", "backfill_search_fields", "backfill_expiry"}
    return {name for name in vars(Store) if name.startswith(prefixes)} | others


# ------------------------------------------------------------------ tests


def test_index_file_is_in_the_deployable_format() -> None:
    spec = load_spec()
    assert set(spec) == {"indexes", "fieldOverrides"}
    for index in spec["indexes"]:
        assert set(index) == {"collectionGroup", "queryScope", "fields"}
        assert index["queryScope"] in {"COLLECTION", "COLLECTION_GROUP"}
        assert len(index["fields"]) >= 2, "a one-field index is automatic and cannot be declared"
        for field in index["fields"]:
            assert set(field) in ({"fieldPath", "order"}, {"fieldPath", "arrayConfig"})
            assert field.get("order", ASC) in {ASC, DESC} and field.get("arrayConfig", "CONTAINS") == "CONTAINS"
    for override in spec["fieldOverrides"]:
        assert {"collectionGroup", "fieldPath", "indexes"} <= set(override)
    keys = [json.dumps(i, sort_keys=True) for i in spec["indexes"]]
    assert len(keys) == len(set(keys)), "an index is declared twice"


def test_every_query_the_adapter_sends_has_its_index(
    firestore_store: FirestoreStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _seed(firestore_store)
    recorder = QueryRecorder(firestore_store, monkeypatch)
    listings = _listings(firestore_store)
    missing_operations = _query_operations() - set(listings)
    assert not missing_operations, f"add representative calls for {sorted(missing_operations)}"

    for run in listings.values():
        run()

    spec = load_spec()
    shapes = set(recorder.shapes)
    assert {s.scope for s in shapes} == {"COLLECTION", "COLLECTION_GROUP"}, "the recorder missed queries"
    problems = sorted(p for s in shapes if (p := problem(s, spec)) is not None)
    assert problems == []

    used = [index for s in shapes for index in serving_indexes(s, spec)]
    unused = [i for i in spec["indexes"] if i not in used]
    assert unused == [], "declared indexes no query uses (remove them or exercise their query)"


def test_the_check_rejects_a_query_without_its_index() -> None:
    spec = load_spec()
    by_status = QueryShape("executions", "COLLECTION", frozenset({"status"}), (("created_at", DESC),))
    by_update = QueryShape("executions", "COLLECTION", frozenset({"status"}), (("updated_at", DESC),))
    wrong_direction = QueryShape("executions", "COLLECTION", frozenset({"status"}), (("created_at", ASC),))
    group_scan = QueryShape("steps", "COLLECTION_GROUP", frozenset(), (("wake_at", ASC),))
    on_payload = QueryShape("steps", "COLLECTION", frozenset({"output"}), ())

    assert problem(by_status, spec) is None
    assert problem(by_update, spec) is not None
    assert problem(wrong_direction, spec) is not None
    assert problem(group_scan, spec) is not None  # collection-group scans get no automatic index
    assert problem(on_payload, spec) is not None  # payload fields are exempted from indexing

    newest = (("created_at", DESC),)
    merged = QueryShape("executions", "COLLECTION", frozenset({"status", "trigger_id", "label_pairs"}), newest)
    unmergeable = QueryShape("executions", "COLLECTION", frozenset({"status", "run"}), newest)
    version_alone = QueryShape("executions", "COLLECTION", frozenset({"version"}), newest)
    assert covering_index(merged, spec) is None and len(serving_indexes(merged, spec)) == 3
    assert problem(merged, spec) is None  # three indexes merged
    assert problem(unmergeable, spec) is not None  # no index holds `run`
    assert problem(version_alone, spec) is not None  # version is indexed only after workflow


def test_shapes_follow_firestore_normalization() -> None:
    from google.cloud.firestore_v1.base_query import FieldFilter
    from google.cloud.firestore_v1.client import Client
    from google.cloud.firestore_v1.field_path import FieldPath

    client = Client(project="shape-only", credentials=_anonymous())
    query = (
        client.collection("executions")
        .where(filter=FieldFilter("status", "==", "RUNNING"))
        .where(filter=FieldFilter("created_at", ">=", T0))
        .order_by("created_at", direction=DESC)
        .order_by(FieldPath.document_id(), direction=DESC)
    )
    shape = shape_of(query._to_protobuf())
    assert shape == QueryShape("executions", "COLLECTION", frozenset({"status"}), (("created_at", DESC),))

    implicit = client.collection_group("steps").where(filter=FieldFilter("wake_at", "<=", T0))
    assert shape_of(implicit._to_protobuf()).orders == (("wake_at", ASC),)


def _anonymous() -> Any:
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()  # type: ignore[no-untyped-call]

