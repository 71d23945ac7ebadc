"""SQLite store: the embedded default backend.

One database file is shared by every worker process and thread on a machine. WAL mode lets
readers run beside the single writer, and every write transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock before its first read, so read-modify-write
cycles are serializable across threads and processes without optimistic retries.

Each record is one JSON document (``doc``) plus copies of the scalar columns that queries
filter or sort on; both are written by one function per table so they cannot drift apart.
Every primary key starts with the tenant. Execution and step fields whose JSON is larger
than ``inline_payload_bytes`` live out of line in ``payloads`` (claim-check, as in the
Firestore adapter), which keeps the hot rows that the reconciler scans small.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from engine.adapters import sqlite_purge, sqlite_search
from engine.adapters.payloads import record_from_dict, record_to_dict
from engine.errors import AlreadyExists, ConveyorError, InvalidRequest, NotFound, StoreUnavailable
from engine.ports import DUE_FIELD, Reads, Transaction
from engine.records import (
    SCHEMA_VERSION,
    ApiKeyRecord,
    Deferred,
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    ItemChunkRecord,
    Page,
    SignalRecord,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.search import ExecutionFilter
from engine.states import EXECUTION_ACTIVE, STEP_ACTIVE, ExecutionStatus, StepStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
#: Reads an execution's input: ``(tenant, execution_id) -> input``.
_InputLoader = Callable[[str, str], Any]

_BUSY_TIMEOUT_SECONDS = 30.0
_ATTEMPTS = 8
_BACKOFF_SECONDS = 0.01

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS workflow_versions (
        tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (tenant, name, version))""",
    """CREATE TABLE IF NOT EXISTS executions (
        tenant TEXT NOT NULL, id TEXT NOT NULL, workflow TEXT NOT NULL, status TEXT NOT NULL,
        created_at REAL NOT NULL, deadline_at REAL, idempotency_key TEXT,
        doc TEXT NOT NULL, spilled TEXT,
        PRIMARY KEY (tenant, id))""",
    """CREATE UNIQUE INDEX IF NOT EXISTS executions_by_key
        ON executions (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL""",
    "CREATE INDEX IF NOT EXISTS executions_by_created ON executions (tenant, created_at, id)",
    "CREATE INDEX IF NOT EXISTS executions_by_status ON executions (tenant, status)",
    """CREATE INDEX IF NOT EXISTS executions_by_deadline
        ON executions (deadline_at) WHERE deadline_at IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS steps (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL,
        dispatched_at REAL, lease_until REAL, wake_at REAL, doc TEXT NOT NULL, spilled TEXT,
        PRIMARY KEY (tenant, execution_id, key))""",
    "CREATE INDEX IF NOT EXISTS steps_by_dispatched ON steps (status, dispatched_at)",
    "CREATE INDEX IF NOT EXISTS steps_by_lease ON steps (status, lease_until)",
    "CREATE INDEX IF NOT EXISTS steps_by_wake ON steps (status, wake_at)",
    """CREATE TABLE IF NOT EXISTS payloads (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, step_key TEXT NOT NULL,
        field TEXT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (tenant, execution_id, step_key, field))""",
    """CREATE TABLE IF NOT EXISTS execution_inputs (
        tenant TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (tenant, id))""",
    """CREATE TABLE IF NOT EXISTS item_chunks (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, step_id TEXT NOT NULL, chunk INTEGER NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (tenant, execution_id, step_id, chunk))""",
    """CREATE TABLE IF NOT EXISTS events (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL,
        PRIMARY KEY (tenant, execution_id, id))""",
    """CREATE TABLE IF NOT EXISTS markers (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, name TEXT NOT NULL,
        PRIMARY KEY (tenant, execution_id, name))""",
    """CREATE TABLE IF NOT EXISTS arm_counts (
        tenant TEXT NOT NULL, bandit TEXT NOT NULL, arm TEXT NOT NULL,
        successes REAL NOT NULL, failures REAL NOT NULL,
        PRIMARY KEY (tenant, bandit, arm))""",
    """CREATE TABLE IF NOT EXISTS triggers (
        tenant TEXT NOT NULL, id TEXT NOT NULL, enabled INTEGER NOT NULL, next_fire_at REAL,
        doc TEXT NOT NULL, PRIMARY KEY (tenant, id))""",
    """CREATE INDEX IF NOT EXISTS triggers_by_next_fire
        ON triggers (next_fire_at) WHERE enabled = 1""",
    """CREATE TABLE IF NOT EXISTS api_keys (
        tenant TEXT NOT NULL, id TEXT NOT NULL, key_hash TEXT NOT NULL, created_at REAL NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (tenant, id))""",
    "CREATE UNIQUE INDEX IF NOT EXISTS api_keys_by_hash ON api_keys (key_hash)",
    """CREATE TABLE IF NOT EXISTS inbound_events (
        tenant TEXT NOT NULL, id TEXT NOT NULL, route TEXT NOT NULL, accepted_at REAL NOT NULL,
        routed INTEGER NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (tenant, id))""",
    "CREATE INDEX IF NOT EXISTS inbound_events_by_route ON inbound_events (tenant, route, accepted_at, id)",
    """CREATE INDEX IF NOT EXISTS inbound_events_unrouted
        ON inbound_events (accepted_at) WHERE routed = 0""",
    """CREATE INDEX IF NOT EXISTS inbound_events_routed
        ON inbound_events (accepted_at) WHERE routed = 1""",
    """CREATE TABLE IF NOT EXISTS waiters (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, step_key TEXT NOT NULL, route TEXT NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (tenant, execution_id, step_key))""",
    "CREATE INDEX IF NOT EXISTS waiters_by_route ON waiters (tenant, route)",
    """CREATE TABLE IF NOT EXISTS signals (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, step_key TEXT NOT NULL,
        doc TEXT NOT NULL, PRIMARY KEY (tenant, execution_id, step_key))""",
)

# Executions and steps are always selected as (doc, spilled, tenant, execution id, step key),
# the shape ``_load_spilled`` expects; the execution header's step key is ''.
_SELECT_EXECUTION = "SELECT doc, spilled, tenant, id, '' FROM executions WHERE tenant = ? AND id = ?"
_SELECT_EXECUTION_BY_KEY = (
    "SELECT doc, spilled, tenant, id, '' FROM executions WHERE tenant = ? AND idempotency_key = ?"
)
_SELECT_STEPS = (
    "SELECT doc, spilled, tenant, execution_id, key FROM steps WHERE tenant = ? AND execution_id = ? ORDER BY key"
)
_SELECT_STEPS_OF_MANY = (
    "SELECT doc, spilled, tenant, execution_id, key FROM steps"
    " WHERE tenant = ? AND execution_id IN (SELECT value FROM json_each(?)) ORDER BY execution_id, key"
)
_SELECT_STEPS_IN = (
    "SELECT doc, spilled, tenant, execution_id, key FROM steps"
    " WHERE tenant = ? AND execution_id = ? AND key IN (SELECT value FROM json_each(?))"
)
# Items are keyed "<step_id>[<index>]": their keys sort from step_id + "[" up to, not including,
# step_id + chr(0x5C) (the character after "["), a range of the primary key. The index test
# keeps out exactly the parent (key == step_id, no index).
_COUNT_ACTIVE_ITEMS = """
    SELECT COUNT(*) FROM steps
    WHERE tenant = ? AND execution_id = ? AND key >= ? || '[' AND key < ? || '\\'
      AND status IN (SELECT value FROM json_each(?))
      AND json_extract(doc, '$.step_id') = ? AND json_extract(doc, '$.index') IS NOT NULL"""
#: An execution input larger than this (as JSON) is kept in ``execution_inputs`` and read on
#: first use; a smaller one stays in the header's document, decoded with it (no extra read).
_INLINE_INPUT_BYTES = 16 * 1024
_SELECT_INPUT = "SELECT body FROM execution_inputs WHERE tenant = ? AND id = ?"
_UPSERT_INPUT = """
    INSERT INTO execution_inputs (tenant, id, body) VALUES (?, ?, ?)
    ON CONFLICT (tenant, id) DO UPDATE SET body = excluded.body"""
_SELECT_ITEM_CHUNK = "SELECT doc FROM item_chunks WHERE tenant = ? AND execution_id = ? AND step_id = ? AND chunk = ?"
_UPSERT_ITEM_CHUNK = """
    INSERT INTO item_chunks (tenant, execution_id, step_id, chunk, doc) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (tenant, execution_id, step_id, chunk) DO UPDATE SET doc = excluded.doc"""
_SELECT_LATEST_VERSION = "SELECT doc FROM workflow_versions WHERE tenant = ? AND name = ? ORDER BY version DESC LIMIT 1"
_LIST_WORKFLOWS = """
    SELECT doc, name FROM workflow_versions AS w
    WHERE tenant = ?1 AND (?2 IS NULL OR name > ?2)
      AND version = (SELECT MAX(version) FROM workflow_versions WHERE tenant = w.tenant AND name = w.name)
    ORDER BY name LIMIT ?3"""
_LIST_WORKFLOW_VERSIONS = """
    SELECT doc, version FROM workflow_versions
    WHERE tenant = ?1 AND name = ?2 AND (?3 IS NULL OR version < ?3)
    ORDER BY version DESC LIMIT ?4"""
_LIST_EVENTS = """
    SELECT doc, id FROM events WHERE tenant = ?1 AND execution_id = ?2 AND (?3 IS NULL OR id > ?3)
    ORDER BY id LIMIT ?4"""
_LIST_TRIGGERS = """
    SELECT doc, id FROM triggers WHERE tenant = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"""
# The due column differs per status (``DUE_FIELD``); ``<=`` also excludes NULL.
_DUE_STEPS = {
    field: f"SELECT doc, spilled, tenant, execution_id, key FROM steps WHERE status = ? AND {field} <= ?"  # noqa: S608  # fixed column names
    f" AND ({field}, tenant, execution_id, key) > (?, ?, ?, ?)"
    f" ORDER BY {field}, tenant, execution_id, key LIMIT ?"
    for field in ("dispatched_at", "lease_until", "wake_at")
}
#: A cursor before every row: a due field is a number, and numbers sort before text in SQLite.
_BEFORE_ALL = (float("-inf"), "", "", "")
_OVERDUE_EXECUTIONS = """
    SELECT doc, spilled, tenant, id, '' FROM executions
    WHERE deadline_at <= ? AND status IN (SELECT value FROM json_each(?))
    ORDER BY deadline_at LIMIT ?"""
_ACTIVE_STATUSES = json.dumps(sorted(EXECUTION_ACTIVE))
_ACTIVE_STEP_STATUSES = json.dumps(sorted(STEP_ACTIVE))

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
_UPSERT_TRIGGER = """
    INSERT INTO triggers (tenant, id, enabled, next_fire_at, doc) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (tenant, id) DO UPDATE SET
      enabled = excluded.enabled, next_fire_at = excluded.next_fire_at, doc = excluded.doc"""
# Upsert on the primary key only: a key hash taken by another key still fails (AlreadyExists).
_UPSERT_API_KEY = """
    INSERT INTO api_keys (tenant, id, key_hash, created_at, doc) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (tenant, id) DO UPDATE SET
      key_hash = excluded.key_hash, created_at = excluded.created_at, doc = excluded.doc"""


class SqliteStore:
    """The :class:`~engine.ports.Store` port on one SQLite file (WAL, one connection per thread).

    Safe for several processes and several threads per process. Fields of executions and
    steps larger than ``inline_payload_bytes`` as JSON are stored out of line.
    """

    def __init__(self, path: str | os.PathLike[str], *, inline_payload_bytes: int = 256 * 1024) -> None:
        self._path = os.fspath(path)
        if self._path == ":memory:":
            # Every thread would get a database of its own.
            raise ValueError("SqliteStore needs a file path; ':memory:' is not shared between threads")
        self._codec = _DocCodec(inline_payload_bytes)
        self._connections = _Connections(self._path)
        self._write(_create_schema)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    # transactions

    def atomic(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` under the database write lock and commit its buffered writes."""

        def run(conn: sqlite3.Connection) -> T:
            tx = _SqliteTransaction(conn, self._codec, self._load_input)
            result = fn(tx)
            tx.apply()
            return result

        return self._write(run)

    def read(self, fn: Callable[[Reads], T]) -> T:
        """Run ``fn`` in a read transaction: one snapshot of the database, and no write lock."""
        return self._read(lambda conn: fn(_SqliteTransaction(conn, self._codec, self._load_input)))

    # workflows

    def get_workflow_version(self, tenant: str, name: str, version: int | None = None) -> WorkflowVersionRecord | None:
        if version is None:
            row = self._read(lambda c: c.execute(_SELECT_LATEST_VERSION, (tenant, name)).fetchone())
        else:
            row = self._read(
                lambda c: c.execute(
                    "SELECT doc FROM workflow_versions WHERE tenant = ? AND name = ? AND version = ?",
                    (tenant, name, version),
                ).fetchone()
            )
        return None if row is None else _load(WorkflowVersionRecord, row[0])

    def list_workflows(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        (after,) = _decode_cursor(cursor, (str,))
        rows = self._read(lambda c: c.execute(_LIST_WORKFLOWS, (tenant, after, _fetch_count(limit))).fetchall())
        return _page(rows, limit, lambda row: _load(WorkflowVersionRecord, row[0]), lambda row: [row[1]])

    def list_workflow_versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        (before,) = _decode_cursor(cursor, (int,))
        rows = self._read(
            lambda c: c.execute(_LIST_WORKFLOW_VERSIONS, (tenant, name, before, _fetch_count(limit))).fetchall()
        )
        return _page(rows, limit, lambda row: _load(WorkflowVersionRecord, row[0]), lambda row: [row[1]])

    def set_workflow_archived(self, tenant: str, name: str, archived: bool) -> None:
        def update(conn: sqlite3.Connection) -> None:
            rows = conn.execute(
                "SELECT version, doc FROM workflow_versions WHERE tenant = ? AND name = ?", (tenant, name)
            ).fetchall()
            if not rows:
                raise NotFound(f"workflow {name!r} not found")
            for version, doc in rows:
                data = json.loads(doc)
                data["archived"] = archived
                conn.execute(
                    "UPDATE workflow_versions SET doc = ? WHERE tenant = ? AND name = ? AND version = ?",
                    (_dumps(data), tenant, name, version),
                )

        self._write(update)

    # executions

    def mark_once(self, tenant: str, execution_id: str, name: str) -> bool:
        insert = "INSERT OR IGNORE INTO markers (tenant, execution_id, name) VALUES (?, ?, ?)"
        return bool(self._write(lambda c: c.execute(insert, (tenant, execution_id, name)).rowcount))

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        def read(conn: sqlite3.Connection) -> ExecutionRecord | None:
            row = conn.execute(_SELECT_EXECUTION, (tenant, execution_id)).fetchone()
            return None if row is None else _load_execution(conn, row, self._load_input)

        return self._read(read)

    def list_executions(
        self, tenant: str, where: ExecutionFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Executions newest first; ``created_after`` is inclusive, ``created_before`` exclusive."""
        last_created, last_id = _decode_cursor(cursor, (float, str))
        after = None if cursor is None else (last_created, last_id)
        fetch = _fetch_count(limit)

        def read(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            sql, params = sqlite_search.list_query(conn, tenant, where or ExecutionFilter(), after, fetch)
            rows = conn.execute(sql, params).fetchall()
            return [_load_execution(conn, row, self._load_input) for row in rows]

        records = self._read(read)
        return _page(records, limit, lambda r: r, lambda r: [r.created_at, r.id])

    def count_executions(self, tenant: str, where: ExecutionFilter | None = None) -> dict[ExecutionStatus, int]:
        """One ``GROUP BY status`` over the filtered executions."""
        return self._read(lambda c: sqlite_search.count(c, tenant, where or ExecutionFilter()))

    def backfill_search_fields(self) -> int:
        """Fill ``execution_labels`` for executions written before it existed."""
        return self._write(sqlite_search.backfill_labels)

    def count_active_executions(self, tenant: str) -> int:
        row = self._read(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM executions WHERE tenant = ? AND status IN (SELECT value FROM json_each(?))",
                (tenant, _ACTIVE_STATUSES),
            ).fetchone()
        )
        return int(row[0])

    def count_active_items(self, tenant: str, execution_id: str, step_id: str) -> int:
        """Active foreach items of ``step_id`` (records with an index); the parent is not one."""
        params = (tenant, execution_id, step_id, step_id, _ACTIVE_STEP_STATUSES, step_id)
        row = self._read(lambda c: c.execute(_COUNT_ACTIVE_ITEMS, params).fetchone())
        return int(row[0])

    def list_steps(self, tenant: str, execution_id: str) -> list[StepRecord]:
        return self._read(lambda c: _load_all(c, StepRecord, c.execute(_SELECT_STEPS, (tenant, execution_id))))

    def list_steps_many(self, tenant: str, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {execution_id: [] for execution_id in execution_ids}
        params = (tenant, _dumps(list(found)))
        for step in self._read(lambda c: _load_all(c, StepRecord, c.execute(_SELECT_STEPS_OF_MANY, params))):
            found[step.execution_id].append(step)
        return found

    def list_events(self, tenant: str, execution_id: str, *, after: str | None = None, limit: int = 500) -> Page:
        """Events by id; ``next_cursor`` is the last event id of the page, to pass as ``after``."""
        rows = self._read(
            lambda c: c.execute(_LIST_EVENTS, (tenant, execution_id, after, _fetch_count(limit))).fetchall()
        )
        items = [_load(EventRecord, row[0]) for row in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    # reconciler scans

    def due_steps(
        self, status: StepStatus, before: float, limit: int = 200, after: StepRecord | None = None
    ) -> list[StepRecord]:
        field = DUE_FIELD[status]
        sql = _DUE_STEPS[field]
        cursor = _BEFORE_ALL if after is None else (getattr(after, field), after.tenant, after.execution_id, after.key)
        params = (status.value, before, *cursor, limit)
        return self._read(lambda c: _load_all(c, StepRecord, c.execute(sql, params)))

    def overdue_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        params = (before, _ACTIVE_STATUSES, limit)
        return self._read(
            lambda c: [_load_execution(c, row, self._load_input) for row in c.execute(_OVERDUE_EXECUTIONS, params)]
        )

    # retention (engine/adapters/sqlite_purge.py)

    def expired_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        query, params = sqlite_purge.EXPIRED_EXECUTIONS, (before, limit)
        return self._read(lambda c: [_load_execution(c, row, self._load_input) for row in c.execute(query, params)])

    def purge_execution(self, tenant: str, execution_id: str, limit: int = 200) -> bool:
        return self._write(lambda c: sqlite_purge.purge_batch(c, tenant, execution_id, limit))

    # triggers

    def put_trigger(self, record: TriggerRecord) -> None:
        params = _trigger_row(record_to_dict(record))
        self._write(lambda c: c.execute(_UPSERT_TRIGGER, params))

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None:
        return self.read(lambda reads: reads.get_trigger(tenant, trigger_id))

    def list_triggers(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        (after,) = _decode_cursor(cursor, (str,))
        rows = self._read(lambda c: c.execute(_LIST_TRIGGERS, (tenant, after, _fetch_count(limit))).fetchall())
        return _page(rows, limit, lambda row: _load(TriggerRecord, row[0]), lambda row: [row[1]])

    def delete_trigger(self, tenant: str, trigger_id: str) -> bool:
        cursor = self._write(
            lambda c: c.execute("DELETE FROM triggers WHERE tenant = ? AND id = ?", (tenant, trigger_id))
        )
        return cursor.rowcount > 0

    def due_triggers(self, before: float, limit: int = 200) -> list[TriggerRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM triggers WHERE enabled = 1 AND next_fire_at <= ? ORDER BY next_fire_at LIMIT ?",
                (before, limit),
            ).fetchall()
        )
        return [_load(TriggerRecord, row[0]) for row in rows]

    # the external event log

    def list_inbound_events(
        self, tenant: str, route: str, *, since: float, limit: int = 100
    ) -> list[InboundEventRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM inbound_events WHERE tenant = ? AND route = ? AND accepted_at >= ?"
                " ORDER BY accepted_at, id LIMIT ?",
                (tenant, route, since, limit),
            ).fetchall()
        )
        return [_load(InboundEventRecord, row[0]) for row in rows]

    def list_waiters(self, tenant: str, route: str, limit: int = 500) -> list[WaiterRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM waiters WHERE tenant = ? AND route = ? ORDER BY execution_id, step_key LIMIT ?",
                (tenant, route, limit),
            ).fetchall()
        )
        return [_load(WaiterRecord, row[0]) for row in rows]

    def due_inbound_events(self, before: float, limit: int = 200) -> list[InboundEventRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM inbound_events WHERE routed = 0 AND accepted_at <= ? ORDER BY accepted_at LIMIT ?",
                (before, limit),
            ).fetchall()
        )
        return [_load(InboundEventRecord, row[0]) for row in rows]

    def trim_inbound_events(self, before: float, limit: int = 200) -> int:
        delete = (
            "DELETE FROM inbound_events WHERE rowid IN (SELECT rowid FROM inbound_events"
            " WHERE routed = 1 AND accepted_at < ? ORDER BY accepted_at LIMIT ?)"
        )
        return int(self._write(lambda c: c.execute(delete, (before, limit)).rowcount))

    # API keys

    def put_api_key(self, record: ApiKeyRecord) -> None:
        params = (
            record.tenant,
            record.id,
            record.key_hash,
            record.created_at,
            _dumps(record_to_dict(record)),
        )
        try:
            self._write(lambda c: c.execute(_UPSERT_API_KEY, params))
        except AlreadyExists:
            raise AlreadyExists("an API key with that hash already exists") from None

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._read(lambda c: c.execute("SELECT doc FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone())
        return None if row is None else _load(ApiKeyRecord, row[0])

    def list_api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM api_keys WHERE tenant = ? ORDER BY created_at, id", (tenant,)
            ).fetchall()
        )
        return [_load(ApiKeyRecord, row[0]) for row in rows]

    # operations

    def ping(self) -> None:
        self._read(lambda c: c.execute("SELECT 1").fetchone())

    def schema_version(self) -> int:
        row = self._read(lambda c: c.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone())
        return 0 if row is None else int(row[0])

    def set_schema_version(self, version: int) -> None:
        self._write(
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(version),),
            )
        )

    def close(self) -> None:
        self._connections.close()

    # plumbing

    def run_write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a write transaction on this thread's connection, for adapters that
        keep their own tables in the store's file (prompts, long-term memory)."""
        return self._write(work)

    def run_read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in a read transaction (one snapshot) on this thread's connection."""
        return self._read(work)

    def _load_input(self, tenant: str, execution_id: str) -> Any:
        """An execution's input, stored beside its header (see :func:`_load_execution`)."""
        row = self._read(lambda c: c.execute(_SELECT_INPUT, (tenant, execution_id)).fetchone())
        if row is None:
            raise ConveyorError(f"the input of execution {execution_id!r} is missing from the store")
        return json.loads(row[0])

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connections.get()
        if conn.in_transaction:
            # A nested write would silently join (and commit or roll back with) the outer one.
            raise RuntimeError("store writes cannot run inside Store.atomic; use its Transaction")
        return _run(conn, "BEGIN IMMEDIATE", work)

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connections.get()
        if conn.in_transaction:
            # Called from inside ``atomic`` on this thread: read within that transaction.
            try:
                return work(conn)
            except sqlite3.Error as exc:
                raise _translate(exc) from exc
        # A deferred transaction gives multi-statement reads (a row and its payloads) one snapshot.
        return _run(conn, "BEGIN", work)


class _SqliteTransaction:
    """A :class:`~engine.ports.Transaction`: reads see the buffered writes, ``apply`` writes them."""

    def __init__(self, conn: sqlite3.Connection, codec: _DocCodec, load_input: _InputLoader) -> None:
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

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        buffered = self._executions.get((tenant, execution_id))
        if buffered is not None:
            return _fresh(ExecutionRecord, buffered)
        row = self._conn.execute(_SELECT_EXECUTION, (tenant, execution_id)).fetchone()
        return None if row is None else _load_execution(self._conn, row, self._load_input)

    def find_execution_by_key(self, tenant: str, idempotency_key: str) -> ExecutionRecord | None:
        for (buffered_tenant, _), data in self._executions.items():
            if buffered_tenant == tenant and data["idempotency_key"] == idempotency_key:
                return _fresh(ExecutionRecord, data)
        row = self._conn.execute(_SELECT_EXECUTION_BY_KEY, (tenant, idempotency_key)).fetchone()
        if row is None or (tenant, row[3]) in self._executions:
            # Absent, or the stored header was rewritten in this transaction with another key.
            return None
        return _load_execution(self._conn, row, self._load_input)

    def find_executions_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, ExecutionRecord]:
        return {key: record for key in keys if (record := self.find_execution_by_key(tenant, key)) is not None}

    def get_steps(self, tenant: str, execution_id: str, keys: Sequence[str]) -> dict[str, StepRecord]:
        found = {
            step.key: step
            for step in _load_all(
                self._conn,
                StepRecord,
                self._conn.execute(_SELECT_STEPS_IN, (tenant, execution_id, _dumps(keys))),
            )
        }
        for key in keys:
            buffered = self._steps.get((tenant, execution_id, key))
            if buffered is not None:
                found[key] = _fresh(StepRecord, buffered)
        return found

    def get_execution_and_steps(
        self, tenant: str, execution_id: str, keys: Sequence[str]
    ) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        # Local reads: two statements cost no more than one combined.
        return self.get_execution(tenant, execution_id), self.get_steps(tenant, execution_id, keys)

    def latest_workflow_version(self, tenant: str, name: str) -> WorkflowVersionRecord | None:
        row = self._conn.execute(_SELECT_LATEST_VERSION, (tenant, name)).fetchone()
        candidates = [data for data in self._versions if (data["tenant"], data["name"]) == (tenant, name)]
        if row is not None:
            candidates.append(json.loads(row[0]))
        if not candidates:
            return None
        return _fresh(WorkflowVersionRecord, max(candidates, key=lambda data: int(data["version"])))

    def get_item_chunk(self, tenant: str, execution_id: str, step_id: str, chunk: int) -> ItemChunkRecord | None:
        identity = (tenant, execution_id, step_id, chunk)
        buffered = self._chunks.get(identity)
        if buffered is not None:
            return _fresh(ItemChunkRecord, buffered)
        row = self._conn.execute(_SELECT_ITEM_CHUNK, identity).fetchone()
        return None if row is None else _load(ItemChunkRecord, row[0])

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None:
        buffered = self._triggers.get((tenant, trigger_id))
        if buffered is not None:
            return _fresh(TriggerRecord, buffered)
        row = self._conn.execute(_SELECT_TRIGGER, (tenant, trigger_id)).fetchone()
        return None if row is None else _load(TriggerRecord, row[0])

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
            return _fresh(InboundEventRecord, buffered)
        row = self._conn.execute(
            "SELECT doc FROM inbound_events WHERE tenant = ? AND id = ?", (tenant, event_id)
        ).fetchone()
        return None if row is None else _load(InboundEventRecord, row[0])

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
            return None if buffered is None else _fresh(SignalRecord, buffered)
        row = self._conn.execute(
            "SELECT doc FROM signals WHERE tenant = ? AND execution_id = ? AND step_key = ?", key
        ).fetchone()
        return None if row is None else _load(SignalRecord, row[0])

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
                (d["tenant"], d["id"], d["route"], d["accepted_at"], int(d["routed"]), _dumps(d))
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
                    (tenant, execution_id, step_key, waiter["route"], _dumps(waiter)),
                )
        for (tenant, execution_id, step_key), signal in self._signals.items():
            self._conn.execute(
                "DELETE FROM signals WHERE tenant = ? AND execution_id = ? AND step_key = ?",
                (tenant, execution_id, step_key),
            )
            if signal is not None:
                self._conn.execute(
                    "INSERT INTO signals (tenant, execution_id, step_key, doc) VALUES (?, ?, ?, ?)",
                    (tenant, execution_id, step_key, _dumps(signal)),
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
                _UPSERT_ITEM_CHUNK, [(*identity, _dumps(data)) for identity, data in self._chunks.items()]
            )
        self._conn.executemany(_UPSERT_TRIGGER, [_trigger_row(data) for data in self._triggers.values()])
        self._conn.executemany(
            "INSERT OR IGNORE INTO events (tenant, execution_id, id, doc) VALUES (?, ?, ?, ?)",
            [(d["tenant"], d["execution_id"], d["id"], _dumps(d)) for d in self._events.values()],
        )
        self._apply_mailboxes()

    def _insert_version(self, data: dict[str, Any]) -> None:
        try:
            self._conn.execute(
                "INSERT INTO workflow_versions (tenant, name, version, doc) VALUES (?, ?, ?, ?)",
                (data["tenant"], data["name"], data["version"], _dumps(data)),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"workflow {data['name']!r} version {data['version']} already exists") from exc

    def _upsert_execution(self, data: dict[str, Any]) -> None:
        tenant, execution_id = data["tenant"], data["id"]
        input_text = _dumps(data["input"])
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
                    _spilled_names(spilled),
                ),
            )
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(
                f"idempotency key {data['idempotency_key']!r} is already used by another execution"
            ) from exc
        _write_payloads(self._conn, (tenant, execution_id, ""), spilled)
        sqlite_search.sync_labels(self._conn, tenant, execution_id, data["labels"])
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
                _spilled_names(spilled),
            ),
        )
        _write_payloads(self._conn, owner, spilled)


class _DocCodec:
    """Splits a record dict into its inline JSON document and its out-of-line fields."""

    def __init__(self, inline_bytes: int) -> None:
        self._inline_bytes = inline_bytes

    def encode(self, data: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The inline document, and JSON text by field name of the fields stored out of line."""
        doc = _dumps(data)
        # _dumps escapes non-ASCII, so the text length is its size in bytes.
        if len(doc) <= self._inline_bytes:
            return doc, {}
        spilled = {name: text for name, value in data.items() if len(text := _dumps(value)) > self._inline_bytes}
        inline = {name: value for name, value in data.items() if name not in spilled}
        return _dumps(inline), spilled


class _Connections:
    """One connection per thread (and per process: connections never cross a fork)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._owned: list[tuple[threading.Thread, sqlite3.Connection]] = []
        # Connections opened by a parent process before fork(). SQLite forbids using them in the
        # child, and closing them there could disturb the parent's locks, so they are kept
        # referenced (never garbage-collected, hence never closed) and never used.
        self._inherited: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._pid == os.getpid() and not self._closed:
            return conn
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            self._close_orphans()
            conn = _connect(self._path)
            self._owned.append((threading.current_thread(), conn))
        self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _, conn in self._owned:
                conn.close()
            self._owned = []

    def _after_fork(self) -> None:
        # Only the forking thread exists in a fresh child, so the lock may be replaced
        # (a copy of it could be held forever by a thread that did not survive the fork).
        self._lock = threading.Lock()
        self._inherited.extend(conn for _, conn in self._owned)
        self._owned = []
        self._pid = os.getpid()

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended, so short-lived threads do not leak."""
        alive = []
        for thread, conn in self._owned:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                conn.close()
        self._owned = alive


def _connect(path: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: this module issues BEGIN/COMMIT itself. check_same_thread=False
        # only so close() can close every thread's connection; each is used by one thread.
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a commit the caller was told about survives power loss, not only a crash.
        conn.execute("PRAGMA synchronous = FULL")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite store {path!r}: {exc}") from exc
    return conn


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in (*_SCHEMA, *sqlite_search.SCHEMA, *sqlite_purge.SCHEMA):
        conn.execute(statement)
    # A fresh store is created at the current schema; an existing one keeps its version.
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))


def _run(conn: sqlite3.Connection, begin: str, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a transaction opened by ``begin``, retrying when the database is busy."""
    for attempt in range(_ATTEMPTS):
        try:
            return _once(conn, begin, work)
        except sqlite3.OperationalError as exc:
            if not _is_contention(exc) or attempt == _ATTEMPTS - 1:
                raise _translate(exc) from exc
        except sqlite3.Error as exc:
            raise _translate(exc) from exc
        # busy_timeout already waited; this covers the busy cases SQLite reports without waiting.
        time.sleep(_BACKOFF_SECONDS * 2**attempt * random.uniform(0.5, 1.5))  # noqa: S311 - jitter only
    raise AssertionError("unreachable")


def _once(conn: sqlite3.Connection, begin: str, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute(begin)
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _is_contention(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        # Extended codes (SQLITE_BUSY_SNAPSHOT, ...) keep the primary code in the low byte.
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def _translate(exc: sqlite3.Error) -> ConveyorError:
    if isinstance(exc, sqlite3.IntegrityError):
        if "UNIQUE" in str(exc):
            return AlreadyExists(f"a record with that identity already exists ({exc})")
        return ConveyorError(f"the store rejected a write: {exc}")
    return StoreUnavailable(f"SQLite store error: {exc}")


def _dumps(value: Any) -> str:
    # ensure_ascii (the default) escapes lone surrogates, which SQLite's UTF-8 text cannot hold.
    return json.dumps(value, separators=(",", ":"))


def _spilled_names(spilled: dict[str, str]) -> str | None:
    return _dumps(sorted(spilled)) if spilled else None


def _write_payloads(conn: sqlite3.Connection, owner: tuple[str, str, str], spilled: dict[str, str]) -> None:
    # Replace, not merge: a field that shrank back inline must not keep a stale payload.
    conn.execute("DELETE FROM payloads WHERE tenant = ? AND execution_id = ? AND step_key = ?", owner)
    conn.executemany(
        "INSERT INTO payloads (tenant, execution_id, step_key, field, body) VALUES (?, ?, ?, ?, ?)",
        [(*owner, name, body) for name, body in spilled.items()],
    )


def _load(cls: type[R], doc: str) -> R:
    return record_from_dict(cls, json.loads(doc))


def _trigger_row(data: dict[str, Any]) -> tuple[Any, ...]:
    return (data["tenant"], data["id"], int(data["enabled"]), data["next_fire_at"], _dumps(data))


def _fresh(cls: type[R], data: dict[str, Any]) -> R:
    """A record built from a buffered dict that does not share its nested values."""
    return _load(cls, _dumps(data))


def _load_spilled(conn: sqlite3.Connection, cls: type[R], row: Sequence[Any]) -> R:
    """Load an execution or step row (doc, spilled, owner...) with its out-of-line payloads."""
    return record_from_dict(cls, _row_data(conn, row))


def _row_data(conn: sqlite3.Connection, row: Sequence[Any]) -> dict[str, Any]:
    """The fields of an execution or step row (doc, spilled, owner...), out-of-line payloads included."""
    doc, spilled, *owner = row
    data: dict[str, Any] = json.loads(doc)
    if spilled is not None:
        for name, body in conn.execute(
            "SELECT field, body FROM payloads WHERE tenant = ? AND execution_id = ? AND step_key = ?", owner
        ):
            data[name] = json.loads(body)
    return data


def _load_execution(conn: sqlite3.Connection, row: Sequence[Any], load_input: _InputLoader) -> ExecutionRecord:
    """Load an execution header; a large input, kept in ``execution_inputs``, is read on first use.

    Most transactions never look at the input, and a large one (a foreach's list) would
    otherwise be read and decoded by every transaction of every step. A small input stays
    in ``doc`` and loads with it (see ``_INLINE_INPUT_BYTES``).
    """
    data = _row_data(conn, row)
    if "input" not in data:
        data["input"] = Deferred(functools.partial(load_input, data["tenant"], data["id"]))
    return record_from_dict(ExecutionRecord, data)


def _load_all(conn: sqlite3.Connection, cls: type[R], rows: Iterable[Sequence[Any]]) -> list[R]:
    return [_load_spilled(conn, cls, row) for row in list(rows)]


def _page(rows: Sequence[Any], limit: int, item: Callable[[Any], Any], sort_key: Callable[[Any], list[Any]]) -> Page:
    """A page from ``limit + 1`` rows: the extra row only tells that another page exists."""
    items = [item(row) for row in rows[:limit]]
    cursor = _encode_cursor(sort_key(rows[limit - 1])) if len(rows) > limit else None
    return Page(items, cursor)


def _fetch_count(limit: int) -> int:
    """Rows to fetch for a page of ``limit``: one more, to learn whether another page exists."""
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}")
    return limit + 1


def _encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(_dumps(values).encode()).decode()


def _decode_cursor(cursor: str | None, types: tuple[type, ...]) -> list[Any]:
    """The sort key a cursor carries, or Nones for the first page."""
    if cursor is None:
        return [None] * len(types)
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("the cursor is not valid") from exc
    valid = (
        isinstance(values, list)
        and len(values) == len(types)
        and all(isinstance(v, t) or (t is float and isinstance(v, int)) for v, t in zip(values, types, strict=True))
    )
    if not valid:
        raise InvalidRequest("the cursor is not valid")
    return list(values)
