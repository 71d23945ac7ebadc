"""The broker transport that records the message ledger: the private names of kombu it relies
on, and its fallback on kombu's stock Redis transport when they are missing
(``engine/adapters/broker_redis.py``).

The first tests pin what the override of ``Channel._put`` assumes of the installed kombu, and
that it still queues exactly what kombu's own ``_put`` queues: when one fails after an upgrade
of kombu, adapt ``broker_redis.py`` before raising the bound on kombu in ``pyproject.toml``.
The last one checks that the fallback really carries step messages.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Iterator
from typing import Any

import kombu
import pytest
import redis
from kombu.transport import redis as kombu_redis

from engine.adapters import broker_redis
from engine.adapters.celery_config import NORMAL_PRIORITY, PRIORITY_STEPS, URGENT_PRIORITY, make_celery
from engine.adapters.dispatcher_celery import RUN_STEP_TASK, CeleryDispatcher
from engine.adapters.ledger_redis import LEDGER_KEY, RedisMessageLedger, member
from engine.ports import Dispatch
from engine.records import StepRecord
from engine.settings import Settings
from engine.states import StepStatus
from tests.integration.conftest import delete_queue_keys

pytestmark = pytest.mark.backend

VERSION = getattr(kombu, "__version__", "?")
EXPIRES_MS = 60_000


@pytest.fixture
def client(redis_server_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_server_url)


@pytest.fixture
def queues(client: redis.Redis) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for queue in names:
        delete_queue_keys(client, queue)


def _channel(url: str, transport: type[kombu_redis.Transport]) -> Any:
    connection = kombu.Connection(url, transport=transport, transport_options={"priority_steps": PRIORITY_STEPS})
    return connection.channel()


# ------------------------------------------------------------------ pins


def test_every_private_name_the_ledger_transport_uses_is_present() -> None:
    missing = broker_redis.missing_private_names()
    assert missing == [], (
        f"kombu {VERSION} no longer has {missing}, which engine/adapters/broker_redis.py uses. Adapt it "
        "before raising the bound on kombu in pyproject.toml (meanwhile Celery falls back to kombu's stock transport)."
    )


def test_a_producer_batch_hands_its_commands_to_put(
    redis_server_url: str, queues: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    stock_put = kombu_redis.Channel._put

    def spying_put(self: Any, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        seen.append(kwargs.get("_publish_batch"))
        stock_put(self, queue, message, **kwargs)

    monkeypatch.setattr(kombu_redis.Channel, "_put", spying_put)
    queues.append(f"pins-{uuid.uuid4().hex[:8]}")
    producer = kombu.Producer(_channel(redis_server_url, kombu_redis.Transport))
    with producer.batch(max_size=10):
        producer.publish({"n": 1}, routing_key=queues[0])
    producer.publish({"n": 2}, routing_key=queues[0])
    assert isinstance(seen[0], kombu_redis.PublishBatch), f"kombu {VERSION}: _put no longer gets _publish_batch"
    assert seen[1] is None


def test_kombus_own_put_pushes_on_the_left_of_its_prioritys_list_and_refreshes_a_declared_expiry(
    redis_server_url: str, client: redis.Redis, queues: list[str]
) -> None:
    changed = f"kombu {VERSION} changed what Channel._put does, which broker_redis.Channel._put replaces"
    channel = _channel(redis_server_url, kombu_redis.Transport)
    queue = f"pins-{uuid.uuid4().hex[:8]}"
    queues.append(queue)
    channel.queue_declare(queue, arguments={"x-expires": EXPIRES_MS})
    assert channel._expires == {queue: EXPIRES_MS}, changed + ": _expires"
    urgent, normal = channel._q_for_pri(queue, URGENT_PRIORITY), channel._q_for_pri(queue, NORMAL_PRIORITY)
    assert (urgent, normal) == (queue, f"{queue}{channel.sep}{NORMAL_PRIORITY}"), changed + ": _q_for_pri"
    for n, priority in enumerate((NORMAL_PRIORITY, NORMAL_PRIORITY, URGENT_PRIORITY)):
        message = {"body": str(n), "properties": {"priority": priority}, "headers": {}}
        assert channel._get_message_priority(message, reverse=False) == priority, changed + ": _get_message_priority"
        channel._put(queue, message)
    assert [json.loads(m)["body"] for m in client.lrange(normal, 0, -1)] == ["1", "0"], changed + ": one LPUSH"
    assert [json.loads(m)["body"] for m in client.lrange(urgent, 0, -1)] == ["2"], changed + ": one LPUSH"
    assert 0 < client.pttl(normal) <= EXPIRES_MS and 0 < client.pttl(urgent) <= EXPIRES_MS, changed + ": PEXPIRE"


def _queued(
    url: str, client: redis.Redis, transport: type[kombu_redis.Transport], queue: str, *, batched: bool, expiring: bool
) -> Any:
    """What ``transport`` leaves in Redis for three messages to ``queue`` (declared with an
    expiry or not, as step queues are): per list, bodies and whether it expires."""
    channel = _channel(url, transport)
    channel.queue_declare(queue, arguments={"x-expires": EXPIRES_MS} if expiring else None)
    producer = kombu.Producer(channel)
    sends = [(NORMAL_PRIORITY, {broker_redis.STEP_HEADER: member("t", queue, "a")}), (URGENT_PRIORITY, {}), (9, {})]
    with producer.batch(max_size=10) if batched else contextlib.nullcontext():
        for n, (priority, headers) in enumerate(sends):
            producer.publish({"n": n}, routing_key=queue, priority=priority, headers=headers)
    lists = [channel._q_for_pri(queue, p) for p in PRIORITY_STEPS]
    return [([json.loads(m)["body"] for m in client.lrange(key, 0, -1)], client.pttl(key) > 0) for key in lists]


@pytest.mark.parametrize("expiring", [True, False], ids=["expiring-queue", "lasting-queue"])
@pytest.mark.parametrize("batched", [False, True], ids=["one-by-one", "batched"])
def test_the_ledger_transport_queues_exactly_what_kombus_own_queues(
    redis_server_url: str, client: redis.Redis, queues: list[str], batched: bool, expiring: bool
) -> None:
    queues += [f"pins-{uuid.uuid4().hex[:8]}", f"pins-{uuid.uuid4().hex[:8]}"]
    stock = _queued(redis_server_url, client, kombu_redis.Transport, queues[0], batched=batched, expiring=expiring)
    ours = _queued(redis_server_url, client, broker_redis.Transport, queues[1], batched=batched, expiring=expiring)
    assert ours == stock and all(expires is expiring for _, expires in stock)
    assert client.zscore(LEDGER_KEY, member("t", queues[1], "a")) is not None  # ...and records the step message


# ------------------------------------------------------------------ fallback


def test_on_the_fallback_step_messages_travel_unrecorded_and_nothing_counts_as_held(
    kombu_without_a_private_name: None, redis_server_url: str, client: redis.Redis, queues: list[str]
) -> None:
    queues.append(f"fallback-{uuid.uuid4().hex[:8]}")
    settings = Settings(broker_url=redis_server_url, default_queue=queues[0])
    app = make_celery(settings, "fallback-test")
    assert app.conf.broker_transport is None
    execution_id = uuid.uuid4().hex
    CeleryDispatcher(app, queues[0]).dispatch([Dispatch("t", execution_id, "a")])
    with app.connection_for_read() as connection:
        assert type(connection.transport) is kombu_redis.Transport
        message = connection.SimpleQueue(queues[0]).get(timeout=5)
        message.ack()
    assert message.headers["task"] == RUN_STEP_TASK and message.headers["argsrepr"] == repr(["t", execution_id, "a"])
    assert client.zscore(LEDGER_KEY, member("t", execution_id, "a")) is None
    step = StepRecord(execution_id=execution_id, tenant="t", key="a", step_id="a", status=StepStatus.QUEUED)
    assert RedisMessageLedger(client).held([step], since=0.0) == [False]
