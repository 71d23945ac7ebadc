"""Step logs through the API: REST ``/steps/{key}/logs`` and GraphQL ``Step.logs`` show the same lines."""

from __future__ import annotations

from typing import Any

import pytest

from engine.auth import Role
from engine.functions import import_modules
from tests.api.conftest import Api
from tests.api.support import TENANT_A, TENANT_B

F = "tests.unit.fixtures.logfns"
import_modules([F])

FLAKY: dict[str, Any] = {
    "name": "charge",
    "steps": [
        {"id": "talk", "type": "task", "with": {"function": f"{F}.chatty", "args": {"lines": 12}}},
        {
            "id": "pay",
            "type": "task",
            "needs": ["talk"],
            "with": {"function": f"{F}.log_then_fail"},
        },
    ],
}


pytestmark = pytest.mark.usefixtures("info_logging")  # tests/conftest.py


def _run(api: Api) -> str:
    api.call("PUT", "/v1/workflows/charge", json=FLAKY)
    execution_id = str(api.call("POST", "/v1/executions", json={"workflow": "charge"}).json()["id"])
    api.driver.run_all()
    assert api.driver.runner.step_logs is not None and api.driver.runner.step_logs.flush()
    return execution_id


def test_a_viewer_reads_a_steps_logs_page_by_page(api: Api) -> None:
    execution_id = _run(api)
    path = f"/v1/executions/{execution_id}/steps/talk/logs"
    first = api.call("GET", path, role=Role.VIEWER, params={"limit": 5})
    assert first.status_code == 200, first.text
    body = first.json()
    assert [line["seq"] for line in body["items"]] == [0, 1, 2, 3, 4]
    assert body["items"][0] == {
        "run": 1,
        "attempt": 1,
        "seq": 0,
        "at": body["items"][0]["at"],
        "level": "INFO",
        "logger": "tests.logfns",
        "message": "chatty line 0",
    }
    assert body["attempts"][0]["lines"] == 12 and body["attempts"][0]["dropped"] == 0
    seen = body["items"]
    while body.get("next_cursor"):
        body = api.call("GET", path, role=Role.VIEWER, params={"limit": 5, "cursor": body["next_cursor"]}).json()
        seen += body["items"]
    assert [line["seq"] for line in seen] == list(range(12))
    assert seen[9]["logger"] == "stdout" and seen[9]["message"] == "chatty printed 9"


def test_a_failed_steps_runs_are_filtered_by_run(api: Api) -> None:
    execution_id = _run(api)
    detail = api.call("GET", f"/v1/executions/{execution_id}").json()
    assert detail["status"] == "FAILED"
    assert api.call("POST", f"/v1/executions/{execution_id}/retry", role=Role.OPERATOR).status_code == 200
    api.driver.run_all()
    assert api.driver.runner.step_logs is not None and api.driver.runner.step_logs.flush()
    path = f"/v1/executions/{execution_id}/steps/pay/logs"
    every = api.call("GET", path, role=Role.VIEWER).json()
    assert [(line["run"], line["attempt"], line["seq"]) for line in every["items"]] == [
        (1, 1, 0),
        (1, 1, 1),
        (2, 1, 0),
        (2, 1, 1),
    ]
    assert every["items"][1]["level"] == "ERROR" and "gateway said no" in every["items"][1]["message"]
    second = api.call("GET", path, role=Role.VIEWER, params={"run": 2, "attempt": 1}).json()
    assert {line["run"] for line in second["items"]} == {2}
    assert [(a["run"], a["attempt"]) for a in second["attempts"]] == [(2, 1)]


def test_logs_of_another_tenant_or_an_unknown_step_are_not_found(api: Api) -> None:
    execution_id = _run(api)
    path = f"/v1/executions/{execution_id}/steps/talk/logs"
    assert api.call("GET", path, role=Role.VIEWER, tenant=TENANT_B).status_code == 404
    assert api.call("GET", f"/v1/executions/{execution_id}/steps/nope/logs").status_code == 404
    bad = api.call("GET", path, params={"cursor": "bm90LWEtY3Vyc29y"})
    assert bad.status_code in (400, 422) and bad.headers["content-type"].startswith("application/problem+json")


def test_graphql_step_logs_match_rest(api: Api) -> None:
    execution_id = _run(api)
    query = """
      query($id: ID!) { execution(id: $id) { steps { key
        logs(limit: 3, attempt: 1) { items { run attempt seq at level logger message }
                                    attempts { run attempt lines dropped startedAt finishedAt } nextCursor } } } }
    """
    body = api.gql(query, {"id": execution_id}, role=Role.VIEWER)
    assert "errors" not in body, body
    steps = {s["key"]: s["logs"] for s in body["data"]["execution"]["steps"]}
    rest = api.call(
        "GET", f"/v1/executions/{execution_id}/steps/talk/logs", role=Role.VIEWER, params={"limit": 3, "attempt": 1}
    ).json()
    assert [line["message"] for line in steps["talk"]["items"]] == [line["message"] for line in rest["items"]]
    assert [line["seq"] for line in steps["talk"]["items"]] == [0, 1, 2]
    assert steps["talk"]["attempts"][0]["lines"] == 12 and steps["talk"]["nextCursor"] == rest["next_cursor"]
    assert [line["seq"] for line in steps["pay"]["items"]] == [0, 1]


@pytest.mark.timeout(60)
def test_step_log_events_arrive_on_the_graphql_subscription(api: Api) -> None:
    api.call("PUT", "/v1/workflows/charge", json=FLAKY)
    execution_id = str(api.call("POST", "/v1/executions", json={"workflow": "charge"}).json()["id"])
    subscription = """subscription ($id: ID!) { executionEvents(executionId: $id) {
      __typename ... on ExecutionChange { event { type stepKey attempt data } } } }"""
    token = api.keys[(TENANT_A, Role.VIEWER)]
    texts: dict[str, list[str]] = {}
    ended: set[str] = set()
    with api.client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        assert ws.receive_json() == {"type": "connection_ack"}
        variables = {"id": execution_id}
        ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": subscription, "variables": variables}})
        assert ws.receive_json()["payload"]["data"]["executionEvents"]["__typename"] == "ExecutionSnapshot"
        api.driver.run_all()  # the steps run now, while the subscription is open
        while "pay" not in ended:
            data = ws.receive_json()["payload"]["data"]["executionEvents"]
            if data["__typename"] == "ExecutionChange" and data["event"]["type"] == "step.log":
                event = data["event"]
                texts.setdefault(event["stepKey"], []).extend(line["message"] for line in event["data"]["lines"])
                if event["data"]["done"]:
                    ended.add(event["stepKey"])
    assert texts["talk"][:2] == ["chatty line 0", "chatty line 1"] and len(texts["talk"]) == 12
    assert texts["pay"][0] == "charging the card"
