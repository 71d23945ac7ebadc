"""GraphQL over HTTP: queries with DataLoaders, mutations with union results, role guards."""

from __future__ import annotations

from typing import Any

import pytest

from engine.auth import Role
from tests.api.conftest import Api, ApiFactory
from tests.api.support import HELLO, TENANT_A, TENANT_B, WAITER, CountingStore

EXECUTIONS_WITH_STEPS = """
query ($limit: Int!) {
  executions(limit: $limit) {
    items {
      id status
      steps { key status output }
      again: steps { key }
      workflowVersion { name version }
    }
    nextCursor
  }
}
"""


def _seed(api: Api, count: int) -> list[str]:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    ids = [
        api.call("POST", "/v1/executions", json={"workflow": "hello", "input": {"who": str(i)}}).json()["id"]
        for i in range(count)
    ]
    api.driver.run_all()
    return ids


@pytest.mark.parametrize("count", [10, 50])
def test_a_page_of_executions_with_steps_costs_a_bounded_number_of_store_calls(
    make_api: ApiFactory, count: int
) -> None:
    api = make_api(counting=True)
    ids = _seed(api, count)
    api.gql("{ workflows { items { name } } }")  # warms the API key cache
    store = api.service.store
    assert isinstance(store, CountingStore)
    store.calls.clear()
    body = api.gql(EXECUTIONS_WITH_STEPS, {"limit": count})
    assert "errors" not in body, body
    items = body["data"]["executions"]["items"]
    assert sorted(i["id"] for i in items) == sorted(ids)
    assert all([s["status"] for s in i["steps"]] == ["SUCCEEDED", "SUCCEEDED"] for i in items)
    assert all(i["workflowVersion"] == {"name": "hello", "version": 1} for i in items)
    # One listing, one batched steps read, one read per distinct workflow version: not N+1.
    assert dict(store.calls) == {"list_executions": 1, "list_steps_many": 1, "get_workflow_version": 1}


def test_queries_return_workflows_executions_history_and_triggers(api: Api) -> None:
    (execution_id,) = _seed(api, 1)
    api.call("POST", "/v1/triggers", json={"workflow": "hello", "kind": "event", "spec": {"type": "t"}})
    body = api.gql(
        """query ($id: ID!) {
          workflows { items { name version definition } }
          workflow(name: "hello") { version digest }
          missing: workflow(name: "nope") { version }
          execution(id: $id) { status output history(limit: 500) { type stepKey } }
          unknown: execution(id: "nope") { id }
          triggers { items { id kind spec enabled } }
        }""",
        {"id": execution_id},
        role=Role.VIEWER,
    )
    assert "errors" not in body, body
    data = body["data"]
    assert data["workflows"]["items"][0]["definition"]["name"] == "hello"
    assert data["workflow"]["version"] == 1 and data["missing"] is None and data["unknown"] is None
    assert data["execution"]["status"] == "SUCCEEDED"
    assert data["execution"]["output"] == {"message": "hello 0!"}
    history = [e["type"] for e in data["execution"]["history"]]
    assert history[0] == "execution.running" and history[-1] == "execution.succeeded"
    assert data["triggers"]["items"][0]["spec"] == {"type": "t"}


def test_mutations_return_expected_errors_as_problems(api: Api) -> None:
    applied = api.gql(
        "mutation ($d: JSON!) { applyWorkflow(definition: $d) { __typename "
        "... on AppliedWorkflow { created workflow { version } } } }",
        {"d": HELLO},
    )
    assert applied["data"]["applyWorkflow"] == {
        "__typename": "AppliedWorkflow",
        "created": True,
        "workflow": {"version": 1},
    }
    invalid = api.gql(
        'mutation { applyWorkflow(definition: {name: "x", steps: []}) { __typename '
        "... on Problem { code status problems { path } } } }"
    )
    assert invalid["data"]["applyWorkflow"]["__typename"] == "Problem"
    assert invalid["data"]["applyWorkflow"]["status"] == "422"

    start = """mutation ($input: StartExecutionInput!) { startExecution(input: $input) { __typename
      ... on StartedExecution { created execution { id status } }
      ... on Problem { code status message problems { path message } } } }"""
    started = api.gql(start, {"input": {"workflow": "hello", "input": {"who": "g"}, "idempotencyKey": "k1"}})
    result = started["data"]["startExecution"]
    assert result["__typename"] == "StartedExecution" and result["created"] is True
    replay = api.gql(start, {"input": {"workflow": "hello", "input": {"who": "g"}, "idempotencyKey": "k1"}})
    assert replay["data"]["startExecution"]["execution"]["id"] == result["execution"]["id"]
    assert replay["data"]["startExecution"]["created"] is False
    bad_input = api.gql(start, {"input": {"workflow": "hello", "input": {"who": 5}}})["data"]["startExecution"]
    assert bad_input["__typename"] == "Problem" and bad_input["code"] == "input-invalid"
    unknown = api.gql(start, {"input": {"workflow": "nope"}})["data"]["startExecution"]
    assert unknown["code"] == "not-found" and unknown["status"] == "404"
    bad_labels = api.gql(start, {"input": {"workflow": "hello", "input": {"who": "x"}, "labels": {"bad key!": "v"}}})
    assert bad_labels["data"]["startExecution"]["code"] == "invalid"


def test_batch_start_and_batch_cancel(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    body = api.gql(
        """mutation ($inputs: [StartExecutionInput!]!) { startExecutions(inputs: $inputs) { __typename
             ... on StartedExecution { execution { id } } ... on Problem { code } } }""",
        {"inputs": [{"workflow": "waiter"}, {"workflow": "missing"}, {"workflow": "waiter"}]},
        role=Role.OPERATOR,
    )
    results = body["data"]["startExecutions"]
    assert [r["__typename"] for r in results] == ["StartedExecution", "Problem", "StartedExecution"]
    ids = [r["execution"]["id"] for r in results if r["__typename"] == "StartedExecution"]
    cancelled = api.gql(
        """mutation ($ids: [ID!]!) { cancelExecutions(ids: $ids) { __typename
             ... on Execution { id status } ... on Problem { code } } }""",
        {"ids": [*ids, "unknown", ids[0]]},
        role=Role.OPERATOR,
    )["data"]["cancelExecutions"]
    assert [c.get("status") for c in cancelled[:2]] == ["CANCELLED", "CANCELLED"]
    assert cancelled[2] == {"__typename": "Problem", "code": "not-found"}
    assert cancelled[3] == {"__typename": "Problem", "code": "transition-refused"}
    too_many = api.gql("mutation ($ids: [ID!]!) { cancelExecutions(ids: $ids) { __typename } }", {"ids": ["x"] * 101})
    assert too_many["errors"][0]["message"].startswith("a batch holds at most 100")


def test_retry_and_signal_mutations(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    api.driver.run_all()
    signal = """mutation ($id: ID!, $step: String!) { signalExecution(id: $id, step: $step, payload: {ok: true}) {
      __typename ... on Step { key status output } ... on Problem { code } } }"""
    done = api.gql(signal, {"id": execution_id, "step": "hold"}, role=Role.OPERATOR)["data"]["signalExecution"]
    assert done == {"__typename": "Step", "key": "hold", "status": "SUCCEEDED", "output": {"ok": True}}
    again = api.gql(signal, {"id": execution_id, "step": "hold"})["data"]["signalExecution"]
    assert again == {"__typename": "Problem", "code": "transition-refused"}
    retry = api.gql(
        "mutation ($id: ID!) { retryExecution(id: $id) { __typename ... on Problem { code } } }", {"id": execution_id}
    )["data"]["retryExecution"]
    assert retry == {"__typename": "Problem", "code": "transition-refused"}


def test_http_requests_without_credentials_are_401_problems(api: Api) -> None:
    response = api.client.post("/graphql", json={"query": "{ workflows { items { name } } }"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


# --------------------------------------------------------------------------- generated from the schema

#: A call per root field: arguments naming tenant A's resources (filled in at run time).
FIELD_CALLS: dict[str, str] = {
    "workflows": "workflows { items { name } }",
    "workflow": 'workflow(name: "hello") { name }',
    "executions": "executions { items { id } }",
    "executionCounts": "executionCounts { total counts { status count } }",
    "execution": 'execution(id: "$EXECUTION") { id input }',
    "triggers": "triggers { items { id } }",
    "trigger": 'trigger(id: "$TRIGGER") { id spec }',
    "applyWorkflow": 'applyWorkflow(definition: {name: "hello", steps: [{id: "a", type: "transform", '
    "with: {value: 1}}]}) { __typename }",
    "startExecution": 'startExecution(input: {workflow: "hello", input: {who: "b"}}) { __typename '
    "... on Problem { code } }",
    "startExecutions": 'startExecutions(inputs: [{workflow: "hello", input: {who: "b"}}]) { __typename '
    "... on Problem { code } }",
    "cancelExecution": 'cancelExecution(id: "$EXECUTION") { __typename ... on Problem { code } }',
    "cancelExecutions": 'cancelExecutions(ids: ["$EXECUTION"]) { __typename ... on Problem { code } }',
    "retryExecution": 'retryExecution(id: "$EXECUTION") { __typename ... on Problem { code } }',
    "retryExecutions": 'retryExecutions(ids: ["$EXECUTION"]) { __typename ... on Problem { code } }',
    "signalExecution": 'signalExecution(id: "$EXECUTION", step: "hold") { __typename ... on Problem { code } }',
    "decideApproval": 'decideApproval(id: "$EXECUTION", step: "hold", decision: APPROVE) { __typename '
    "... on Problem { code } }",
    "createTrigger": 'createTrigger(input: {workflow: "hello", kind: "schedule", spec: {every: "1h"}, input: {who: "x"}}) '
    "{ __typename ... on Problem { code } }",
    "updateTrigger": 'updateTrigger(id: "$TRIGGER", input: {enabled: false}) { __typename ... on Problem { code } }',
    "workflowVersions": 'workflowVersions(name: "hello") { items { name version } }',
    "keys": "keys { id name role }",
    "decisions": 'decisions(workflow: "hello", step: "hold") { bandit }',
    "whoami": "whoami { tenant role }",
    "deadLetters": "deadLetters { messageId reason }",
    "pauseExecution": 'pauseExecution(id: "$EXECUTION") { __typename ... on Problem { code } }',
    "deleteExecution": 'deleteExecution(id: "$EXECUTION") { __typename ... on Problem { code } }',
    "resumeExecution": 'resumeExecution(id: "$EXECUTION") { __typename ... on Problem { code } }',
    "archiveWorkflow": 'archiveWorkflow(name: "hello") { __typename ... on Problem { code } }',
    "restoreWorkflow": 'restoreWorkflow(name: "hello") { __typename ... on Problem { code } }',
    "validateWorkflow": 'validateWorkflow(definition: {name: "x", steps: []}) { valid problems { path } }',
    "enableTrigger": 'enableTrigger(id: "$TRIGGER") { __typename ... on Problem { code } }',
    "disableTrigger": 'disableTrigger(id: "$TRIGGER") { __typename ... on Problem { code } }',
    "deleteTrigger": 'deleteTrigger(id: "$TRIGGER") { __typename ... on Problem { code } }',
    "createKey": 'createKey(input: {name: "g", role: VIEWER}) { __typename ... on Problem { code } }',
    "revokeKey": 'revokeKey(id: "0123456789abcdef") { __typename ... on Problem { code } }',
    "prompts": "prompts { items { name } }",
    "prompt": 'prompt(name: "reply") { version }',
    "promptVersions": 'promptVersions(name: "reply") { items { version } }',
    "applyPrompt": 'applyPrompt(name: "reply", template: "hi") { __typename ... on Problem { code } }',
    "rewardDecision": 'rewardDecision(id: "$EXECUTION", step: "hold", reward: 1) { __typename ... on Problem { code } }',
}


def _root_fields() -> list[tuple[str, str, Role]]:
    from strawberry.permission import PermissionExtension

    from api.graphql.permissions import HasRole
    from api.graphql.schema import build_schema
    from tests.api.support import api_settings

    schema = build_schema(api_settings())
    fields = []
    for operation, type_ in (("query", schema.query), ("mutation", schema.mutation)):
        definition = type_.__strawberry_definition__  # type: ignore[union-attr]
        for field in definition.fields:
            guards = [
                p
                for e in field.extensions
                if isinstance(e, PermissionExtension)
                for p in e.permissions
                if isinstance(p, HasRole)
            ]
            name = schema.config.name_converter.from_field(field)
            assert len(guards) == 1, f"{name} has no role guard (use api.graphql.permissions.requires)"
            fields.append((operation, name, guards[0].role))
    return fields


ROOT_FIELDS = _root_fields()


def _document(operation: str, name: str, params: dict[str, str]) -> str:
    assert name in FIELD_CALLS, f"add a sample call for the GraphQL field {name!r} to FIELD_CALLS"
    call = FIELD_CALLS[name]
    for key, value in params.items():
        call = call.replace(f"${key}", value)
    return f"{operation} {{ {call} }}"


@pytest.mark.parametrize(("operation", "name", "role"), ROOT_FIELDS, ids=[f[1] for f in ROOT_FIELDS])
def test_every_root_field_refuses_roles_below_its_guard(api: Api, operation: str, name: str, role: Role) -> None:
    document = _document(operation, name, {"EXECUTION": "e", "TRIGGER": "t"})
    for caller in Role:
        body = api.gql(document, role=caller)
        denied = any("needs the" in e["message"] for e in body.get("errors", []))
        assert denied == (not caller.allows(role)), (caller, body)


@pytest.fixture
def tenant_a(api: Api) -> dict[str, str]:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution = api.call("POST", "/v1/executions", json={"workflow": "waiter", "input": {"secret": "A-only"}}).json()
    api.driver.run_all()
    trigger = api.call(
        "POST", "/v1/triggers", json={"workflow": "hello", "kind": "event", "spec": {"type": "a.secret"}}
    ).json()
    return {"EXECUTION": execution["id"], "TRIGGER": trigger["id"]}


@pytest.mark.parametrize(("operation", "name", "role"), ROOT_FIELDS, ids=[f[1] for f in ROOT_FIELDS])
def test_tenant_b_gets_no_data_of_tenant_a(
    api: Api, tenant_a: dict[str, str], operation: str, name: str, role: Role
) -> None:
    before = api.call("GET", f"/v1/executions/{tenant_a['EXECUTION']}").json()
    body: dict[str, Any] = api.gql(_document(operation, name, tenant_a), tenant=TENANT_B)
    text = str(body.get("data"))
    for secret in (tenant_a["EXECUTION"], tenant_a["TRIGGER"], "A-only", "a.secret"):
        assert secret not in text, f"{name} leaked {secret!r}: {text[:300]}"
    value = (body.get("data") or {}).get(name)
    values = value if isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, dict) and item.get("__typename") == "Problem":
            assert item["code"] == "not-found"
    assert api.call("GET", f"/v1/executions/{tenant_a['EXECUTION']}").json() == before
    assert api.call("GET", "/v1/workflows/hello", tenant=TENANT_A).json()["version"] == 1
    assert TENANT_A not in text
