"""Agent tools for the AI step tests, with real side effects in Redis (workers import this too).

Each call counts in ``conveyor-ai-test:<execution id>:<tool>`` and remembers the idempotency
key it got, so a test can check that a crash did not run a finished tool again.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import redis

from conveyor import step

PREFIX = "conveyor-ai-test"


def client() -> redis.Redis:
    return redis.Redis.from_url(os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"))


def calls(execution_id: str, tool: str) -> int:
    return int(client().get(f"{PREFIX}:{execution_id}:{tool}") or 0)


def keys(execution_id: str, tool: str) -> set[str]:
    return {k.decode() for k in client().smembers(f"{PREFIX}:{execution_id}:{tool}:keys")}


def forget(execution_id: str) -> None:
    redis_client = client()
    for key in redis_client.scan_iter(f"{PREFIX}:{execution_id}:*"):
        redis_client.delete(key)


def _count(ctx: Any, tool: str) -> None:
    redis_client = client()
    redis_client.incr(f"{PREFIX}:{ctx.execution_id}:{tool}")
    redis_client.sadd(f"{PREFIX}:{ctx.execution_id}:{tool}:keys", ctx.idempotency_key)


@step
def lookup_order(ctx: Any, order_id: str) -> dict[str, Any]:
    """Look an order up by id: its status and amount."""
    _count(ctx, "lookup_order")
    return {"order_id": order_id, "status": "delivered", "amount": 42}


@step
def refund(ctx: Any, order_id: str, amount: int) -> dict[str, Any]:
    """Refund an amount of an order (irreversible)."""
    _count(ctx, "refund")
    return {"order_id": order_id, "refunded": amount}


@step
def crash_once(ctx: Any, note: str) -> str:
    """Count the call; the first call in an execution SIGKILLs the process running it."""
    _count(ctx, "crash_once")
    if client().set(f"{PREFIX}:{ctx.execution_id}:crashed", 1, nx=True):
        os.kill(os.getpid(), signal.SIGKILL)
    return f"noted: {note}"


@step
async def slow_lookup(ctx: Any, order_id: str) -> str:
    """Look an order up slowly (seconds); marks when it started and when it finished."""
    _count(ctx, "slow_lookup")
    await asyncio.sleep(30)
    client().set(f"{PREFIX}:{ctx.execution_id}:slow_lookup:finished", 1)
    return f"{order_id}: delivered"


def finished(execution_id: str, tool: str) -> bool:
    return bool(client().exists(f"{PREFIX}:{execution_id}:{tool}:finished"))
