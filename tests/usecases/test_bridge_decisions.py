"""The bridge's decision per message, over a real store (the Pub/Sub side is in tests/integration)."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pytest

from engine.bridge import Bridge, Message
from engine.router import EventRouter
from engine.settings import BridgeSubscription
from tests.harness import Harness

ORDERS = BridgeSubscription(subscription="orders-sub", tenant="t1", event_type="order.created", attributes={"v": "1"})


class RecordingPublisher:
    """Stands in for the dead-letter topic: keeps what was published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes, dict[str, str]]] = []

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        self.published.append((topic, data, dict(attributes)))
        return str(len(self.published))


@pytest.fixture
def bridge(tmp_path):
    h = Harness(tmp_path)
    made = Bridge(EventRouter(h.service), RecordingPublisher(), "dead", max_attempts=3, max_message_bytes=100)
    yield h, made
    h.store.close()


def message(data: object, message_id: str = "m-1", attempt: int | None = 0, **attributes: str) -> Message:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Message(message_id, body, {"v": "1", **attributes}, attempt)


def test_the_tenant_and_ids_come_from_configuration_and_attributes(bridge) -> None:
    h, judge = bridge
    verdict = judge.judge(message({"n": 1}, tenant="evil", **{"ce-id": "ce-7", "correlation_key": "K"}), ORDERS)
    assert verdict.action == "ack"
    stored = h.store.atomic(lambda tx: tx.get_inbound_event("t1", "ce-7"))
    assert (stored.type, stored.correlation_key, stored.source) == ("order.created", "K", "orders-sub")
    assert h.store.atomic(lambda tx: tx.get_inbound_event("evil", "ce-7")) is None
    judge.judge(message({"n": 2}, message_id="m-2"), ORDERS)
    assert h.store.atomic(lambda tx: tx.get_inbound_event("t1", "m-2")) is not None  # no id attribute: message id


def test_filtered_messages_are_acked_and_unusable_ones_dead_lettered(bridge) -> None:
    _, judge = bridge
    dropped = Message("m-0", b"{}", {"v": "2"}, 0)
    assert (judge.judge(dropped, ORDERS).action, judge.judge(dropped, ORDERS).reason) == ("ack", "filtered")
    cases = {b"[1, 2]": "malformed", b"\xff": "malformed", b"x" * 200: "too-large"}
    for body, reason in cases.items():
        verdict = judge.judge(message(body), ORDERS)
        assert (verdict.action, verdict.reason) == ("dead-letter", reason)
        judge.dead_letter(message(body), ORDERS, verdict)
    untyped = BridgeSubscription(subscription="raw", tenant="t1")
    assert judge.judge(message({}), untyped).reason == "unroutable"
    assert [attributes["conveyor_reason"] for _, _, attributes in judge.dead_letters.published] == list(cases.values())


def test_transient_failures_are_nacked_then_dead_lettered_counting_attempts_itself(bridge) -> None:
    h, judge = bridge
    h.store.close()  # the store is unreachable: every commit fails transiently
    verdicts = [judge.judge(message({"n": 1}, attempt=0), ORDERS).action for _ in range(3)]
    assert verdicts == ["nack", "nack", "dead-letter"]
    assert judge.judge(message({"n": 1}, message_id="m-9", attempt=7), ORDERS).action == "dead-letter"


def test_a_dead_letter_is_kept_for_its_tenant_with_the_reason(tmp_path) -> None:
    from engine.adapters.deadletters import MemoryDeadLetters

    h = Harness(tmp_path)
    kept = MemoryDeadLetters(size=10)
    judge = Bridge(
        EventRouter(h.service), RecordingPublisher(), "dead", max_attempts=3, max_message_bytes=100, dead_letter_log=kept
    )
    for body in (b"[1, 2]", b"x" * 200):
        pulled = message(body, message_id=f"m-{len(body)}")
        judge.dead_letter(pulled, ORDERS, judge.judge(pulled, ORDERS))
    h.store.close()
    recent = kept.recent("t1")
    assert [(d.message_id, d.reason, d.subscription) for d in recent] == [
        ("m-200", "too-large", "orders-sub"),
        ("m-6", "malformed", "orders-sub"),
    ]
    assert recent[0].data_bytes == 200 and recent[1].data == "[1, 2]" and recent[1].detail
    assert kept.recent("evil") == []
