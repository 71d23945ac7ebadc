"""Step logs on Firestore, one document per attempt under the step's document.

``tenants/{tenant}/executions/{id}/steps/{key}/logs/r{run:06}a{attempt:06}``: ids sort by
(run, attempt), so a step's attempts are listed in order by id range, no index needed. The
lines are one zlib-compressed JSON blob (``lines``): a thousand lines as an array of maps
would cost tens of thousands of index entries per write, and the bound on bytes per attempt
(``step_logs_max_bytes`` ≤ 900 KiB) keeps a document under Firestore's 1 MiB even
uncompressed. Each shipping batch is one batched write.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.layout import encode_id
from engine.records import StepLogRecord

#: Documents in one batched write at most (Firestore's limit is 500).
BATCH = 400
#: Steps whose logs are looked for at once when an execution is deleted.
_DELETE_CONCURRENCY = 16
_RUN_DIGITS = 6


def log_id(run: int, attempt: int) -> str:
    return f"r{run:0{_RUN_DIGITS}d}a{attempt:0{_RUN_DIGITS}d}"


class FirestoreStepLogs:
    """A :class:`~engine.ports.StepLogStore` on the store's Firestore client."""

    def __init__(self, client: firestore.Client) -> None:
        self._client = client

    def _logs(self, tenant: str, execution_id: str, step_key: str) -> Any:
        return self._client.collection(
            "tenants", encode_id(tenant), "executions", encode_id(execution_id), "steps", encode_id(step_key), "logs"
        )

    def put_step_logs(self, records: Sequence[StepLogRecord]) -> None:
        for start in range(0, len(records), BATCH):
            batch = self._client.batch()
            for r in records[start : start + BATCH]:
                ref = self._logs(r.tenant, r.execution_id, r.step_key).document(log_id(r.run, r.attempt))
                batch.set(ref, _to_document(r))
            with translated_errors():
                batch.commit()

    def list_step_logs(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        *,
        after: tuple[int, int] | None = None,
        run: int | None = None,
        attempt: int | None = None,
        limit: int = 10,
    ) -> list[StepLogRecord]:
        logs = self._logs(tenant, execution_id, step_key)
        query = logs.order_by(FieldPath.document_id())
        low = log_id(*after) if after is not None else None
        if run is not None and (low is None or low < log_id(run, 0)):
            low = log_id(run, 0)  # attempts count from 1: (run, 0) is just before the run's first
        if low is not None:
            query = query.where(filter=FieldFilter(FieldPath.document_id(), ">", logs.document(low)))
        if run is not None:
            query = query.where(filter=FieldFilter(FieldPath.document_id(), "<", logs.document(log_id(run + 1, 0))))
        if attempt is None:
            query = query.limit(limit)
        with translated_errors():
            documents = list(query.stream())
        found = [_from_document(tenant, execution_id, step_key, d.to_dict()) for d in documents]
        if attempt is not None:  # a handful of attempts per step: filtered here, no index
            found = [r for r in found if r.attempt == attempt][:limit]
        return found

    def delete_step_logs(self, tenant: str, execution_id: str, step_keys: Sequence[str]) -> None:
        """Every attempt's document under each step, a bounded batched write at a time.

        One query per step (the documents are found under their step), so a foreach's items
        are asked ``_DELETE_CONCURRENCY`` at a time.
        """
        if len(step_keys) <= 1:
            for step_key in step_keys:
                self._delete_step(tenant, execution_id, step_key)
            return
        with ThreadPoolExecutor(max_workers=min(len(step_keys), _DELETE_CONCURRENCY)) as pool:
            list(pool.map(lambda key: self._delete_step(tenant, execution_id, key), step_keys))

    def _delete_step(self, tenant: str, execution_id: str, step_key: str) -> None:
        logs = self._logs(tenant, execution_id, step_key)
        while True:
            with translated_errors():
                refs = [snapshot.reference for snapshot in logs.limit(BATCH).select([]).stream()]
            if not refs:
                return
            batch = self._client.batch()
            for ref in refs:
                batch.delete(ref)
            with translated_errors():
                batch.commit()

    def close(self) -> None:
        """The client belongs to the store, which closes it."""


def _to_document(record: StepLogRecord) -> dict[str, Any]:
    lines = json.dumps(record.lines, ensure_ascii=False, separators=(",", ":")).encode()
    return {
        "run": record.run,
        "attempt": record.attempt,
        "lines": zlib.compress(lines, 1),
        "dropped": record.dropped,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "schema_version": record.schema_version,
    }


def _from_document(tenant: str, execution_id: str, step_key: str, data: dict[str, Any]) -> StepLogRecord:
    return StepLogRecord(
        tenant=tenant,
        execution_id=execution_id,
        step_key=step_key,
        run=data["run"],
        attempt=data["attempt"],
        lines=json.loads(zlib.decompress(data["lines"])),
        dropped=data["dropped"],
        started_at=data["started_at"],
        finished_at=data["finished_at"],
        schema_version=data.get("schema_version", 1),
    )
