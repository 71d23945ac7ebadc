"""REST /v1/triggers and /v1/events."""

from __future__ import annotations

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO, TENANT_A


def _trigger(api: Api, **body: object) -> dict:
    payload = {"workflow": "hello", "kind": "schedule", "spec": {"cron": "*/5 * * * *"}, **body}
    response = api.call("POST", "/v1/triggers", role=Role.EDITOR, json=payload)
    assert response.status_code == 201, response.json()
    return response.json()


def test_trigger_lifecycle(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    created = _trigger(api, input={"who": "cron"})
    assert created["enabled"] is True and created["next_fire_at"] is not None
    trigger_id = created["id"]
    got = api.call("GET", f"/v1/triggers/{trigger_id}", role=Role.VIEWER).json()
    assert got["spec"] == {"cron": "*/5 * * * *"} and got["input"] == {"who": "cron"}
    disabled = api.call("POST", f"/v1/triggers/{trigger_id}/disable", role=Role.EDITOR).json()
    assert disabled["enabled"] is False and disabled["next_fire_at"] is None
    enabled = api.call("POST", f"/v1/triggers/{trigger_id}/enable", role=Role.EDITOR).json()
    assert enabled["enabled"] is True and enabled["next_fire_at"] is not None
    patched = api.call("PATCH", f"/v1/triggers/{trigger_id}", role=Role.EDITOR, json={"spec": {"every": "10m"}})
    assert patched.status_code == 200 and patched.json()["spec"] == {"every": "10m"}
    assert api.call("DELETE", f"/v1/triggers/{trigger_id}", role=Role.EDITOR).status_code == 204
    assert api.call("GET", f"/v1/triggers/{trigger_id}").status_code == 404
    assert api.call("DELETE", f"/v1/triggers/{trigger_id}").status_code == 404


def test_event_triggers_check_their_match_expression(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    ok = _trigger(api, kind="event", spec={"type": "order.created", "match": "event.data.total > 100"})
    assert ok["next_fire_at"] is None
    bad = api.call(
        "POST",
        "/v1/triggers",
        json={"workflow": "hello", "kind": "event", "spec": {"type": "x", "match": "input.x > 1"}},
    )
    assert bad.status_code == 422
    assert bad.json()["problems"][0]["path"] == "spec.match"


def test_invalid_triggers_are_refused(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    cases = [
        {"workflow": "hello", "kind": "schedule", "spec": {"cron": "not cron"}},
        {"workflow": "hello", "kind": "schedule", "spec": {"cron": "* * * * *", "every": "1m"}},
        {"workflow": "hello", "kind": "schedule", "spec": {"every": "1m", "timezone": "Mars/Olympus"}},
        {"workflow": "hello", "kind": "nope", "spec": {}},
        {"workflow": "hello", "kind": "event", "spec": {}},
    ]
    for body in cases:
        response = api.call("POST", "/v1/triggers", json=body)
        assert response.status_code == 422, body
    assert (
        api.call(
            "POST", "/v1/triggers", json={"workflow": "missing", "kind": "event", "spec": {"type": "x"}}
        ).status_code
        == 404
    )
    trigger_id = _trigger(api)["id"]
    assert api.call("PATCH", f"/v1/triggers/{trigger_id}", json={"spec": {"cron": "bad"}}).status_code == 422
    assert api.call("PATCH", f"/v1/triggers/{trigger_id}", json={"workflow": "missing"}).status_code == 404


def test_trigger_list_pages(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    ids = {_trigger(api)["id"] for _ in range(5)}
    first = api.call("GET", "/v1/triggers", params={"limit": 3}).json()
    rest = api.call("GET", "/v1/triggers", params={"limit": 3, "cursor": first["next_cursor"]}).json()
    assert {t["id"] for t in first["items"] + rest["items"]} == ids
    assert len(first["items"]) == 3 and not rest.get("next_cursor")


def test_published_events_are_acknowledged_once_per_id(api: Api) -> None:
    published = api.call(
        "POST",
        "/v1/events",
        role=Role.OPERATOR,
        json={"type": "order.created", "data": {"total": 5}, "id": "evt-1", "source": "shop"},
    )
    assert published.status_code == 202
    assert published.json()["id"] == "evt-1" and published.json()["duplicate"] is False
    again = api.call("POST", "/v1/events", json={"type": "order.created", "data": {"total": 5}, "id": "evt-1"})
    assert again.status_code == 202 and again.json()["duplicate"] is True
    generated = api.call("POST", "/v1/events", json={"type": "ping"}).json()
    assert generated["id"] and generated["duplicate"] is False
    store = api.app.state.runtime.service.store
    stored = store.atomic(lambda tx: [tx.get_inbound_event(TENANT_A, i) for i in ("evt-1", generated["id"])])
    assert [(e.id, e.source, e.routed) for e in stored] == [("evt-1", "shop", True), (generated["id"], None, True)]
    assert api.call("POST", "/v1/events", json={"type": ""}).status_code == 422
    assert api.call("POST", "/v1/events", json={"type": "x", "id": "has space"}).status_code == 422


def test_a_published_event_starts_its_event_trigger_with_the_mapped_input(api: Api) -> None:
    waiting = {
        "name": "await-payment",
        "steps": [
            {"id": "paid", "type": "wait_for_event", "with": {"type": "payment.settled", "correlation_key": "input.id"}}
        ],
    }
    api.call("PUT", "/v1/workflows/await-payment", json=waiting)
    trigger = api.call(
        "POST",
        "/v1/triggers",
        role=Role.EDITOR,
        json={
            "workflow": "await-payment",
            "kind": "event",
            "spec": {"type": "order.created"},
            "input": {"id": "${event.data.order}"},
        },
    ).json()
    published = api.call("POST", "/v1/events", json={"type": "order.created", "id": "o-1", "data": {"order": "A-7"}})
    assert published.status_code == 202
    executions = api.call("GET", "/v1/executions").json()["items"]
    assert [e["input"] for e in executions] == [{"id": "A-7"}]
    service = api.app.state.runtime.service
    assert service.get_execution(TENANT_A, executions[0]["id"]).idempotency_key == f"{trigger['id']}:o-1"
    assert api.call("POST", "/v1/events", json={"type": "x", "correlation_key": ""}).status_code == 422
