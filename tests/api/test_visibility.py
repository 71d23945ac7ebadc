"""Worker tracebacks reach operators only (issue 11, item 7)."""

from __future__ import annotations

from typing import Any

from engine.auth import Role
from tests.api.conftest import Api

BROKEN: dict[str, Any] = {
    "name": "broken",
    "steps": [{"id": "divide", "type": "transform", "with": {"value": "${1 / 0}"}}],
}


def _failed_step_error(api: Api, role: Role, execution_id: str) -> dict[str, Any]:
    detail = api.call("GET", f"/v1/executions/{execution_id}", role=role).json()
    return dict(detail["steps"][0]["error"])


def test_a_failed_steps_traceback_is_shown_to_operators_only(api: Api) -> None:
    api.call("PUT", "/v1/workflows/broken", json=BROKEN)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "broken"}).json()["id"]
    api.driver.run_all()
    operator = _failed_step_error(api, Role.OPERATOR, execution_id)
    viewer = _failed_step_error(api, Role.VIEWER, execution_id)
    assert "traceback" in operator  # (empty for an expression error: nothing of the worker to show)
    assert "traceback" not in viewer and viewer["message"] == operator["message"]
    history = api.call("GET", f"/v1/executions/{execution_id}/history", role=Role.VIEWER).json()["items"]
    assert "Traceback" not in str(history)
    query = f'{{ execution(id: "{execution_id}") {{ steps {{ error }} }} }}'
    assert "traceback" not in api.gql(query, role=Role.VIEWER)["data"]["execution"]["steps"][0]["error"]
    assert "traceback" in api.gql(query, role=Role.OPERATOR)["data"]["execution"]["steps"][0]["error"]
