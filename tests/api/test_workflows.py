"""REST /v1/workflows."""

from __future__ import annotations

import copy

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO


def _named(name: str) -> dict:
    definition = copy.deepcopy(HELLO)
    definition["name"] = name
    return definition


def test_apply_creates_versions_and_an_unchanged_definition_is_not_a_new_version(api: Api) -> None:
    first = api.call("PUT", "/v1/workflows/hello", json=HELLO)
    assert first.status_code == 201
    assert first.json()["version"] == 1
    again = api.call("PUT", "/v1/workflows/hello", json=HELLO)
    assert again.status_code == 200
    assert again.json()["version"] == 1
    changed = copy.deepcopy(HELLO)
    changed["description"] = "v2"
    second = api.call("PUT", "/v1/workflows/hello", json=changed)
    assert second.status_code == 201
    assert second.json()["version"] == 2
    assert api.call("GET", "/v1/workflows/hello", role=Role.VIEWER).json()["version"] == 2
    old = api.call("GET", "/v1/workflows/hello/versions/1", role=Role.VIEWER)
    assert old.status_code == 200
    assert "description" not in old.json()["definition"]
    versions = api.call("GET", "/v1/workflows/hello/versions", role=Role.VIEWER).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]


def test_the_name_may_come_from_the_path_but_must_not_contradict_it(api: Api) -> None:
    unnamed = {k: v for k, v in HELLO.items() if k != "name"}
    assert api.call("PUT", "/v1/workflows/from-path", json=unnamed).json()["name"] == "from-path"
    response = api.call("PUT", "/v1/workflows/other", json=HELLO)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"


def test_an_invalid_definition_is_a_422_listing_every_problem(api: Api) -> None:
    broken = {
        "name": "broken",
        "steps": [{"id": "a", "type": "nope"}, {"id": "b", "type": "transform", "needs": ["zz"], "with": {"value": 1}}],
    }
    response = api.call("PUT", "/v1/workflows/broken", json=broken)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "definition-invalid"
    assert body["type"].endswith("/definition-invalid")
    paths = {p["path"] for p in body["problems"]}
    assert any(p.startswith("steps[0]") for p in paths) and any(p.startswith("steps[1]") for p in paths)
    assert api.call("GET", "/v1/workflows/broken").status_code == 404  # nothing half-written


def test_validate_reports_without_saving(api: Api) -> None:
    ok = api.call("POST", "/v1/workflows:validate", role=Role.VIEWER, json=HELLO).json()
    assert ok == {"valid": True, "name": "hello", "order": ["greet", "shout"], "problems": []}
    bad = api.call("POST", "/v1/workflows:validate", role=Role.VIEWER, json={"name": "x", "steps": "nope"}).json()
    assert bad["valid"] is False and bad["problems"]
    assert api.call("GET", "/v1/workflows/hello").status_code == 404


def test_list_is_paginated_by_cursor(api: Api) -> None:
    names = [f"wf-{i}" for i in range(5)]
    for name in names:
        assert api.call("PUT", f"/v1/workflows/{name}", json=_named(name)).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.call("GET", "/v1/workflows", role=Role.VIEWER, params=params).json()
        assert len(page["items"]) <= 2
        seen += [w["name"] for w in page["items"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert seen == names


def test_page_size_and_cursor_are_validated(api: Api) -> None:
    assert api.call("GET", "/v1/workflows", params={"limit": 0}).status_code == 422
    assert api.call("GET", "/v1/workflows", params={"limit": 201}).status_code == 422
    bad_cursor = api.call("GET", "/v1/workflows", params={"cursor": "!!not-a-cursor"})
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["code"] == "invalid"


def test_unknown_workflow_and_version_are_404(api: Api) -> None:
    assert api.call("GET", "/v1/workflows/missing").status_code == 404
    assert api.call("GET", "/v1/workflows/missing/versions").status_code == 404
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    response = api.call("GET", "/v1/workflows/hello/versions/9")
    assert response.status_code == 404
    assert response.json()["status"] == 404 and response.json()["code"] == "not-found"


def test_archive_blocks_new_starts_and_restore_allows_them(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    assert api.call("POST", "/v1/workflows/hello/archive", role=Role.EDITOR).status_code == 204
    assert api.call("GET", "/v1/workflows/hello").json()["archived"] is True
    start = {"workflow": "hello", "input": {"who": "a"}}
    assert api.call("POST", "/v1/executions", json=start).status_code == 404
    assert api.call("POST", "/v1/workflows/hello/restore", role=Role.EDITOR).status_code == 204
    assert api.call("POST", "/v1/executions", json=start).status_code == 201
    assert api.call("POST", "/v1/workflows/missing/archive").status_code == 404
