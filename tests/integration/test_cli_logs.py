"""``conveyor logs`` as a user runs it: after ``conveyor run``, and following a run in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from engine.adapters.store_sqlite import SqliteStore
from tests.integration.test_cli_run import RUN_TIMEOUT, conveyor, conveyor_env

WORKFLOW = """
name: noisy
steps:
  - id: talk
    type: task
    with: {function: noisy_steps.talk, args: {lines: 5}}
  - id: explode
    type: task
    needs: [talk]
    retry: {max_attempts: 2, initial: 100ms}
    with: {function: noisy_steps.explode}
"""

STEPS = """
import logging
import os
import time

from conveyor import step

log = logging.getLogger("noisy")


@step
def talk(lines: int) -> int:
    time.sleep(float(os.environ.get("NOISY_PAUSE", "0")))
    for i in range(lines):
        log.info("talking %d", i)
    print("said it all")
    return lines


@step
def explode() -> None:
    log.warning("about to fail, password=%s", os.environ["NOISY_SECRET"])
    raise RuntimeError("the disk is full")
"""


def write_workflow(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "noisy_steps.py").write_text(STEPS)
    path = folder / "noisy.yaml"
    path.write_text(WORKFLOW)
    return path


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return conveyor_env(
        NOISY_SECRET="hunter2-is-my-password",
        CONVEYOR_STEP_LOGS_REDACT_ENV='["NOISY_SECRET"]',
        CONVEYOR_STATE_DIR=str(tmp_path / "state"),
        **extra,
    )


def logs(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "logs", *args],
        cwd=tmp_path,
        env=env(tmp_path),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def only_execution(tmp_path: Path) -> str:
    store = SqliteStore(tmp_path / "state" / "conveyor.db")
    try:
        (execution,) = store.list_executions("default").items
    finally:
        store.close()
    return execution.id


def test_logs_show_every_attempt_after_conveyor_run(tmp_path: Path) -> None:
    path = write_workflow(tmp_path)
    ran = conveyor(tmp_path, str(path), env=env(tmp_path))
    assert ran.returncode == 1, ran.stderr  # the execution failed
    execution_id = only_execution(tmp_path)

    shown = logs(tmp_path, execution_id)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for i in range(5):
        assert f"talk #1 noisy: talking {i}" in text
    assert "talk #1 stdout: said it all" in text
    assert text.count("explode #1 noisy: about to fail, password=***") == 1
    assert text.count("explode #2 noisy: about to fail, password=***") == 1
    assert "hunter2" not in text

    as_json = logs(tmp_path, execution_id, "explode", "--attempt", "2", "--json")
    assert as_json.returncode == 0, as_json.stderr
    (line,) = [json.loads(raw) for raw in as_json.stdout.splitlines()]
    assert (line["step"], line["run"], line["attempt"], line["seq"], line["level"]) == ("explode", 1, 2, 0, "WARNING")
    assert line["at"].endswith("Z")

    unknown = logs(tmp_path, execution_id, "nope")
    assert unknown.returncode == 1 and "not found" in unknown.stderr
    other_tenant = logs(tmp_path, execution_id, "--tenant", "someone-else")
    assert other_tenant.returncode == 1 and "not found" in other_tenant.stderr


def test_follow_prints_lines_as_attempts_end_and_stops_with_the_execution(tmp_path: Path) -> None:
    path = write_workflow(tmp_path)
    run = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "run", str(path), "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path,
        env=env(tmp_path, NOISY_PAUSE="2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + RUN_TIMEOUT
        while not (tmp_path / "state" / "conveyor.db").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        execution_id = None
        while execution_id is None and time.monotonic() < deadline:
            try:
                execution_id = only_execution(tmp_path)
            except ValueError:  # not started yet
                time.sleep(0.1)
        assert execution_id is not None
        followed = logs(tmp_path, execution_id, "--follow")
    finally:
        run.wait(RUN_TIMEOUT)
    assert followed.returncode == 0, followed.stderr
    lines = followed.stdout.splitlines()
    expected = [f"talk #1 noisy: talking {i}" for i in range(5)] + ["talk #1 stdout: said it all"]
    assert [next(i for i, line in enumerate(lines) if want in line) for want in expected] == sorted(
        next(i for i, line in enumerate(lines) if want in line) for want in expected
    )
    assert sum("about to fail" in line for line in lines) == 2
