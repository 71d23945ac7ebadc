"""Firestore-only parts of execution search: the derived ``label_pairs`` field and its backfill."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.cloud import firestore

from engine.adapters.store_firestore import FirestoreStore
from engine.migrations import migrate
from engine.ports import Transaction
from engine.records import ExecutionRecord
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus

A, B = "tenant-a", "tenant-b"
T0 = 1_700_000_000.0


@pytest.fixture
def firestore_store(firestore_emulator: str, unique_project: str) -> Iterator[FirestoreStore]:
    store = FirestoreStore(project=unique_project)
    yield store
    store.close()


def _execution(n: int, tenant: str = A, **labels: str) -> ExecutionRecord:
    return ExecutionRecord(
        id=f"ex/{n}", tenant=tenant, workflow="orders", version=1, status=ExecutionStatus.RUNNING, input={},
        created_at=T0 + n, updated_at=T0 + n, labels=labels,
    )  # fmt: skip


def test_execution_documents_carry_their_labels_as_sorted_pairs(firestore_store: FirestoreStore) -> None:
    record = _execution(1, team="shop", url="https://x:1/a", empty="")
    firestore_store.atomic(lambda tx: tx.put_execution(record))
    doc = firestore_store.paths.execution(A, record.id).get().to_dict() or {}
    assert doc["label_pairs"] == ["empty=", "team=shop", "url=https://x:1/a"]
    assert firestore_store.get_execution(A, record.id) == record


def test_migration_2_backfills_label_pairs_in_every_tenant(firestore_store: FirestoreStore) -> None:
    records = [_execution(n, team="shop" if n % 2 else "ops") for n in range(5)] + [_execution(9, B, team="shop")]
    def write(tx: Transaction) -> None:
        for record in records:
            tx.put_execution(record)

    firestore_store.atomic(write)
    unlabelled = _execution(7)  # no labels: gets an empty array, so the backfill skips it next time
    firestore_store.atomic(lambda tx: tx.put_execution(unlabelled))
    for record in [*records, unlabelled]:  # as documents written before schema 2 are
        firestore_store.paths.execution(record.tenant, record.id).update({"label_pairs": firestore.DELETE_FIELD})
    firestore_store.set_schema_version(1)
    shop = ExecutionFilter(labels=(("team", "shop"),))
    assert firestore_store.list_executions(A, shop).items == []

    assert [m.version for m in migrate(firestore_store)] == [2, 3]
    assert [r.id for r in firestore_store.list_executions(A, shop).items] == ["ex/3", "ex/1"]
    assert [r.id for r in firestore_store.list_executions(B, shop).items] == ["ex/9"]
    assert firestore_store.count_executions(A, shop)[ExecutionStatus.RUNNING] == 2
    assert firestore_store.backfill_search_fields() == 0
    assert firestore_store.get_execution(A, "ex/3") == records[3]  # the record itself is untouched
