"""``GET /v1/events/dead-letters`` and GraphQL ``deadLetters``: the caller's tenant only, newest first."""

from __future__ import annotations

import json

from engine.auth import Role
from engine.records import DeadLetterRecord
from tests.api.conftest import Api
from tests.api.support import TENANT_A, TENANT_B


def _keep(api: Api, tenant: str, n: int, reason: str = "malformed") -> None:
    api.app.state.runtime.dead_letters.record(
        DeadLetterRecord(
            tenant=tenant,
            message_id=f"{tenant}-m{n}",
            subscription="orders-sub",
            reason=reason,
            detail=f"{tenant} detail {n}",
            at=1_765_000_000.0 + n,
            attributes={"type": "order.created"},
            data=json.dumps({"secret": tenant}),
            data_bytes=20,
        )
    )


def test_dead_letters_are_listed_per_tenant_newest_first(api: Api) -> None:
    _keep(api, TENANT_A, 1)
    _keep(api, TENANT_A, 2, "too-large")
    _keep(api, TENANT_B, 1)
    response = api.call("GET", "/v1/events/dead-letters", role=Role.VIEWER)
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [(d["message_id"], d["reason"]) for d in items] == [("acme-m2", "too-large"), ("acme-m1", "malformed")]
    assert items[0]["at"].startswith("2025-12-06") and items[0]["data_bytes"] == 20
    assert TENANT_B not in response.text
    assert [d["message_id"] for d in api.call("GET", "/v1/events/dead-letters?limit=1").json()["items"]] == ["acme-m2"]
    assert api.call("GET", "/v1/events/dead-letters?limit=0").status_code == 422
    theirs = api.call("GET", "/v1/events/dead-letters", tenant=TENANT_B).json()["items"]
    assert [d["message_id"] for d in theirs] == ["globex-m1"]
    body = api.gql("{ deadLetters(limit: 5) { messageId reason detail subscription dataBytes } }", role=Role.VIEWER)
    assert [d["messageId"] for d in body["data"]["deadLetters"]] == ["acme-m2", "acme-m1"]
    assert body["data"]["deadLetters"][1] == {
        "messageId": "acme-m1",
        "reason": "malformed",
        "detail": "acme detail 1",
        "subscription": "orders-sub",
        "dataBytes": 20,
    }
    refused = api.gql("{ deadLetters(limit: 500) { messageId } }")
    assert refused["errors"][0]["message"] == "limit must be between 1 and 200"
