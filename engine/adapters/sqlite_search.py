"""Execution search on SQLite: the labels side table, its indexes and the filtered queries.

Labels live in ``execution_labels`` (one row per label, kept in step with the execution's
document by :func:`sync_labels` in the transaction that writes the execution); a label filter
is an ``id IN (...)`` over its ``(tenant, key, value)`` index. ``version`` and ``trigger_id``
are read from the document through indexed expressions, so stores created before these
filters existed need no new column: their indexes are built when the store is opened, and
migration 2 (:func:`backfill_labels`) fills the side table for their older executions.

Every query is assembled from fixed fragments with ``?`` parameters; only the filters that
are set appear, so SQLite can pick the index that fits them.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from engine.errors import InvalidFilter
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus

_VERSION = "json_extract(doc, '$.version')"
_TRIGGER = "json_extract(doc, '$.trigger_id')"

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS execution_labels (
        tenant TEXT NOT NULL, execution_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
        PRIMARY KEY (tenant, execution_id, key))""",
    "CREATE INDEX IF NOT EXISTS execution_labels_by_pair ON execution_labels (tenant, key, value)",
    f"CREATE INDEX IF NOT EXISTS executions_by_version ON executions (tenant, workflow, {_VERSION}, created_at, id)",
    f"CREATE INDEX IF NOT EXISTS executions_by_trigger ON executions (tenant, {_TRIGGER}, created_at, id)",
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


def _where(tenant: str, where: ExecutionFilter) -> tuple[list[str], list[Any]]:
    clauses, params = ["tenant = ?"], [tenant]
    for clause, value in (
        ("status = ?", where.status),
        ("workflow = ?", where.workflow),
        (f"{_VERSION} = ?", where.version),
        (f"{_TRIGGER} = ?", where.trigger_id),
        ("created_at >= ?", where.created_after),
        ("created_at < ?", where.created_before),
    ):
        if value is not None:
            clauses.append(clause)
            params.append(value)
    for key, value in where.labels:
        clauses.append("id IN (SELECT execution_id FROM execution_labels WHERE tenant = ? AND key = ? AND value = ?)")
        params += [tenant, key, value]
    return clauses, params


def list_query(
    tenant: str, where: ExecutionFilter, after: tuple[float, str] | None, fetch: int
) -> tuple[str, list[Any]]:
    """Rows (doc, spilled, tenant, id, '') of one page, newest first, after the cursor's row."""
    clauses, params = _where(tenant, where)
    if after is not None:
        clauses.append("(created_at < ? OR (created_at = ? AND id < ?))")
        params += [after[0], after[0], after[1]]
    sql = (
        "SELECT doc, spilled, tenant, id, '' FROM executions WHERE "  # noqa: S608  # fixed fragments, ? parameters
        + " AND ".join(clauses)
        + " ORDER BY created_at DESC, id DESC LIMIT ?"
    )
    return sql, [*params, fetch]


def count(conn: sqlite3.Connection, tenant: str, where: ExecutionFilter) -> dict[ExecutionStatus, int]:
    """Executions matching ``where`` per status, in one ``GROUP BY``."""
    if where.status is not None:
        raise InvalidFilter("counts are taken per status: do not filter them by status")
    clauses, params = _where(tenant, where)
    sql = "SELECT status, COUNT(*) FROM executions WHERE " + " AND ".join(clauses) + " GROUP BY status"  # noqa: S608
    found = dict(conn.execute(sql, params).fetchall())
    return {status: int(found.get(status.value, 0)) for status in ExecutionStatus}
