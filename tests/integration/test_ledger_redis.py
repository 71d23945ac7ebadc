"""The ledger of held step messages on a real Redis broker, with the real dispatcher and worker hook."""

from __future__ import annotations

import time
import uuid
from types import SimpleNamespace

import pytest
import redis

from engine.adapters.dispatcher_celery import RUN_STEP_TASK, CeleryDispatcher
from engine.adapters.ledger_redis import LEDGER_KEY, RedisMessageLedger, member
from engine.ports import Dispatch
from engine.records import StepRecord
from engine.settings import Settings
from engine.states import StepStatus
from tasks.app import _ledger, _message_taken
from tests.integration.conftest import delete_queue_keys

pytestmark = pytest.mark.backend


def _step(execution_id: str, key: str = "a") -> StepRecord:
    return StepRecord(execution_id=execution_id, tenant="t", key=key, step_id=key, status=StepStatus.QUEUED)


def test_a_published_message_is_held_until_a_worker_takes_it(redis_server_url: str, redis_client: redis.Redis) -> None:
    queue = f"ledger-{uuid.uuid4().hex[:8]}"
    ids = [uuid.uuid4().hex for _ in range(3)]
    dispatcher = CeleryDispatcher.from_settings(
        Settings(broker_url=redis_server_url, default_queue=queue), RedisMessageLedger.from_url(redis_server_url)
    )
    ledger = RedisMessageLedger.from_url(redis_server_url)
    try:
        before = time.time() - 1
        dispatcher.dispatch([Dispatch("t", e, "a") for e in ids])
        steps = [_step(e) for e in ids]
        assert ledger.held(steps, before) == [True, True, True]
        # What the worker's consumer does when the message arrives (the removal follows on the
        # ledger's thread, with the other messages taken meanwhile):
        request = SimpleNamespace(name=RUN_STEP_TASK, args=["t", ids[1], "a"])
        _message_taken(sender=SimpleNamespace(app=dispatcher.app), request=request)
        consumer_ledger = _ledger(str(dispatcher.app.conf.broker_url))
        assert consumer_ledger is not None and consumer_ledger.flush()
        assert ledger.held(steps, before) == [True, False, True]
        # A member older than ``since`` no longer counts (a purged queue), and is dropped.
        assert ledger.held(steps, time.time() + 1) == [False, False, False]
        assert redis_client.zscore(LEDGER_KEY, member("t", ids[0], "a")) is None
    finally:
        delete_queue_keys(redis_client, queue)
        redis_client.zrem(LEDGER_KEY, *(member("t", e, "a") for e in ids))


def test_a_flushed_broker_holds_nothing_and_an_unreachable_ledger_holds_nothing(
    redis_server_url: str, redis_client: redis.Redis
) -> None:
    ledger = RedisMessageLedger.from_url(redis_server_url)
    execution_id = uuid.uuid4().hex
    ledger.sent([Dispatch("t", execution_id, "a")], time.time())
    assert ledger.held([_step(execution_id)], 0.0) == [True]
    redis_client.delete(LEDGER_KEY)  # what FLUSHDB does to it, beside the queues
    assert ledger.held([_step(execution_id)], 0.0) == [False]
    down = RedisMessageLedger.from_url("redis://127.0.0.1:1/0")
    assert down.held([_step(execution_id)], 0.0) == [False]
    down.taken("t", execution_id, "a")  # logged, never raised into the worker's consumer


def test_messages_that_could_not_be_published_are_not_held(redis_server_url: str) -> None:
    ledger = RedisMessageLedger.from_url(redis_server_url)
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url="redis://127.0.0.1:1/0"), ledger)
    execution_id = uuid.uuid4().hex
    dispatcher.dispatch([Dispatch("t", execution_id, "a")])  # the broker is down: logged
    assert ledger.held([_step(execution_id)], 0.0) == [False]


def test_messages_taken_soon_are_removed_together_by_the_ledgers_thread(
    redis_server_url: str, redis_client: redis.Redis
) -> None:
    ledger = RedisMessageLedger.from_url(redis_server_url)
    ids = [uuid.uuid4().hex for _ in range(50)]
    try:
        ledger.sent([Dispatch("t", e, "a") for e in ids], time.time())
        steps = [_step(e) for e in ids]
        for execution_id in ids[:40]:
            ledger.taken_soon("t", execution_id, "a")  # returns at once: no Redis call here
        assert ledger.flush()
        assert ledger.held(steps, 0.0) == [False] * 40 + [True] * 10
        down = RedisMessageLedger.from_url("redis://127.0.0.1:1/0")
        down.taken_soon("t", ids[0], "a")
        assert down.flush()  # the failure is logged by the thread, which carries on
        down.taken_soon("t", ids[1], "a")
        assert down.flush()
    finally:
        redis_client.zrem(LEDGER_KEY, *(member("t", e, "a") for e in ids))


def test_a_batch_of_messages_goes_out_in_one_pipeline_to_each_queue_and_priority(
    redis_server_url: str, redis_client: redis.Redis
) -> None:
    import json

    from engine.adapters.celery_config import queue_keys

    queue, other = (f"batch-{uuid.uuid4().hex[:8]}" for _ in range(2))
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=redis_server_url, default_queue=queue))
    try:
        dispatcher.dispatch(
            [
                Dispatch("t", "e-1", "a"),
                Dispatch("t", "e-2", "b", queue=other),
                Dispatch("t", "e-3", "c", urgent=True),
                Dispatch("t", "e-4", "d"),
            ]
        )

        def tasks(key: str) -> list[tuple[str, str]]:
            headers = [json.loads(raw)["headers"] for raw in redis_client.lrange(key, 0, -1)]
            return sorted((h["task"], h["argsrepr"]) for h in headers)

        urgent, normal = queue_keys(queue)
        assert tasks(normal) == [(RUN_STEP_TASK, "['t', 'e-1', 'a']"), (RUN_STEP_TASK, "['t', 'e-4', 'd']")]
        assert tasks(urgent) == [(RUN_STEP_TASK, "['t', 'e-3', 'c']")]
        assert tasks(queue_keys(other)[1]) == [(RUN_STEP_TASK, "['t', 'e-2', 'b']")]
    finally:
        delete_queue_keys(redis_client, queue)
        delete_queue_keys(redis_client, other)


def test_a_batch_that_could_not_be_published_is_held_by_none_of_its_messages(redis_server_url: str) -> None:
    ledger = RedisMessageLedger.from_url(redis_server_url)
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url="redis://127.0.0.1:1/0"), ledger)
    ids = [uuid.uuid4().hex for _ in range(3)]
    dispatcher.dispatch([Dispatch("t", e, "a") for e in ids])  # the broker is down: logged
    assert ledger.held([_step(e) for e in ids], 0.0) == [False, False, False]
