"""The bridge's batches over each real store: the messages pulled together commit in one
transaction, each keeps its own verdict, and an accepted one is answered (acked) right after
the commit, before the steps it started are dispatched."""

from __future__ import annotations

import json

from engine.bridge import Bridge, Message, Verdict
from engine.router import EventRouter
from engine.settings import BridgeSubscription
from engine.trigger_admin import Triggers
from tests.usecases.test_bridge_decisions import RecordingPublisher
from tests.usecases.test_usecases import task

SUB = BridgeSubscription(subscription="orders-sub", tenant="t1", event_type="order.created", attributes={"v": "1"})
ORDERS = {"name": "orders", "steps": [task("note", "echo", value="${input.order_id}")]}


def setup(h, max_message_bytes: int = 10_000) -> tuple[Bridge, str]:  # type: ignore[no-untyped-def]
    h.apply(ORDERS)
    trigger = Triggers(h.store, h.clock).create(
        "t1", workflow="orders", kind="event", spec={"type": "order.created"}, input={"order_id": "${event.data.id}"}
    )
    bridge = Bridge(
        EventRouter(h.service), RecordingPublisher(), "dead", max_attempts=3, max_message_bytes=max_message_bytes
    )
    return bridge, trigger.id


def msg(message_id: str, data: object, **attributes: str) -> Message:
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return Message(message_id, body, {"v": "1", **attributes}, 0)


def test_a_batch_gives_each_message_its_verdict_and_answers_after_the_commit_before_dispatch(h):
    bridge, trigger_id = setup(h)
    batch = [
        msg("m-1", {"id": "A-1"}, event_id="e-1"),
        msg("m-2", {"id": "A-2"}, event_id="e-2"),
        msg("m-3", {"id": "A-1 again"}, event_id="e-1"),  # the same business event, another message
        Message("m-4", b"{}", {"v": "2"}, 0),  # filtered
        msg("m-5", b"[1]"),  # malformed
        msg("m-6", {"id": "A-3"}),  # no id attribute: the message id
    ]
    seen: dict[int, tuple[Verdict, bool, int]] = {}

    def answer(index: int, verdict: Verdict) -> None:
        stored = h.store.atomic(lambda tx: tx.get_inbound_events("t1", ["e-1", "e-2", "m-6"]))
        seen[index] = (verdict, len(stored) == 3, len(h.dispatcher.sent))

    verdicts = bridge.judge_many([(m, SUB) for m in batch], answer)
    assert [(v.action, v.reason) for v in verdicts] == [
        ("ack", "accepted"),
        ("ack", "accepted"),
        ("ack", "duplicate"),
        ("ack", "filtered"),
        ("dead-letter", "malformed"),
        ("ack", "accepted"),
    ]
    assert [seen[i][0] for i in range(len(batch))] == verdicts
    for index in (0, 1, 2, 5):  # committed when answered, not dispatched yet
        assert seen[index][1:] == (True, 0)
    assert len(h.dispatcher.sent) == 3
    h.drain()
    executions = h.service.list_executions("t1").items
    assert sorted((e.input["order_id"], e.idempotency_key) for e in executions) == [
        ("A-1", f"{trigger_id}:e-1"),
        ("A-2", f"{trigger_id}:e-2"),
        ("A-3", f"{trigger_id}:m-6"),
    ]
    again = bridge.judge_many([(msg("m-7", {"id": "A-2"}, event_id="e-2"), SUB)])
    assert [(v.action, v.reason) for v in again] == [("ack", "duplicate")]
    assert len(h.service.list_executions("t1").items) == 3


def test_a_batch_too_large_for_one_commit_is_committed_event_by_event(h):
    """5 events of 0.9 MB: about 4.5 MB in one commit, more than the Firestore emulator takes
    (4 MiB); each alone fits. (SQLite takes the batch whole: the same verdicts.)"""
    bridge, _ = setup(h, max_message_bytes=1_000_000)
    batch = [msg(f"m-{n}", {"id": f"B-{n}", "blob": "x" * 900_000}, event_id=f"big-{n}") for n in range(5)]
    verdicts = bridge.judge_many([(m, SUB) for m in batch])
    assert [(v.action, v.reason) for v in verdicts] == [("ack", "accepted")] * 5
    assert sorted(e.input["order_id"] for e in h.service.list_executions("t1").items) == [f"B-{n}" for n in range(5)]
    stored = h.store.atomic(lambda tx: tx.get_inbound_events("t1", [f"big-{n}" for n in range(5)]))
    assert len(stored) == 5 and all(len(e.data["blob"]) == 900_000 for e in stored.values())


def test_trigger_starts_of_a_batch_count_toward_the_tenant_quota(make_harness):
    h = make_harness(max_concurrent_executions=3)
    h.apply({"name": "sleepy", "steps": [{"id": "nap", "type": "wait", "with": {"duration": "1h"}}]})
    h.start("sleepy")  # one active execution started through the API
    bridge, trigger_id = setup(h)
    batch = [msg(f"m-{n}", {"id": f"Q-{n}"}, event_id=f"q-{n}") for n in range(4)]
    verdicts = bridge.judge_many([(m, SUB) for m in batch])
    assert [v.action for v in verdicts] == ["ack"] * 4  # every event is accepted into the log
    started = [e for e in h.service.list_executions("t1").items if e.trigger_id == trigger_id]
    assert sorted(e.input["order_id"] for e in started) == ["Q-0", "Q-1"]
    trigger = Triggers(h.store, h.clock).get("t1", trigger_id)
    assert trigger.skipped == 2 and "q-3: skipped" in trigger.last_error and "the limit is 3" in trigger.last_error
    assert len(h.store.atomic(lambda tx: tx.get_inbound_events("t1", [f"q-{n}" for n in range(4)]))) == 4
    bridge.judge_many([(msg("m-9", {"id": "Q-0"}, event_id="q-0"), SUB)])  # a copy starts nothing, counts nothing
    assert Triggers(h.store, h.clock).get("t1", trigger_id).skipped == 2
