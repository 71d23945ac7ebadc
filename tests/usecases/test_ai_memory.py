"""Long-term memory across executions: an agent remembers a note in one execution and recalls
it in the next; another tenant's agent, with the same namespace, recalls nothing."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.states import ExecutionStatus
from tests.harness import Harness


def _workflow(**memory: Any) -> dict[str, Any]:
    return {
        "name": "remembering",
        "inputs": {"type": "object", "properties": {"mode": {"type": "string"}}},
        "models": {
            "writer": {
                "script": [
                    {"tool_calls": [{"name": "remember", "args": {"key": "tone", "note": "prefers short answers"}}]},
                    {"content": "noted"},
                ]
            },
            "reader": {"script": [{"tool_calls": [{"name": "recall", "args": {}}]}, {"content": "read"}]},
        },
        "steps": [
            {
                "id": "agent",
                "type": "ai.agent",
                "with": {
                    "model": "${input.mode == 'write' ? 'fake:writer' : 'fake:reader'}",
                    "prompt": "customer c1",
                    "memory": {"namespace": ["customers", "c1"], **memory},
                },
            }
        ],
    }


def _recalled(h: Harness, execution_id: str, tenant: str = "t1") -> dict[str, Any]:
    """What ``recall`` told the model, from the agent's checkpointed thread."""
    results = [m.content for m in h.agent_messages(execution_id, tenant=tenant) if m.type == "tool"]
    return json.loads(results[0])


def test_an_agent_recalls_in_one_execution_what_it_remembered_in_another_and_only_in_its_tenant(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path)
    for tenant in ("t1", "t2"):
        h.apply(_workflow(), tenant=tenant)
    written = h.start("remembering", {"mode": "write"})
    h.drain()
    assert h.execution(written).status is ExecutionStatus.SUCCEEDED, h.execution(written).error
    read = h.start("remembering", {"mode": "read"})
    elsewhere = h.start("remembering", {"mode": "read"}, tenant="t2")
    h.drain()
    assert h.execution(read).status is ExecutionStatus.SUCCEEDED, h.execution(read).error
    assert _recalled(h, read) == {"tone": "prefers short answers"}
    assert _recalled(h, elsewhere, tenant="t2") == {}


def test_a_note_past_its_time_to_live_is_not_recalled(tmp_path) -> None:  # type: ignore[no-untyped-def]
    h = Harness(tmp_path)
    h.apply(_workflow(ttl="1s"))
    written = h.start("remembering", {"mode": "write"})
    h.drain()
    assert h.execution(written).status is ExecutionStatus.SUCCEEDED, h.execution(written).error
    time.sleep(2.5)  # SQLite's own clock decides expiry: the time must really pass
    read = h.start("remembering", {"mode": "read"})
    h.drain()
    assert _recalled(h, read) == {}
