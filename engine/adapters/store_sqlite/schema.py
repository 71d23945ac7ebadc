"""The store's tables and indexes, and the statements both the store and its transactions use.

Each record is one JSON document (``doc``) plus copies of the scalar columns that queries
filter or sort on. Every primary key starts with the tenant. The search side table and its
indexes are in :mod:`.search`.
"""

from __future__ import annotations

import sqlite3

from engine.adapters.store_sqlite import purge, search
from engine.records import SCHEMA_VERSION

TABLES = (
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
# the shape :func:`.codec.load_all` expects; the execution header's step key is ''.
SELECT_EXECUTION = "SELECT doc, spilled, tenant, id, '' FROM executions WHERE tenant = ? AND id = ?"
SELECT_LATEST_VERSION = "SELECT doc FROM workflow_versions WHERE tenant = ? AND name = ? ORDER BY version DESC LIMIT 1"
UPSERT_TRIGGER = """
    INSERT INTO triggers (tenant, id, enabled, next_fire_at, doc) VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (tenant, id) DO UPDATE SET
      enabled = excluded.enabled, next_fire_at = excluded.next_fire_at, doc = excluded.doc"""


def create_schema(conn: sqlite3.Connection) -> None:
    for statement in (*TABLES, *search.SCHEMA, *purge.SCHEMA):
        conn.execute(statement)
    # A fresh store is created at the current schema; an existing one keeps its version.
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
