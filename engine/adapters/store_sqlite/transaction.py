"""The :class:`~engine.ports.Transaction` port on SQLite: writes are buffered, then applied at commit.

Reads inside a transaction see its own buffered writes; :meth:`SqliteTransaction.apply` writes
them all, each table by one function so the document and its column copies cannot drift apart.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from engine.adapters.payloads import record_from_dict, record_to_dict
from engine.adapters.store_sqlite import search
from engine.adapters.store_sqlite.codec import (
    DocCodec,
    InputLoader,
    dumps,
    fresh,
    load,
    load_all,
    load_execution,
    spilled_names,
    trigger_row,
    write_payloads,
)
from engine.adapters.store_sqlite.schema import SELECT_EXECUTION, SELECT_LATEST_VERSION, UPSERT_TRIGGER
from engine.errors import AlreadyExists
from engine.records import (
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    ItemChunkRecord,
    SignalRecord,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)

_SELECT_EXECUTION_BY_KEY = (
    "SELECT doc, spilled, tenant, id, '' FROM executions WHERE tenant = ? AND idempotency_key = ?"
)
_SELECT_STEPS_IN = (
    "SELECT doc, spilled, tenant, execution_id, key FROM steps"
    " WHERE tenant = ? AND execution_id = ? AND key IN (SELECT value FROM json_each(?))"
)
#: An execution input larger than this (as JSON) is kept in ``execution_inputs`` and read on
#: first use; a smaller one stays in the header's document, decoded with it (no extra read).
_INLINE_INPUT_BYTES = 16 * 1024
_UPSERT_INPUT = """
    INSERT INTO execution_inputs (tenant, id, body) VALUES (?, ?, ?)
    ON CONFLICT (tenant, id) DO UPDATE SET body = excluded.body"""
_SELECT_ITEM_CHUNK = "SELECT doc FROM item_chunks WHERE tenant = ? AND execution_id = ? AND step_id = ? AND chunk = ?"
_UPSERT_ITEM_CHUNK = """
    INSERT INTO item_chunks (tenant, execution_id, step_id, chunk, doc) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (tenant, execution_id, step_id, chunk) DO UPDATE SET doc = excluded.doc"""
_UPSERT_EXECUTION = """
    INSERT INTO executions
      (tenant, id, workflow, status, created_at, deadline_at, idempotency_key, doc, spilled)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, id) DO UPDATE SET
      workflow = excluded.workflow, status = excluded.status, created_at = excluded.created_at,
      deadline_at = excluded.deadline_at, idempotency_key = excluded.idempotency_key,
      doc = excluded.doc, spilled = excluded.spilled"""
_UPSERT_STEP = """
    INSERT INTO steps (tenant, execution_id, key, status, dispatched_at, lease_until, wake_at, doc, spilled)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (tenant, execution_id, key) DO UPDATE SET
      status = excluded.status, dispatched_at = excluded.dispatched_at,
      lease_until = excluded.lease_until, wake_at = excluded.wake_at,
      doc = excluded.doc, spilled = excluded.spilled"""
_SELECT_TRIGGER = "SELECT doc FROM triggers WHERE tenant = ? AND id = ?"


class SqliteTransaction:
    """A :class:`~engine.ports.Transaction`: reads see the buffered writes, ``apply`` writes them."""

    def __init__(self, conn: sqlite3.Connection, codec: DocCodec, load_input: InputLoader) -> None:
        self._conn = conn
        self._codec = codec
        self._load_input = load_input
        # Buffered writes, as record_to_dict output, keyed by record identity.
        self._executions: dict[tuple[str, str], dict[str, Any]] = {}
        self._steps: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._events: dict[tuple[str, str, str], dict[str, Any]] = {}
        self._chunks: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        # A list, not a dict: putting one version twice must fail like any taken number.
        self._versions: list[dict[str, Any]] = []
        self._triggers: dict[tuple[str, str], dict[str, Any]] = {}
        # Event log, waiters and kept signals; ``None`` buffers a delete.
        self._inbound: dict[tuple[str, str], dict[str, Any]] = {}
        self._waiters: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        self._signals: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        # Whether each step row read here has fields out of line (absent rows have none). Under
        # the write lock nobody else changes them, so writing a row without out-of-line fields
        # that had none needs no delete from ``payloads``: one statement less per step write.
        self._spilled_steps: dict[tuple[str, str, str], bool] = {}

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        buffered = self._executions.get((tenant, execution_id))
        if buffered is not None:
            return fresh(ExecutionRecord, buffered)
        row = self._conn.execute(SELECT_EXECUTION, (tenant, execution_id)).fetchone()
        return None if row is None else load_execution(self._conn, row, self._load_input)

    def find_execution_by_key(self, tenant: str, idempotency_key: str) -> ExecutionRecord | None:
        for (buffered_tenant, _), data in self._executions.items():
            if buffered_tenant == tenant and data["idempotency_key"] == idempotency_key:
                return fresh(ExecutionRecord, data)
        row = self._conn.execute(_SELECT_EXECUTION_BY_KEY, (tenant, idempotency_key)).fetchone()
        if row is None or (tenant, row[3]) in self._executions:
            # Absent, or the stored header was rewritten in this transaction with another key.
            return None
        return load_execution(self._conn, row, self._load_input)

    def find_executions_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, ExecutionRecord]:
        return {key: record for key in keys if (record := self.find_execution_by_key(tenant, key)) is not None}

    def get_steps(self, tenant: str, execution_id: str, keys: Sequence[str]) -> dict[str, StepRecord]:
        rows = self._conn.execute(_SELECT_STEPS_IN, (tenant, execution_id, dumps(keys))).fetchall()
        found = {step.key: step for step in load_all(self._conn, StepRecord, rows)}
        spilled = {row[4]: row[1] is not None for row in rows}
        for key in keys:
            self._spilled_steps.setdefault((tenant, execution_id, key), spilled.get(key, False))
            buffered = self._steps.get((tenant, execution_id, key))
            if buffered is not None:
                found[key] = fresh(StepRecord, buffered)
        return found

    def get_execution_and_steps(
        self, tenant: str, execution_id: str, keys: Sequence[str]
    ) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        # Local reads: two statements cost no more than one combined.
        return self.get_execution(tenant, execution_id), self.get_steps(tenant, execution_id, keys)

    def latest_workflow_version(self, tenant: str, name: str) -> WorkflowVersionRecord | None:
        row = self._conn.execute(SELECT_LATEST_VERSION, (tenant, name)).fetchone()
        buffered = [data for data in self._versions if (data["tenant"], data["name"]) == (tenant, name)]
        stored = None if row is None else json.loads(row[0])
        if not buffered:
            # Every start asks for the latest version: a row just decoded shares nothing, so it
            # needs no copy (a buffered one does, see ``fresh``).
            return None if stored is None else record_from_dict(WorkflowVersionRecord, stored)
        candidates = buffered if stored is None else [*buffered, stored]
        return fresh(WorkflowVersionRecord, max(candidates, key=lambda data: int(data["version"])))

    def get_item_chunk(self, tenant: str, execution_id: str, step_id: str, chunk: int) -> ItemChunkRecord | None:
        identity = (tenant, execution_id, step_id, chunk)
        buffered = self._chunks.get(identity)
        if buffered is not None:
            return fresh(ItemChunkRecord, buffered)
        row = self._conn.execute(_SELECT_ITEM_CHUNK, identity).fetchone()
        return None if row is None else load(ItemChunkRecord, row[0])

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None:
        buffered = self._triggers.get((tenant, trigger_id))
        if buffered is not None:
            return fresh(TriggerRecord, buffered)
        row = self._conn.execute(_SELECT_TRIGGER, (tenant, trigger_id)).fetchone()
        return None if row is None else load(TriggerRecord, row[0])

    def put_workflow_version(self, record: WorkflowVersionRecord) -> None:
        self._versions.append(record_to_dict(record))

    def put_item_chunk(self, record: ItemChunkRecord) -> None:
        identity = (record.tenant, record.execution_id, record.step_id, record.chunk)
        self._chunks[identity] = record_to_dict(record)

    def put_trigger(self, record: TriggerRecord) -> None:
        self._triggers[(record.tenant, record.id)] = record_to_dict(record)

    def put_execution(self, record: ExecutionRecord) -> None:
        self._executions[(record.tenant, record.id)] = record_to_dict(record)

    def put_step(self, record: StepRecord) -> None:
        self._steps[(record.tenant, record.execution_id, record.key)] = record_to_dict(record)

    def add_event(self, event: EventRecord) -> None:
        # The first write of an id wins, as it does against events already stored.
        self._events.setdefault((event.tenant, event.execution_id, event.id), record_to_dict(event))

    def get_inbound_event(self, tenant: str, event_id: str) -> InboundEventRecord | None:
        buffered = self._inbound.get((tenant, event_id))
        if buffered is not None:
            return fresh(InboundEventRecord, buffered)
        row = self._conn.execute(
            "SELECT doc FROM inbound_events WHERE tenant = ? AND id = ?", (tenant, event_id)
        ).fetchone()
        return None if row is None else load(InboundEventRecord, row[0])

    def get_inbound_events(self, tenant: str, event_ids: Sequence[str]) -> dict[str, InboundEventRecord]:
        return {event_id: record for event_id in event_ids if (record := self.get_inbound_event(tenant, event_id))}

    def put_inbound_event(self, record: InboundEventRecord) -> None:
        self._inbound[(record.tenant, record.id)] = record_to_dict(record)

    def put_waiter(self, record: WaiterRecord) -> None:
        self._waiters[(record.tenant, record.execution_id, record.step_key)] = record_to_dict(record)

    def delete_waiter(self, tenant: str, execution_id: str, step_key: str) -> None:
        self._waiters[(tenant, execution_id, step_key)] = None

    def get_signal(self, tenant: str, execution_id: str, step_key: str) -> SignalRecord | None:
        key = (tenant, execution_id, step_key)
        if key in self._signals:
            buffered = self._signals[key]
            return None if buffered is None else fresh(SignalRecord, buffered)
        row = self._conn.execute(
            "SELECT doc FROM signals WHERE tenant = ? AND execution_id = ? AND step_key = ?", key
        ).fetchone()
        return None if row is None else load(SignalRecord, row[0])

    def put_signal(self, record: SignalRecord) -> None:
        self._signals[(record.tenant, record.execution_id, record.step_key)] = record_to_dict(record)

    def delete_signal(self, tenant: str, execution_id: str, step_key: str) -> None:
        self._signals[(tenant, execution_id, step_key)] = None

    def _apply_mailboxes(self) -> None:
        """Write the buffered event log entries, waiters and kept signals."""
        self._conn.executemany(
            "INSERT INTO inbound_events (tenant, id, route, accepted_at, routed, doc) VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (tenant, id) DO UPDATE SET route = excluded.route, accepted_at = excluded.accepted_at,"
            " routed = excluded.routed, doc = excluded.doc",
            [
                (d["tenant"], d["id"], d["route"], d["accepted_at"], int(d["routed"]), dumps(d))
                for d in self._inbound.values()
            ],
        )
        for (tenant, execution_id, step_key), waiter in self._waiters.items():
            self._conn.execute(
                "DELETE FROM waiters WHERE tenant = ? AND execution_id = ? AND step_key = ?",
                (tenant, execution_id, step_key),
            )
            if waiter is not None:
                self._conn.execute(
                    "INSERT INTO waiters (tenant, execution_id, step_key, route, doc) VALUES (?, ?, ?, ?, ?)",
                    (tenant, execution_id, step_key, waiter["route"], dumps(waiter)),
                )
        for (tenant, execution_id, step_key), signal in self._signals.items():
            self._conn.execute(
                "DELETE FROM signals WHERE tenant = ? AND execution_id = ? AND step_key = ?",
                (tenant, execution_id, step_key),
            )
            if signal is not None:
                self._conn.execute(
                    "INSERT INTO signals (tenant, execution_id, step_key, doc) VALUES (?, ?, ?, ?)",
                    (tenant, execution_id, step_key, dumps(signal)),
                )

    def apply(self) -> None:
        """Write every buffered record; the caller commits."""
        for data in self._versions:
            self._insert_version(data)
        for data in self._executions.values():
            self._upsert_execution(data)
        for data in self._steps.values():
            self._upsert_step(data)
        if self._chunks:
            self._conn.executemany(
                _UPSERT_ITEM_CHUNK, [(*identity, dumps(data)) for identity, data in self._chunks.items()]
            )
        if self._triggers:
            self._conn.executemany(UPSERT_TRIGGER, [trigger_row(data) for data in self._triggers.values()])
        if self._events:
            self._conn.executemany(
                "INSERT OR IGNORE INTO events (tenant, execution_id, id, doc) VALUES (?, ?, ?, ?)",
                [(d["tenant"], d["execution_id"], d["id"], dumps(d)) for d in self._events.values()],
            )
        if self._inbound or self._waiters or self._signals:
            self._apply_mailboxes()

    def _insert_version(self, data: dict[str, Any]) -> None:
        try:
            self._conn.execute(
                "INSERT INTO workflow_versions (tenant, name, version, doc) VALUES (?, ?, ?, ?)",
                (data["tenant"], data["name"], data["version"], dumps(data)),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"workflow {data['name']!r} version {data['version']} already exists") from exc

    def _upsert_execution(self, data: dict[str, Any]) -> None:
        tenant, execution_id = data["tenant"], data["id"]
        input_text = dumps(data["input"])
        large_input = len(input_text) > _INLINE_INPUT_BYTES
        header = {name: value for name, value in data.items() if name != "input"} if large_input else data
        doc, spilled = self._codec.encode(header)
        try:
            self._conn.execute(
                _UPSERT_EXECUTION,
                (
                    tenant,
                    execution_id,
                    data["workflow"],
                    data["status"],
                    data["created_at"],
                    data["deadline_at"],
                    data["idempotency_key"],
                    doc,
                    spilled_names(spilled),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(
                f"idempotency key {data['idempotency_key']!r} is already used by another execution"
            ) from exc
        write_payloads(self._conn, (tenant, execution_id, ""), spilled)
        search.sync_labels(self._conn, tenant, execution_id, data["labels"])
        if large_input:
            self._conn.execute(_UPSERT_INPUT, (tenant, execution_id, input_text))

    def _upsert_step(self, data: dict[str, Any]) -> None:
        owner = (data["tenant"], data["execution_id"], data["key"])
        doc, spilled = self._codec.encode(data)
        self._conn.execute(
            _UPSERT_STEP,
            (
                *owner,
                data["status"],
                data["dispatched_at"],
                data["lease_until"],
                data["wake_at"],
                doc,
                spilled_names(spilled),
            ),
        )
        if spilled or self._spilled_steps.get(owner, True):
            write_payloads(self._conn, owner, spilled)
