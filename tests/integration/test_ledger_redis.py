"""The ledger of held step messages on a real Redis broker, with the real dispatcher, broker
transport and worker hook."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from engine.adapters.celery_config import queue_keys
from engine.adapters.dispatcher_celery import RUN_STEP_TASK, CeleryDispatcher
from engine.adapters.ledger_redis import LEDGER_KEY, PLACES_KEY, PUSHED_KEY, Place, RedisMessageLedger, member
from engine.ports import Dispatch
from engine.records import StepRecord
from engine.settings import Settings
from engine.states import StepStatus
from tasks.app import _ledger, _message_taken
from tests.integration.conftest import delete_queue_keys

pytestmark = pytest.mark.backend


def _step(execution_id: str, key: str = "a") -> StepRecord:
    return StepRecord(execution_id=execution_id, tenant="t", key=key, step_id=key, status=StepStatus.QUEUED)


class Broker:
    """A queue of its own on the test Redis, its dispatcher and a ledger reading it."""

    def __init__(self, url: str, client: redis.Redis) -> None:
        self.queue = f"ledger-{uuid.uuid4().hex[:8]}"
        self.client = client
        self.dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=url, default_queue=self.queue))
        self.ledger = RedisMessageLedger.from_url(url)
        self.executions: list[str] = []

    def dispatch(self, count: int, **options: object) -> list[str]:
        ids = [uuid.uuid4().hex for _ in range(count)]
        self.executions += ids
        self.dispatcher.dispatch([Dispatch("t", e, "a", **options) for e in ids])  # type: ignore[arg-type]
        return ids

    def message_id(self, execution_id: str) -> str:
        place = Place.decode(self.client.hget(PLACES_KEY, member("t", execution_id, "a")))
        assert place is not None
        return place.message_id

    def pop(self, urgent: bool = False) -> dict[str, object]:
        """What a worker's consumer does first (BRPOP): the next message leaves the list."""
        raw = self.client.rpop(queue_keys(self.queue)[0 if urgent else 1])
        assert raw is not None
        return json.loads(raw)

    def close(self) -> None:
        delete_queue_keys(self.client, self.queue)
        self.client.hdel(PUSHED_KEY, *queue_keys(self.queue))
        if self.executions:
            members = [member("t", e, "a") for e in self.executions]
            self.client.zrem(LEDGER_KEY, *members)
            self.client.hdel(PLACES_KEY, *members)


@pytest.fixture
def broker(redis_server_url: str, redis_client: redis.Redis) -> Iterator[Broker]:
    broker = Broker(redis_server_url, redis_client)
    yield broker
    broker.close()


def test_a_published_message_is_held_until_a_worker_takes_it(broker: Broker, redis_client: redis.Redis) -> None:
    before = time.time() - 1
    ids = broker.dispatch(3)
    steps = [_step(e) for e in ids]
    assert broker.ledger.held(steps, before) == [True, True, True]
    # What the worker's consumer does when the message arrives (the removal follows on the
    # ledger's thread, with the other messages taken meanwhile):
    request = SimpleNamespace(name=RUN_STEP_TASK, args=["t", ids[1], "a"], id=broker.message_id(ids[1]))
    _message_taken(sender=SimpleNamespace(app=broker.dispatcher.app), request=request)
    consumer_ledger = _ledger(str(broker.dispatcher.app.conf.broker_url))
    assert consumer_ledger is not None and consumer_ledger.flush()
    assert broker.ledger.held(steps, before) == [True, False, True]
    assert redis_client.hget(PLACES_KEY, member("t", ids[1], "a")) is None
    # A record older than ``since`` no longer counts (the backstop), and is dropped.
    assert broker.ledger.held(steps, time.time() + 1) == [False, False, False]
    assert redis_client.zscore(LEDGER_KEY, member("t", ids[0], "a")) is None
    assert redis_client.hget(PLACES_KEY, member("t", ids[0], "a")) is None


def test_a_message_popped_by_a_worker_that_died_before_taking_it_is_not_held(broker: Broker) -> None:
    """The crash test's stall: Redis popped the message for a consumer that was SIGKILLed
    before it reported the message taken, so the record stays; the list moved past it."""
    before = time.time() - 1
    ids = broker.dispatch(3)
    steps = [_step(e) for e in ids]
    popped = broker.pop()  # the oldest, ids[0]; nobody reports it taken
    assert popped["headers"]["argsrepr"] == repr(["t", ids[0], "a"])  # type: ignore[index]
    assert broker.ledger.held(steps, before) == [False, True, True]
    broker.dispatch(2)  # later messages, pushed behind the others, change nothing
    assert broker.ledger.held(steps, before) == [False, True, True]
    broker.pop()
    broker.pop()
    assert broker.ledger.held(steps, before) == [False, False, False]


def test_each_priority_list_is_counted_on_its_own(broker: Broker) -> None:
    before = time.time() - 1
    normal = broker.dispatch(2)
    urgent = broker.dispatch(2, urgent=True)
    steps = [_step(e) for e in normal + urgent]
    broker.pop(urgent=True)  # workers drain the urgent list first
    assert broker.ledger.held(steps, before) == [True, True, False, True]


def test_a_later_message_of_the_same_step_keeps_its_record_when_an_earlier_one_is_taken(broker: Broker) -> None:
    before = time.time() - 1
    [execution_id] = broker.dispatch(1)
    first = broker.message_id(execution_id)
    broker.dispatcher.dispatch([Dispatch("t", execution_id, "a", urgent=True, epoch=1)])  # the reconciler's re-send
    assert broker.message_id(execution_id) != first
    broker.ledger.taken("t", execution_id, "a", first)  # the earlier copy reaches a worker
    assert broker.ledger.held([_step(execution_id)], before) == [True]
    broker.ledger.taken("t", execution_id, "a", broker.message_id(execution_id))
    assert broker.ledger.held([_step(execution_id)], before) == [False]


def test_messages_pushed_by_another_client_only_delay_the_verdict(broker: Broker, redis_client: redis.Redis) -> None:
    """A message the count does not know of (an older publisher's) lengthens the list: a
    record whose message left stays trusted until the list moves past the stranger too."""
    before = time.time() - 1
    [execution_id] = broker.dispatch(1)
    redis_client.lpush(queue_keys(broker.queue)[1], json.dumps({"headers": {}, "body": ""}))
    broker.pop()
    assert broker.ledger.held([_step(execution_id)], before) == [True]
    broker.pop()
    assert broker.ledger.held([_step(execution_id)], before) == [False]


def test_only_lists_that_step_messages_go_to_are_counted(broker: Broker, redis_client: redis.Redis) -> None:
    """Every push onto a step queue counts once a step message went there; other lists (Celery's
    control replies, say) get no count, so the counts do not grow with every reply queue."""
    normal = queue_keys(broker.queue)[1]

    def other_message() -> None:
        broker.dispatcher.app.send_task("not.a.step", queue=broker.queue, priority=9)

    other_message()
    assert redis_client.hget(PUSHED_KEY, normal) is None
    broker.dispatch(1)
    other_message()
    assert int(redis_client.hget(PUSHED_KEY, normal) or 0) == 2
    assert redis_client.llen(normal) == 3


def test_a_flushed_broker_holds_nothing_and_an_unreachable_ledger_holds_nothing(
    broker: Broker, redis_client: redis.Redis
) -> None:
    [execution_id] = broker.dispatch(1)
    assert broker.ledger.held([_step(execution_id)], 0.0) == [True]
    # What FLUSHDB does to this step's record, its queue and the queue's count (other tests share the keys):
    redis_client.zrem(LEDGER_KEY, member("t", execution_id, "a"))
    redis_client.hdel(PLACES_KEY, member("t", execution_id, "a"))
    redis_client.hdel(PUSHED_KEY, *queue_keys(broker.queue))
    redis_client.delete(*queue_keys(broker.queue))
    assert broker.ledger.held([_step(execution_id)], 0.0) == [False]
    down = RedisMessageLedger.from_url("redis://127.0.0.1:1/0")
    assert down.held([_step(execution_id)], 0.0) == [False]
    down.taken("t", execution_id, "a", "some-id")  # logged, never raised into the worker's consumer


def test_messages_that_could_not_be_published_are_not_held(redis_server_url: str) -> None:
    ledger = RedisMessageLedger.from_url(redis_server_url)
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url="redis://127.0.0.1:1/0"))
    ids = [uuid.uuid4().hex for _ in range(3)]
    dispatcher.dispatch([Dispatch("t", ids[0], "a")])  # the broker is down: logged
    dispatcher.dispatch([Dispatch("t", e, "a") for e in ids[1:]])  # a batch too
    assert ledger.held([_step(e) for e in ids], 0.0) == [False, False, False]


def test_messages_taken_soon_are_removed_together_by_the_ledgers_thread(broker: Broker) -> None:
    ids = broker.dispatch(50)
    steps = [_step(e) for e in ids]
    for execution_id in ids[:40]:
        broker.ledger.taken_soon("t", execution_id, "a", broker.message_id(execution_id))  # no Redis call here
    assert broker.ledger.flush()
    assert broker.ledger.held(steps, 0.0) == [False] * 40 + [True] * 10
    down = RedisMessageLedger.from_url("redis://127.0.0.1:1/0")
    down.taken_soon("t", ids[0], "a", "some-id")
    assert down.flush()  # the failure is logged by the thread, which carries on
    down.taken_soon("t", ids[1], "a", "some-id")
    assert down.flush()


def test_messages_taken_one_by_one_are_removed_by_one_call_without_a_flush(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread lingers after the first message taken, so the others join its script call."""
    ids = broker.dispatch(20)
    steps = [_step(e) for e in ids]
    calls: list[int] = []
    remove = broker.ledger._taken_script

    def counted(**call: Any) -> Any:
        calls.append(len(call["args"]) // 2)
        return remove(**call)

    monkeypatch.setattr(broker.ledger, "_taken_script", counted)
    for execution_id in ids:
        broker.ledger.taken_soon("t", execution_id, "a", broker.message_id(execution_id))
    deadline = time.monotonic() + 10
    while any(broker.ledger.held(steps, 0.0)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert broker.ledger.held(steps, 0.0) == [False] * 20
    assert sum(calls) == 20
    assert len(calls) < 20  # taken within the linger: removed together (one call on any quiet machine)


def test_a_batch_of_messages_goes_out_in_one_pipeline_to_each_queue_and_priority(
    redis_server_url: str, redis_client: redis.Redis
) -> None:
    queue, other = (f"batch-{uuid.uuid4().hex[:8]}" for _ in range(2))
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=redis_server_url, default_queue=queue))
    dispatches = [
        Dispatch("t", "e-1", "a"),
        Dispatch("t", "e-2", "b", queue=other),
        Dispatch("t", "e-3", "c", urgent=True),
        Dispatch("t", "e-4", "d"),
    ]
    try:
        dispatcher.dispatch(dispatches)

        def tasks(key: str) -> list[tuple[str, str]]:
            headers = [json.loads(raw)["headers"] for raw in redis_client.lrange(key, 0, -1)]
            return sorted((h["task"], h["argsrepr"]) for h in headers)

        urgent, normal = queue_keys(queue)
        assert tasks(normal) == [(RUN_STEP_TASK, "['t', 'e-1', 'a']"), (RUN_STEP_TASK, "['t', 'e-4', 'd']")]
        assert tasks(urgent) == [(RUN_STEP_TASK, "['t', 'e-3', 'c']")]
        assert tasks(queue_keys(other)[1]) == [(RUN_STEP_TASK, "['t', 'e-2', 'b']")]
        assert [int(redis_client.hget(PUSHED_KEY, key) or 0) for key in (normal, urgent)] == [2, 1]
    finally:
        delete_queue_keys(redis_client, queue)
        delete_queue_keys(redis_client, other)
        redis_client.hdel(PUSHED_KEY, *queue_keys(queue), *queue_keys(other))
        members = [member(d.tenant, d.execution_id, d.step_key) for d in dispatches]
        redis_client.zrem(LEDGER_KEY, *members)
        redis_client.hdel(PLACES_KEY, *members)


def test_a_lone_message_is_pushed_at_once_and_a_batch_in_one_pipeline(
    redis_server_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lone message skips kombu's batch (its push is then one EVALSHA, see broker_redis);
    # two or more share a pipeline. Both are recorded in the ledger.
    from kombu.transport import redis as kombu_redis

    batched: list[str] = []
    real_add = kombu_redis.PublishBatch.add
    monkeypatch.setattr(
        kombu_redis.PublishBatch, "add", lambda self, name, *args: (batched.append(name), real_add(self, name, *args))
    )
    queue = f"lone-{uuid.uuid4().hex[:8]}"
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=redis_server_url, default_queue=queue))
    dispatches = [Dispatch("t", "lone-1", "a"), Dispatch("t", "pair-1", "a"), Dispatch("t", "pair-2", "a")]
    members = [member(d.tenant, d.execution_id, d.step_key) for d in dispatches]
    try:
        dispatcher.dispatch(dispatches[:1])
        assert batched == []
        dispatcher.dispatch(dispatches[1:])
        assert batched == ["eval", "eval"]

        normal = queue_keys(queue)[1]
        assert redis_client.llen(normal) == 3
        assert int(redis_client.hget(PUSHED_KEY, normal) or 0) == 3
        assert all(redis_client.hexists(PLACES_KEY, m) for m in members)
    finally:
        delete_queue_keys(redis_client, queue)
        redis_client.hdel(PUSHED_KEY, *queue_keys(queue))
        redis_client.zrem(LEDGER_KEY, *members)
        redis_client.hdel(PLACES_KEY, *members)
