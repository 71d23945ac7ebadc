"""Step logs from a real prefork ``conveyor worker`` process (SQLite store, Redis broker and live log).

While the execution runs, a WebSocket progress stream receives each step's lines as ``step.log``
events (a slow step's first lines before the step ends) and ``conveyor logs --follow`` prints
them; after the run, a failed step's logs and its error are readable through REST.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api import create_app
from engine.auth import Role
from engine.bootstrap import build_service
from engine.settings import Settings
from tests.api.support import bearer, issue_keys
from tests.chaos.conftest import ROOT, WorkerProcess, forget_run, tail, worker_env

pytestmark = [pytest.mark.backend, pytest.mark.timeout(240)]

TENANT = "logs"
F = "tests.unit.fixtures.logfns"


def definition(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "steps": [
            {"id": "talk", "type": "task", "with": {"function": f"{F}.paced", "args": {"lines": 4, "pause": 0.5}}},
            {"id": "pay", "type": "task", "needs": ["talk"], "with": {"function": f"{F}.log_then_fail"}},
        ],
    }


def _events_until_logs_end(ws: Any, deadline: float) -> list[dict[str, Any]]:
    """Stream events until the execution failed and the failed step's last ``step.log`` arrived."""
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        message = ws.receive_json()
        if message["type"] != "event":
            continue
        events.append(message["event"])
        types = {(e["type"], e["step_key"], e["data"].get("done")) for e in events}
        if ("execution.failed", None, None) in types and ("step.log", "pay", True) in types:
            return events
    raise AssertionError(f"the stream ended early: {[(e['type'], e['step_key']) for e in events]}")


def test_a_failing_steps_logs_stream_live_and_are_readable_after_the_run(tmp_path: Path, redis_server_url: str) -> None:
    run_id = uuid.uuid4().hex[:10]
    workflow, queue = f"logs-{run_id}", f"conveyor-logs-{run_id}"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": tmp_path / "logs.db",
        "broker_url": redis_server_url,
        "redis_url": redis_server_url,
        "default_queue": queue,
        "imports": [F],
        "stream_heartbeat_seconds": 1.0,
    }
    env = worker_env(options, redis_server_url, f"conveyor-logs:{run_id}")
    worker = WorkerProcess(
        [sys.executable, "-m", "conveyor", "worker", "--concurrency", "2"], env, tmp_path / "worker.log"
    )
    settings = Settings(_env_file=None, **options)  # type: ignore[call-arg]
    service = build_service(settings)
    follow: subprocess.Popen[str] | None = None
    try:
        worker.start()
        worker.wait_ready()
        keys = issue_keys(service, [TENANT])
        viewer = bearer(keys[(TENANT, Role.VIEWER)])
        service.apply_workflow(TENANT, definition(workflow))
        with TestClient(create_app(settings)) as api:
            started = api.post(
                "/v1/executions", json={"workflow": workflow}, headers=bearer(keys[(TENANT, Role.ADMIN)])
            )
            assert started.status_code == 201, started.text
            execution_id = started.json()["id"]
            follow = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "logs", execution_id, "--follow", "--tenant", TENANT],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            protocols = ["conveyor.v1", f"bearer.{keys[(TENANT, Role.VIEWER)]}"]
            with api.websocket_connect(f"/v1/executions/{execution_id}/events", subprotocols=protocols) as ws:
                assert ws.receive_json()["type"] == "snapshot"
                events = _events_until_logs_end(ws, time.monotonic() + 90)

            # Live: the slow step's first lines arrived while it ran, before its step.succeeded.
            talk_done = next(
                i for i, e in enumerate(events) if e["type"] == "step.succeeded" and e["step_key"] == "talk"
            )
            early = [e for e in events[:talk_done] if e["type"] == "step.log" and e["step_key"] == "talk"]
            assert early and early[0]["data"]["done"] is False and early[0]["attempt"] == 1
            live_talk = [line["message"] for e in events if e["type"] == "step.log" and e["step_key"] == "talk"
                         for line in e["data"]["lines"]]  # fmt: skip
            assert live_talk == [f"paced line {i}" for i in range(4)]
            live_pay = [line for e in events if e["type"] == "step.log" and e["step_key"] == "pay"
                        for line in e["data"]["lines"]]  # fmt: skip
            assert [line["level"] for line in live_pay] == ["INFO", "ERROR"]

            # After the run, through REST: the failed step's logs (a viewer may read them) and its error.
            path = f"/v1/executions/{execution_id}/steps/pay/logs"
            deadline = time.monotonic() + 30
            while not (body := api.get(path, headers=viewer).json())["items"]:
                assert time.monotonic() < deadline, "the failed step's logs were not stored"
                time.sleep(0.1)
            assert [(line["level"], line["message"].splitlines()[0]) for line in body["items"]] == [
                ("INFO", "charging the card"),
                ("ERROR", "the gateway refused"),
            ]
            assert "ValueError: gateway said no" in body["items"][1]["message"]
            assert body["attempts"] == [{**body["attempts"][0], "run": 1, "attempt": 1, "lines": 2, "dropped": 0}]
            detail = api.get(f"/v1/executions/{execution_id}", headers=bearer(keys[(TENANT, Role.OPERATOR)])).json()
            assert detail["status"] == "FAILED"
            (pay,) = [s for s in detail["steps"] if s["key"] == "pay"]
            assert pay["error"]["type"] == "RuntimeError" and pay["error"]["message"] == "card declined"
            assert "log_then_fail" in pay["error"]["traceback"]

        out, err = follow.communicate(timeout=60)
        assert follow.returncode == 0, err
        printed = out.splitlines()
        for i in range(4):
            assert sum(f"talk #1 tests.logfns: paced line {i}" in line for line in printed) == 1, out
        assert sum("pay #1 tests.logfns: charging the card" in line for line in printed) == 1, out
    except BaseException:
        print(f"\n--- worker log ---\n{tail(tmp_path / 'worker.log')}")
        raise
    finally:
        if follow is not None and follow.poll() is None:
            follow.kill()
            follow.wait(10)
        worker.stop()
        forget_run(redis.Redis.from_url(redis_server_url), f"conveyor-logs:{run_id}", queue)
        service.store.close()
