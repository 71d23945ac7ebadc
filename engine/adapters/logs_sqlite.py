"""Step logs in a SQLite file of their own, beside the embedded store (``conveyor-logs.db``).

A file apart from the store's: the shipping thread's writes never wait for, or hold, the
write lock step transactions take. ``synchronous = NORMAL``: a power cut may lose the last
logs written, never the store's records.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from engine.errors import StoreUnavailable
from engine.records import StepLogRecord

_SCHEMA = """
CREATE TABLE IF NOT EXISTS step_logs (
    tenant TEXT NOT NULL,
    execution_id TEXT NOT NULL,
    step_key TEXT NOT NULL,
    run INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    lines TEXT NOT NULL,
    dropped INTEGER NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    schema_version INTEGER NOT NULL,
    PRIMARY KEY (tenant, execution_id, step_key, run, attempt)
) WITHOUT ROWID
"""
_COLUMNS = "tenant, execution_id, step_key, run, attempt, lines, dropped, started_at, finished_at, schema_version"
_INSERT = f"INSERT OR REPLACE INTO step_logs ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"  # noqa: S608  # constants only


class SqliteStepLogs:
    """A :class:`~engine.ports.StepLogStore` on one SQLite file; one connection, used under a lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = str(path)
        self._lock = threading.Lock()
        with self._translated():
            self._conn = self._connect()
            self._conn.execute(_SCHEMA)
        self._pid = os.getpid()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the step log store failed: {exc}") from exc

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._translated():
            if self._pid != os.getpid():  # a forked child never uses its parent's connection
                self._conn, self._pid = self._connect(), os.getpid()
            yield self._conn

    def put_step_logs(self, records: Sequence[StepLogRecord]) -> None:
        rows = [
            (
                r.tenant,
                r.execution_id,
                r.step_key,
                r.run,
                r.attempt,
                json.dumps(r.lines, ensure_ascii=False, separators=(",", ":")),
                r.dropped,
                r.started_at,
                r.finished_at,
                r.schema_version,
            )
            for r in records
        ]
        if not rows:
            return
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_INSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
        where = ["tenant = ?", "execution_id = ?", "step_key = ?"]
        params: list[object] = [tenant, execution_id, step_key]
        if after is not None:
            where.append("(run > ? OR (run = ? AND attempt > ?))")
            params += [after[0], after[0], after[1]]
        if run is not None:
            where.append("run = ?")
            params.append(run)
        if attempt is not None:
            where.append("attempt = ?")
            params.append(attempt)
        sql = f"SELECT {_COLUMNS} FROM step_logs WHERE {' AND '.join(where)} ORDER BY run, attempt LIMIT ?"  # noqa: S608  # fixed fragments
        with self._connection() as conn:
            rows = conn.execute(sql, [*params, limit]).fetchall()
        return [
            StepLogRecord(
                tenant=row[0],
                execution_id=row[1],
                step_key=row[2],
                run=row[3],
                attempt=row[4],
                lines=json.loads(row[5]),
                dropped=row[6],
                started_at=row[7],
                finished_at=row[8],
                schema_version=row[9],
            )
            for row in rows
        ]

    def delete_step_logs(self, tenant: str, execution_id: str, step_keys: Sequence[str]) -> None:
        """Every record of the execution (one indexed delete: the keys are not needed here)."""
        with self._connection() as conn:
            conn.execute("DELETE FROM step_logs WHERE tenant = ? AND execution_id = ?", (tenant, execution_id))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
