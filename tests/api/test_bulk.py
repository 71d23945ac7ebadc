"""``POST /v1/executions/bulk/cancel`` and ``/bulk/retry``: one result per id, tenant-isolated,
bounded, operators only, and the same answers as the GraphQL batch twins."""

from __future__ import annotations

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import TENANT_A, TENANT_B, WAITER

FAILING = {"name": "failing", "steps": [{"id": "boom", "type": "fail", "with": {"message": "no"}}]}


def _start(api: Api, workflow: str, tenant: str = TENANT_A) -> str:
    response = api.call("POST", "/v1/executions", json={"workflow": workflow}, tenant=tenant)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_bulk_cancel_reports_each_id_and_touches_no_other_tenant(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    api.call("PUT", "/v1/workflows/waiter", json=WAITER, tenant=TENANT_B)
    mine = [_start(api, "waiter"), _start(api, "waiter")]
    theirs = _start(api, "waiter", TENANT_B)
    response = api.call(
        "POST", "/v1/executions/bulk/cancel", role=Role.OPERATOR, json={"ids": [*mine, theirs, mine[0]]}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["id"] for r in body["results"]] == [*mine, theirs, mine[0]]
    assert [r["ok"] for r in body["results"]] == [True, True, False, False]
    assert [r.get("status") for r in body["results"][:2]] == ["CANCELLED", "CANCELLED"]
    assert body["results"][2]["problem"]["code"] == "not-found"
    assert body["results"][3]["problem"]["code"] == "transition-refused"
    assert (body["succeeded"], body["failed"]) == (2, 2)
    assert api.call("GET", f"/v1/executions/{theirs}", tenant=TENANT_B).json()["status"] == "RUNNING"
    for execution_id in mine:
        assert api.call("GET", f"/v1/executions/{execution_id}").json()["status"] == "CANCELLED"


def test_bulk_retry_runs_failed_executions_again_and_refuses_running_ones(api: Api) -> None:
    api.call("PUT", "/v1/workflows/failing", json=FAILING)
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    failed = [_start(api, "failing"), _start(api, "failing")]
    running = _start(api, "waiter")
    api.driver.run_all()
    response = api.call("POST", "/v1/executions/bulk/retry", role=Role.OPERATOR, json={"ids": [*failed, running]})
    body = response.json()
    assert [(r["ok"], r.get("status")) for r in body["results"]] == [
        (True, "RUNNING"),
        (True, "RUNNING"),
        (False, None),
    ]
    assert body["results"][2]["problem"]["status"] == 409
    assert all(api.call("GET", f"/v1/executions/{i}").json()["run"] == 2 for i in failed)


def test_bulk_requests_are_bounded_and_checked(api: Api) -> None:
    too_many = api.call("POST", "/v1/executions/bulk/cancel", role=Role.OPERATOR, json={"ids": ["x"] * 101})
    assert too_many.status_code == 422
    assert api.call("POST", "/v1/executions/bulk/cancel", role=Role.OPERATOR, json={"ids": []}).status_code == 422
    bad_id = api.call("POST", "/v1/executions/bulk/retry", role=Role.OPERATOR, json={"ids": ["../x"]})
    assert bad_id.status_code == 422
    extra = api.call("POST", "/v1/executions/bulk/retry", role=Role.OPERATOR, json={"ids": ["x"], "all": True})
    assert extra.status_code == 422
    refused = api.call("POST", "/v1/executions/bulk/cancel", role=Role.VIEWER, json={"ids": ["x"]})
    assert refused.status_code == 403


def test_the_graphql_twins_answer_as_rest_does(api: Api) -> None:
    api.call("PUT", "/v1/workflows/failing", json=FAILING)
    failed = _start(api, "failing")
    api.driver.run_all()
    document = """mutation ($ids: [ID!]!) { retryExecutions(ids: $ids) { __typename
        ... on Execution { id status run } ... on Problem { code status } } }"""
    results = api.gql(document, {"ids": [failed, "unknown"]}, role=Role.OPERATOR)["data"]["retryExecutions"]
    assert results == [
        {"__typename": "Execution", "id": failed, "status": "RUNNING", "run": 2},
        {"__typename": "Problem", "code": "not-found", "status": "404"},
    ]
    rest = api.call("POST", "/v1/executions/bulk/cancel", role=Role.OPERATOR, json={"ids": [failed]}).json()
    assert rest["results"] == [{"id": failed, "ok": True, "status": "CANCELLED"}]
    too_many = api.gql("mutation ($ids: [ID!]!) { retryExecutions(ids: $ids) { __typename } }", {"ids": ["x"] * 101})
    assert too_many["errors"][0]["message"].startswith("a batch holds at most 100")
