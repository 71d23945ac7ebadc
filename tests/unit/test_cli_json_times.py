"""Every ``--json`` command prints times as the REST API does (RFC 3339 UTC), never epoch floats:
a script reading both sees one format."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.schemas.executions import Execution
from api.schemas.keys import ApiKey
from conveyor.cli import app
from conveyor.jsontimes import api_time, with_api_times
from engine.bootstrap import build_store
from engine.keys import ApiKeys
from engine.records import ExecutionRecord
from engine.service import SystemClock
from engine.settings import Settings
from engine.states import ExecutionStatus

T0 = 1_780_000_000.25  # 2026-05-28T20:26:40.25Z: a fraction, as real clocks give


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("CONVEYOR_STORE", "CONVEYOR_SQLITE_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVEYOR_STATE_DIR", str(tmp_path / "state"))
    yield


def test_api_time_is_the_apis_rendering() -> None:
    assert api_time(None) is None
    assert api_time(T0) == "2026-05-28T20:26:40.250000Z"
    assert api_time(1_780_000_000.0) == "2026-05-28T20:26:40Z"
    assert api_time("2026-05-28T20:26:40.000000Z") == "2026-05-28T20:26:40Z"  # a stored log line's time
    assert api_time("2026-05-28T20:26:40.250000Z") == "2026-05-28T20:26:40.250000Z"
    assert with_api_times({"created_at": T0, "lease_until": T0, "attempt": 2, "finished_at": None, "ok": True}) == {
        "created_at": "2026-05-28T20:26:40.250000Z",
        "lease_until": "2026-05-28T20:26:40.250000Z",
        "attempt": 2,
        "finished_at": None,
        "ok": True,
    }


def test_executions_list_prints_the_apis_times(state: None) -> None:
    record = ExecutionRecord(
        id="ex-1",
        tenant="default",
        workflow="orders",
        version=1,
        status=ExecutionStatus.FAILED,
        input={},
        created_at=T0,
        updated_at=T0 + 5,
        finished_at=T0 + 5,
        expires_at=T0 + 5 + 86_400,
    )
    store = build_store(Settings())
    store.atomic(lambda tx: tx.put_execution(record))
    store.close()
    result = CliRunner().invoke(app, ["executions", "list", "--json"])
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    from_api = Execution.from_record(record).model_dump(mode="json")
    for name in ("created_at", "finished_at", "expires_at"):
        assert listed[name] == from_api[name], name


def test_keys_list_prints_the_apis_times(state: None) -> None:
    store = build_store(Settings())
    try:
        keys = ApiKeys(store, SystemClock())
        keys.create("default", "viewer", "ci", ttl_seconds=3600)
        [record] = keys.for_tenant("default")
    finally:
        store.close()
    result = CliRunner().invoke(app, ["keys", "list", "--json"])
    assert result.exit_code == 0, result.output
    [listed] = json.loads(result.stdout)
    from_api = ApiKey.from_record(record).model_dump(mode="json")
    assert (listed["created_at"], listed["expires_at"]) == (from_api["created_at"], from_api["expires_at"])
    assert isinstance(listed["expires_at"], str)
