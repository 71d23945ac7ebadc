"""REST /v1/triggers and /v1/events."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from engine.auth import Role
from tests.api.conftest import Api
from tests.api.support import HELLO, TENANT_A
from tests.harness import ManualClock


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


def test_an_event_trigger_claims_no_fired_count_and_its_starts_are_found_by_trigger(api: Api) -> None:
    """Event-trigger starts are not counted on the trigger: ``fired`` is null (REST and GraphQL),
    never a 0 that events do not move; the executions search finds and counts them."""
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    trigger = _trigger(api, kind="event", spec={"type": "order.created"}, input={"who": "${event.data.who}"})
    for event_id in ("o-1", "o-2"):
        api.call("POST", "/v1/events", json={"type": "order.created", "id": event_id, "data": {"who": event_id}})
    assert api.call("GET", f"/v1/triggers/{trigger['id']}", role=Role.VIEWER).json()["fired"] is None
    listed = api.call("GET", "/v1/triggers", role=Role.VIEWER).json()["items"]
    assert [t["fired"] for t in listed] == [None]
    query = "query($id: ID!) { trigger(id: $id) { fired } }"
    assert api.gql(query, {"id": trigger["id"]}, role=Role.VIEWER)["data"]["trigger"] == {"fired": None}
    found = api.call("GET", f"/v1/executions?trigger={trigger['id']}", role=Role.VIEWER).json()["items"]
    assert len(found) == 2
    counts = api.call("GET", f"/v1/executions/counts?trigger={trigger['id']}", role=Role.VIEWER).json()
    assert counts["total"] == 2


def _berlin_dst_day(api: Api) -> None:
    """Put the service clock on 2027-01-01 (UTC), before the 2027 daylight-saving days."""
    api.service.clock = ManualClock(datetime(2027, 1, 1, tzinfo=UTC).timestamp())


def test_a_schedule_returns_its_next_five_fires_with_dst_notes(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    _berlin_dst_day(api)
    # 2027-03-28 and 2027-10-31 are the days Berlin's clocks change.
    created = _trigger(api, spec={"cron": "30 2 28 3 *", "timezone": "Europe/Berlin"})
    fires = created["next_fires"]
    assert [f["at"][:10] for f in fires] == ["2027-03-28", "2028-03-28", "2029-03-28", "2030-03-28", "2031-03-28"]
    assert fires[0]["at"] == "2027-03-28T01:00:00Z" and "spring forward" in fires[0]["note"]
    assert [f["note"] for f in fires[1:]] == [None] * 4
    patched = api.call(
        "PATCH",
        f"/v1/triggers/{created['id']}",
        role=Role.EDITOR,
        json={"spec": {"cron": "30 2 31 10 *", "timezone": "Europe/Berlin"}},
    ).json()
    first = patched["next_fires"][0]
    assert first["at"] == "2027-10-31T00:30:00Z" and "occurs twice" in first["note"]
    disabled = api.call("POST", f"/v1/triggers/{created['id']}/disable", role=Role.EDITOR).json()
    assert disabled["next_fires"] == []


def test_schedule_counters_show_through_rest_and_graphql(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    _berlin_dst_day(api)
    created = _trigger(api, spec={"every": "1m"}, input={"who": "cron"})
    clock = api.service.clock
    assert isinstance(clock, ManualClock)
    for _ in range(2):  # the first fire starts; the second is skipped while the first runs
        due = api.call("GET", f"/v1/triggers/{created['id']}").json()["next_fire_at"]
        clock.value = datetime.fromisoformat(due).timestamp()
        api.service.fire_due_triggers()
    got = api.call("GET", f"/v1/triggers/{created['id']}", role=Role.VIEWER).json()
    assert (got["fired"], got["skipped"], got["missed"], got["buffered"]) == (1, 1, 0, 0)
    assert len(got["running"]) == 1 and got["last_fire_at"] == "2027-01-01T00:01:00Z"
    query = "query($id: ID!) { trigger(id: $id) { fired skipped missed buffered running nextFires { at note } } }"
    data = api.gql(query, {"id": created["id"]}, role=Role.VIEWER)["data"]["trigger"]
    assert (data["fired"], data["skipped"], data["missed"], data["buffered"]) == (1, 1, 0, 0)
    assert data["running"] == got["running"] and len(data["nextFires"]) == 5


def test_graphql_creates_and_updates_a_schedule_showing_its_next_fires(api: Api) -> None:
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    _berlin_dst_day(api)
    create = """mutation($input: CreateTriggerInput!) {
      createTrigger(input: $input) {
        ... on Trigger { id nextFires { at note } }
        ... on Problem { code problems { path message } }
      }
    }"""
    spec = {"cron": "30 1 7 11 *", "timezone": "America/New_York"}
    created = api.gql(create, {"input": {"workflow": "hello", "kind": "schedule", "spec": spec}}, role=Role.EDITOR)
    trigger = created["data"]["createTrigger"]
    assert trigger["nextFires"][0]["at"].startswith("2027-11-07T05:30:00")  # 01:30 EDT, the first of two
    assert "occurs twice" in trigger["nextFires"][0]["note"]
    update = """mutation($id: ID!, $input: UpdateTriggerInput!) {
      updateTrigger(id: $id, input: $input) {
        ... on Trigger { enabled nextFires { at } }
        ... on Problem { code problems { path message } }
      }
    }"""
    disabled = api.gql(update, {"id": trigger["id"], "input": {"enabled": False}}, role=Role.EDITOR)
    assert disabled["data"]["updateTrigger"] == {"enabled": False, "nextFires": []}
    invalid = api.gql(update, {"id": trigger["id"], "input": {"spec": {"cron": "0 0 * * * *"}}}, role=Role.EDITOR)
    problem = invalid["data"]["updateTrigger"]
    assert problem["problems"][0]["path"] == "spec" and "5 fields" in problem["problems"][0]["message"]
    denied = api.gql(update, {"id": trigger["id"], "input": {"enabled": True}}, role=Role.VIEWER)
    assert denied["errors"]


CE_HEADERS = {"Content-Type": "application/cloudevents+json; charset=utf-8"}


def test_a_structured_mode_cloudevent_is_published_like_any_event(api: Api) -> None:
    envelope = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/shop/eu",
        "type": "order.created",
        "datacontenttype": "application/json",
        "time": "2027-01-01T00:00:00Z",
        "correlationkey": "A-7",
        "data": {"order": "A-7"},
    }
    published = api.call("POST", "/v1/events", role=Role.OPERATOR, content=json.dumps(envelope), headers=CE_HEADERS)
    assert published.status_code == 202, published.json()
    assert (published.json()["id"], published.json()["type"], published.json()["duplicate"]) == (
        "ce-1",
        "order.created",
        False,
    )
    stored = api.app.state.runtime.service.store.atomic(lambda tx: tx.get_inbound_event(TENANT_A, "ce-1"))
    assert (stored.source, stored.correlation_key, stored.data) == ("/shop/eu", "A-7", {"order": "A-7"})
    again = api.call("POST", "/v1/events", content=json.dumps(envelope), headers=CE_HEADERS)
    assert again.json()["duplicate"] is True
    plain = api.call("POST", "/v1/events", content=json.dumps(envelope), headers={"Content-Type": "application/json"})
    assert plain.status_code == 422  # a plain JSON body is Conveyor's own form: the envelope's fields are unknown


def test_a_cloudevent_conveyor_cannot_take_is_refused_with_every_problem(api: Api) -> None:
    bad = {"specversion": "0.3", "id": "", "type": "x", "data": [1], "data_base64": "AA==", "datacontenttype": "text/xml"}
    refused = api.call("POST", "/v1/events", content=json.dumps(bad), headers=CE_HEADERS)
    assert refused.status_code == 422
    assert sorted(p["path"] for p in refused.json()["problems"]) == [
        "data",
        "data_base64",
        "datacontenttype",
        "id",
        "source",
        "specversion",
    ]
    batch = api.call(
        "POST", "/v1/events", content=json.dumps([bad]), headers={"Content-Type": "application/cloudevents-batch+json"}
    )
    assert batch.status_code == 415 and batch.json()["code"] == "unsupported-media-type"
    odd_id = {"specversion": "1.0", "id": "has space", "source": "s", "type": "x"}
    assert api.call("POST", "/v1/events", content=json.dumps(odd_id), headers=CE_HEADERS).status_code == 422
    assert api.call("POST", "/v1/events", content=b"{", headers=CE_HEADERS).json()["code"] == "malformed-json"
    unauthorised = api.client.post("/v1/events", content=json.dumps(odd_id), headers=CE_HEADERS)
    assert unauthorised.status_code == 401
