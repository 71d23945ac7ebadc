"""``conveyor run`` ends within 2 s of Ctrl-C, a cancel or a deadline while a sync step sleeps 30 s.

The step is a plain ``time.sleep(30)`` that never looks at its context: the process must not
wait for its thread. A second Ctrl-C must never print a traceback.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from engine.bootstrap import build_service
from engine.settings import Settings
from engine.states import EXECUTION_TERMINAL
from tests.integration.test_cli_run import conveyor_env, sigint_as_in_a_terminal

SLEEPER_STEPS = """
import time
from pathlib import Path

from conveyor import step


@step
def sleeper(marker: str) -> str:
    Path(marker).write_text("started")
    time.sleep(30)
    return "woke up"
"""

SLEEPER_WORKFLOW = """
name: sleeper
{deadline}
steps:
  - id: nap
    type: task
    with: {{function: sleeper_steps.sleeper, args: {{marker: "{marker}"}}}}
"""

#: What the issue allows between the stop and the end of the process.
EXIT_WITHIN = 2.0


def start_sleeper(tmp_path: Path, deadline: str = "") -> tuple[subprocess.Popen[str], Path]:
    """Start ``conveyor run`` on the sleeper workflow; returns once the step function runs."""
    marker = tmp_path / "started"
    (tmp_path / "sleeper_steps.py").write_text(SLEEPER_STEPS)
    path = tmp_path / "sleeper.yaml"
    path.write_text(SLEEPER_WORKFLOW.format(marker=marker, deadline=deadline))
    command = [sys.executable, "-m", "conveyor", "run", str(path), "--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(command, cwd=tmp_path, env=conveyor_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               preexec_fn=sigint_as_in_a_terminal)  # fmt: skip
    deadline_at = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline_at, "the step did not start within 60 s"
        time.sleep(0.02)
    return process, tmp_path / "state"


def seconds_to_exit(process: subprocess.Popen[str]) -> tuple[float, str]:
    began = time.monotonic()
    try:
        _, stderr = process.communicate(timeout=40)
    finally:
        process.kill()
    return time.monotonic() - began, stderr


def test_ctrl_c_during_a_sync_step_exits_within_two_seconds(tmp_path):
    process, _ = start_sleeper(tmp_path)
    process.send_signal(signal.SIGINT)
    took, stderr = seconds_to_exit(process)
    assert took < EXIT_WITHIN, stderr
    assert process.returncode == 1
    assert "CANCELLED" in stderr and "interrupted" in stderr
    assert "Traceback" not in stderr


def test_a_second_ctrl_c_exits_at_once_without_a_traceback(tmp_path):
    process, _ = start_sleeper(tmp_path)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    took, stderr = seconds_to_exit(process)
    assert took < EXIT_WITHIN, stderr
    assert process.returncode in (1, 130), stderr  # 130 if the second one came before the first was handled
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr


def test_a_cancel_from_another_process_ends_the_run_within_two_seconds(tmp_path):
    process, state = start_sleeper(tmp_path)
    service = build_service(Settings(state_dir=state))
    try:
        execution = service.list_executions("default").items[0]
        service.cancel("default", execution.id)  # what the API or `conveyor executions cancel` does
    finally:
        service.store.close()
    took, stderr = seconds_to_exit(process)
    assert took < EXIT_WITHIN, stderr
    assert process.returncode == 1 and "CANCELLED" in stderr


def test_a_workflow_deadline_ends_the_run_within_two_seconds(tmp_path):
    process, state = start_sleeper(tmp_path, deadline="deadline: 2s")
    service = build_service(Settings(state_dir=state))
    try:
        execution = service.list_executions("default").items[0]
        while execution.status not in EXECUTION_TERMINAL:
            assert process.poll() is None
            time.sleep(0.02)
            execution = service.get_execution("default", execution.id)
    finally:
        service.store.close()
    took, stderr = seconds_to_exit(process)
    assert took < EXIT_WITHIN, stderr
    assert process.returncode == 1 and "TIMED_OUT" in stderr
