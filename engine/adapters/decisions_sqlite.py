"""Bandit counts in the embedded SQLite store's file (the ``DecisionStats`` port).

All-time counts live in ``arm_counts``, decayed accumulators (see :mod:`engine.bandit`) in
``arm_decayed``. A reward's marker (``markers``, the table ``Store.mark_once`` writes) and
its counts are written in one ``BEGIN IMMEDIATE`` transaction: both or neither.
"""

from __future__ import annotations

import sqlite3

from engine.adapters.store_sqlite import SqliteStore
from engine.bandit import decay_epochs, decay_scale, decayed
from engine.ports import ArmOutcome

_SCHEMA = """CREATE TABLE IF NOT EXISTS arm_decayed (
    tenant TEXT NOT NULL, bandit TEXT NOT NULL, arm TEXT NOT NULL, half_life REAL NOT NULL, epoch INTEGER NOT NULL,
    successes REAL NOT NULL, failures REAL NOT NULL, PRIMARY KEY (tenant, bandit, half_life, epoch, arm))"""
_MARK = "INSERT OR IGNORE INTO markers (tenant, execution_id, name) VALUES (?, ?, ?)"
_ADD = (
    "INSERT INTO arm_counts (tenant, bandit, arm, successes, failures) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (tenant, bandit, arm) DO UPDATE SET "
    "successes = successes + excluded.successes, failures = failures + excluded.failures"
)
_ADD_DECAYED = (
    "INSERT INTO arm_decayed (tenant, bandit, arm, half_life, epoch, successes, failures) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, bandit, half_life, epoch, arm) DO UPDATE SET "
    "successes = successes + excluded.successes, failures = failures + excluded.failures"
)
_COUNTS = "SELECT arm, successes, failures FROM arm_counts WHERE tenant = ? AND bandit = ? ORDER BY arm"
_DECAYED = (
    "SELECT arm, epoch, successes, failures FROM arm_decayed "
    "WHERE tenant = ? AND bandit = ? AND half_life = ? AND epoch BETWEEN ? AND ?"
)


class SqliteDecisionStats:
    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        store.run_write(lambda conn: conn.execute(_SCHEMA))

    def record_outcome(self, outcome: ArmOutcome) -> bool:
        o = outcome

        def write(conn: sqlite3.Connection) -> bool:
            if not conn.execute(_MARK, (o.tenant, o.execution_id, o.marker)).rowcount:
                return False
            conn.execute(_ADD, (o.tenant, o.bandit, o.arm, o.successes, o.failures))
            if o.half_life is not None:
                epoch, scale = decay_scale(o.at, o.half_life)
                row = (o.tenant, o.bandit, o.arm, o.half_life, epoch, o.successes * scale, o.failures * scale)
                conn.execute(_ADD_DECAYED, row)
            return True

        return self._store.run_write(write)

    def arm_counts(
        self, tenant: str, bandit: str, *, half_life: float | None = None, now: float = 0.0
    ) -> dict[str, tuple[float, float]]:
        if half_life is None:
            rows = self._store.run_read(lambda conn: conn.execute(_COUNTS, (tenant, bandit)).fetchall())
            return {arm: (successes, failures) for arm, successes, failures in rows}
        first, last = decay_epochs(now, half_life)
        found = self._store.run_read(
            lambda conn: conn.execute(_DECAYED, (tenant, bandit, half_life, first, last)).fetchall()
        )
        by_arm: dict[str, dict[int, tuple[float, float]]] = {}
        for arm, epoch, successes, failures in found:
            by_arm.setdefault(arm, {})[epoch] = (successes, failures)
        return {arm: decayed(by_arm[arm], half_life, now) for arm in sorted(by_arm)}
