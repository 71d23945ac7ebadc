"""Execution search on Firestore: filtered listings, counts per status, and the label backfill.

Every filter but labels is an equality (``status``, ``workflow``, ``version``, ``trigger_id``)
or the ``created_at`` range, all served by the composite indexes in ``firestore.indexes.json``:
one per filtered field followed by ``created_at`` descending, which Firestore merges for
several equalities. Labels are stored as JSON bytes, so execution documents also carry the
derived array ``label_pairs`` (``key=value``, see :mod:`.codec`). A query holds at most one
``array-contains``: one label is filtered by Firestore, the others on the documents it returns
(before any is decoded). With several labels the rarest one, by a count aggregation each, is
the one Firestore filters, so the fewest documents are read.

Counts are one count aggregation per status (run side by side); with several labels they are
taken over the rarest label's documents instead, read with only the fields the count needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from engine.adapters.store_firestore.codec import LABEL_PAIRS, decode_cursor, encode_cursor, label_pairs
from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.layout import encode_id
from engine.records import ExecutionRecord, Page
from engine.search import ExecutionFilter, label_token
from engine.states import ExecutionStatus

if TYPE_CHECKING:
    from google.cloud.firestore_v1.query import Query

    from engine.adapters.store_firestore.store import FirestoreStore

DESC = firestore.Query.DESCENDING
DOC_ID = FieldPath.document_id()
#: Documents read per round trip while labels beyond the first are filtered here.
SCAN_BATCH = 200
#: Execution documents rewritten per batch by the backfill (a batch holds at most 500 writes).
BACKFILL_BATCH = 400

def _query(
    store: FirestoreStore,
    tenant: str,
    where: ExecutionFilter,
    label: str | None,
    after: dict[str, Any] | None = None,
) -> Query:
    """The query of ``where`` with ``label`` (a ``key=value`` token) as its one array filter."""
    conditions: list[tuple[str, str, Any]] = [
        (field, "==", value)
        for field, value in (
            ("status", where.status.value if where.status is not None else None),
            ("workflow", where.workflow),
            ("version", where.version),
            ("trigger_id", where.trigger_id),
        )
        if value is not None
    ]
    if label is not None:
        conditions.append((LABEL_PAIRS, "array_contains", label))
    if where.created_after is not None:
        conditions.append(("created_at", ">=", where.created_after))
    if where.created_before is not None:
        conditions.append(("created_at", "<", where.created_before))
    # Counts sort too, so that they are served by the same indexes as the listing.
    order = [("created_at", DESC), (DOC_ID, DESC)]
    return store.query(store.paths.executions(tenant), where=conditions, order=order, start_after=after)


def _tokens(where: ExecutionFilter) -> list[str]:
    return [label_token(key, value) for key, value in where.labels]


def _driving_label(store: FirestoreStore, tenant: str, where: ExecutionFilter) -> str | None:
    """The label Firestore filters by: the only one, or the one fewest executions carry."""
    tokens = _tokens(where)
    if len(tokens) <= 1:
        return tokens[0] if tokens else None
    sizes = _parallel([lambda t=t: store.count_query(_query(store, tenant, where, t)) for t in tokens])
    return min(zip(sizes, tokens, strict=True))[1]


def _carries(fields: dict[str, Any], tokens: Sequence[str]) -> bool:
    pairs = fields.get(LABEL_PAIRS) or ()
    return all(token in pairs for token in tokens)


def _scan(
    store: FirestoreStore, tenant: str, where: ExecutionFilter, after: dict[str, Any] | None, fields: list[str] | None
) -> Iterator[Any]:
    """Snapshots matching every filter, newest first, after ``after``; reads in batches."""
    label = _driving_label(store, tenant, where)
    rest = [t for t in _tokens(where) if t != label]
    while True:
        query = _query(store, tenant, where, label, after).limit(SCAN_BATCH)
        if fields is not None:
            query = query.select(fields)
        with translated_errors():
            batch = list(query.stream())
        for snap in batch:
            if _carries(snap.to_dict() or {}, rest):
                yield snap
        if len(batch) < SCAN_BATCH:
            return
        last = batch[-1]
        after = {"created_at": last.get("created_at"), DOC_ID: last.id}


def list_executions(store: FirestoreStore, tenant: str, where: ExecutionFilter, cursor: str | None, limit: int) -> Page:
    after = None
    if cursor:
        created_at, doc_id = decode_cursor(cursor, [(int, float), str])
        after = {"created_at": created_at, DOC_ID: doc_id}
    if len(where.labels) > 1:
        snaps: list[Any] = []
        for snap in _scan(store, tenant, where, after, None):
            snaps.append(snap)
            if len(snaps) > limit:
                break
        with translated_errors():
            records = store.records_of(ExecutionRecord, snaps)
    else:
        query = _query(store, tenant, where, _driving_label(store, tenant, where), after).limit(limit + 1)
        with translated_errors():
            records = store.records_of(ExecutionRecord, list(query.stream()))
    if len(records) <= limit:
        return Page(items=records)
    items = records[:limit]
    return Page(items=items, next_cursor=encode_cursor([items[-1].created_at, encode_id(items[-1].id)]))


def count_executions(store: FirestoreStore, tenant: str, where: ExecutionFilter) -> dict[ExecutionStatus, int]:
    where = where.for_counts()
    if len(where.labels) > 1:
        counts = dict.fromkeys(ExecutionStatus, 0)
        for snap in _scan(store, tenant, where, None, ["status", "created_at", LABEL_PAIRS]):
            counts[ExecutionStatus(snap.get("status"))] += 1
        return counts
    label = _driving_label(store, tenant, where)
    statuses = list(ExecutionStatus)
    queries = [_query(store, tenant, replace(where, status=s), label) for s in statuses]
    sizes = _parallel([lambda q=q: store.count_query(q) for q in queries])
    return dict(zip(statuses, sizes, strict=True))


def _parallel(calls: Sequence[Any]) -> list[int]:
    """Run independent count aggregations side by side (each is one round trip)."""
    if len(calls) == 1:
        return [calls[0]()]
    with ThreadPoolExecutor(max_workers=min(len(calls), 8)) as pool:
        return list(pool.map(lambda call: call(), calls))


def backfill(store: FirestoreStore) -> int:
    """Add ``label_pairs`` to every execution document without it, in every tenant; idempotent.

    Firestore cannot query for a missing field, so this reads every execution document (only
    the two fields it needs) once, in document-name order across the collection group.
    """
    updated = 0
    batch = store.client.batch()
    pending = 0
    after: Any = None
    group = store.client.collection_group("executions")
    while True:
        query = group.order_by(DOC_ID).select(["labels", LABEL_PAIRS]).limit(BACKFILL_BATCH)
        if after is not None:
            query = query.start_after(after)
        with translated_errors():
            snaps = list(query.stream())
        for snap in snaps:
            fields = snap.to_dict() or {}
            if LABEL_PAIRS in fields:
                continue
            batch.update(snap.reference, {LABEL_PAIRS: label_pairs(_labels_of(store, snap, fields.get("labels")))})
            pending += 1
            updated += 1
        if pending:
            with translated_errors():
                batch.commit()
            batch, pending = store.client.batch(), 0
        if len(snaps) < BACKFILL_BATCH:
            return updated
        after = snaps[-1]


def _labels_of(store: FirestoreStore, snap: Any, stored: Any) -> dict[str, str]:
    """The labels of an execution document: inline JSON bytes, or else the decoded record's."""
    if stored is None:
        return {}
    if isinstance(stored, bytes):
        labels: dict[str, str] = json.loads(stored.decode("utf-8", "surrogatepass"))
        return labels
    with translated_errors():  # claim-checked out of line: decode the whole record
        full = snap.reference.get()
    [record] = store.records_of(ExecutionRecord, [full])
    return dict(record.labels)
