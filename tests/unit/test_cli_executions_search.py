"""``conveyor executions list`` filters and ``conveyor executions counts``, on a SQLite state dir."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from engine.bootstrap import build_store
from engine.records import ExecutionRecord
from engine.settings import Settings
from engine.states import ExecutionStatus

T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z


def _execution(n: int) -> ExecutionRecord:
    return ExecutionRecord(
        id=f"ex-{n}",
        tenant="default",
        workflow="orders" if n < 4 else "refunds",
        version=1 + n % 2,
        status=ExecutionStatus.SUCCEEDED if n % 3 else ExecutionStatus.FAILED,
        input={},
        created_at=T0 + n * 60,
        updated_at=T0 + n * 60,
        labels={"team": "shop" if n % 2 else "ops", "url": f"https://x.example:8443/{n}"},
        trigger_id="tr-1" if n in (2, 5) else None,
    )


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("CONVEYOR_STATE_DIR", str(tmp_path / "state"))
    store = build_store(Settings())

    def write(tx):  # type: ignore[no-untyped-def]
        for n in range(6):
            tx.put_execution(_execution(n))

    store.atomic(write)
    store.close()
    yield


def _list(*args: str) -> list[str]:
    result = CliRunner().invoke(app, ["executions", "list", "--json", *args])
    assert result.exit_code == 0, result.output
    return [e["id"] for e in json.loads(result.stdout)]


def test_list_filters_combine(state: None) -> None:
    assert _list() == ["ex-5", "ex-4", "ex-3", "ex-2", "ex-1", "ex-0"]
    assert _list("--label", "team:shop") == ["ex-5", "ex-3", "ex-1"]
    assert _list("--label", "team:shop", "--label", "url:https://x.example:8443/3") == ["ex-3"]
    assert _list("--workflow", "orders", "--version", "2") == ["ex-3", "ex-1"]
    assert _list("--trigger", "tr-1") == ["ex-5", "ex-2"]
    assert _list("--since", "2026-05-28T20:28:40Z", "--until", "2026-05-28T20:30:40+00:00") == ["ex-3", "ex-2"]
    assert _list("--status", "failed", "--label", "team:ops") == ["ex-0"]
    listed = json.loads(CliRunner().invoke(app, ["executions", "list", "--json", "--trigger", "tr-1"]).stdout)
    assert listed[0]["labels"] == {"team": "shop", "url": "https://x.example:8443/5"}
    assert listed[0]["trigger_id"] == "tr-1"


def test_counts_per_status(state: None) -> None:
    result = CliRunner().invoke(app, ["executions", "counts", "--json", "--workflow", "orders"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.stdout)
    assert counts["total"] == 4
    assert counts["counts"] == {s.value: 0 for s in ExecutionStatus} | {"SUCCEEDED": 2, "FAILED": 2}
    table = CliRunner().invoke(app, ["executions", "counts", "--label", "team:shop"], env={"COLUMNS": "120"})
    assert table.exit_code == 0 and "3 executions" in table.stdout and "SUCCEEDED" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--label", "team"], "not key:value"),
        (["--version", "1"], "give `workflow` too"),
        (["--since", "yesterday"], "ISO 8601"),
        (["--since", "2026-05-28T20:30:00Z", "--until", "2026-05-28T20:00:00Z"], "is not before --until"),
        (["--cursor", "not-a-cursor"], "cursor is not valid"),
    ],
)
def test_bad_filters_are_usage_errors(state: None, args: list[str], message: str) -> None:
    for command in ("list", "counts") if "--cursor" not in args else ("list",):
        result = CliRunner().invoke(app, ["executions", command, *args], env={"COLUMNS": "200"})
        assert result.exit_code == 2, result.output
        assert message in result.output


def test_a_long_listing_says_how_to_page_on_and_the_cursor_lists_the_rest(state: None) -> None:
    first = CliRunner().invoke(app, ["executions", "list", "--json", "--limit", "4"])
    assert first.exit_code == 0, first.output
    assert [e["id"] for e in json.loads(first.stdout)] == ["ex-5", "ex-4", "ex-3", "ex-2"]
    assert "more executions match" in first.stderr
    cursor = first.stderr.split("--cursor ", 1)[1].split()[0]
    rest = CliRunner().invoke(app, ["executions", "list", "--json", "--limit", "4", "--cursor", cursor])
    assert rest.exit_code == 0, rest.output
    assert [e["id"] for e in json.loads(rest.stdout)] == ["ex-1", "ex-0"]
    assert "more executions match" not in rest.stderr
    table = CliRunner().invoke(app, ["executions", "list", "--limit", "2"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and f"--cursor {cursor}" not in table.stdout and "--cursor " in table.stdout


def test_delete_removes_a_finished_execution_after_confirmation(state: None) -> None:
    declined = CliRunner().invoke(app, ["executions", "delete", "ex-1"], input="n\n")
    assert declined.exit_code == 1 and "ex-1" in _list()
    confirmed = CliRunner().invoke(app, ["executions", "delete", "ex-1"], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "ex-1 deleted" in confirmed.output
    assert "ex-1" not in _list()
    again = CliRunner().invoke(app, ["executions", "delete", "ex-1", "--yes"])
    assert again.exit_code == 1 and "not found" in again.output


def test_delete_refuses_a_running_execution(state: None, tmp_path: Path) -> None:
    store = build_store(Settings())
    store.atomic(lambda tx: tx.put_execution(replace(_execution(7), status=ExecutionStatus.RUNNING)))
    store.close()
    refused = CliRunner().invoke(app, ["executions", "delete", "ex-7", "-y"])
    assert refused.exit_code == 1 and "only a finished execution can be deleted" in refused.output
    assert "ex-7" in _list()
