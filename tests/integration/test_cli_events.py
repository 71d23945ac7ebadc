"""``conveyor run`` of a workflow that waits for an event: it says how to send it, and it works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.integration.test_cli_run import RUN_TIMEOUT, conveyor_env, wait_for_status

WAITING_WORKFLOW = """
name: await-payment
steps:
  - id: paid
    type: wait_for_event
    with: {type: payment.settled, correlation_key: input.order, timeout: 10m}
outputs: {amount: steps.paid.output.data.amount}
"""


def test_run_tells_how_to_send_the_awaited_event_and_the_cli_event_resumes_it(tmp_path: Path) -> None:
    path = tmp_path / "await.yaml"
    path.write_text(WAITING_WORKFLOW)
    state = tmp_path / "state"
    env = conveyor_env(CONVEYOR_EVENT_ROUTE_AFTER="0.2")
    command = [sys.executable, "-m", "conveyor", "run", str(path), "--input", '{"order": "A-7"}', "--state-dir", str(state)]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_status(state / "conveyor.db", "WAITING")
        sent = subprocess.run(
            [sys.executable, "-m", "conveyor", "events", "publish", "payment.settled", "--key", "A-7",
             "--data", '{"amount": 42}', "--id", "pay-1"],
            cwd=tmp_path, env={**env, "CONVEYOR_STATE_DIR": str(state)}, capture_output=True, text=True,
            timeout=RUN_TIMEOUT, check=False,
        )  # fmt: skip
        assert sent.returncode == 0 and "event pay-1 accepted" in sent.stderr, sent.stderr
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    assert "waits for event payment.settled with correlation key A-7" in stderr
    assert "conveyor events publish payment.settled --key A-7" in stderr
    assert '"amount": 42' in stdout


def test_publish_names_the_data_option_and_exits_2_for_invalid_data(tmp_path: Path) -> None:
    env = {**conveyor_env(), "CONVEYOR_STATE_DIR": str(tmp_path / "state")}

    def publish(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "conveyor", "events", "publish", "payment.settled", *args]
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    broken = publish("--data", "{bad")
    assert broken.returncode == 2 and "--data is not valid JSON" in broken.stderr, broken.stderr
    assert "--input" not in broken.stderr
    not_an_object = publish("--data", "[1]")
    assert not_an_object.returncode == 2 and "event data must be a JSON object" in not_an_object.stderr
    (tmp_path / "event.json").write_text('{"amount": 42}')
    accepted = publish("--data", "@event.json", "--id", "pay-2")
    assert accepted.returncode == 0 and "event pay-2 accepted" in accepted.stderr, accepted.stderr
