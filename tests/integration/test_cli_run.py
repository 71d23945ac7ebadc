"""``conveyor run`` as a user runs it: a subprocess, no services, a state folder of its own.

Each run goes through the real CeleryDispatcher, an in-process Celery worker on kombu's
in-memory transport and the SQLite store; one run uses a real Redis broker instead. The
pure helpers behind the live table are checked at the bottom without a subprocess.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conveyor.commands.run import user_traceback
from conveyor.progress import NOT_RUN, PENDING, step_rows
from engine.adapters.store_sqlite import SqliteStore
from engine.records import StepRecord
from engine.states import StepStatus
from tests.services import redis_url

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 120

FAILING_WORKFLOW = """
name: failing
steps:
  - id: prepare
    type: transform
    with: {value: 1}
  - id: explode
    type: task
    needs: [prepare]
    retry: {max_attempts: 2, initial: 100ms}
    with: {function: failing_steps.explode, args: {why: "the disk is full"}}
  - id: never
    type: transform
    needs: [explode]
    with: {value: 2}
"""

FAILING_STEPS = """
from conveyor import step


@step
def explode(why: str) -> None:
    raise RuntimeError(f"cannot continue: {why}")
"""

SLEEPY_WORKFLOW = """
name: sleepy
steps:
  - id: nap
    type: wait
    with: {duration: 1h}
"""


def conveyor_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh shell: no CONVEYOR_* settings (so no broker) unless given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def sigint_as_in_a_terminal() -> None:
    """``preexec_fn`` for a ``conveyor run`` a test interrupts: SIGINT at its default disposition.

    A terminal's foreground job starts so. A job a script starts in the background does not: it
    inherits SIGINT *ignored* (POSIX), so does a test run started that way, and so would every
    process it starts, which Python then leaves ignored (no KeyboardInterrupt ever comes).
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def conveyor(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conveyor run ...`` in ``tmp_path`` with its state under ``tmp_path/state``."""
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "run", *args, "--state-dir", str(tmp_path / "state")],
        cwd=tmp_path,
        env=env or conveyor_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def example(name: str, input_file: str = "input.json") -> list[str]:
    return [str(EXAMPLES / name / "workflow.yaml"), "--input", f"@{EXAMPLES / name / input_file}"]


def write_failing_workflow(tmp_path: Path) -> Path:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "failing_steps.py").write_text(FAILING_STEPS)
    path = folder / "failing.yaml"
    path.write_text(FAILING_WORKFLOW)
    return path


EXPECTED_OUTPUTS = {
    "order_fanout": {"shipment_id": "shp-ord-1042", "units": 11},
    "loan_approval": {"decision": "approve", "score": 740},
    "payment_retry": {"gateway_calls": 3},
    "support_agent": {"answer": "Sorry about the damaged kettle. I have refunded the 42 you paid for order A-1001."},
    "invoice_review": {"invoice": "INV-7", "approved": True, "vendor": "Acme"},
}
#: Extra arguments an example needs (answers to the steps that wait for a person).
EXTRA_ARGUMENTS = {
    "support_agent": ["--signal", f"support=@{EXAMPLES / 'support_agent' / 'approve.json'}"],
    "invoice_review": ["--signal", f"review=@{EXAMPLES / 'invoice_review' / 'approve.json'}"],
}
#: Events an example waits for, published by `conveyor events publish` once its execution started.
EVENTS = {"invoice_review": ["invoice.scanned", "--key", "INV-7", "--data", '{"total": 120, "vendor": "Acme"}']}


def publish_once_started(tmp_path: Path, args: list[str]) -> None:
    """From another process, as a user would: publish the event once the run's execution exists."""
    db = tmp_path / "state" / "conveyor.db"
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if db.is_file():
            store = SqliteStore(db)
            try:
                started = store.list_executions("default", limit=1).items
            finally:
                store.close()
            if started:
                break
        time.sleep(0.2)
    subprocess.run(
        [sys.executable, "-m", "conveyor", "events", "publish", *args],
        cwd=tmp_path,
        env=conveyor_env(CONVEYOR_STATE_DIR=str(tmp_path / "state")),
        capture_output=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED_OUTPUTS))
def test_each_example_runs_to_success_and_prints_its_outputs(tmp_path, name):
    publisher = None
    if name in EVENTS:
        publisher = threading.Thread(target=publish_once_started, args=(tmp_path, EVENTS[name]), daemon=True)
        publisher.start()
    env = conveyor_env(CONVEYOR_EVENT_ROUTE_AFTER="0.5")  # the run routes the other process's event soon
    result = conveyor(tmp_path, *example(name), *EXTRA_ARGUMENTS.get(name, []), env=env)
    if publisher is not None:
        publisher.join(timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr
    outputs = json.loads(result.stdout)
    assert outputs.items() >= EXPECTED_OUTPUTS[name].items()
    assert "SUCCEEDED" in result.stderr  # the final state of the progress table
    assert (tmp_path / "state" / "conveyor.db").is_file()


def test_decisions_show_reads_the_bandit_a_run_taught(tmp_path):
    result = conveyor(tmp_path, *example("support_agent"), *EXTRA_ARGUMENTS["support_agent"], "--quiet")
    assert result.returncode == 0, result.stderr
    env = conveyor_env(CONVEYOR_STATE_DIR=str(tmp_path / "state"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "conveyor", "decisions", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)

    shown = cli("show", "support-agent", "style")
    assert shown.returncode == 0, shown.stderr
    assert "support-agent/style" in shown.stdout and json.loads(result.stdout)["style"] in shown.stdout
    missing = cli("show", "support-agent", "support")
    # the message names both bandit step types; the CLI wraps it, so compare it unwrapped
    assert missing.returncode == 1 and "no ai.route or switch step 'support'" in " ".join(missing.stderr.split())


def test_every_example_is_covered():
    assert sorted(EXPECTED_OUTPUTS) == sorted(path.parent.name for path in EXAMPLES.glob("*/workflow.yaml"))


def test_foreach_is_one_row_with_a_count(tmp_path):
    result = conveyor(tmp_path, *example("order_fanout"))
    assert result.returncode == 0, result.stderr
    assert "reserve[*]" in result.stderr and "6/6 done" in result.stderr
    assert "reserve[0]" not in result.stderr


def test_a_bad_signal_option_exits_2(tmp_path):
    result = conveyor(tmp_path, *example("support_agent"), "--signal", "support")
    assert result.returncode == 2
    assert "expected STEP=JSON or STEP=@file.json" in result.stderr


def test_a_failing_step_exits_1_with_its_error(tmp_path):
    result = conveyor(tmp_path, str(write_failing_workflow(tmp_path)))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "FAILED at step explode" in result.stderr
    assert "RuntimeError: cannot continue: the disk is full" in result.stderr
    assert "failing_steps.py" in result.stderr  # the user's frame of the traceback
    assert NOT_RUN in result.stderr  # `never` could not run


def test_an_invalid_definition_exits_2_naming_every_problem(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\nsteps:\n  - id: a\n    type: nope\n    needs: [b]\n")
    result = conveyor(tmp_path, str(path))
    assert result.returncode == 2
    assert "steps[0].needs[0]: unknown step 'b'" in result.stderr
    assert "steps[0].type: unknown step type 'nope'" in result.stderr
    assert not (tmp_path / "state").exists()  # nothing was started, nothing written


def test_input_failing_the_schema_exits_2_with_its_path(tmp_path):
    result = conveyor(tmp_path, str(EXAMPLES / "loan_approval" / "workflow.yaml"), "--input", '{"amount": 5}')
    assert result.returncode == 2
    assert "input.amount: 5 is less than the minimum of 1000" in result.stderr
    assert "input.applicant: 'applicant' is a required property" in result.stderr


def test_input_that_is_not_json_exits_2(tmp_path):
    result = conveyor(tmp_path, str(EXAMPLES / "loan_approval" / "workflow.yaml"), "--input", "{oops")
    assert result.returncode == 2
    assert "--input: not valid JSON" in result.stderr


def test_quiet_prints_only_the_outputs(tmp_path):
    result = conveyor(tmp_path, *example("loan_approval", "input-review.json"), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["decision"] == "review"
    assert result.stderr == ""


def test_timeout_cancels_the_execution_and_exits_1(tmp_path):
    path = tmp_path / "sleepy.yaml"
    path.write_text(SLEEPY_WORKFLOW)
    result = conveyor(tmp_path, str(path), "--timeout", "1")
    assert result.returncode == 1
    assert "CANCELLED" in result.stderr and "gave up after --timeout 1s" in result.stderr


def test_ctrl_c_cancels_the_execution_cleanly(tmp_path):
    path = tmp_path / "sleepy.yaml"
    path.write_text(SLEEPY_WORKFLOW)
    command = [sys.executable, "-m", "conveyor", "run", str(path), "--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(command, cwd=tmp_path, env=conveyor_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    try:
        wait_for_status(tmp_path / "state" / "conveyor.db", "WAITING")
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    assert "CANCELLED" in stderr and "interrupted" in stderr
    assert stdout == ""
    assert "WAITING" not in step_statuses(tmp_path / "state" / "conveyor.db")


def test_no_worker_without_a_broker_is_refused(tmp_path):
    result = conveyor(tmp_path, *example("loan_approval"), "--no-worker")
    assert result.returncode == 2
    assert "--no-worker needs CONVEYOR_BROKER_URL" in result.stderr


def test_an_unreachable_broker_fails_fast(tmp_path):
    env = conveyor_env(CONVEYOR_BROKER_URL="redis://127.0.0.1:1/0")
    started = time.monotonic()
    result = conveyor(tmp_path, *example("loan_approval"), env=env)
    assert result.returncode == 1
    assert "cannot reach the message broker" in result.stderr
    assert time.monotonic() - started < 30


def test_runs_through_a_real_redis_broker(tmp_path):
    queue = f"conveyor-cli-run-{uuid.uuid4().hex[:10]}"  # no other worker may take these messages
    env = conveyor_env(CONVEYOR_BROKER_URL=redis_url(), CONVEYOR_DEFAULT_QUEUE=queue)
    result = conveyor(tmp_path, *example("payment_retry"), env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["gateway_calls"] == 3


# --------------------------------------------------------------------------- helpers of the table


def step_statuses(database: Path) -> list[str]:
    """Statuses of every step of every execution in a ``conveyor run`` state folder's store."""
    store = SqliteStore(database)
    try:
        executions = store.list_executions("default").items
        return [str(step.status) for execution in executions for step in store.list_steps("default", execution.id)]
    finally:
        store.close()


def wait_for_status(database: Path, status: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if database.exists() and status in step_statuses(database):
            return
        time.sleep(0.1)
    raise AssertionError(f"no step reached {status} within {seconds}s")


def record(key: str, status: StepStatus, **fields) -> StepRecord:
    step_id = key.split("[")[0]
    return StepRecord(execution_id="e", tenant="t", key=key, step_id=step_id, status=status, **fields)


def test_rows_fold_foreach_items_and_mark_steps_without_records():
    records = [
        record("fetch", StepStatus.SUCCEEDED, attempt=1, started_at=10.0, finished_at=11.5),
        record("each", StepStatus.RUNNING, items=[1, 2, 3, 4], started_at=11.5),
        record("each[0]", StepStatus.SUCCEEDED, index=0, attempt=1),
        record("each[1]", StepStatus.RUNNING, index=1, attempt=2),
        record("each[2]", StepStatus.RETRY_WAIT, index=2, attempt=1, wake_at=21.0,
               error={"type": "ConnectionError", "message": "refused"}),
    ]  # fmt: skip
    rows = step_rows(["fetch", "each", "join"], records, now=20.0)
    assert [(row.key, row.status, row.attempt) for row in rows] == [
        ("fetch", "SUCCEEDED", 1),
        ("each[*]", "RUNNING", 2),
        ("join", PENDING, None),
    ]
    assert rows[0].seconds == 1.5
    assert rows[1].detail == "1/4 done · 1 running · 1 retrying"
    assert step_rows(["join"], [], now=0.0, ended=True)[0].status == NOT_RUN


def test_rows_explain_retries_and_timers():
    records = [
        record("a", StepStatus.RETRY_WAIT, attempt=1, wake_at=12.0, error={"type": "Boom", "message": "x\ny"}),
        record("b", StepStatus.WAITING, attempt=1, wake_at=100.0),
    ]
    rows = step_rows(["a", "b"], records, now=10.0)
    assert rows[0].detail == "retry in 2.0s · Boom: x"
    assert rows[1].detail == "wakes in 90.0s"


def test_user_traceback_keeps_only_the_users_frames():
    internal = Path(__file__).resolve().parents[2] / "engine" / "runner.py"
    text = (
        "Traceback (most recent call last):\n"
        f'  File "{internal}", line 1, in run\n    outcome = run()\n'
        '  File "/home/me/flows/steps.py", line 4, in explode\n    raise RuntimeError("no")\n'
        "RuntimeError: no\n"
    )
    assert user_traceback(text) == (
        "Traceback (most recent call last):\n"
        '  File "/home/me/flows/steps.py", line 4, in explode\n    raise RuntimeError("no")\n'
        "RuntimeError: no"
    )
