"""The route table as test data: every ``/v1`` route with its method, path, role and body.

Tests that must cover every route (roles, cross-tenant isolation) iterate over
:func:`v1_routes`, so a new route is covered the day it is added. A route with a path
parameter or body model unknown here makes those tests fail with a clear message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from engine.auth import Role
from tests.api.support import HELLO


@dataclass(frozen=True)
class RouteCase:
    method: str
    path: str
    role: Role
    body: str | None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def url(self, params: dict[str, str]) -> str:
        missing = set(re.findall(r"{(\w+)}", self.path)) - set(params)
        assert not missing, f"{self.id}: no test value for path parameter(s) {sorted(missing)}; add them"
        return re.sub(r"{(\w+)}", lambda m: params[m.group(1)], self.path)

    def json(self) -> Any:
        if self.body is None:
            return None
        assert self.body in SAMPLE_BODIES, f"{self.id}: no sample body for {self.body!r}; add one to SAMPLE_BODIES"
        return SAMPLE_BODIES[self.body]


#: A valid body per request model, used when a test only needs the request to be well-formed.
SAMPLE_BODIES: dict[str, Any] = {
    "StartExecution": {"workflow": "hello", "input": {"who": "b"}},
    "Signal": {"step": "hold", "payload": {"ok": True}},
    "BulkIds": {"ids": ["e"]},
    "Reward": {"step": "hold", "reward": 1},
    "ApprovalDecision": {"decision": "approve", "comment": "fine"},
    "ApprovalLinkRequest": {"recipient": "alice@example.com"},
    "TriggerCreate": {"workflow": "hello", "kind": "event", "spec": {"type": "x.y"}},
    "TriggerUpdate": {"enabled": False},
    "PublishEvent": {"type": "x.y", "data": {}},
    "KeyCreate": {"name": "k", "role": "viewer"},
    "PromptBody": {"template": "Hello ${input.who}"},
    "definition": HELLO,
}


def _body_name(operation: dict[str, Any]) -> str | None:
    body = operation.get("requestBody")
    if body is None:
        return None
    schema = body["content"]["application/json"]["schema"]
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else "definition"


def v1_routes(app: FastAPI) -> list[RouteCase]:
    """Every operation under ``/v1`` in the app's OpenAPI document (its public route table)."""
    cases = []
    for path, operations in app.openapi()["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, operation in operations.items():
            assert "x-required-role" in operation, f"{method} {path} has no role guard (use api.deps.guard)"
            cases.append(RouteCase(method.upper(), path, Role(operation["x-required-role"]), _body_name(operation)))
    assert cases
    return cases
