"""REST /v1/executions: start, list, get, history, control, signal, idempotency."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import httpx

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO, TENANT_A, WAITER


def _start(api: Api, who: str = "a", **headers: str) -> httpx.Response:
    return api.call(
        "POST", "/v1/executions", role=Role.OPERATOR, json={"workflow": "hello", "input": {"who": who}}, headers=headers
    )


def test_start_runs_to_completion_and_get_shows_steps(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    started = _start(api, "world")
    assert started.status_code == 201
    execution = started.json()
    assert started.headers["location"] == f"/v1/executions/{execution['id']}"
    assert execution["status"] == "RUNNING" and execution["version"] == 1
    api.driver.run_all()
    detail = api.call("GET", f"/v1/executions/{execution['id']}", role=Role.VIEWER).json()
    assert detail["status"] == "SUCCEEDED"
    assert detail["output"] == {"message": "hello world!"}
    assert [s["key"] for s in detail["steps"]] == ["greet", "shout"]
    steps = api.call("GET", f"/v1/executions/{execution['id']}/steps", role=Role.VIEWER).json()
    assert [s["status"] for s in steps] == ["SUCCEEDED", "SUCCEEDED"]


def test_history_lists_every_transition_in_order_with_pagination(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    execution_id = _start(api).json()["id"]
    api.driver.run_all()
    full = api.call("GET", f"/v1/executions/{execution_id}/history", params={"limit": 500}).json()
    types = [e["type"] for e in full["items"]]
    assert types[0] == "execution.running" and types[-1] == "execution.succeeded"
    assert "step.succeeded" in types
    paged, after = [], None
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        page = api.call("GET", f"/v1/executions/{execution_id}/history", params=params).json()
        paged += page["items"]
        after = page.get("next_cursor")
        if not after:
            break
    assert [e["id"] for e in paged] == [e["id"] for e in full["items"]]


def test_a_history_cursor_that_is_no_event_id_is_refused(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    execution_id = _start(api).json()["id"]
    api.driver.run_all()
    history = f"/v1/executions/{execution_id}/history"
    for forged in ["zzz", "e-0003", "000662038B16825B000470B6E9"]:  # 'zzz' sorted after every id: an empty page
        refused = api.call("GET", history, params={"after": forged}, role=Role.VIEWER)
        assert refused.status_code == 422 and refused.json()["code"] == "invalid", forged
        assert "invalid history cursor" in refused.json()["detail"]
    first = api.call("GET", history, params={"limit": 1}).json()["items"][0]["id"]
    rest = api.call("GET", history, params={"after": first}).json()["items"]
    assert rest and all(e["id"] > first for e in rest)
    query = 'query($id: ID!) { execution(id: $id) { ... on Execution { history(after: "zzz") { id } } } }'
    answer = api.call("POST", "/graphql", json={"query": query, "variables": {"id": execution_id}}).json()
    assert "invalid history cursor" in answer["errors"][0]["message"], answer


def test_input_is_validated_against_the_version_schema(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    response = api.call("POST", "/v1/executions", json={"workflow": "hello", "input": {"who": 3}})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "input-invalid"
    assert body["problems"][0]["path"].endswith("who")
    missing = api.call("POST", "/v1/executions", json={"workflow": "hello", "input": {}})
    assert missing.status_code == 422
    assert api.call("POST", "/v1/executions", json={"workflow": "nope"}).status_code == 404
    assert api.call("POST", "/v1/executions", json={"workflow": "hello", "extra": 1}).status_code == 422


def test_list_filters_by_status_workflow_and_time_and_pages(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    ids = [_start(api, str(i)).json()["id"] for i in range(3)]
    api.driver.run_all()
    midpoint = datetime.now(UTC)
    time.sleep(0.01)
    waiting = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    api.driver.run_all()

    def listed(**params: object) -> list[str]:
        return [e["id"] for e in api.call("GET", "/v1/executions", role=Role.VIEWER, params=params).json()["items"]]

    assert listed() == [waiting, *reversed(ids)]
    assert listed(status="SUCCEEDED") == list(reversed(ids))
    assert listed(status="RUNNING") == [waiting]
    assert listed(workflow="waiter") == [waiting]
    assert listed(created_after=midpoint.isoformat()) == [waiting]
    assert listed(created_before=midpoint.isoformat()) == list(reversed(ids))
    first = api.call("GET", "/v1/executions", params={"limit": 2}).json()
    second = api.call("GET", "/v1/executions", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [e["id"] for e in first["items"] + second["items"]] == [waiting, *reversed(ids)]
    assert "next_cursor" not in second or second["next_cursor"] is None
    assert api.call("GET", "/v1/executions", params={"status": "NOPE"}).status_code == 422


def test_cancel_then_cancel_again_is_a_conflict(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    cancelled = api.call("POST", f"/v1/executions/{execution_id}/cancel", role=Role.OPERATOR)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    again = api.call("POST", f"/v1/executions/{execution_id}/cancel", role=Role.OPERATOR)
    assert again.status_code == 409
    assert again.json()["code"] == "transition-refused"
    retried = api.call("POST", f"/v1/executions/{execution_id}/retry", role=Role.OPERATOR)
    assert retried.status_code == 409 and retried.json()["code"] == "transition-refused"  # cancelling is final
    assert api.call("POST", "/v1/executions/unknown/cancel").status_code == 404


def test_retry_resumes_a_failed_execution_and_refuses_a_running_one(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    assert api.call("POST", f"/v1/executions/{execution_id}/retry").status_code == 409
    failing = {"name": "failing", "steps": [{"id": "boom", "type": "fail", "with": {"message": "no"}}]}
    assert api.call("PUT", "/v1/workflows/failing", json=failing).status_code == 201
    failed_id = api.call("POST", "/v1/executions", json={"workflow": "failing"}).json()["id"]
    api.driver.run_all()
    assert api.call("GET", f"/v1/executions/{failed_id}").json()["status"] == "FAILED"
    retried = api.call("POST", f"/v1/executions/{failed_id}/retry", role=Role.OPERATOR)
    assert retried.status_code == 200
    assert retried.json()["status"] == "RUNNING" and retried.json()["run"] == 2


def test_pause_and_resume(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    assert api.call("POST", f"/v1/executions/{execution_id}/pause").json()["status"] == "PAUSED"
    assert api.call("POST", f"/v1/executions/{execution_id}/pause").status_code == 409
    assert api.call("POST", f"/v1/executions/{execution_id}/resume").json()["status"] == "RUNNING"


def test_signal_completes_a_waiting_step(api: Api) -> None:
    api.call("PUT", "/v1/workflows/waiter", json=WAITER)
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "waiter"}).json()["id"]
    api.driver.run_all()
    steps = api.call("GET", f"/v1/executions/{execution_id}/steps").json()
    assert steps[0]["status"] == "WAITING"
    signalled = api.call(
        "POST",
        f"/v1/executions/{execution_id}/signal",
        role=Role.OPERATOR,
        json={"step": "hold", "payload": {"approved": True}},
    )
    assert signalled.status_code == 200
    assert signalled.json()["status"] == "SUCCEEDED"
    api.driver.run_all()
    detail = api.call("GET", f"/v1/executions/{execution_id}").json()
    assert detail["status"] == "SUCCEEDED"
    assert detail["steps"][1]["output"] == {"approved": True}
    # the step is no longer waiting, and unknown steps are not found
    assert api.call("POST", f"/v1/executions/{execution_id}/signal", json={"step": "hold"}).status_code == 409
    assert api.call("POST", f"/v1/executions/{execution_id}/signal", json={"step": "nope"}).status_code == 404
    assert api.call("POST", f"/v1/executions/{execution_id}/signal", json={"step": "bad step!"}).status_code == 422


def test_idempotency_key_replays_the_same_execution(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    first = _start(api, "x", **{"Idempotency-Key": "order-1"})
    again = _start(api, "x", **{"Idempotency-Key": "order-1"})
    assert first.status_code == 201 and again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    other = _start(api, "different input", **{"Idempotency-Key": "order-1"})
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency-key-reused"
    assert _start(api, "x", **{"Idempotency-Key": "k" * 256}).status_code == 422
    assert len(api.call("GET", "/v1/executions").json()["items"]) == 1


def test_fifty_concurrent_starts_with_one_key_make_one_execution(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    headers = {**api.headers(Role.OPERATOR), "Idempotency-Key": "burst-1"}

    async def burst() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            body = {"workflow": "hello", "input": {"who": "burst"}}
            return list(
                await asyncio.gather(*(client.post("/v1/executions", json=body, headers=headers) for _ in range(50)))
            )

    responses = asyncio.run(burst())
    assert {r.status_code for r in responses} <= {200, 201}
    assert sum(r.status_code == 201 for r in responses) == 1
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    listed = api.service.list_executions(TENANT_A).items
    assert [e.id for e in listed] == list(ids)


def test_a_foreach_step_says_how_many_items_it_has(api: Api) -> None:
    fanout = {
        "name": "fanout",
        "steps": [{"id": "each", "type": "transform", "foreach": "[1, 2, 3]", "concurrency": 1, "with": {"value": 1}}],
    }
    assert api.call("PUT", "/v1/workflows/fanout", json=fanout).status_code == 201
    execution_id = api.call("POST", "/v1/executions", json={"workflow": "fanout"}).json()["id"]
    api.driver.run_once()
    steps = {s["key"]: s for s in api.call("GET", f"/v1/executions/{execution_id}/steps").json()}
    assert steps["each"]["item_count"] == 3, steps
    assert all(s["item_count"] is None for key, s in steps.items() if key != "each")
    gql = api.gql(f'{{ execution(id: "{execution_id}") {{ steps {{ key itemCount }} }} }}')
    assert {"key": "each", "itemCount": 3} in gql["data"]["execution"]["steps"]
