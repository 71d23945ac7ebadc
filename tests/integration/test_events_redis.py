"""Live event logs: Redis Streams (real Redis, db 15) and the in-process log obey one contract.

Events arrive in order; ``read(after=...)`` resumes without gaps or duplicates; a blocked
read wakes up on publish; trimming to ``maxlen`` is detectable with ``first_id``/``expired``.
A run through a real worker puts exactly the store's history into the Redis stream.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest
import redis

from engine.adapters.events_memory import EventLog, LiveEvent, MemoryEventLog
from engine.adapters.events_redis import RedisEventLog
from engine.errors import InvalidRequest, StoreUnavailable
from engine.records import EventRecord
from tests.integration import flows
from tests.integration.conftest import TENANT, World

pytestmark = pytest.mark.backend

MakeLog = Callable[..., EventLog]


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["redis", "memory"])
def make_log(
    request: pytest.FixtureRequest, tenant: str, redis_server_url: str, redis_client: redis.Redis
) -> Iterator[MakeLog]:
    """Builds logs of one kind; Redis streams of the test's tenant are deleted afterwards."""
    made: list[RedisEventLog] = []

    def make(maxlen: int = 1000) -> EventLog:
        if request.param == "memory":
            return MemoryEventLog(maxlen)
        log = RedisEventLog(redis_server_url, maxlen=maxlen)
        made.append(log)
        return log

    yield make
    for key in redis_client.scan_iter(match=f"conveyor:events:{tenant}:*"):
        redis_client.delete(key)
    for log in made:
        log.close()


def events(tenant: str, execution_id: str, count: int, start: int = 0) -> list[EventRecord]:
    return [
        EventRecord(
            id=f"ev-{i:05d}",
            execution_id=execution_id,
            tenant=tenant,
            type="step.running",
            at=1.0 + i,
            step_key=f"s{i}",
            status="RUNNING",
            attempt=1,
            data={"i": i},
        )
        for i in range(start, start + count)
    ]


def ids(items: Sequence[LiveEvent]) -> list[str]:
    return [live.event.id for live in items]


def test_events_come_back_in_order_and_resume_without_gaps_or_duplicates(make_log: MakeLog, tenant: str) -> None:
    log = make_log()
    published = events(tenant, "x", 25)
    log.publish(published[:10])
    for event in published[10:]:
        log.publish([event])
    log.publish(events(tenant, "other", 3))  # another execution's stream stays apart

    everything = log.read(tenant, "x", count=1000)
    assert [live.event for live in everything] == published
    stream_ids = [live.stream_id for live in everything]
    assert len(set(stream_ids)) == len(stream_ids)

    resumed, cursor = [], None
    while batch := log.read(tenant, "x", after=cursor, count=4):
        resumed.extend(batch)
        cursor = batch[-1].stream_id
    assert resumed == everything
    assert log.first_id(tenant, "x") == stream_ids[0]
    assert log.last_id(tenant, "x") == stream_ids[-1]
    assert log.read(tenant, "x", after=stream_ids[-1]) == []
    assert not log.expired(tenant, "x", stream_ids[0])
    assert log.read(tenant, "nothing-here") == [] and log.first_id(tenant, "nothing-here") is None


def test_a_blocked_read_wakes_up_on_publish(make_log: MakeLog, tenant: str) -> None:
    log = make_log()
    log.publish(events(tenant, "x", 1))
    cursor = log.last_id(tenant, "x")
    later = events(tenant, "x", 1, start=1)
    timer = threading.Timer(0.2, log.publish, [later])
    began = time.monotonic()
    timer.start()
    got = log.read(tenant, "x", after=cursor, block_ms=5000)
    timer.join()
    assert [live.event for live in got] == later
    assert 0.15 < time.monotonic() - began < 2
    began = time.monotonic()
    assert log.read(tenant, "x", after=got[-1].stream_id, block_ms=200) == []
    assert time.monotonic() - began >= 0.15


def test_trimming_to_maxlen_is_detected_through_first_id_and_expired(make_log: MakeLog, tenant: str) -> None:
    log = make_log(maxlen=10)
    log.publish(events(tenant, "x", 1))
    oldest = log.first_id(tenant, "x")
    assert oldest is not None
    for start in range(1, 600, 20):
        log.publish(events(tenant, "x", 20, start=start))

    kept = log.read(tenant, "x", count=10_000)
    assert 10 <= len(kept) < 600  # Redis trims approximately (whole nodes), memory exactly
    assert ids(kept) == [f"ev-{i:05d}" for i in range(601 - len(kept), 601)]  # the newest survive, in order
    first = log.first_id(tenant, "x")
    assert first == kept[0].stream_id and first != oldest
    assert log.expired(tenant, "x", oldest)  # events after this cursor are gone: send a snapshot
    assert not log.expired(tenant, "x", kept[0].stream_id)
    assert not log.expired(tenant, "x", kept[-1].stream_id)
    assert log.expired(tenant, "never-published", oldest)  # no stream at all (expired or lost)
    assert ids(log.read(tenant, "x", after=kept[4].stream_id, count=3)) == ids(kept[5:8])


def test_malformed_cursors_are_invalid_requests(make_log: MakeLog, tenant: str) -> None:
    log = make_log()
    for cursor in ("", "abc", "1-x", "-1", "1-2-3"):
        with pytest.raises(InvalidRequest):
            log.read(tenant, "x", after=cursor)
        with pytest.raises(InvalidRequest):
            log.expired(tenant, "x", cursor)


async def test_async_reads_wait_without_blocking_the_event_loop(make_log: MakeLog, tenant: str) -> None:
    log = make_log()
    log.publish(events(tenant, "x", 2))
    assert await log.afirst_id(tenant, "x") == log.first_id(tenant, "x")
    cursor = await log.alast_id(tenant, "x")
    assert cursor is not None and not await log.aexpired(tenant, "x", cursor)
    later = events(tenant, "x", 1, start=2)
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    async def publish_later() -> None:
        await asyncio.sleep(0.2)
        await asyncio.to_thread(log.publish, later)  # a worker thread publishes

    background = [asyncio.create_task(ticker()), asyncio.create_task(publish_later())]
    got = await log.aread(tenant, "x", after=cursor, block_ms=5000)
    for task in background:
        task.cancel()
    assert [live.event for live in got] == later
    assert ticks >= 10  # the loop kept running while the read waited
    assert await log.aread(tenant, "x", after=got[-1].stream_id, block_ms=100) == []
    if isinstance(log, RedisEventLog):
        await log.aclose()


def test_redis_streams_expire_and_an_unreachable_redis_is_unavailable(
    redis_server_url: str, redis_client: redis.Redis
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    log = RedisEventLog(redis_server_url, ttl_seconds=120)
    try:
        log.publish(events(tenant, "x", 3))
        assert 0 < redis_client.ttl(log.key(tenant, "x")) <= 120
    finally:
        redis_client.delete(log.key(tenant, "x"))
        log.close()

    down = RedisEventLog("redis://127.0.0.1:1/0")
    down.publish(events(tenant, "x", 1))  # logged, not raised: the store already committed
    with pytest.raises(StoreUnavailable) as refused:
        down.read(tenant, "x")
    assert "127.0.0.1" not in refused.value.message and ":1" not in refused.value.message  # clients see it
    with pytest.raises(StoreUnavailable):
        down.first_id(tenant, "x")
    with pytest.raises(StoreUnavailable):
        down.expired(tenant, "x", "1-0")


def test_a_real_run_streams_exactly_its_history_in_order(
    make_world: Callable[..., World], redis_server_url: str, redis_client: redis.Redis
) -> None:
    log = RedisEventLog(redis_server_url)
    world = make_world(events=log)
    world.apply(flows.PIPELINE)
    try:
        with world.worker(pool="solo", concurrency=1):  # one transition at a time: a total order
            execution_id = world.start("it-pipeline", {"n": 3})
            world.wait(execution_id)
        history = world.service.events_after(TENANT, execution_id, None)
        streamed = log.read(TENANT, execution_id, count=10_000)
        assert [live.event for live in streamed] == history
        resumed, cursor = [], None
        while batch := log.read(TENANT, execution_id, after=cursor, count=7):
            resumed.extend(batch)
            cursor = batch[-1].stream_id
        assert resumed == streamed
    finally:
        redis_client.delete(log.key(TENANT, execution_id))
        log.close()


def test_one_publish_spans_streams_in_order_and_sets_each_expiry(
    tenant: str, redis_server_url: str, redis_client: redis.Redis
) -> None:
    """A publish is one script call: events of several executions go each to its own stream,
    in order, and every stream they went to gets its expiry."""
    log = RedisEventLog(redis_server_url, ttl_seconds=600)
    try:
        first = [*events(tenant, "a", 2), *events(tenant, "b", 1, start=2), *events(tenant, "a", 1, start=3)]
        log.publish(first)
        later = events(tenant, "b", 2, start=4)
        log.publish(later)
        assert [live.event for live in log.read(tenant, "a")] == [first[0], first[1], first[3]]
        assert [live.event for live in log.read(tenant, "b")] == [first[2], *later]
        for execution_id in ("a", "b"):
            assert 0 < redis_client.ttl(log.key(tenant, execution_id)) <= 600
    finally:
        for key in redis_client.scan_iter(match=f"conveyor:events:{tenant}:*"):
            redis_client.delete(key)
        log.close()
