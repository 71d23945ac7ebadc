"""Deleting expired executions from Firestore (see :mod:`engine.retention`).

Firestore does not delete a document's subcollections with it, so an execution's documents
are found by query, tenant by tenant (its subcollections under
``tenants/{tenant}/executions/{id}`` and its waiters) and deleted in transactions of at most
:data:`MAX_WRITES` writes, a document counting one write plus one per chunk of each
out-of-line payload it holds (freed in the same transaction, so nothing is left dangling).
Each transaction checks again that the execution is terminal. The header (with its
idempotency key document and payloads) goes last: in the transaction of the last batch when a
call found fewer documents than its limit (all there were), else in a call that finds none.
What a crash leaves is still reached from the header, and the reconciler finds the header again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.adapters.store_firestore.codec import blob_refs
from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.transaction import run_atomic
from engine.records import ExecutionRecord
from engine.states import EXECUTION_TERMINAL, require_terminal

if TYPE_CHECKING:
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.document import DocumentReference

    from engine.adapters.store_firestore.store import FirestoreStore
    from engine.adapters.store_firestore.transaction import FirestoreTransaction

#: Writes in one transaction at most (Firestore's limit per commit is 500).
MAX_WRITES = 500
#: Writes kept free in the last batch for the header: itself, its idempotency key document and
#: the chunks of its out-of-line input, output and error (each at most ``max_payload_bytes``,
#: 8 MiB, in 500 KiB chunks).
HEADER_WRITES = 60
#: The subcollections of an execution header (step logs, under each step, are the step log store's).
SUBCOLLECTIONS = ("steps", "events", "item_chunks", "markers", "signals")


def purge_batch(store: FirestoreStore, tenant: str, execution_id: str, limit: int) -> bool:
    """Delete up to ``limit`` of the execution's documents; the header once none is left. Done?"""
    header = store.get_execution(tenant, execution_id)
    if header is None:
        return True
    require_terminal(execution_id, header.status)
    found = _derived(store, tenant, execution_id, limit)
    complete = len(found) < limit  # every remaining document was found: the header goes too
    chunks = _chunks(found, reserve=HEADER_WRITES if complete else 0)
    for position, chunk in enumerate(chunks, start=1):
        refs = [snapshot.reference for snapshot in chunk]
        last = complete and position == len(chunks)
        run_atomic(store, functools.partial(_delete_documents, store, tenant, execution_id, refs, last))
    return complete


def _derived(
    store: FirestoreStore, tenant: str, execution_id: str, limit: int
) -> list[DocumentSnapshot[DocumentReference]]:
    """Up to ``limit`` documents of the execution besides its header (field values included:
    they name the payload blobs to free)."""
    header = store.paths.execution(tenant, execution_id)
    sources = [store.query(header.collection(name), limit=limit) for name in SUBCOLLECTIONS]
    sources.append(store.query(store.paths.waiters(tenant), where=[("execution_id", "==", execution_id)], limit=limit))
    found: list[DocumentSnapshot[DocumentReference]] = []
    with translated_errors():
        for query in sources:
            if len(found) >= limit:
                break
            found += list(query.limit(limit - len(found)).stream())
    return found


def _chunks(
    snapshots: list[DocumentSnapshot[DocumentReference]], reserve: int
) -> list[list[DocumentSnapshot[DocumentReference]]]:
    """``snapshots`` in groups whose deletes (each document and its blob chunks) fit one commit,
    the last one with ``reserve`` writes to spare; always at least one group (maybe empty)."""
    groups: list[list[DocumentSnapshot[DocumentReference]]] = [[]]
    costs = [1 + sum(ref.chunks for ref in blob_refs(s.to_dict()).values()) for s in snapshots]
    writes = 0
    for position, (snapshot, cost) in enumerate(zip(snapshots, costs, strict=True)):
        last = position == len(snapshots) - 1
        if groups[-1] and writes + cost + (reserve if last else 0) > MAX_WRITES:
            groups.append([])
            writes = 0
        groups[-1].append(snapshot)
        writes += cost
    return groups


def _delete_documents(
    store: FirestoreStore,
    tenant: str,
    execution_id: str,
    refs: list[DocumentReference],
    with_header: bool,
    tx: FirestoreTransaction,
) -> None:
    """Delete ``refs`` (and the header, its idempotency key and payloads ``with_header``)."""
    header = tx.get_execution(tenant, execution_id)
    if header is None:  # gone already: only its leftovers remain, deleted all the same
        with_header = False
    else:
        require_terminal(execution_id, header.status)
    tx.read_documents(refs)  # one round trip: each delete below frees the blobs it finds
    for ref in refs:
        tx.delete(ref)
    if header is not None and with_header:
        if header.idempotency_key is not None:
            owner = tx.find_execution_by_key(tenant, header.idempotency_key)
            if owner is not None and owner.id == execution_id:
                tx.delete(store.paths.idempotency(tenant, header.idempotency_key))
        tx.delete(store.paths.execution(tenant, execution_id))


def backfill_expiry(store: FirestoreStore, retention: Callable[[ExecutionRecord], float | None]) -> int:
    """Tenant by tenant, terminal executions without ``expires_at`` get one (batched writes)."""
    terminal = sorted(status.value for status in EXECUTION_TERMINAL)
    updated = 0
    with translated_errors():
        tenants = list(store.client.collection("tenants").list_documents())
    for tenant in tenants:
        query = store.query(tenant.collection("executions"), where=[("status", "in", terminal)])
        with translated_errors():
            lacking = [s for s in query.stream() if "expires_at" not in (s.to_dict() or {})]
        writes = []
        for snapshot, execution in zip(lacking, store.records_of(ExecutionRecord, lacking), strict=True):
            kept = retention(execution)
            if kept is not None and execution.finished_at is not None:
                writes.append((snapshot.reference, execution.finished_at + kept))
        for start in range(0, len(writes), MAX_WRITES):
            batch = store.client.batch()
            for ref, expires_at in writes[start : start + MAX_WRITES]:
                batch.update(ref, {"expires_at": expires_at})
            with translated_errors():
                batch.commit()
        updated += len(writes)
    return updated
