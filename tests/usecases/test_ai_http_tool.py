"""The agent's SSRF-guarded HTTP tool: the egress policy applies, a refusal is told to the model,
and a request with side effects carries the step's and the tool call's idempotency key."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.states import ExecutionStatus
from tests.harness import Harness


class Recorder(BaseHTTPRequestHandler):
    seen: list[dict[str, Any]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        Recorder.seen.append({"path": self.path, "key": self.headers.get("Idempotency-Key"), "body": body})
        payload = b'{"refund": "accepted"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        return None


@pytest.fixture
def server() -> Iterator[int]:
    Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.server_address[1]
    httpd.shutdown()


def test_the_http_tool_follows_the_egress_policy_and_keys_its_side_effects(tmp_path, server: int) -> None:
    h = Harness(tmp_path, http_allow_cidrs=["127.0.0.1/32"], http_allow_ports=[server])
    url = f"http://127.0.0.1:{server}/refunds"
    script = [
        {"tool_calls": [{"name": "http_request", "args": {"url": "http://169.254.169.254/latest/meta-data"}}]},
        {"tool_calls": [{"name": "http_request", "args": {"method": "DELETE", "url": url}}]},
        {"tool_calls": [{"name": "http_request", "args": {"method": "POST", "url": url, "body": '{"order": 1}'}}]},
        {"content": "refund requested"},
    ]
    h.apply(
        {
            "name": "agent-http",
            "models": {"m": {"script": script}},
            "steps": [
                {
                    "id": "agent",
                    "type": "ai.agent",
                    "with": {"model": "fake:m", "prompt": "refund", "http": {"methods": ["GET", "POST"]}},
                }
            ],
        }
    )
    execution_id = h.start("agent-http")
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED, execution.error
    assert h.steps(execution_id)["agent"].output["answer"] == "refund requested"
    # the metadata address and the method not allowed never left the worker; the POST did, once
    assert Recorder.seen == [{"path": "/refunds", "key": f"{execution_id}/agent/call_2_0", "body": '{"order": 1}'}]
    results = _tool_results(h, execution_id)
    assert results[0].startswith("refused:") and "metadata" in results[0]
    assert results[1].startswith("refused: method DELETE is not allowed")
    assert '"status": 200' in results[2] and "accepted" in results[2]


def _tool_results(h: Harness, execution_id: str) -> list[str]:
    """What the tool told the model, read from the agent's checkpointed thread."""
    return [m.content for m in h.agent_messages(execution_id) if m.type == "tool"]
