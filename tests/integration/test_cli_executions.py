"""``conveyor executions ...``, exit codes shared by ``validate`` and ``run``, and clean failure messages.

On a state folder of their own: a failed ``conveyor run`` is listed, shown, retried to
success and then refused a cancel. The commands that run steps (``run``, ``retry``) run as
subprocesses, as a user runs them; the others in process (Typer's runner), which is faster.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

from typer.testing import CliRunner

from conveyor.cli import app
from tests.integration.test_cli_run import conveyor_env

FLAKY_STEPS = """
from pathlib import Path

from conveyor import step


@step
def needs_marker(marker: str) -> str:
    if not Path(marker).exists():
        raise RuntimeError("the marker file is missing")
    return "found it"
"""

FLAKY_WORKFLOW = """
name: marker
steps:
  - id: first
    type: transform
    with: {value: 1}
  - id: check
    type: task
    needs: [first]
    with: {function: marker_steps.needs_marker, args: {marker: "%s"}}
"""

FAIL_WORKFLOW = """
name: refuse
steps:
  - id: stop
    type: fail
    with: {message: "orders over the limit need a manager", error_type: OverLimit}
"""


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", *args],
        cwd=tmp_path, env=conveyor_env(CONVEYOR_STATE_DIR=str(tmp_path / "state")),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def in_process(tmp_path: Path, *args: str):
    return CliRunner().invoke(app, [*args, "--state-dir", str(tmp_path / "state")])


def test_a_failed_run_is_listed_shown_and_retried_to_success(tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "marker_steps.py").write_text(FLAKY_STEPS)
    (tmp_path / "marker.yaml").write_text(FLAKY_WORKFLOW % marker)
    failed = cli(tmp_path, "run", "marker.yaml", "--quiet")
    assert failed.returncode == 1, failed.stderr

    listed = in_process(tmp_path, "executions", "list", "--status", "failed", "--json")
    assert listed.exit_code == 0, listed.output
    [summary] = json.loads(listed.stdout)
    execution_id = summary["id"]
    assert (summary["workflow"], summary["status"]) == ("marker", "FAILED")
    assert summary["error"]["message"] == "the marker file is missing"

    shown = in_process(tmp_path, "executions", "show", execution_id)
    assert shown.exit_code == 0, shown.output
    assert execution_id in shown.stdout and "RuntimeError at step check: the marker file is missing" in shown.stdout
    assert "(retention), then deleted" in shown.stdout  # a finished execution says when it goes
    finished, expires = (datetime.fromisoformat(summary[name]) for name in ("finished_at", "expires_at"))
    assert expires - finished == timedelta(days=30)  # the default retention; RFC 3339, as the API writes times

    marker.write_text("now it exists")
    retried = cli(tmp_path, "executions", "retry", execution_id, "--quiet")
    assert retried.returncode == 0, retried.stderr
    detail = json.loads(in_process(tmp_path, "executions", "show", execution_id, "--json").stdout)
    assert detail["status"] == "SUCCEEDED" and detail["run"] == 2
    assert {step["key"]: step["output"] for step in detail["steps"]} == {"first": 1, "check": "found it"}
    assert all(isinstance(step["started_at"], str) for step in detail["steps"]) and detail["created_at"].endswith("Z")

    refused = in_process(tmp_path, "executions", "cancel", execution_id)
    assert refused.exit_code == 1
    assert "cannot move from SUCCEEDED to CANCELLED" in refused.stderr
    missing = in_process(tmp_path, "executions", "show", "no-such-execution")
    assert missing.exit_code == 1 and "not found" in missing.stderr


def test_validate_and_run_exit_with_the_same_code_for_an_invalid_file(tmp_path):
    (tmp_path / "bad.yaml").write_text("name: bad\nsteps:\n  - id: a\n    type: tsk\n")
    validated = CliRunner().invoke(app, ["validate", str(tmp_path / "bad.yaml")])
    ran = cli(tmp_path, "run", "bad.yaml")
    assert validated.exit_code == ran.returncode == 2
    assert "unknown step type 'tsk'" in validated.stdout and "unknown step type 'tsk'" in ran.stderr


def test_a_fail_step_prints_its_message_without_an_engine_traceback(tmp_path):
    (tmp_path / "refuse.yaml").write_text(FAIL_WORKFLOW)
    result = cli(tmp_path, "run", "refuse.yaml")
    assert result.returncode == 1
    assert "OverLimit: orders over the limit need a manager" in result.stderr
    assert "Traceback" not in result.stderr and "engine/" not in result.stderr


def test_the_commands_work_against_the_configured_firestore_store(firestore_emulator, unique_project, tmp_path):
    from engine.bootstrap import build_service
    from engine.settings import Settings

    env = {"CONVEYOR_STORE": "firestore", "CONVEYOR_FIRESTORE_PROJECT": unique_project}
    service = build_service(Settings(store="firestore", firestore_project=unique_project))
    try:
        service.apply_workflow("default", {"name": "held", "steps": [{"id": "w", "type": "wait", "with": {"duration": "1h"}}]})
        execution_id = service.start("default", "held").execution.id
    finally:
        service.store.close()
    runner = CliRunner()
    listed = runner.invoke(app, ["executions", "list", "--json"], env=env)
    assert listed.exit_code == 0, listed.output
    assert [(e["id"], e["status"]) for e in json.loads(listed.stdout)] == [(execution_id, "RUNNING")]
    cancelled = runner.invoke(app, ["executions", "cancel", execution_id, "--json"], env=env)
    assert cancelled.exit_code == 0, cancelled.output
    assert json.loads(cancelled.stdout)["status"] == "CANCELLED"
    shown = runner.invoke(app, ["executions", "show", execution_id, "--json"], env=env)
    assert [step["status"] for step in json.loads(shown.stdout)["steps"]] == ["CANCELLED"]
