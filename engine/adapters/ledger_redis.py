"""The MessageLedger port on the broker's Redis: one sorted set of the step messages it holds.

The dispatcher adds a member per step message just *before* publishing it (score: the time),
and the worker that receives the message removes it before running the step. A member is
therefore present while the message waits in the broker. Publishing first would let a fast
worker remove the member before it was added, leaving a member for a message nobody holds;
adding first leaves one only if the publisher dies between the two calls (or the publish
fails and the clean-up fails with it). Either leftover is outlived by ``since`` in
:meth:`held`: a step whose member is older than ``redispatch_held_after`` is sent again anyway
(which also covers a purged queue), and the reconciler drops such members.

The set lives in the broker's Redis on purpose: flushing the broker empties it too, so every
step whose message was flushed is seen as lost and sent again.

A worker's consumer removes the member when the message arrives, before handing it on, with
one ``ZREM``. Deferring that removal to a thread of the ledger was tried and reverted: in the
crash test (``tests/chaos/test_worker_crash.py``) members of messages a SIGKILLed worker had
received stayed behind (one received 1.1 s before the kill), so the reconciler held those
steps back for ``redispatch_held_after`` (300 s) instead of ``redispatch_after``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import redis
import structlog

from engine.ports import Dispatch
from engine.records import StepRecord

log = structlog.get_logger("conveyor.ledger")

#: The sorted set of held step messages (one per broker, whatever the queues).
LEDGER_KEY = "conveyor:held-messages"


def member(tenant: str, execution_id: str, step_key: str) -> str:
    return json.dumps([tenant, execution_id, step_key], separators=(",", ":"))


class RedisMessageLedger:
    """Members ``[tenant, execution_id, step_key]`` scored by when their message was published."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @classmethod
    def from_url(cls, url: str) -> RedisMessageLedger:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5))

    def sent(self, dispatches: Sequence[Dispatch], at: float) -> None:
        """Record messages about to be published (raises the broker's error if Redis is down)."""
        if dispatches:
            self.client.zadd(LEDGER_KEY, {member(d.tenant, d.execution_id, d.step_key): at for d in dispatches})

    def unsent(self, dispatches: Sequence[Dispatch]) -> None:
        """Forget messages that could not be published after all (best effort)."""
        if not dispatches:
            return
        try:
            self.client.zrem(LEDGER_KEY, *(member(d.tenant, d.execution_id, d.step_key) for d in dispatches))
        except redis.RedisError as exc:
            log.warning("could not forget unpublished step messages", error=str(exc))

    def taken(self, tenant: str, execution_id: str, step_key: str) -> None:
        """A worker received the message (best effort: a leftover member only delays a re-send)."""
        self._remove([member(tenant, execution_id, step_key)])

    def _remove(self, members: list[str]) -> None:
        try:
            self.client.zrem(LEDGER_KEY, *members)
        except redis.RedisError as exc:
            log.warning("could not mark step messages as taken", count=len(members), error=str(exc))

    def held(self, steps: Sequence[StepRecord], since: float) -> list[bool]:
        """Whether each step's message is held, published at ``since`` or later; drops older members.

        On a Redis error nothing counts as held: a duplicate message is harmless, a step
        nobody sends again is not.
        """
        if not steps:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.zremrangebyscore(LEDGER_KEY, "-inf", f"({since}")
            pipe.zmscore(LEDGER_KEY, [member(s.tenant, s.execution_id, s.key) for s in steps])
            scores = pipe.execute()[1]
        except redis.RedisError as exc:
            log.warning("message ledger unavailable; re-sending every stale step", error=str(exc))
            return [False] * len(steps)
        return [score is not None and score >= since for score in scores]
