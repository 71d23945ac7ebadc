"""The recent dead letters kept per tenant: in Redis (real server) and in memory, the same way."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from engine.adapters.deadletters import MemoryDeadLetters, RedisDeadLetters
from engine.ports import DeadLetterLog
from engine.records import DeadLetterRecord
from tests.services import redis_url


@pytest.fixture(params=["redis", "memory"])
def kept(request: pytest.FixtureRequest) -> Iterator[tuple[DeadLetterLog, str]]:
    tenant = f"t-{uuid.uuid4().hex[:8]}"  # the Redis database is shared: a fresh tenant per test
    if request.param == "memory":
        yield MemoryDeadLetters(size=3), tenant
        return
    log = RedisDeadLetters(redis_url(), size=3)
    try:
        yield log, tenant
    finally:
        log.client.delete(log.key(tenant), log.key(f"{tenant}-other"))
        log.close()


def letter(tenant: str, n: int) -> DeadLetterRecord:
    return DeadLetterRecord(
        tenant=tenant,
        message_id=f"m-{n}",
        subscription="orders-sub",
        reason="malformed",
        detail="not a JSON object",
        at=1000.0 + n,
        attributes={"v": "1"},
        data="[1]",
        data_bytes=3,
    )


def test_newest_first_bounded_and_per_tenant(kept: tuple[DeadLetterLog, str]) -> None:
    log, tenant = kept
    for n in range(5):
        log.record(letter(tenant, n))
    log.record(letter(f"{tenant}-other", 9))
    assert [d.message_id for d in log.recent(tenant)] == ["m-4", "m-3", "m-2"]
    assert [d.message_id for d in log.recent(tenant, limit=1)] == ["m-4"]
    assert log.recent(tenant)[0] == letter(tenant, 4)
    assert [d.message_id for d in log.recent(f"{tenant}-other")] == ["m-9"]
    assert log.recent(f"{tenant}-nobody") == []
