"""Deleting an execution: REST ``DELETE /v1/executions/{id}`` and GraphQL ``deleteExecution``."""

from __future__ import annotations

from datetime import datetime, timedelta

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO, TENANT_B, WAITER

DELETE_MUTATION = """mutation ($id: ID!) { deleteExecution(id: $id) { __typename
    ... on DeletedExecution { id } ... on Problem { code status } } }"""


def _finished(api: Api) -> str:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    execution_id: str = api.call("POST", "/v1/executions", json={"workflow": "hello", "input": {"who": "a"}}).json()[
        "id"
    ]
    api.driver.run_all()
    assert api.call("GET", f"/v1/executions/{execution_id}").json()["status"] == "SUCCEEDED"
    return execution_id


def _waiting(api: Api) -> str:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id: str = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    api.driver.run_all()
    return execution_id


def test_a_finished_execution_is_deleted_and_gone_from_every_read(api: Api) -> None:
    execution_id = _finished(api)
    deleted = api.call("DELETE", f"/v1/executions/{execution_id}", role=Role.OPERATOR)
    assert deleted.status_code == 204 and deleted.content == b""
    assert api.call("GET", f"/v1/executions/{execution_id}").status_code == 404
    assert api.call("GET", f"/v1/executions/{execution_id}/steps").status_code == 404
    assert [e["id"] for e in api.call("GET", "/v1/executions").json()["items"]] == []
    assert api.call("GET", "/v1/executions/counts").json()["total"] == 0
    again = api.call("DELETE", f"/v1/executions/{execution_id}")
    assert again.status_code == 404 and again.json()["code"] == "not-found"


def test_deleting_an_unknown_or_active_execution_is_refused(api: Api) -> None:
    assert api.call("DELETE", "/v1/executions/unknown").status_code == 404
    waiting = _waiting(api)
    refused = api.call("DELETE", f"/v1/executions/{waiting}", role=Role.OPERATOR)
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["code"] == "execution-active"
    assert api.call("GET", f"/v1/executions/{waiting}").json()["status"] == "RUNNING"


def test_another_tenant_cannot_delete_and_a_viewer_may_not(api: Api) -> None:
    execution_id = _finished(api)
    assert api.call("DELETE", f"/v1/executions/{execution_id}", tenant=TENANT_B).status_code == 404
    assert api.call("DELETE", f"/v1/executions/{execution_id}", role=Role.VIEWER).status_code == 403
    assert api.call("GET", f"/v1/executions/{execution_id}").status_code == 200


def test_graphql_delete_execution_answers_like_the_route(api: Api) -> None:
    execution_id, waiting = _finished(api), _waiting(api)
    assert api.gql(DELETE_MUTATION, {"id": waiting}, role=Role.OPERATOR)["data"]["deleteExecution"] == {
        "__typename": "Problem",
        "code": "execution-active",
        "status": "409",
    }
    assert api.gql(DELETE_MUTATION, {"id": execution_id}, tenant=TENANT_B)["data"]["deleteExecution"]["code"] == (
        "not-found"
    )
    assert api.gql(DELETE_MUTATION, {"id": execution_id}, role=Role.OPERATOR)["data"]["deleteExecution"] == {
        "__typename": "DeletedExecution",
        "id": execution_id,
    }
    assert api.gql("query ($id: ID!) { execution(id: $id) { id } }", {"id": execution_id})["data"]["execution"] is None
    forbidden = api.gql(DELETE_MUTATION, {"id": waiting}, role=Role.VIEWER)
    assert forbidden["data"] is None or forbidden["data"]["deleteExecution"] is None
    assert forbidden["errors"]


def test_an_execution_shows_when_it_will_be_deleted(api: Api) -> None:
    waiting = _waiting(api)
    assert api.call("GET", f"/v1/executions/{waiting}").json()["expires_at"] is None
    execution_id = _finished(api)
    shown = api.call("GET", f"/v1/executions/{execution_id}").json()
    finished, expires = datetime.fromisoformat(shown["finished_at"]), datetime.fromisoformat(shown["expires_at"])
    assert expires - finished == timedelta(days=30)  # CONVEYOR_EXECUTION_RETENTION_DAYS's default
    found = api.gql("query ($id: ID!) { execution(id: $id) { expiresAt } }", {"id": execution_id})
    assert datetime.fromisoformat(found["data"]["execution"]["expiresAt"]) == expires
