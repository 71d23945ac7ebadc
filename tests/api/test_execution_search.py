"""Execution search over REST and GraphQL: every filter, paging under filters, counts, and 400s."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from engine.auth import Role
from engine.states import ExecutionStatus
from tests.api.conftest import Api
from tests.api.support import HELLO, TENANT_A, TENANT_B, WAITER

STATUSES = [s.value for s in ExecutionStatus]


@pytest.fixture
def searchable(api: Api) -> dict[str, Any]:
    """hello v1 and v2 started with labels, a waiter cancelled, and two starts by an event trigger."""
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    started: dict[str, Any] = {"v1": [], "v2": []}
    for n in range(4):
        labels = {"team": "shop" if n % 2 else "ops", "url": f"https://x.example:8443/{n}"}
        body = {"workflow": "hello", "input": {"who": f"v1-{n}"}, "labels": labels}
        started["v1"].append(api.call("POST", "/v1/executions", json=body).json()["id"])
    api.call("PUT", "/v1/workflows/hello", json={**HELLO, "description": "v2"})
    for n in range(3):
        body = {"workflow": "hello", "input": {"who": f"v2-{n}"}, "labels": {"team": "shop", "env": "prod"}}
        started["v2"].append(api.call("POST", "/v1/executions", json=body).json()["id"])
    api.driver.run_all()
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    waiter = api.call("POST", "/v1/executions", json={"workflow": "waiter", "labels": {"team": "shop"}}).json()["id"]
    api.call("POST", f"/v1/executions/{waiter}/cancel")
    started["waiter"] = waiter
    trigger = api.call(
        "POST",
        "/v1/triggers",
        json={"workflow": "hello", "kind": "event", "spec": {"type": "greet.me"}, "input": {"who": "${event.id}"}},
    ).json()
    for event_id in ("ev-1", "ev-2"):
        api.call("POST", "/v1/events", json={"type": "greet.me", "id": event_id})
    api.driver.run_all()
    started["trigger"] = trigger["id"]
    started["by_trigger"] = [e.id for e in api.service.list_executions(TENANT_A, trigger_id=trigger["id"]).items]
    api.call("POST", "/v1/executions", json={"workflow": "hello", "input": {"who": "b"}}, tenant=TENANT_B)
    return started


def _ids(api: Api, params: list[tuple[str, str]], limit: int = 2) -> list[str]:
    """Every id the listing gives under ``params``, following cursors with a small page."""
    ids: list[str] = []
    cursor = None
    while True:
        page_params = [*params, ("limit", str(limit))] + ([("cursor", cursor)] if cursor else [])
        response = api.call("GET", "/v1/executions", role=Role.VIEWER, params=page_params)
        assert response.status_code == 200, response.json()
        body = response.json()
        ids += [e["id"] for e in body["items"]]
        cursor = body.get("next_cursor")
        if not cursor:
            return ids


def _newest_first(api: Api, ids: list[str]) -> list[str]:
    records = [api.service.get_execution(TENANT_A, i) for i in ids]
    return [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)]


def test_rest_filters_combine_and_page(api: Api, searchable: dict[str, Any]) -> None:
    v1, v2, by_trigger = searchable["v1"], searchable["v2"], searchable["by_trigger"]
    assert len(by_trigger) == 2
    assert _ids(api, [("workflow", "hello"), ("version", "2")]) == _newest_first(api, v2 + by_trigger)
    assert _ids(api, [("workflow", "hello"), ("version", "1")]) == _newest_first(api, v1)
    shop = _newest_first(api, [*v1[1::2], *v2, searchable["waiter"]])
    assert _ids(api, [("label", "team:shop")]) == shop
    assert _ids(api, [("label", "team:shop"), ("workflow", "hello")]) == shop[1:]  # the waiter is the newest
    assert _ids(api, [("label", "team:shop"), ("label", "env:prod")]) == _newest_first(api, v2)
    assert _ids(api, [("label", "url:https://x.example:8443/2")]) == [v1[2]]
    assert _ids(api, [("label", "team:shop"), ("status", "CANCELLED")]) == [searchable["waiter"]]
    assert _ids(api, [("trigger", searchable["trigger"])]) == _newest_first(api, by_trigger)
    assert _ids(api, [("label", "team:shop"), ("label", "team:shop")], limit=50) == shop
    assert _ids(api, [("label", "team:nobody")]) == []

    listed = api.call("GET", "/v1/executions", params={"trigger": searchable["trigger"]}).json()["items"]
    assert {e["trigger_id"] for e in listed} == {searchable["trigger"]}
    second, third = (api.service.get_execution(TENANT_A, i).created_at for i in v1[1:3])
    iso = datetime.fromtimestamp((second + third) / 2, UTC).isoformat()  # between them (starts are ms apart)
    before = _ids(api, [("workflow", "hello"), ("version", "1"), ("created_before", iso)])
    after = _ids(api, [("workflow", "hello"), ("version", "1"), ("created_after", iso)])
    assert before == _newest_first(api, v1[:2]) and after == _newest_first(api, v1[2:])


def test_rest_counts_per_status(api: Api, searchable: dict[str, Any]) -> None:
    def counts(params: list[tuple[str, str]]) -> dict[str, Any]:
        response = api.call("GET", "/v1/executions/counts", role=Role.VIEWER, params=params)
        assert response.status_code == 200, response.json()
        body: dict[str, Any] = response.json()
        assert list(body["counts"]) == STATUSES and body["total"] == sum(body["counts"].values())
        return body

    everything = counts([])
    assert everything["total"] == 10
    assert everything["counts"]["SUCCEEDED"] == 9 and everything["counts"]["CANCELLED"] == 1
    shop = counts([("label", "team:shop")])
    assert shop["counts"] == {**dict.fromkeys(STATUSES, 0), "SUCCEEDED": 5, "CANCELLED": 1}
    assert counts([("workflow", "hello"), ("version", "2"), ("label", "env:prod")])["total"] == 3
    assert counts([("trigger", searchable["trigger"])])["counts"]["SUCCEEDED"] == 2
    assert counts([("label", "team:nobody")])["total"] == 0


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ([("label", "team")], "not key:value"),
        ([("label", ":shop")], "the key must be"),
        ([("label", "bad key:x")], "the key must be"),
        ([("label", "team:" + "x" * 257)], "at most 256"),
        ([("label", "team:shop"), ("label", "team:ops")], "two values"),
        ([(("label", f"k{n}:v")) for n in range(33)], "at most 32"),
        ([("version", "2")], "give `workflow` too"),
        ([("created_after", "2026-01-02T00:00:00Z"), ("created_before", "2026-01-01T00:00:00Z")], "must be before"),
    ],
)
def test_malformed_filters_are_400_problems_on_list_and_counts(
    api: Api, params: list[tuple[str, str]], message: str
) -> None:
    for path in ("/v1/executions", "/v1/executions/counts"):
        response = api.call("GET", path, role=Role.VIEWER, params=params)
        assert response.status_code == 400, response.json()
        problem = response.json()
        assert problem["code"] == "invalid-filter" and message in problem["detail"], problem
        assert response.headers["content-type"] == "application/problem+json"


def test_counts_refuse_status_and_paging_parameters(api: Api) -> None:
    for params in ({"status": "RUNNING"}, {"cursor": "abc"}, {"limit": "5"}):
        response = api.call("GET", "/v1/executions/counts", params=params)
        assert response.status_code == 400 and response.json()["code"] == "unknown-parameter", params


GQL_LIST = """
query ($workflow: String, $version: Int, $labels: [String!], $trigger: String, $status: ExecutionStatus,
       $cursor: String) {
  executions(workflow: $workflow, version: $version, labels: $labels, trigger: $trigger, status: $status,
             cursor: $cursor, limit: 2) { items { id triggerId labels } nextCursor }
}"""
GQL_COUNTS = """
query ($workflow: String, $version: Int, $labels: [String!], $trigger: String) {
  executionCounts(workflow: $workflow, version: $version, labels: $labels, trigger: $trigger) {
    total counts { status count }
  }
}"""


def _gql_ids(api: Api, variables: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        body = api.gql(GQL_LIST, {**variables, "cursor": cursor}, role=Role.VIEWER)
        assert "errors" not in body, body
        page = body["data"]["executions"]
        ids += [e["id"] for e in page["items"]]
        cursor = page["nextCursor"]
        if cursor is None:
            return ids


def test_graphql_filters_and_counts_match_rest(api: Api, searchable: dict[str, Any]) -> None:
    cases: list[tuple[dict[str, Any], list[tuple[str, str]]]] = [
        ({"labels": ["team:shop", "env:prod"]}, [("label", "team:shop"), ("label", "env:prod")]),
        ({"workflow": "hello", "version": 1}, [("workflow", "hello"), ("version", "1")]),
        ({"trigger": searchable["trigger"]}, [("trigger", searchable["trigger"])]),
        ({"labels": ["url:https://x.example:8443/1"]}, [("label", "url:https://x.example:8443/1")]),
        ({"labels": ["team:shop"], "status": "CANCELLED"}, [("label", "team:shop"), ("status", "CANCELLED")]),
    ]
    for variables, params in cases:
        assert _gql_ids(api, variables) == _ids(api, params), variables
        if "status" in variables:
            continue
        rest = api.call("GET", "/v1/executions/counts", params=params).json()
        counted = api.gql(GQL_COUNTS, variables, role=Role.VIEWER)["data"]["executionCounts"]
        assert counted["total"] == rest["total"]
        assert {c["status"]: c["count"] for c in counted["counts"]} == rest["counts"]
        assert [c["status"] for c in counted["counts"]] == STATUSES
    by_trigger = api.gql(GQL_LIST, {"trigger": searchable["trigger"]})["data"]["executions"]["items"]
    assert {e["triggerId"] for e in by_trigger} == {searchable["trigger"]}


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"labels": ["nocolon"]}, "not key:value"),
        ({"version": 1}, "give `workflow` too"),
        ({"labels": ["a:1", "a:2"]}, "two values"),
    ],
)
def test_graphql_refuses_malformed_filters(api: Api, variables: dict[str, Any], message: str) -> None:
    for document, field in ((GQL_LIST, "executions"), (GQL_COUNTS, "executionCounts")):
        body = api.gql(document, variables, role=Role.VIEWER)
        assert body["data"] is None, body
        [error] = body["errors"]
        assert message in error["message"] and error["path"] == [field], error
