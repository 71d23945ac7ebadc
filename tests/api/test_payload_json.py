"""Payloads that JSON cannot hold (NaN, Infinity) are refused at the API, not stored as null."""

from __future__ import annotations

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO


def test_a_nan_input_is_refused_with_a_problem(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    body = '{"workflow": "hello", "input": {"who": "a", "score": NaN}}'  # Python's JSON parser accepts NaN
    response = api.call(
        "POST", "/v1/executions", role=Role.OPERATOR, content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == "payload-invalid"
    assert "execution input.score is nan, which JSON cannot represent" in problem["detail"]
    assert api.call("GET", "/v1/executions", role=Role.VIEWER).json()["items"] == []
