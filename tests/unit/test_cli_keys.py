"""``conveyor keys``: list and revoke work without ``--tenant`` (the default tenant, as the docs
show), ``list --json`` prints every key, and ids are never shortened on a narrow terminal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conveyor.cli import app


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in ("CONVEYOR_STORE", "CONVEYOR_SQLITE_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONVEYOR_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "30")  # a narrow terminal
    return CliRunner()


def test_keys_list_and_revoke_default_to_the_default_tenant(cli: CliRunner) -> None:
    created = cli.invoke(app, ["keys", "create", "--tenant", "default", "--name", "ci", "--json"])
    assert created.exit_code == 0, created.output
    key_id = json.loads(created.stdout.splitlines()[-1])["id"]
    listed = cli.invoke(app, ["keys", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.stdout)
    assert [(r["id"], r["name"], r["revoked"]) for r in rows] == [(key_id, "ci", False)]
    table = cli.invoke(app, ["keys", "list"])
    assert table.exit_code == 0 and key_id in table.stdout, table.stdout  # whole, on a 30-column terminal
    revoked = cli.invoke(app, ["keys", "revoke", key_id])
    assert revoked.exit_code == 0, revoked.output
    assert json.loads(cli.invoke(app, ["keys", "list", "--json"]).stdout)[0]["revoked"] is True
