"""The StepLogStore port: the same contract on every backend (a SQLite file, Firestore)."""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ports import StepLogStore
from engine.records import StepLogRecord


@pytest.fixture(params=["sqlite", "firestore"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StepLogStore]:
    if request.param == "sqlite":
        from engine.adapters.logs_sqlite import SqliteStepLogs

        backend: StepLogStore = SqliteStepLogs(tmp_path / "conveyor-logs.db")
        yield backend
        backend.close()
        return
    request.getfixturevalue("firestore_emulator")
    from engine.adapters.logs_firestore import FirestoreStepLogs
    from engine.adapters.store_firestore import FirestoreStore

    store = FirestoreStore(project=request.getfixturevalue("unique_project"))
    yield FirestoreStepLogs(store.client)
    store.close()


def record(
    run: int, attempt: int, *, key: str = "fetch", tenant: str = "a", n: int = 2, **fields: object
) -> StepLogRecord:
    lines = [
        {"seq": i, "at": 1_700_000_000.0 + i, "level": "INFO", "logger": "app", "message": f"r{run}a{attempt} {i}"}
        for i in range(n)
    ]
    return StepLogRecord(tenant, "ex-1", key, run, attempt, lines=lines, started_at=1.0, finished_at=2.0, **fields)  # type: ignore[arg-type]


def keys(found: list[StepLogRecord]) -> list[tuple[int, int]]:
    return [(r.run, r.attempt) for r in found]


def test_records_round_trip_in_run_and_attempt_order(logs: StepLogStore) -> None:
    logs.put_step_logs([record(2, 1), record(1, 2), record(1, 1, dropped=7), record(1, 10)])
    found = logs.list_step_logs("a", "ex-1", "fetch")
    assert keys(found) == [(1, 1), (1, 2), (1, 10), (2, 1)]
    first = found[0]
    assert first == record(1, 1, dropped=7)
    assert first.lines[1] == {"seq": 1, "at": 1_700_000_001.0, "level": "INFO", "logger": "app", "message": "r1a1 1"}


def test_after_run_attempt_and_limit_select_records(logs: StepLogStore) -> None:
    logs.put_step_logs([record(1, 1), record(1, 2), record(2, 1), record(2, 2), record(3, 1)])
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", after=(1, 2))) == [(2, 1), (2, 2), (3, 1)]
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", after=(1, 2), limit=2)) == [(2, 1), (2, 2)]
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", run=2)) == [(2, 1), (2, 2)]
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", run=2, after=(2, 1))) == [(2, 2)]
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", attempt=1)) == [(1, 1), (2, 1), (3, 1)]
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", attempt=1, after=(1, 1), limit=1)) == [(2, 1)]
    assert keys(logs.list_step_logs("a", "ex-1", "fetch", run=2, attempt=2)) == [(2, 2)]
    assert logs.list_step_logs("a", "ex-1", "fetch", run=4) == []


def test_writing_an_attempt_again_replaces_it(logs: StepLogStore) -> None:
    logs.put_step_logs([record(1, 1, n=3)])
    logs.put_step_logs([record(1, 1, n=1, dropped=2)])
    (found,) = logs.list_step_logs("a", "ex-1", "fetch")
    assert len(found.lines) == 1 and found.dropped == 2


def test_steps_and_tenants_are_kept_apart(logs: StepLogStore) -> None:
    logs.put_step_logs([record(1, 1, key="each[3]"), record(1, 1, key="each"), record(1, 1, tenant="b/x")])
    assert [r.step_key for r in logs.list_step_logs("a", "ex-1", "each[3]")] == ["each[3]"]
    assert [r.step_key for r in logs.list_step_logs("a", "ex-1", "each")] == ["each"]
    assert [r.tenant for r in logs.list_step_logs("b/x", "ex-1", "fetch")] == ["b/x"]
    assert logs.list_step_logs("b", "ex-1", "fetch") == []
    assert logs.list_step_logs("a", "ex-2", "fetch") == []


def test_a_record_at_the_largest_byte_bound_is_stored(logs: StepLogStore) -> None:
    # step_logs_max_bytes is at most 900 KiB: a record that size (incompressible text) fits one document.
    rng = random.Random(7)
    message = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(3000))
    big = record(1, 1, n=300)
    big.lines = [{**line, "message": message} for line in big.lines]
    logs.put_step_logs([big])
    (found,) = logs.list_step_logs("a", "ex-1", "fetch")
    assert found.lines == big.lines


def test_deleting_an_executions_logs_leaves_other_executions_and_tenants(logs: StepLogStore) -> None:
    from dataclasses import replace

    kept_execution = replace(record(1, 1), execution_id="ex-2")
    logs.put_step_logs([record(1, 1), record(1, 2, key="ship"), record(1, 1, tenant="b"), kept_execution])
    logs.delete_step_logs("a", "ex-1", ["fetch", "ship"])
    assert logs.list_step_logs("a", "ex-1", "fetch") == [] and logs.list_step_logs("a", "ex-1", "ship") == []
    assert keys(logs.list_step_logs("b", "ex-1", "fetch")) == [(1, 1)]
    assert keys(logs.list_step_logs("a", "ex-2", "fetch")) == [(1, 1)]
    logs.delete_step_logs("a", "ex-1", ["fetch", "ship"])  # again: nothing left to delete, no error
