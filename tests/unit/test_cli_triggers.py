"""``conveyor triggers next`` through Typer's CliRunner, on a SQLite store in a temporary state dir."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from conveyor.cli import app
from engine.bootstrap import build_service
from engine.settings import Settings
from engine.trigger_admin import Triggers
from tests.harness import ManualClock


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVEYOR_STATE_DIR", str(tmp_path / "state"))
    service = build_service(Settings())
    service.apply_workflow(
        "default", {"name": "tick", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]}
    )
    clock = ManualClock(datetime(2027, 3, 20, tzinfo=UTC).timestamp())
    yield Triggers(service.store, clock)
    service.store.close()


def test_next_prints_the_fire_times_with_dst_notes(state):
    trigger = state.create(
        "default", workflow="tick", kind="schedule", spec={"cron": "30 2 * * *", "timezone": "Europe/Berlin"}
    )
    result = CliRunner().invoke(app, ["triggers", "next", trigger.id, "--count", "10", "--json"])
    assert result.exit_code == 0, result.output
    fires = json.loads(result.stdout)
    assert len(fires) == 10 and fires[0]["at"] == "2027-03-20T01:30:00Z"
    shifted = [f for f in fires if f["note"]]
    assert [f["at"] for f in shifted] == ["2027-03-28T01:00:00Z"] and "spring forward" in shifted[0]["note"]
    table = CliRunner().invoke(app, ["triggers", "next", trigger.id], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "2027-03-20 02:30:00 CET" in table.stdout and table.stdout.count(" CET ") == 5


def test_next_refuses_an_unknown_trigger_and_an_event_trigger(state):
    missing = CliRunner().invoke(app, ["triggers", "next", "nope"])
    assert missing.exit_code == 1 and "not found" in missing.output
    event = state.create("default", workflow="tick", kind="event", spec={"type": "order.created"})
    refused = CliRunner().invoke(app, ["triggers", "next", event.id])
    assert refused.exit_code == 2 and "event trigger" in refused.output
