"""Approval round trips through REST, GraphQL and a signed link, with the roles a step allows."""

from __future__ import annotations

from typing import Any

from engine.auth import Role
from tests.api.conftest import Api, ApiFactory

REVIEW: dict[str, Any] = {
    "name": "review",
    "steps": [
        {"id": "approve", "type": "approval", "with": {"roles": ["editor", "admin"], "message": "pay the invoice?"}},
        {"id": "pay", "type": "transform", "needs": ["approve"], "with": {"value": "${steps.approve.output.by}"}},
    ],
    "outputs": {"paid_by_decision_of": "steps.pay.output"},
}

DECIDE = """mutation ($id: ID!, $step: String!, $decision: ApprovalVerdict!, $comment: String) {
  decideApproval(id: $id, step: $step, decision: $decision, comment: $comment) {
    __typename ... on Step { key status output error } ... on Problem { code message } } }"""


def waiting_review(api: Api) -> str:
    api.call("PUT", "/v1/workflows/review", json=REVIEW)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "review"}).json()["id"]
    api.driver.run_all()
    step = api.call("GET", f"/v1/executions/{execution_id}").json()["steps"][0]
    assert step["status"] == "WAITING" and step["wait"]["kind"] == "approval"
    return execution_id


def status(api: Api, execution_id: str) -> str:
    return api.call("GET", f"/v1/executions/{execution_id}").json()["status"]


def test_rest_round_trip_with_a_forbidden_role_then_approval(make_api: ApiFactory) -> None:
    api = make_api()
    execution_id = waiting_review(api)
    url = f"/v1/executions/{execution_id}/steps/approve/approval"
    forbidden = api.call("POST", url, role=Role.OPERATOR, json={"decision": "approve"})
    assert forbidden.status_code == 403
    assert "role 'operator' may not decide approval 'approve'" in forbidden.json()["detail"]
    signalled = api.call("POST", f"/v1/executions/{execution_id}/signal", json={"step": "approve", "payload": {}})
    assert signalled.status_code == 409
    assert status(api, execution_id) == "RUNNING"
    decided = api.call("POST", url, role=Role.EDITOR, json={"decision": "approve", "comment": "ok"})
    assert decided.status_code == 200, decided.text
    output = decided.json()["output"]
    assert output["approved"] is True and output["role"] == "editor" and output["comment"] == "ok"
    assert output["via"] == "rest" and output["by"] and output["at"].endswith("+00:00")
    api.driver.run_all()
    assert status(api, execution_id) == "SUCCEEDED"
    again = api.call("POST", url, json={"decision": "reject"})
    assert again.status_code == 409
    history = api.call("GET", f"/v1/executions/{execution_id}/history").json()["items"]
    assert [e["data"]["decision"] for e in history if e.get("step_key") == "approve" and e["status"] == "SUCCEEDED"] == [
        output
    ]


def test_rest_rejection_fails_the_execution(make_api: ApiFactory) -> None:
    api = make_api()
    execution_id = waiting_review(api)
    rejected = api.call(
        "POST", f"/v1/executions/{execution_id}/steps/approve/approval", json={"decision": "reject", "comment": "no"}
    )
    assert rejected.status_code == 200
    assert rejected.json()["status"] == "FAILED"
    assert rejected.json()["error"]["type"] == "ApprovalRejected"
    api.driver.run_all()
    execution = api.call("GET", f"/v1/executions/{execution_id}").json()
    assert execution["status"] == "FAILED" and execution["error"]["type"] == "ApprovalRejected"


def test_graphql_round_trip_with_a_forbidden_role_and_a_rejection(make_api: ApiFactory) -> None:
    api = make_api()
    execution_id = waiting_review(api)
    variables = {"id": execution_id, "step": "approve", "decision": "APPROVE"}
    forbidden = api.gql(DECIDE, variables, role=Role.OPERATOR)["data"]["decideApproval"]
    assert forbidden["__typename"] == "Problem" and forbidden["code"] == "forbidden"
    assert "role 'operator' may not decide" in forbidden["message"]
    rejected = api.gql(DECIDE, {**variables, "decision": "REJECT", "comment": "too expensive"}, role=Role.ADMIN)
    step = rejected["data"]["decideApproval"]
    assert step["status"] == "FAILED" and step["error"]["type"] == "ApprovalRejected"
    assert step["output"]["comment"] == "too expensive" and step["output"]["via"] == "graphql"
    assert step["output"]["role"] == "admin"
    again = api.gql(DECIDE, variables, role=Role.ADMIN)["data"]["decideApproval"]
    assert again == {"__typename": "Problem", "code": "transition-refused", "message": again["message"]}
    api.driver.run_all()
    assert status(api, execution_id) == "FAILED"
    approved_id = waiting_review(api)
    done = api.gql(DECIDE, {**variables, "id": approved_id}, role=Role.EDITOR)["data"]["decideApproval"]
    assert done["status"] == "SUCCEEDED" and done["output"]["approved"] is True
    api.driver.run_all()
    assert status(api, approved_id) == "SUCCEEDED"


def test_signed_link_is_single_use_and_needs_no_credentials(make_api: ApiFactory) -> None:
    api = make_api(approval_link_secret="link-secret")
    execution_id = waiting_review(api)
    issue = f"/v1/executions/{execution_id}/steps/approve/approval-link"
    assert api.call("POST", issue, role=Role.OPERATOR, json={"recipient": "cfo@example.com"}).status_code == 403
    link = api.call("POST", issue, role=Role.EDITOR, json={"recipient": "cfo@example.com"})
    assert link.status_code == 201, link.text
    url = link.json()["url"]
    assert url.endswith(f"/approval-links/{link.json()['token']}")
    described = api.client.get(url)
    assert described.status_code == 200 and described.json()["recipient"] == "cfo@example.com"
    forged = api.client.post(url[:-3] + "xyz", json={"decision": "approve"})
    assert forged.status_code == 401
    decided = api.client.post(url, json={"decision": "approve", "comment": "signed"})
    assert decided.status_code == 200, decided.text
    assert decided.json()["output"]["by"] == "cfo@example.com" and decided.json()["output"]["via"] == "link"
    assert api.client.post(url, json={"decision": "reject"}).status_code == 409
    api.driver.run_all()
    assert status(api, execution_id) == "SUCCEEDED"


def test_links_are_refused_when_no_secret_is_configured(make_api: ApiFactory) -> None:
    api = make_api()
    execution_id = waiting_review(api)
    response = api.call(
        "POST", f"/v1/executions/{execution_id}/steps/approve/approval-link", json={"recipient": "x@example.com"}
    )
    assert response.status_code == 422
    assert "CONVEYOR_APPROVAL_LINK_SECRET" in response.json()["detail"]
