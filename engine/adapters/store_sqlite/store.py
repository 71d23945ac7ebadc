"""The :class:`~engine.ports.Store` port on one SQLite file (see the package docstring)."""

from __future__ import annotations

import functools
import json
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from engine.adapters.payloads import record_to_dict
from engine.adapters.store_sqlite import purge, search
from engine.adapters.store_sqlite.codec import (
    DocCodec,
    decode_cursor,
    dumps,
    fetch_count,
    load,
    load_all,
    load_execution,
    make_page,
    trigger_row,
)
from engine.adapters.store_sqlite.connection import Connections, run_transaction, sync_to_disk, translate
from engine.adapters.store_sqlite.schema import SELECT_EXECUTION, SELECT_LATEST_VERSION, UPSERT_TRIGGER, create_schema
from engine.adapters.store_sqlite.transaction import SqliteTransaction
from engine.errors import AlreadyExists, ConveyorError, NotFound
from engine.ports import DUE_FIELD, Reads, Transaction
from engine.records import (
    ApiKeyRecord,
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    Page,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.search import ExecutionFilter
from engine.states import EXECUTION_ACTIVE, STEP_ACTIVE, ExecutionStatus, StepStatus

T = TypeVar("T")
#: Executions read per page by ``backfill_expiry``.
_BACKFILL_PAGE = 500

_SELECT_STEPS = (
    "SELECT doc, spilled, tenant, execution_id, key FROM steps WHERE tenant = ? AND execution_id = ? ORDER BY key"
)
_SELECT_STEPS_OF_MANY = (
    "SELECT doc, spilled, tenant, execution_id, key FROM steps"
    " WHERE tenant = ? AND execution_id IN (SELECT value FROM json_each(?)) ORDER BY execution_id, key"
)
# Items are keyed "<step_id>[<index>]": their keys sort from step_id + "[" up to, not including,
# step_id + chr(0x5C) (the character after "["), a range of the primary key. The index test
# keeps out exactly the parent (key == step_id, no index).
_COUNT_ACTIVE_ITEMS = """
    SELECT COUNT(*) FROM steps
    WHERE tenant = ? AND execution_id = ? AND key >= ? || '[' AND key < ? || '\\'
      AND status IN (SELECT value FROM json_each(?))
      AND json_extract(doc, '$.step_id') = ? AND json_extract(doc, '$.index') IS NOT NULL"""
_SELECT_INPUT = "SELECT body FROM execution_inputs WHERE tenant = ? AND id = ?"
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
        self._codec = DocCodec(inline_payload_bytes)
        self._connections = Connections(self._path)
        self._write(create_schema)

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    # transactions

    def atomic(self, fn: Callable[[Transaction], T], *, durable: bool = True) -> T:
        """Run ``fn`` under the database write lock and commit its buffered writes.

        The commit is synced to disk after the lock is released, before this returns; with
        ``durable=False`` it is not (see :meth:`sync`).
        """

        def run(conn: sqlite3.Connection) -> T:
            tx = SqliteTransaction(conn, self._codec, self._load_input)
            result = fn(tx)
            tx.apply()
            return result

        return self._write(run, durable=durable)

    def sync(self) -> None:
        """Make every transaction committed so far survive a power loss."""
        sync_to_disk(self._path)

    def read(self, fn: Callable[[Reads], T]) -> T:
        """Run ``fn`` in a read transaction: one snapshot of the database, and no write lock."""
        return self._read(lambda conn: fn(SqliteTransaction(conn, self._codec, self._load_input)))

    # workflows

    def get_workflow_version(self, tenant: str, name: str, version: int | None = None) -> WorkflowVersionRecord | None:
        if version is None:
            row = self._read(lambda c: c.execute(SELECT_LATEST_VERSION, (tenant, name)).fetchone())
        else:
            row = self._read(
                lambda c: c.execute(
                    "SELECT doc FROM workflow_versions WHERE tenant = ? AND name = ? AND version = ?",
                    (tenant, name, version),
                ).fetchone()
            )
        return None if row is None else load(WorkflowVersionRecord, row[0])

    def list_workflows(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        (after,) = decode_cursor(cursor, (str,))
        rows = self._read(lambda c: c.execute(_LIST_WORKFLOWS, (tenant, after, fetch_count(limit))).fetchall())
        return make_page(rows, limit, lambda row: load(WorkflowVersionRecord, row[0]), lambda row: [row[1]])

    def list_workflow_versions(self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        (before,) = decode_cursor(cursor, (int,))
        rows = self._read(
            lambda c: c.execute(_LIST_WORKFLOW_VERSIONS, (tenant, name, before, fetch_count(limit))).fetchall()
        )
        return make_page(rows, limit, lambda row: load(WorkflowVersionRecord, row[0]), lambda row: [row[1]])

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
                    (dumps(data), tenant, name, version),
                )

        self._write(update)

    # executions

    def mark_once(self, tenant: str, execution_id: str, name: str) -> bool:
        insert = "INSERT OR IGNORE INTO markers (tenant, execution_id, name) VALUES (?, ?, ?)"
        return bool(self._write(lambda c: c.execute(insert, (tenant, execution_id, name)).rowcount))

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        def read(conn: sqlite3.Connection) -> ExecutionRecord | None:
            row = conn.execute(SELECT_EXECUTION, (tenant, execution_id)).fetchone()
            return None if row is None else load_execution(conn, row, self._load_input)

        return self._read(read)

    def list_executions(
        self, tenant: str, where: ExecutionFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Executions newest first; ``created_after`` is inclusive, ``created_before`` exclusive."""
        last_created, last_id = decode_cursor(cursor, (float, str))
        after = None if cursor is None else (last_created, last_id)
        fetch = fetch_count(limit)

        def read(conn: sqlite3.Connection) -> list[ExecutionRecord]:
            sql, params = search.list_query(conn, tenant, where or ExecutionFilter(), after, fetch)
            rows = conn.execute(sql, params).fetchall()
            return [load_execution(conn, row, self._load_input) for row in rows]

        records = self._read(read)
        return make_page(records, limit, lambda r: r, lambda r: [r.created_at, r.id])

    def count_executions(self, tenant: str, where: ExecutionFilter | None = None) -> dict[ExecutionStatus, int]:
        """One ``GROUP BY status`` over the filtered executions."""
        return self._read(lambda c: search.count(c, tenant, where or ExecutionFilter()))

    def backfill_search_fields(self) -> int:
        """Fill ``execution_labels`` for executions written before it existed."""
        return self._write(search.backfill_labels)

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
        return self._read(lambda c: load_all(c, StepRecord, c.execute(_SELECT_STEPS, (tenant, execution_id))))

    def list_steps_many(self, tenant: str, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        found: dict[str, list[StepRecord]] = {execution_id: [] for execution_id in execution_ids}
        params = (tenant, dumps(list(found)))
        for step in self._read(lambda c: load_all(c, StepRecord, c.execute(_SELECT_STEPS_OF_MANY, params))):
            found[step.execution_id].append(step)
        return found

    def list_events(self, tenant: str, execution_id: str, *, after: str | None = None, limit: int = 500) -> Page:
        """Events by id; ``next_cursor`` is the last event id of the page, to pass as ``after``."""
        rows = self._read(
            lambda c: c.execute(_LIST_EVENTS, (tenant, execution_id, after, fetch_count(limit))).fetchall()
        )
        items = [load(EventRecord, row[0]) for row in rows[:limit]]
        return Page(items, items[-1].id if len(rows) > limit else None)

    # reconciler scans

    def due_steps(
        self, status: StepStatus, before: float, limit: int = 200, after: StepRecord | None = None
    ) -> list[StepRecord]:
        field = DUE_FIELD[status]
        sql = _DUE_STEPS[field]
        cursor = _BEFORE_ALL if after is None else (getattr(after, field), after.tenant, after.execution_id, after.key)
        params = (status.value, before, *cursor, limit)
        return self._read(lambda c: load_all(c, StepRecord, c.execute(sql, params)))

    def overdue_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        params = (before, _ACTIVE_STATUSES, limit)
        return self._read(
            lambda c: [load_execution(c, row, self._load_input) for row in c.execute(_OVERDUE_EXECUTIONS, params)]
        )

    # retention (see .purge)

    def expired_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        query, params = purge.EXPIRED_EXECUTIONS, (before, limit)
        return self._read(lambda c: [load_execution(c, row, self._load_input) for row in c.execute(query, params)])

    def purge_execution(self, tenant: str, execution_id: str, limit: int = 200) -> bool:
        return self._write(lambda c: purge.purge_batch(c, tenant, execution_id, limit))

    def backfill_expiry(self, retention: Callable[[ExecutionRecord], float | None]) -> int:
        updated, after = 0, 0
        while True:

            def page(c: sqlite3.Connection, after: int = after) -> tuple[list[int], list[ExecutionRecord]]:
                ids = [row[0] for row in c.execute(purge.UNEXPIRED_PAGE, (after, _BACKFILL_PAGE))]
                rows = c.execute(purge.SELECT_BY_ROWID, (json.dumps(ids),))
                return ids, [load_execution(c, row, self._load_input) for row in rows]

            ids, found = self._read(page)
            expiries = [
                (e.finished_at + kept, e.tenant, e.id)
                for e in found
                if e.finished_at is not None and (kept := retention(e)) is not None
            ]
            if expiries:
                self._write(functools.partial(_set_expiries, expiries))
            updated += len(expiries)
            if len(ids) < _BACKFILL_PAGE:
                return updated
            after = ids[-1]

    # triggers

    def put_trigger(self, record: TriggerRecord) -> None:
        params = trigger_row(record_to_dict(record))
        self._write(lambda c: c.execute(UPSERT_TRIGGER, params))

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None:
        return self.read(lambda reads: reads.get_trigger(tenant, trigger_id))

    def list_triggers(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        (after,) = decode_cursor(cursor, (str,))
        rows = self._read(lambda c: c.execute(_LIST_TRIGGERS, (tenant, after, fetch_count(limit))).fetchall())
        return make_page(rows, limit, lambda row: load(TriggerRecord, row[0]), lambda row: [row[1]])

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
        return [load(TriggerRecord, row[0]) for row in rows]

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
        return [load(InboundEventRecord, row[0]) for row in rows]

    def list_waiters(self, tenant: str, route: str, limit: int = 500) -> list[WaiterRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM waiters WHERE tenant = ? AND route = ? ORDER BY execution_id, step_key LIMIT ?",
                (tenant, route, limit),
            ).fetchall()
        )
        return [load(WaiterRecord, row[0]) for row in rows]

    def due_inbound_events(self, before: float, limit: int = 200) -> list[InboundEventRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM inbound_events WHERE routed = 0 AND accepted_at <= ? ORDER BY accepted_at LIMIT ?",
                (before, limit),
            ).fetchall()
        )
        return [load(InboundEventRecord, row[0]) for row in rows]

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
            dumps(record_to_dict(record)),
        )
        try:
            self._write(lambda c: c.execute(_UPSERT_API_KEY, params))
        except AlreadyExists:
            raise AlreadyExists("an API key with that hash already exists") from None

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._read(lambda c: c.execute("SELECT doc FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone())
        return None if row is None else load(ApiKeyRecord, row[0])

    def list_api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        rows = self._read(
            lambda c: c.execute(
                "SELECT doc FROM api_keys WHERE tenant = ? ORDER BY created_at, id", (tenant,)
            ).fetchall()
        )
        return [load(ApiKeyRecord, row[0]) for row in rows]

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
        """An execution's input, stored beside its header (see :func:`load_execution`)."""
        row = self._read(lambda c: c.execute(_SELECT_INPUT, (tenant, execution_id)).fetchone())
        if row is None:
            raise ConveyorError(f"the input of execution {execution_id!r} is missing from the store")
        return json.loads(row[0])

    def _write(self, work: Callable[[sqlite3.Connection], T], *, durable: bool = True) -> T:
        conn = self._connections.get()
        if conn.in_transaction:
            # A nested write would silently join (and commit or roll back with) the outer one.
            raise RuntimeError("store writes cannot run inside Store.atomic; use its Transaction")
        result = run_transaction(conn, "BEGIN IMMEDIATE", work)
        if durable:
            sync_to_disk(self._path)
        return result

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._connections.get()
        if conn.in_transaction:
            # Called from inside ``atomic`` on this thread: read within that transaction.
            try:
                return work(conn)
            except sqlite3.Error as exc:
                raise translate(exc) from exc
        # A deferred transaction gives multi-statement reads (a row and its payloads) one snapshot.
        return run_transaction(conn, "BEGIN", work)


def _set_expiries(expiries: list[tuple[float, str, str]], conn: sqlite3.Connection) -> None:
    conn.executemany(purge.SET_EXPIRY, expiries)
