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

A worker's consumer marks messages taken with :meth:`RedisMessageLedger.taken_soon`: a thread
of the ledger removes the members of every message taken meanwhile in one ``ZREM``, so the
consumer never waits on Redis between two messages and a busy worker makes one call for many
messages. Being late is as harmless as failing: a member left a moment longer (or for good,
if the worker dies first) only makes the reconciler wait ``redispatch_held_after`` instead of
``redispatch_after`` before it sends that step again, should the step still be QUEUED; one
removed late, after the same step was sent again, makes the reconciler send it once more (a
duplicate message, refused by the claim).
"""

from __future__ import annotations

import json
import threading
import time
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
        self._pending: list[str] = []  # members of messages taken, not yet removed
        self._busy = False  # the flusher is removing a batch
        self._changed = threading.Condition()
        self._flusher: threading.Thread | None = None

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

    def taken_soon(self, tenant: str, execution_id: str, step_key: str) -> None:
        """:meth:`taken`, done by the ledger's thread with the other messages taken meanwhile."""
        with self._changed:
            self._pending.append(member(tenant, execution_id, step_key))
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_loop, name="conveyor-ledger", daemon=True)
                self._flusher.start()
            self._changed.notify_all()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every message marked with :meth:`taken_soon` is removed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._pending or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
        return True

    def _flush_loop(self) -> None:
        while True:
            with self._changed:
                while not self._pending:
                    self._changed.wait()
                batch, self._pending, self._busy = self._pending, [], True
            try:
                self._remove(batch)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

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
