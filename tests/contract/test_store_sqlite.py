"""SQLite-only behaviour beyond the shared contract: processes, forks, payload layout, errors."""

from __future__ import annotations

import multiprocessing
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from engine.adapters.store_sqlite import SqliteStore
from engine.adapters.store_sqlite import search as sqlite_search
from engine.errors import StoreUnavailable
from engine.migrations import migrate
from engine.ports import Transaction
from engine.records import SCHEMA_VERSION, ExecutionRecord, StepRecord
from engine.search import ExecutionFilter
from engine.states import ExecutionStatus, StepStatus

TENANT = "tenant-a"


def _step(**fields: Any) -> StepRecord:
    return StepRecord(
        execution_id="ex-1", tenant=TENANT, key="fetch", step_id="fetch", status=StepStatus.RUNNING, **fields
    )


def _bump(tx: Transaction) -> None:
    current = tx.get_steps(TENANT, "ex-1", ["fetch"])["fetch"]
    tx.put_step(replace(current, lease_epoch=current.lease_epoch + 1))


def _bump_many(store: SqliteStore, times: int) -> None:
    for _ in range(times):
        store.atomic(_bump)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "conveyor.db", inline_payload_bytes=1024)


def test_forked_worker_processes_serialize_their_transactions(store: SqliteStore) -> None:
    # The parent has used the store before forking, so each child must open its own
    # connection instead of reusing the inherited one.
    store.atomic(lambda tx: tx.put_step(_step()))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_bump_many, args=(store, 25)) for _ in range(4)]
    for worker in workers:
        worker.start()
    _bump_many(store, 25)
    for worker in workers:
        worker.join(timeout=60)

    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    assert store.list_steps(TENANT, "ex-1")[0].lease_epoch == 125
    store.close()


def test_large_fields_live_out_of_line(store: SqliteStore, tmp_path: Path) -> None:
    record = _step(output="x" * 4096, item={"small": True})
    store.atomic(lambda tx: tx.put_step(record))

    with sqlite3.connect(tmp_path / "conveyor.db") as raw:
        doc, spilled = raw.execute("SELECT doc, spilled FROM steps").fetchone()
        fields = [row[0] for row in raw.execute("SELECT field FROM payloads")]
    assert len(doc) < 1024
    assert spilled == '["output"]'
    assert fields == ["output"]
    assert store.list_steps(TENANT, "ex-1") == [record]
    store.close()


def test_a_field_back_inline_leaves_no_payload_and_inline_rewrites_skip_the_payload_table(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Rewriting a step read in the same transaction touches ``payloads`` only when the row had
    or gets out-of-line fields: a step's usual write (small fields) costs no delete there."""

    def rewrite(output: Any) -> list[str]:
        statements: list[str] = []

        def work(tx: Transaction) -> None:
            current = tx.get_steps(TENANT, "ex-1", ["fetch", "absent"])["fetch"]
            tx.put_step(replace(current, output=output))
            tx.put_step(replace(_step(), key="absent", step_id="absent"))

        conn = store._connections.get()
        conn.set_trace_callback(statements.append)
        try:
            store.atomic(work)
        finally:
            conn.set_trace_callback(None)
        return [s for s in statements if "payloads" in s and not s.startswith("SELECT")]

    store.atomic(lambda tx: tx.put_step(_step(output="x" * 4096)))
    assert len(rewrite("small")) == 1, "the row had a payload: it is deleted"
    with sqlite3.connect(tmp_path / "conveyor.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM payloads").fetchone() == (0,)
    assert rewrite("still small") == [], "no payload before or after: the table is not touched"
    assert len(rewrite("y" * 4096)) == 2, "a field goes out of line: old payloads deleted, the new one inserted"
    assert {s.key: s.output for s in store.list_steps(TENANT, "ex-1")}["fetch"] == "y" * 4096
    store.close()


def test_writes_cannot_nest_inside_atomic(store: SqliteStore) -> None:
    with pytest.raises(RuntimeError, match=r"inside Store\.atomic"):
        store.atomic(lambda tx: store.set_schema_version(7))
    assert store.schema_version() == SCHEMA_VERSION
    store.close()


def test_a_closed_store_is_unavailable(store: SqliteStore) -> None:
    store.close()
    with pytest.raises(StoreUnavailable):
        store.ping()


def test_an_unreachable_path_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable):
        SqliteStore(tmp_path / "missing-dir" / "conveyor.db")


def _labelled(n: int) -> ExecutionRecord:
    return ExecutionRecord(
        id=f"ex-{n}", tenant=TENANT, workflow="orders", version=1, status=ExecutionStatus.RUNNING, input={},
        created_at=1_700_000_000.0 + n, updated_at=1_700_000_000.0 + n, labels={"team": "shop", "n": str(n)},
    )  # fmt: skip


def test_migration_2_indexes_the_labels_of_executions_written_before_it(store: SqliteStore, tmp_path: Path) -> None:
    def write(tx: Transaction) -> None:
        for n in range(3):
            tx.put_execution(_labelled(n))

    store.atomic(write)
    with sqlite3.connect(tmp_path / "conveyor.db") as raw:  # as a store from before schema 2 holds them
        raw.execute("DELETE FROM execution_labels")
    store.set_schema_version(1)
    shop = ExecutionFilter(labels=(("team", "shop"),))
    assert store.list_executions(TENANT, shop).items == []

    assert [m.version for m in migrate(store)] == [2, 3]
    assert [r.id for r in store.list_executions(TENANT, shop).items] == ["ex-2", "ex-1", "ex-0"]
    assert store.count_executions(TENANT, shop)[ExecutionStatus.RUNNING] == 3
    assert store.backfill_search_fields() == 0  # idempotent
    store.close()


@pytest.mark.parametrize(
    ("where", "index"),
    [
        (ExecutionFilter(labels=(("team", "shop"),)), "execution_labels_by_pair"),
        (ExecutionFilter(workflow="orders", version=2), "executions_by_version"),
        (ExecutionFilter(trigger_id="tr-1"), "executions_by_trigger"),
        (ExecutionFilter(), "executions_by_created"),
    ],
)
def test_searches_use_their_index(store: SqliteStore, tmp_path: Path, where: ExecutionFilter, index: str) -> None:
    with sqlite3.connect(tmp_path / "conveyor.db") as raw:
        sql, params = sqlite_search.list_query(raw, TENANT, where, None, 51)
        plan = " ".join(row[-1] for row in raw.execute("EXPLAIN QUERY PLAN " + sql, params))
    assert index in plan, plan
    store.close()


def test_commits_wait_for_the_disk_after_the_write_lock_is_released(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pins what sync_to_disk relies on: connections commit with synchronous = NORMAL (no fsync
    # under the lock), and the write-ahead log is the file "<database>-wal".
    from engine.adapters.store_sqlite import connection

    synced: list[tuple[str, bool]] = []

    def record(fd: int) -> None:
        other = sqlite3.connect(store.path, timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # fails with "database is locked" under the lock
            other.execute("ROLLBACK")
            lock_free = True
        except sqlite3.OperationalError:
            lock_free = False
        finally:
            other.close()
        synced.append((str(Path(f"/proc/self/fd/{fd}").readlink()), lock_free))

    monkeypatch.setattr(connection, "_sync_data", record)
    assert store.run_read(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]) == 1  # NORMAL

    store.atomic(lambda tx: tx.put_step(_step()))
    assert synced == [(str(Path(store.path).resolve()) + "-wal", True)]

    synced.clear()
    store.atomic(_bump, durable=False)
    assert synced == []
    assert store.list_steps(TENANT, "ex-1")[0].lease_epoch == 1  # committed all the same
    store.sync()
    assert [path for path, _ in synced] == [str(Path(store.path).resolve()) + "-wal"]
    store.close()


def test_sync_without_a_write_ahead_log_has_nothing_to_do(tmp_path: Path) -> None:
    # SQLite removes the log once the last connection has checkpointed everything into the file.
    from engine.adapters.store_sqlite.connection import sync_to_disk

    sync_to_disk(str(tmp_path / "never-opened.db"))
