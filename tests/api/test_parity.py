"""REST and GraphQL at parity, checked from the REST route table and the GraphQL schema.

Every ``/v1`` operation of the OpenAPI document must name its GraphQL twin in ``TWINS`` (a
root field, or a field of a type for reads that GraphQL nests, such as an execution's steps)
or be listed in ``REST_ONLY`` with the reason it has none. Every GraphQL root field must be
some operation's twin or be listed in ``GRAPHQL_ONLY``. A route or field added on one side
only therefore fails here until its twin exists or the listing says why not (docs/api.md
"REST and GraphQL" shows the same lists).
"""

from __future__ import annotations

import pytest
from graphql import GraphQLObjectType

from api import create_app
from api.graphql.schema import build_schema
from tests.api.routetable import v1_routes
from tests.api.support import WAITER, api_settings, bearer

TWINS: dict[str, str] = {
    "POST /v1/workflows:validate": "Mutation.validateWorkflow",
    "GET /v1/workflows": "Query.workflows",
    "PUT /v1/workflows/{name}": "Mutation.applyWorkflow",
    "GET /v1/workflows/{name}": "Query.workflow",
    "GET /v1/workflows/{name}/versions": "Query.workflowVersions",
    "GET /v1/workflows/{name}/versions/{version}": "Query.workflow",
    "POST /v1/workflows/{name}/archive": "Mutation.archiveWorkflow",
    "POST /v1/workflows/{name}/restore": "Mutation.restoreWorkflow",
    "POST /v1/executions": "Mutation.startExecution",
    "GET /v1/executions": "Query.executions",
    "GET /v1/executions/counts": "Query.executionCounts",
    "GET /v1/executions/{execution_id}": "Query.execution",
    "GET /v1/executions/{execution_id}/steps": "Execution.steps",
    "GET /v1/executions/{execution_id}/history": "Execution.history",
    "GET /v1/executions/{execution_id}/steps/{step_key}/logs": "Step.logs",
    "GET /v1/executions/{execution_id}/events": "Subscription.executionEvents",
    "POST /v1/executions/{execution_id}/cancel": "Mutation.cancelExecution",
    "DELETE /v1/executions/{execution_id}": "Mutation.deleteExecution",
    "POST /v1/executions/{execution_id}/retry": "Mutation.retryExecution",
    "POST /v1/executions/bulk/cancel": "Mutation.cancelExecutions",
    "POST /v1/executions/bulk/retry": "Mutation.retryExecutions",
    "POST /v1/executions/{execution_id}/pause": "Mutation.pauseExecution",
    "POST /v1/executions/{execution_id}/resume": "Mutation.resumeExecution",
    "POST /v1/executions/{execution_id}/signal": "Mutation.signalExecution",
    "POST /v1/executions/{execution_id}/steps/{step_key}/approval": "Mutation.decideApproval",
    "POST /v1/triggers": "Mutation.createTrigger",
    "GET /v1/triggers": "Query.triggers",
    "GET /v1/triggers/{trigger_id}": "Query.trigger",
    "PATCH /v1/triggers/{trigger_id}": "Mutation.updateTrigger",
    "DELETE /v1/triggers/{trigger_id}": "Mutation.deleteTrigger",
    "POST /v1/triggers/{trigger_id}/enable": "Mutation.enableTrigger",
    "POST /v1/triggers/{trigger_id}/disable": "Mutation.disableTrigger",
    "GET /v1/whoami": "Query.whoami",
    "GET /v1/events/dead-letters": "Query.deadLetters",
    "GET /v1/keys": "Query.keys",
    "POST /v1/keys": "Mutation.createKey",
    "DELETE /v1/keys/{key_id}": "Mutation.revokeKey",
    "GET /v1/workflows/{name}/steps/{step_id}/decisions": "Query.decisions",
    "POST /v1/executions/{execution_id}/rewards": "Mutation.rewardDecision",
    "GET /v1/prompts": "Query.prompts",
    "PUT /v1/prompts/{name}": "Mutation.applyPrompt",
    "GET /v1/prompts/{name}": "Query.prompt",
    "GET /v1/prompts/{name}/versions": "Query.promptVersions",
    "GET /v1/prompts/{name}/versions/{version}": "Query.prompt",
}

#: Operations with no GraphQL twin, and why.
REST_ONLY: dict[str, str] = {
    "POST /v1/events": "event ingestion is a webhook-style machine call with its own 202 acknowledgement "
    "(senders are integrations, not GraphQL clients)",
    "POST /v1/executions/{execution_id}/steps/{step_key}/approval-link": "mints a link for a person outside "
    "the API (mail, chat); the link itself is a plain-HTTP page",
}

#: Root fields with no single REST twin, and why.
GRAPHQL_ONLY: dict[str, str] = {
    "Mutation.startExecutions": "batch form of POST /v1/executions (up to 100 in one request)",
}


def _schema_fields() -> dict[str, set[str]]:
    schema = build_schema(api_settings())._schema
    return {
        name: set(type_.fields)
        for name, type_ in schema.type_map.items()
        if isinstance(type_, GraphQLObjectType) and not name.startswith("__")
    }


# WebSocket routes are not in the OpenAPI document; the SSE GET of the same path stands for both.
OPERATIONS = [case.id for case in v1_routes(create_app(api_settings()))]
FIELDS = _schema_fields()


@pytest.mark.parametrize("operation", OPERATIONS)
def test_every_rest_operation_has_a_graphql_twin_or_says_why_not(operation: str) -> None:
    assert (operation in TWINS) != (operation in REST_ONLY), (
        f"{operation}: name its GraphQL twin in TWINS, or list it in REST_ONLY with the reason (not both)"
    )
    if operation in TWINS:
        type_name, _, field = TWINS[operation].partition(".")
        assert field in FIELDS.get(type_name, set()), f"{operation}: GraphQL has no {TWINS[operation]}"


def test_every_graphql_root_field_has_a_rest_twin_or_says_why_not() -> None:
    roots = {f"{root}.{field}" for root in ("Query", "Mutation", "Subscription") for field in FIELDS.get(root, set())}
    twinned = set(TWINS.values())
    missing = sorted(roots - twinned - set(GRAPHQL_ONLY))
    assert not missing, f"GraphQL root fields without a REST twin (add one, or list them in GRAPHQL_ONLY): {missing}"
    stale = sorted((set(TWINS) | set(REST_ONLY)) - set(OPERATIONS))
    assert not stale, f"listed operations that no longer exist: {stale}"
    assert not set(GRAPHQL_ONLY) - roots, "GRAPHQL_ONLY lists fields that no longer exist"


def test_one_selection_can_read_the_status_of_a_result_or_a_problem(counted) -> None:  # type: ignore[no-untyped-def]
    document = 'mutation { cancelExecution(id: "nope") { ... on Execution { status } ... on Problem { status code } } }'
    body = counted.gql(document)
    assert body == {"data": {"cancelExecution": {"status": "404", "code": "not-found"}}}


def test_the_control_mutations_do_what_their_rest_twins_do(counted) -> None:  # type: ignore[no-untyped-def]
    api = counted
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    status = "{ __typename ... on Execution { status } ... on Problem { code } }"
    assert api.gql(f'mutation {{ pauseExecution(id: "{execution_id}") {status} }}')["data"]["pauseExecution"] == {
        "__typename": "Execution",
        "status": "PAUSED",
    }
    resumed = api.gql(f'mutation {{ resumeExecution(id: "{execution_id}") {status} }}')["data"]["resumeExecution"]
    assert resumed["status"] == "RUNNING"
    archived = api.gql('mutation { archiveWorkflow(name: "waiter") { ... on WorkflowVersion { archived } } }')
    assert archived["data"]["archiveWorkflow"] == {"archived": True}
    assert api.call("POST", "/v1/executions", json={"workflow": "waiter"}).status_code == 404
    api.gql('mutation { restoreWorkflow(name: "waiter") { __typename } }')
    assert api.call("POST", "/v1/executions", json={"workflow": "waiter"}).status_code == 201
    created = api.gql(
        'mutation { createKey(input: {name: "gql", role: VIEWER}) { ... on CreatedApiKey { token key { id } } } }'
    )
    key = created["data"]["createKey"]
    assert api.client.get("/v1/workflows", headers=bearer(key["token"])).status_code == 200
    revoked = api.gql(f'mutation {{ revokeKey(id: "{key["key"]["id"]}") {{ ... on ApiKey {{ revoked }} }} }}')
    assert revoked["data"]["revokeKey"] == {"revoked": True}
    assert api.client.get("/v1/workflows", headers=bearer(key["token"])).status_code == 401
    assert "gql" in [k["name"] for k in api.gql("{ keys { name } }")["data"]["keys"]]
