"""Deleting expired executions from Firestore (see :mod:`engine.retention`).

Firestore does not delete a document's subcollections with it, so an execution's documents
are found by query, tenant by tenant (its subcollections under
``tenants/{tenant}/executions/{id}`` and its waiters) and deleted in transactions of at most
:data:`MAX_WRITES` writes, a document counting one write plus one per chunk of each
out-of-line payload it holds (freed in the same transaction, so nothing is left dangling).
Each transaction checks again that the execution is terminal. The header (with its
idempotency key document and payloads) goes last, once a call finds nothing else: what a
crash leaves is still reached from the header, and the reconciler finds the header again.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from engine.adapters.store_firestore.codec import blob_refs
from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.transaction import run_atomic
from engine.states import require_terminal

if TYPE_CHECKING:
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.document import DocumentReference

    from engine.adapters.store_firestore.store import FirestoreStore
    from engine.adapters.store_firestore.transaction import FirestoreTransaction
    from engine.records import ExecutionRecord

#: Writes in one transaction at most (Firestore's limit per commit is 500).
MAX_WRITES = 500
#: The subcollections of an execution header (step logs, under each step, are the step log store's).
SUBCOLLECTIONS = ("steps", "events", "item_chunks", "markers", "signals")


def purge_batch(store: FirestoreStore, tenant: str, execution_id: str, limit: int) -> bool:
    """Delete up to ``limit`` of the execution's documents; the header once none is left. Done?"""
    header = store.get_execution(tenant, execution_id)
    if header is None:
        return True
    _require_terminal(header)
    found = _derived(store, tenant, execution_id, limit)
    if not found:
        run_atomic(store, lambda tx: _delete_header(store, tx, tenant, execution_id))
        return True
    for chunk in _chunks(found):
        refs = [snapshot.reference for snapshot in chunk]
        run_atomic(store, functools.partial(_delete_documents, tenant=tenant, execution_id=execution_id, refs=refs))
    return False


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


def _chunks(snapshots: list[DocumentSnapshot[DocumentReference]]) -> list[list[DocumentSnapshot[DocumentReference]]]:
    """``snapshots`` in groups whose deletes (each document and its blob chunks) fit one commit."""
    groups: list[list[DocumentSnapshot[DocumentReference]]] = [[]]
    writes = 0
    for snapshot in snapshots:
        cost = 1 + sum(ref.chunks for ref in blob_refs(snapshot.to_dict()).values())
        if groups[-1] and writes + cost > MAX_WRITES:
            groups.append([])
            writes = 0
        groups[-1].append(snapshot)
        writes += cost
    return groups


def _delete_documents(tx: FirestoreTransaction, tenant: str, execution_id: str, refs: list[DocumentReference]) -> None:
    header = tx.get_execution(tenant, execution_id)
    if header is not None:  # gone already: only its leftovers remain, deleted all the same
        _require_terminal(header)
    tx.read_documents(refs)  # one round trip: each delete below frees the blobs it finds
    for ref in refs:
        tx.delete(ref)


def _delete_header(store: FirestoreStore, tx: FirestoreTransaction, tenant: str, execution_id: str) -> None:
    header = tx.get_execution(tenant, execution_id)
    if header is None:
        return
    _require_terminal(header)
    if header.idempotency_key is not None:
        owner = tx.find_execution_by_key(tenant, header.idempotency_key)
        if owner is not None and owner.id == execution_id:
            tx.delete(store.paths.idempotency(tenant, header.idempotency_key))
    tx.delete(store.paths.execution(tenant, execution_id))


def _require_terminal(execution: ExecutionRecord) -> None:
    require_terminal(execution.id, execution.status)
