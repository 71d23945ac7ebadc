"""Issue 11 items 6 and 10: deep nesting, NaN, malformed JSON, unknown query parameters and
YAML definitions get clear problems (never a 500, never silently ignored)."""

from __future__ import annotations

import json

import pytest
import yaml

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO

pytestmark = pytest.mark.timeout(60)

DEEP = "[" * 900 + "]" * 900  # 1.8 KB


def _post(api: Api, path: str, body: str, media: str = "application/json") -> dict:
    response = api.call("POST", path, content=body, headers={"content-type": media})
    assert response.headers["content-type"] == "application/problem+json", response.text
    return {"status": response.status_code, **response.json()}


def test_input_nested_900_deep_is_a_422_problem_on_rest_and_graphql(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    for path, body in (
        ("/v1/executions", '{"workflow": "hello", "input": {"who": ' + DEEP + "}}"),
        ("/v1/workflows:validate", '{"name": "x", "steps": ' + DEEP + "}"),
        ("/v1/events", '{"type": "x.y", "data": {"a": ' + DEEP + "}}"),
    ):
        problem = _post(api, path, body)
        assert (problem["status"], problem["code"]) == (422, "nested-too-deeply"), problem
        assert "64 levels" in problem["detail"]
    query = 'mutation ($i: JSON) { startExecution(input: {workflow: "hello", input: $i}) { __typename } }'
    body = '{"query": ' + json.dumps(query) + ', "variables": {"i": ' + DEEP + "}}"
    response = api.call("POST", "/graphql", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "64 levels" in response.text
    literal = "{a: " * 900 + "1" + "}" * 900
    document = 'mutation { startExecution(input: {workflow: "hello", input: ' + literal + "}) { __typename } }"
    errors = api.client.post("/graphql", json={"query": document}, headers=api.headers(), params=None).json()["errors"]
    assert "nested too deeply" in errors[0]["message"]
    assert api.call("GET", "/v1/executions").json()["items"] == []


def test_nan_and_infinity_are_refused_in_definitions_and_triggers(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    definition = '{"name": "x", "steps": [{"id": "a", "type": "transform", "with": {"value": NaN}}]}'
    for path, body in (
        ("/v1/workflows:validate", definition),
        ("/v1/triggers", '{"workflow": "hello", "kind": "event", "spec": {"type": "x.y"}, "input": {"a": Infinity}}'),
    ):
        problem = _post(api, path, body)
        assert (problem["status"], problem["code"]) == (422, "payload-invalid"), problem
        assert "which JSON cannot represent" in problem["detail"]
    response = api.call("PUT", "/v1/workflows/x", content=definition, headers={"content-type": "application/json"})
    assert response.status_code == 422 and response.json()["code"] == "payload-invalid"
    assert api.call("GET", "/v1/triggers").json()["items"] == []


def test_malformed_json_is_400_and_unknown_query_parameters_are_refused(api: Api) -> None:
    problem = _post(api, "/v1/executions", '{"workflow": ')
    assert (problem["status"], problem["code"]) == (400, "malformed-json")
    for path in ("/v1/executions?staus=RUNNING", "/v1/workflows?limit=5&sort=name", "/v1/keys?tenant=other"):
        response = api.call("GET", path)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["code"] == "unknown-parameter"
    assert api.call("GET", "/v1/executions?status=RUNNING&limit=5").status_code == 200


def test_a_workflow_can_be_put_as_yaml(api: Api) -> None:
    text = yaml.safe_dump(HELLO, sort_keys=False)
    response = api.call("PUT", "/v1/workflows/hello", content=text, headers={"content-type": "application/yaml"})
    assert response.status_code == 201, response.text
    assert response.json()["definition"]["steps"][0]["id"] == "greet"
    report = api.call("POST", "/v1/workflows:validate", content=text, headers={"content-type": "application/yaml"})
    assert report.json()["valid"] is True
    started = api.call("POST", "/v1/executions", role=Role.OPERATOR, json={"workflow": "hello", "input": {"who": "y"}})
    assert started.status_code == 201
    # Anchors and aliases (a few of them can stand for a huge document) and broken YAML are refused.
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n"
    for body, code in ((bomb, "malformed-yaml"), ("name: [unclosed", "malformed-yaml")):
        refused = api.call("PUT", "/v1/workflows/hello", content=body, headers={"content-type": "application/yaml"})
        assert (refused.status_code, refused.json()["code"]) == (400, code), refused.text


def test_a_key_given_twice_is_refused_in_json_and_yaml_bodies(api: Api) -> None:
    """A parser keeps the last of repeated keys without a word: a second `with:` would replace the first."""
    started = _post(api, "/v1/executions", '{"workflow": "hello", "workflow": "other", "input": {}}')
    assert (started["status"], started["code"]) == (400, "malformed-json")
    assert started["detail"] == "the body is not valid JSON: duplicate key 'workflow'"
    nested = _post(api, "/v1/events", '{"type": "a", "data": {"k": 1, "k": 2}}')
    assert (nested["status"], nested["detail"]) == (400, "the body is not valid JSON: duplicate key 'k'")
    text = "name: hello\nsteps:\n  - id: a\n    type: transform\n    with: {value: 1}\n    with: {value: 2}\n"
    for method, path in (("PUT", "/v1/workflows/hello"), ("POST", "/v1/workflows:validate")):
        refused = api.call(method, path, content=text, headers={"content-type": "application/yaml"})
        assert (refused.status_code, refused.json()["code"]) == (400, "malformed-yaml"), refused.text
        assert "duplicate key 'with'" in refused.json()["detail"]


def test_a_body_of_another_media_type_is_a_415_problem(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    event = json.dumps({"type": "order.paid", "id": "evt-1", "data": {}})
    start = json.dumps({"workflow": "hello", "input": {"who": "x"}})
    for path, body, media in (
        ("/v1/events", event, "text/plain"),
        ("/v1/events", event, "text/plain; charset=utf-8"),
        ("/v1/executions", start, "application/x-www-form-urlencoded"),  # what `curl -d` sends
        ("/v1/executions", start, "application/yaml"),  # YAML only where a route lists it
        ("/v1/workflows:validate", json.dumps(HELLO), "text/csv"),
        ("/v1/executions/x/rewards", json.dumps({"step": "route", "reward": 1}), "text/plain"),
        ("/approval-links/some-token", json.dumps({"decision": "approve"}), "text/plain"),
    ):
        problem = _post(api, path, body, media)
        assert (problem["status"], problem["code"]) == (415, "unsupported-media-type"), (path, media, problem)
        assert problem["type"].endswith("/unsupported-media-type") and media.split(";")[0] in problem["detail"]
    response = api.call("PUT", "/v1/workflows/hello", content="name: hello", headers={"content-type": "text/plain"})
    assert response.status_code == 415 and "JSON or YAML" in response.json()["detail"]
    assert api.call("GET", "/v1/executions").json()["items"] == []  # nothing was started
    # GraphQL too (Strawberry itself would answer 400); its body errors are plain text, as before.
    query = json.dumps({"query": "{ __typename }"})
    graphql = api.call("POST", "/graphql", content=query, headers={"content-type": "text/plain"})
    assert graphql.status_code == 415 and "not text/plain" in graphql.text
    assert api.call("POST", "/graphql", content=query, headers={"content-type": "application/json"}).status_code == 200


def test_json_media_types_are_still_accepted(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    start = json.dumps({"workflow": "hello", "input": {"who": "x"}})
    for media in ("application/json", "application/json; charset=utf-8", "application/vnd.acme+json"):
        response = api.call("POST", "/v1/executions", content=start, headers={"content-type": media})
        assert response.status_code == 201, (media, response.text)
    structured = {"specversion": "1.0", "id": "ce-1", "source": "shop", "type": "order.paid", "data": {}}
    headers = {"content-type": "application/cloudevents+json"}
    assert api.call("POST", "/v1/events", content=json.dumps(structured), headers=headers).status_code == 202
    batch = {"content-type": "application/cloudevents-batch+json"}
    refused = api.call("POST", "/v1/events", content=json.dumps([structured]), headers=batch).json()
    assert refused["status"] == 415 and "batched mode" in refused["detail"]


def test_the_openapi_document_lists_415_where_a_body_is_taken(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "415" in paths["/v1/executions"]["post"]["responses"]
    assert "415" in paths["/v1/events"]["post"]["responses"]
    assert "415" not in paths["/v1/executions/{execution_id}"]["delete"]["responses"]
