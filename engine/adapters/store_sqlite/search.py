"""Execution search on SQLite: the labels side table, its indexes and the filtered queries.

Labels live in ``execution_labels`` (one row per label, kept in step with the execution's
document by :func:`sync_labels` in the transaction that writes the execution). A search by
labels reads the executions of its rarest label through the ``(tenant, key, value)`` index
(or scans the newest executions when even that label is common) and looks the other labels
up by primary key. ``version`` and ``trigger_id`` are read from the document through indexed
expressions, so stores created before these filters existed need no new column: their
indexes are built when the store is opened, and migration 2 (:func:`backfill_labels`) fills
the side table for their older executions.

Every query is assembled from fixed fragments with ``?`` parameters; only the filters that
are set appear, so SQLite can pick the index that fits them.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from engine.search import ExecutionFilter
from engine.states import ExecutionStatus

_VERSION = "json_extract(e.doc, '$.version')"
_TRIGGER = "json_extract(e.doc, '$.trigger_id')"
# Index expressions must be written as queries write them, but an index cannot name an alias.
_INDEXED_VERSION = "json_extract(doc, '$.version')"
_INDEXED_TRIGGER = "json_extract(doc, '$.trigger_id')"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS execution_labels (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (tenant, execution_id, key))""",
    "CREATE INDEX IF NOT EXISTS execution_labels_by_pair ON execution_labels (tenant, key, value)",
    "CREATE INDEX IF NOT EXISTS executions_by_version"
    f" ON executions (tenant, workflow, {_INDEXED_VERSION}, created_at, id)",
    f"CREATE INDEX IF NOT EXISTS executions_by_trigger ON executions (tenant, {_INDEXED_TRIGGER}, created_at, id)",
)

# Drop the labels an execution no longer has, then add the ones it lacks: a rewrite of an
# execution whose labels did not change (every status change) writes no label row.
_DROP_STALE_LABELS = """
    DELETE FROM execution_labels WHERE tenant = ?1 AND execution_id = ?2
      AND NOT EXISTS (SELECT 1 FROM json_each(?3) AS l
                      WHERE l.key = execution_labels.key AND l.value = execution_labels.value)"""
_ADD_LABELS = """
    INSERT OR IGNORE INTO execution_labels (tenant, execution_id, key, value)
    SELECT ?1, ?2, key, value FROM json_each(?3)"""
_BACKFILL_LABELS = """
    INSERT OR IGNORE INTO execution_labels (tenant, execution_id, key, value)
    SELECT e.tenant, e.id, l.key, l.value FROM executions AS e, json_each(e.doc, '$.labels') AS l
    WHERE json_type(e.doc, '$.labels') = 'object'"""


def sync_labels(conn: sqlite3.Connection, tenant: str, execution_id: str, labels: dict[str, str]) -> None:
    """Make ``execution_labels`` hold exactly ``labels`` for the execution."""
    params = (tenant, execution_id, json.dumps(labels, separators=(",", ":")))
    conn.execute(_DROP_STALE_LABELS, params)
    if labels:
        conn.execute(_ADD_LABELS, params)


def backfill_labels(conn: sqlite3.Connection) -> int:
    """Index the labels of executions written before the side table existed; idempotent."""
    return conn.execute(_BACKFILL_LABELS).rowcount


#: A label carried by at most this many of a tenant's executions drives a listing: its rows
#: are read through the label index and sorted. A commoner one is checked on each execution
#: of a newest-first scan instead, which finds a page after a few rows.
DRIVING_LABEL_ROWS = 5000
_LABEL_ROWS = "SELECT COUNT(*) FROM execution_labels WHERE tenant = ? AND key = ? AND value = ?"
_HAS_LABEL = (
    "EXISTS (SELECT 1 FROM execution_labels AS x"
    " WHERE x.tenant = e.tenant AND x.execution_id = e.id AND x.key = ? AND x.value = ?)"
)
_BY_LABEL = "execution_labels AS l CROSS JOIN executions AS e ON e.tenant = l.tenant AND e.id = l.execution_id"


def _plan(
    conn: sqlite3.Connection, tenant: str, where: ExecutionFilter, drive_any: bool
) -> tuple[str, list[str], list[Any]]:
    """FROM, WHERE clauses and their parameters of a search; executions are ``e``.

    With labels, the one fewest executions carry is read first (``CROSS JOIN`` fixes the
    order) when ``drive_any`` or when it is rare enough; the others are looked up per execution.
    """
    clauses: list[str] = ["e.tenant = ?"]
    params: list[Any] = [tenant]
    for clause, value in (
        ("e.status = ?", where.status),
        ("e.workflow = ?", where.workflow),
        (f"{_VERSION} = ?", where.version),
        (f"{_TRIGGER} = ?", where.trigger_id),
        ("e.created_at >= ?", where.created_after),
        ("e.created_at < ?", where.created_before),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    source, labels = "executions AS e", list(where.labels)
    if labels:
        rows, key, value = min((conn.execute(_LABEL_ROWS, (tenant, k, v)).fetchone()[0], k, v) for k, v in labels)
        if drive_any or rows <= DRIVING_LABEL_ROWS:
            source = _BY_LABEL
            clauses += ["l.tenant = ?", "l.key = ?", "l.value = ?"]
            params += [tenant, key, value]
            labels.remove((key, value))
    for key, value in labels:  # one primary-key lookup per execution considered
        clauses.append(_HAS_LABEL)
        params += [key, value]
    return source, clauses, params


def list_query(
    conn: sqlite3.Connection, tenant: str, where: ExecutionFilter, after: tuple[float, str] | None, fetch: int
) -> tuple[str, list[Any]]:
    """The query of rows (doc, spilled, tenant, id, '') of one page, newest first, after the cursor's row."""
    source, clauses, params = _plan(conn, tenant, where, drive_any=False)
    if after is not None:
        clauses.append("(e.created_at < ? OR (e.created_at = ? AND e.id < ?))")
        params += [after[0], after[0], after[1]]
    sql = (
        f"SELECT e.doc, e.spilled, e.tenant, e.id, '' FROM {source} WHERE "  # noqa: S608  # fixed fragments, ? parameters
        + " AND ".join(clauses)
        + " ORDER BY e.created_at DESC, e.id DESC LIMIT ?"
    )
    return sql, [*params, fetch]


def count(conn: sqlite3.Connection, tenant: str, where: ExecutionFilter) -> dict[ExecutionStatus, int]:
    """Executions matching ``where`` per status, in one ``GROUP BY``.

    ``+e.status`` keeps SQLite from picking the status index for the grouping over the index
    of the filters (it would then read every execution of the tenant).
    """
    source, clauses, params = _plan(conn, tenant, where.for_counts(), drive_any=True)
    sql = f"SELECT e.status, COUNT(*) FROM {source} WHERE " + " AND ".join(clauses) + " GROUP BY +e.status"  # noqa: S608
    found = dict(conn.execute(sql, params).fetchall())
    return {status: int(found.get(status.value, 0)) for status in ExecutionStatus}
