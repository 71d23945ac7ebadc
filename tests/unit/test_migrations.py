"""Schema migrations: ordered, idempotent, resumable, and refused on a newer store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
from typer.testing import CliRunner

from engine.adapters.store_sqlite import SqliteStore
from engine.errors import Conflict
from engine.migrations import MIGRATIONS, Migration, check_order, migrate, pending
from engine.ports import Store
from engine.records import SCHEMA_VERSION


class VersionOnlyStore:
    """Just the two Store methods migrations use, plus a log of what ran."""

    def __init__(self, version: int = 0) -> None:
        self.version = version
        self.log: list[Any] = []

    def schema_version(self) -> int:
        return self.version

    def set_schema_version(self, version: int) -> None:
        self.log.append(("recorded", version))
        self.version = version

    def backfill_search_fields(self) -> int:
        self.log.append(("backfilled", self.version))
        return 0

    def backfill_expiry(self, retention: Any) -> int:
        self.log.append(("expiry", self.version))
        return 0


def as_store(store: VersionOnlyStore) -> Store:
    return cast(Store, store)


def recording(version: int, fail: bool = False) -> Migration:
    def apply(store: Store) -> None:
        cast(VersionOnlyStore, store).log.append(("applied", version))
        if fail:
            raise RuntimeError(f"migration {version} broke")

    return Migration(version, f"step {version}", apply)


def test_the_last_migration_produces_the_current_schema_version() -> None:
    check_order(MIGRATIONS)
    assert MIGRATIONS[-1].version == SCHEMA_VERSION


def test_an_unversioned_store_gets_every_migration_once() -> None:
    store = VersionOnlyStore(0)
    assert [m.version for m in migrate(as_store(store))] == [1, 2, 3]
    assert store.version == 3
    assert store.log == [("recorded", 1), ("backfilled", 1), ("recorded", 2), ("expiry", 2), ("recorded", 3)]
    assert migrate(as_store(store)) == []  # idempotent: nothing left to do


def test_a_fresh_sqlite_store_is_created_at_the_current_version(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "fresh.db")
    try:
        assert store.schema_version() == SCHEMA_VERSION
        assert pending(store) == [] and migrate(store) == []
    finally:
        store.close()


def test_pending_migrations_run_in_order_recording_each_version() -> None:
    store = VersionOnlyStore(1)
    applied = migrate(as_store(store), [recording(1), recording(2), recording(3)])
    assert [m.version for m in applied] == [2, 3]
    assert store.log == [("applied", 2), ("recorded", 2), ("applied", 3), ("recorded", 3)]


def test_a_failed_migration_stops_and_a_rerun_resumes_there() -> None:
    store = VersionOnlyStore(1)
    with pytest.raises(RuntimeError):
        migrate(as_store(store), [recording(1), recording(2), recording(3, fail=True)])
    assert store.version == 2
    store.log.clear()
    assert [m.version for m in migrate(as_store(store), [recording(1), recording(2), recording(3)])] == [3]
    assert store.log == [("applied", 3), ("recorded", 3)]


@pytest.mark.parametrize("versions", [[2], [1, 3], [1, 1], [2, 1]])
def test_gaps_duplicates_and_disorder_are_refused(versions: list[int]) -> None:
    with pytest.raises(ValueError, match=r"1\.\.n"):
        pending(as_store(VersionOnlyStore(0)), [recording(v) for v in versions])


def test_a_store_newer_than_the_code_is_refused() -> None:
    store = VersionOnlyStore(len(MIGRATIONS) + 1)
    with pytest.raises(Conflict, match="newer than this Conveyor"):
        migrate(as_store(store))
    assert store.log == []


def test_migrate_command_reports_and_dry_run_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conveyor.cli import app

    db = tmp_path / "cli.db"
    monkeypatch.setenv("CONVEYOR_STORE", "sqlite")
    monkeypatch.setenv("CONVEYOR_SQLITE_PATH", str(db))
    runner = CliRunner()
    dry = runner.invoke(app, ["migrate", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "up to date" in dry.output and "baseline" in dry.output

    store = SqliteStore(db)
    store.set_schema_version(0)  # as if created before migrations were tracked
    store.close()
    dry = runner.invoke(app, ["migrate", "--dry-run"])
    assert dry.exit_code == 0 and "would apply" in dry.output and "3 migration(s) pending" in dry.output
    store = SqliteStore(db)
    assert store.schema_version() == 0
    store.close()

    real = runner.invoke(app, ["migrate"])
    assert real.exit_code == 0 and "Migrated from schema version 0 to 3" in real.output
    store = SqliteStore(db)
    assert store.schema_version() == 3
    store.set_schema_version(99)
    store.close()
    newer = runner.invoke(app, ["migrate"])
    assert newer.exit_code == 1 and "newer than this Conveyor" in newer.output
