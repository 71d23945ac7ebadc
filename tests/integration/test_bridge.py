"""``conveyor bridge`` against the Pub/Sub emulator: real topics, subscriptions and streaming pull.

The bridge runs as a subprocess where a process matters (SIGKILL between commit and ack,
SIGTERM), in a thread otherwise. Assertions are on what the store and the dead-letter topic
hold, never on the emulator's redelivery timing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

from engine.adapters.pubsub import PubSubPublisher, StreamingBridge
from engine.adapters.store_sqlite import SqliteStore
from engine.bridge import REASON_ATTRIBUTE, Bridge
from engine.router import EventRouter
from engine.settings import BridgeSubscription
from engine.states import StepStatus
from engine.trigger_admin import Triggers
from tests.harness import Harness
from tests.integration.test_cli_run import conveyor_env
from tests.services import wait_for

PROJECT = "conveyor-test"
TENANT = "t1"
ORDERS = {
    "name": "orders",
    "inputs": {"type": "object", "required": ["order_id"]},
    "steps": [{"id": "note", "type": "transform", "with": {"value": "${input.order_id}"}}],
}
PAYMENT = {
    "name": "payment",
    "steps": [
        {
            "id": "paid",
            "type": "wait_for_event",
            "with": {"type": "payment.settled", "correlation_key": "input.order", "match": "event.data.amount > 0"},
        }
    ],
}


class Topics:
    """Unique topics with a subscription each, deleted after the test."""

    def __init__(self) -> None:
        self.publisher = PublisherClient()
        self.subscriber = SubscriberClient()
        self.created: list[tuple[str, str]] = []

    def create(self, name: str, ack_deadline: int = 10) -> tuple[str, str]:
        topic = f"{name}-{uuid.uuid4().hex[:10]}"
        topic_path = self.publisher.topic_path(PROJECT, topic)
        subscription_path = self.subscriber.subscription_path(PROJECT, f"{topic}-sub")
        self.publisher.create_topic(name=topic_path)
        self.subscriber.create_subscription(
            request={"name": subscription_path, "topic": topic_path, "ack_deadline_seconds": ack_deadline}
        )
        self.created.append((topic_path, subscription_path))
        return topic, f"{topic}-sub"

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        return str(self.publisher.publish(self.publisher.topic_path(PROJECT, topic), data, **attributes).result(30))

    def pull(self, subscription: str, wanted: int, seconds: float = 60) -> list[Any]:
        """At least ``wanted`` messages of ``subscription`` (acked), waiting up to ``seconds``."""
        path = self.subscriber.subscription_path(PROJECT, subscription)
        got: dict[str, Any] = {}
        deadline = time.monotonic() + seconds
        while len(got) < wanted and time.monotonic() < deadline:
            response = self.subscriber.pull(request={"subscription": path, "max_messages": 10}, timeout=5)
            for received in response.received_messages:
                got[received.message.message_id] = received.message
            if response.received_messages:
                ids = [r.ack_id for r in response.received_messages]
                self.subscriber.acknowledge(request={"subscription": path, "ack_ids": ids})
        return list(got.values())

    def close(self) -> None:
        for topic_path, subscription_path in self.created:
            self.subscriber.delete_subscription(request={"subscription": subscription_path})
            self.publisher.delete_topic(request={"topic": topic_path})


@pytest.fixture
def topics(pubsub_emulator: str) -> Iterator[Topics]:
    created = Topics()
    yield created
    created.close()




def bridge_process(db: Path, subscription: str, dead_letters: str, **extra: str) -> subprocess.Popen[str]:
    env = conveyor_env(
        CONVEYOR_SQLITE_PATH=str(db),
        CONVEYOR_PUBSUB_PROJECT=PROJECT,
        CONVEYOR_BRIDGE_SUBSCRIPTIONS=json.dumps([{"subscription": subscription, "tenant": TENANT}]),
        CONVEYOR_BRIDGE_DEAD_LETTER_TOPIC=dead_letters,
        CONVEYOR_LOG_LEVEL="INFO",
        **extra,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "conveyor", "bridge"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip


def executions(db: Path) -> list[tuple[Any, str | None]]:
    """(input, idempotency key) of every execution in the bridge's store."""
    store = SqliteStore(db)
    try:
        return [(e.input, e.idempotency_key) for e in store.list_executions(TENANT).items]
    finally:
        store.close()


def prepared(tmp_path: Path) -> tuple[Harness, str]:
    """A store with the ``orders`` workflow and an event trigger mapping the event into its input."""
    h = Harness(tmp_path)
    h.apply(ORDERS, tenant=TENANT)
    trigger = Triggers(h.store, h.clock).create(
        TENANT, workflow="orders", kind="event", spec={"type": "order.created"}, input={"order_id": "${event.data.id}"}
    )
    return h, trigger.id


def test_messages_start_executions_once_per_business_event_and_poison_is_dead_lettered(
    tmp_path: Path, topics: Topics
) -> None:
    h, trigger_id = prepared(tmp_path)
    db = h.settings.resolved_sqlite_path()
    topic, subscription = topics.create("orders")
    dead_topic, dead_subscription = topics.create("dead")
    process = bridge_process(db, subscription, dead_topic)
    try:
        order = json.dumps({"id": "A-1", "total": 12}).encode()
        message_ids = {topics.publish(topic, order, type="order.created", event_id="biz-1") for _ in range(5)}
        assert len(message_ids) == 5
        topics.publish(topic, b"{not json", type="order.created")
        topics.publish(topic, json.dumps({"id": "A-2"}).encode())  # no type: unroutable
        dead = topics.pull(dead_subscription, wanted=2)
        wait_for(lambda: len(executions(db)) >= 1, 60, "an execution")
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert sorted(m.attributes[REASON_ATTRIBUTE] for m in dead) == ["malformed", "unroutable"]
    assert {m.data for m in dead} == {b"{not json", json.dumps({"id": "A-2"}).encode()}
    assert executions(db) == [({"order_id": "A-1"}, f"{trigger_id}:biz-1")]
    assert output.count("event accepted") == 5, output


def test_a_bridge_killed_between_commit_and_ack_starts_nothing_twice(tmp_path: Path, topics: Topics) -> None:
    h, trigger_id = prepared(tmp_path)
    db = h.settings.resolved_sqlite_path()
    topic, subscription = topics.create("orders", ack_deadline=10)
    dead_topic, _ = topics.create("dead")
    crashing = bridge_process(db, subscription, dead_topic, CONVEYOR_TEST_BRIDGE_CRASH_AFTER_COMMIT="1")
    try:
        message_id = topics.publish(topic, json.dumps({"id": "A-9"}).encode(), type="order.created")
        crashing.wait(timeout=60)
    finally:
        crashing.kill()
    assert crashing.returncode == -signal.SIGKILL
    assert [given for given, _ in executions(db)] == [{"order_id": "A-9"}]
    restarted = bridge_process(db, subscription, dead_topic)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(restarted.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_for(lambda: any(message_id in line and "duplicate=True" in line for line in lines), 180, "redelivery")
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(timeout=60)
    finally:
        restarted.kill()
    assert executions(db) == [({"order_id": "A-9"}, f"{trigger_id}:{message_id}")]


def test_a_waiting_step_resumes_on_a_matching_message_and_ignores_others(tmp_path: Path, topics: Topics) -> None:
    h = Harness(tmp_path)
    h.apply(PAYMENT, tenant=TENANT)
    execution_id = h.start("payment", {"order": "A-1"}, tenant=TENANT)
    h.drain()
    topic, subscription = topics.create("payments")
    dead_topic, _ = topics.create("dead")
    bridge = Bridge(
        EventRouter(h.service), PubSubPublisher(PROJECT), dead_topic, max_attempts=3, max_message_bytes=1 << 20
    )
    streaming = StreamingBridge(
        bridge, [BridgeSubscription(subscription=subscription, tenant=TENANT)], project=PROJECT, max_messages=10
    )
    stop = threading.Event()
    thread = threading.Thread(target=streaming.run, args=(stop,), daemon=True)
    thread.start()

    def stored(event_id: str) -> bool:
        return h.store.atomic(lambda tx: tx.get_inbound_event(TENANT, event_id)) is not None

    def paid() -> Any:
        return h.steps(execution_id, tenant=TENANT)["paid"]

    try:
        attrs = {"type": "payment.settled"}
        topics.publish(topic, b'{"amount": 5}', **attrs, correlation_key="A-2", event_id="other-order")
        topics.publish(topic, b'{"amount": 0}', **attrs, correlation_key="A-1", event_id="no-match")
        topics.publish(topic, b'{"amount": 5}', type="payment.failed", correlation_key="A-1", event_id="other-type")
        wait_for(lambda: all(map(stored, ["other-order", "no-match", "other-type"])), 60, "the events")
        assert paid().status is StepStatus.WAITING
        topics.publish(topic, b'{"amount": 7}', **attrs, correlation_key="A-1", event_id="pay-1")
        wait_for(lambda: paid().status is StepStatus.SUCCEEDED, 60, "the resume")
        assert paid().output["id"] == "pay-1" and paid().output["data"] == {"amount": 7}
    finally:
        stop.set()
        thread.join(60)
        h.store.close()


def test_a_pubsub_publish_step_publishes_once_with_its_idempotency_key(tmp_path: Path, topics: Topics) -> None:
    topic, subscription = topics.create("notify")
    h = Harness(tmp_path, pubsub_project=PROJECT)
    h.apply(
        {
            "name": "notify",
            "steps": [
                {
                    "id": "announce",
                    "type": "pubsub.publish",
                    "with": {"topic": topic, "data": {"order": "${input.order}"}, "attributes": {"kind": "order"}},
                }
            ],
        },
        tenant=TENANT,
    )
    execution_id = h.start("notify", {"order": "A-5"}, tenant=TENANT)
    h.drain()
    step = h.steps(execution_id, tenant=TENANT)["announce"]
    (received,) = topics.pull(subscription, wanted=1)
    h.store.close()
    assert step.status is StepStatus.SUCCEEDED and step.output == {"message_id": received.message_id, "topic": topic}
    assert json.loads(received.data) == {"order": "A-5"}
    key = f"{execution_id}/announce"
    assert dict(received.attributes) == {"kind": "order", "idempotency_key": key, "event_id": key}


def test_the_bridge_creates_a_missing_subscription_with_the_native_dead_letter_policy(topics: Topics) -> None:
    topic, _ = topics.create("orders")
    dead_topic, _ = topics.create("dead")
    wanted = BridgeSubscription(subscription=f"{topic}-created", tenant=TENANT, topic=topic)
    bridge = Bridge(None, None, dead_topic, max_attempts=5, max_message_bytes=1)  # type: ignore[arg-type]
    streaming = StreamingBridge(bridge, [wanted], project=PROJECT, max_messages=1)
    streaming.ensure_subscriptions(dead_topic, max_attempts=5)
    streaming.ensure_subscriptions(dead_topic, max_attempts=5)  # already there: left as it is
    path = streaming.subscription_path(wanted)
    try:
        created = topics.subscriber.get_subscription(request={"subscription": path})
        assert created.topic.endswith(f"/topics/{topic}")
        assert created.dead_letter_policy.dead_letter_topic.endswith(f"/topics/{dead_topic}")
        assert created.dead_letter_policy.max_delivery_attempts == 7
    finally:
        topics.subscriber.delete_subscription(request={"subscription": path})


def test_batches_and_cloudevents_structured_mode_through_streaming_pull(tmp_path: Path, topics: Topics) -> None:
    """Messages pulled together commit in batches (of at most 8 here); a structured-mode
    CloudEvent is an event like any other; batched mode is dead-lettered."""
    h, trigger_id = prepared(tmp_path)
    topic, subscription = topics.create("orders")
    dead_topic, dead_subscription = topics.create("dead")
    bridge = Bridge(
        EventRouter(h.service), PubSubPublisher(PROJECT), dead_topic, max_attempts=3, max_message_bytes=1 << 20
    )
    streaming = StreamingBridge(
        bridge,
        [BridgeSubscription(subscription=subscription, tenant=TENANT)],
        project=PROJECT,
        max_messages=20,
        batch_size=8,
    )
    stop = threading.Event()
    thread = threading.Thread(target=streaming.run, args=(stop,), daemon=True)
    thread.start()
    try:
        for n in range(25):
            topics.publish(topic, json.dumps({"id": f"P-{n}"}).encode(), type="order.created", event_id=f"plain-{n}")
        envelope = {
            "specversion": "1.0",
            "id": "ce-1",
            "source": "/shop",
            "type": "order.created",
            "correlationkey": "K-1",
            "data": {"id": "CE-1"},
        }
        structured = {"content-type": "application/cloudevents+json", "type": "ignored.when.structured"}
        topics.publish(topic, json.dumps(envelope).encode(), **structured)
        batch = {"content-type": "application/cloudevents-batch+json"}
        topics.publish(topic, json.dumps([envelope]).encode(), **batch)
        dead = topics.pull(dead_subscription, wanted=1)
        wait_for(lambda: len(h.service.list_executions(TENANT, limit=100).items) >= 26, 120, "26 executions")
    finally:
        stop.set()
        thread.join(60)
    started = {e.idempotency_key: e.input for e in h.service.list_executions(TENANT, limit=100).items}
    assert started[f"{trigger_id}:ce-1"] == {"order_id": "CE-1"}
    assert sorted(v["order_id"] for k, v in started.items() if k != f"{trigger_id}:ce-1") == sorted(
        f"P-{n}" for n in range(25)
    )
    event = h.store.atomic(lambda tx: tx.get_inbound_event(TENANT, "ce-1"))
    assert (event.type, event.source, event.correlation_key) == ("order.created", "/shop", "K-1")
    assert [(m.attributes[REASON_ATTRIBUTE], "batched mode" in m.attributes["conveyor_detail"]) for m in dead] == [
        ("malformed", True)
    ]
    h.store.close()


def test_a_bridge_whose_store_is_unreachable_stops_before_pulling(tmp_path: Path, topics: Topics) -> None:
    from engine.errors import ConveyorError

    h, _ = prepared(tmp_path)
    topic, subscription = topics.create("orders")
    dead_topic, _ = topics.create("dead")
    topics.publish(topic, json.dumps({"id": "A-1"}).encode(), type="order.created", event_id="kept")
    bridge = Bridge(
        EventRouter(h.service), PubSubPublisher(PROJECT), dead_topic, max_attempts=3, max_message_bytes=1 << 20
    )
    streaming = StreamingBridge(
        bridge, [BridgeSubscription(subscription=subscription, tenant=TENANT)], project=PROJECT, max_messages=10
    )
    h.store.close()  # the store cannot be reached
    with pytest.raises(ConveyorError):
        streaming.run(threading.Event())
    assert [m.attributes["event_id"] for m in topics.pull(subscription, wanted=1)] == ["kept"]  # nothing pulled
