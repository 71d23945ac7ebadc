"""Deleting expired executions from the SQLite store (see :mod:`engine.retention`).

``expires_at`` lives in the header's JSON document; a partial expression index over terminal
executions serves the reconciler's scan, so only the write that ends an execution computes
it (running executions, whose headers are written often, are not in the index).

One call of :func:`purge_batch` is one write transaction: it deletes a bounded batch of the
execution's records (a step goes with its out-of-line payloads), and the header with its
input, payloads and label rows once nothing else is left, so a crash between calls leaves
records the header still reaches.
"""

from __future__ import annotations

import sqlite3

from engine.states import EXECUTION_TERMINAL, ExecutionStatus, require_terminal

_TERMINAL = ", ".join(f"'{status.value}'" for status in sorted(EXECUTION_TERMINAL))
#: Index expressions must be written exactly as queries write them.
_EXPIRES = "json_extract(doc, '$.expires_at')"

SCHEMA = (f"CREATE INDEX IF NOT EXISTS executions_by_expiry ON executions ({_EXPIRES}) WHERE status IN ({_TERMINAL})",)

EXPIRED_EXECUTIONS = f"""
    SELECT doc, spilled, tenant, id, '' FROM executions
    WHERE status IN ({_TERMINAL}) AND {_EXPIRES} <= ?
    ORDER BY {_EXPIRES} LIMIT ?"""  # noqa: S608  # constants only

#: A page of terminal executions written before ``expires_at`` existed (no such key; a JSON
#: null is an expiry decided: never), by rowid; and one header's expiry set.
UNEXPIRED_PAGE = f"""
    SELECT rowid FROM executions WHERE rowid > ? AND status IN ({_TERMINAL})
      AND json_type(doc, '$.expires_at') IS NULL
    ORDER BY rowid LIMIT ?"""  # noqa: S608  # constants only
SELECT_BY_ROWID = "SELECT doc, spilled, tenant, id, '' FROM executions WHERE rowid IN (SELECT value FROM json_each(?))"
SET_EXPIRY = "UPDATE executions SET doc = json_set(doc, '$.expires_at', ?) WHERE tenant = ? AND id = ?"

#: An execution's records besides steps, deleted a batch at a time before the header.
_DELETE_DERIVED = (
    "DELETE FROM events WHERE rowid IN (SELECT rowid FROM events WHERE tenant = ? AND execution_id = ? LIMIT ?)",
    "DELETE FROM item_chunks WHERE rowid IN"
    " (SELECT rowid FROM item_chunks WHERE tenant = ? AND execution_id = ? LIMIT ?)",
    "DELETE FROM markers WHERE rowid IN (SELECT rowid FROM markers WHERE tenant = ? AND execution_id = ? LIMIT ?)",
    "DELETE FROM signals WHERE rowid IN (SELECT rowid FROM signals WHERE tenant = ? AND execution_id = ? LIMIT ?)",
    "DELETE FROM waiters WHERE rowid IN (SELECT rowid FROM waiters WHERE tenant = ? AND execution_id = ? LIMIT ?)",
)


def purge_batch(conn: sqlite3.Connection, tenant: str, execution_id: str, limit: int) -> bool:
    """Delete up to ``limit`` records of each kind; the header too once none is left. Done?"""
    row = conn.execute("SELECT status FROM executions WHERE tenant = ? AND id = ?", (tenant, execution_id)).fetchone()
    if row is None:
        return True
    require_terminal(execution_id, ExecutionStatus(row[0]))
    owner = (tenant, execution_id)
    keys = conn.execute("SELECT key FROM steps WHERE tenant = ? AND execution_id = ? LIMIT ?", (*owner, limit))
    step_rows = [(*owner, key) for (key,) in keys.fetchall()]
    conn.executemany("DELETE FROM payloads WHERE tenant = ? AND execution_id = ? AND step_key = ?", step_rows)
    conn.executemany("DELETE FROM steps WHERE tenant = ? AND execution_id = ? AND key = ?", step_rows)
    left = len(step_rows) == limit
    for statement in _DELETE_DERIVED:
        left = conn.execute(statement, (*owner, limit)).rowcount == limit or left
    if left:
        return False
    conn.execute("DELETE FROM payloads WHERE tenant = ? AND execution_id = ?", owner)
    conn.execute("DELETE FROM execution_labels WHERE tenant = ? AND execution_id = ?", owner)
    conn.execute("DELETE FROM execution_inputs WHERE tenant = ? AND id = ?", owner)
    conn.execute("DELETE FROM executions WHERE tenant = ? AND id = ?", owner)
    return True
