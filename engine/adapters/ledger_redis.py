"""The MessageLedger port on the broker's Redis: where each step's latest message waits.

For every step message it queues, the broker transport (:mod:`engine.adapters.broker_redis`)
records in the *same* Lua script that pushes the message onto its Redis list:

* the step in the sorted set ``LEDGER_KEY``, scored by the time of the push;
* the message's place in ``PLACES_KEY``: its id, the list it went to and its *position*, the
  number of messages pushed onto that list up to and including it (a counter in
  ``PUSHED_KEY`` that the same script increments on every push, step message or not, once a
  step message went to the list: other lists, such as Celery's control replies, get none).

A message and its record are therefore written together or not at all: a publisher killed
before the script ran leaves neither, and the step, still QUEUED, is sent again after
``redispatch_after``.

A worker's consumer may be killed after Redis popped a message for it and before it
reported the message taken (Redis's ``BRPOP`` reply unread, or read and not yet handed on:
seen in about half the runs of the SQLite crash test, with windows of seconds on a loaded
machine). The message is then lost, or stuck in kombu's ``unacked`` hash until the visibility
timeout, and its record stays. :meth:`RedisMessageLedger.held` does not trust such a record:
a list is pushed on the left and popped on the right, so every message pushed after ours is
still in the list while ours is. With ``pushed`` messages counted for the list so far and
ours at ``position``, a list shorter than ``1 + pushed - position`` no longer holds ours, and
the step is not held. The check is exact for what this transport pushes, costs two reads per
list whatever the backlog, and errs only towards "held" for a moment: messages pushed by
another client, or put back by kombu (a warm shutdown, a visibility timeout), lengthen the
list until they are consumed in turn.

A record older than ``since`` (``redispatch_held_after``) is not trusted either and is dropped:
a backstop for what the count cannot see (a record written by an older version without its
place).

The set lives in the broker's Redis on purpose: flushing the broker empties it too, so every
step whose message was flushed is seen as lost and sent again.

A worker's consumer marks messages taken with :meth:`RedisMessageLedger.taken_soon`: a thread
of the ledger removes the records of every message taken within ``TAKEN_LINGER`` in one script
call, so the consumer never waits on Redis between two messages and a busy one pays one call
for many messages. A record is removed only if it is still
the one of the message taken: a later message of the same step (the reconciler sent it
again) keeps its own. Being late is harmless: the record of a taken message is no longer
trusted once the message left its list, so a removal lost with its worker costs nothing but
the record's room until ``since`` drops it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from typing import NamedTuple

import redis
import structlog

from engine.records import StepRecord

log = structlog.get_logger("conveyor.ledger")

#: The sorted set of steps whose latest message may wait in the broker, scored by its push time.
LEDGER_KEY = "conveyor:held-messages"
#: Hash: step member -> JSON ``[message id, list key, position]`` of that latest message.
PLACES_KEY = "conveyor:held-messages:places"
#: Hash: Redis list key -> how many messages were pushed onto it (the positions above).
PUSHED_KEY = "conveyor:pushed-messages"

#: Records dropped per call once they are older than ``since`` (Lua ``unpack`` has a limit).
EXPIRE_BATCH = 1000
#: Seconds the ledger's thread lets taken messages gather before it removes their records in
#: one script call (sooner once ``TAKEN_BATCH`` gathered, or when :meth:`flush` asks): one call
#: per message would cost a worker's consumer a thread switch and a Redis call per step.
TAKEN_LINGER = 0.2
#: Taken messages removed per script call at most.
TAKEN_BATCH = 500

#: KEYS: the list, PUSHED_KEY, LEDGER_KEY, PLACES_KEY. ARGV: the message, the step's member
#: ('' for a message that is not a step's), the push time, the message id. Returns the
#: message's position (0: not counted, no step message went to that list yet).
PUSH_SCRIPT = """
redis.call('LPUSH', KEYS[1], ARGV[1])
if ARGV[2] == '' and redis.call('HEXISTS', KEYS[2], KEYS[1]) == 0 then
  return 0
end
local position = redis.call('HINCRBY', KEYS[2], KEYS[1], 1)
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
  redis.call('HSET', KEYS[4], ARGV[2], cjson.encode({ARGV[4], KEYS[1], tostring(position)}))
end
return position
"""

#: KEYS: LEDGER_KEY, PLACES_KEY. ARGV: pairs of a step's member and the id of the message taken.
#: A record without a place is one an older version wrote: it is removed as before.
TAKEN_SCRIPT = """
local removed = 0
for i = 1, #ARGV, 2 do
  local place = redis.call('HGET', KEYS[2], ARGV[i])
  if not place or cjson.decode(place)[1] == ARGV[i + 1] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return removed
"""

#: KEYS: LEDGER_KEY, PLACES_KEY. ARGV: the oldest push time still trusted, the batch size.
EXPIRE_SCRIPT = """
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
if #old > 0 then
  redis.call('ZREM', KEYS[1], unpack(old))
  redis.call('HDEL', KEYS[2], unpack(old))
end
return #old
"""


def member(tenant: str, execution_id: str, step_key: str) -> str:
    return json.dumps([tenant, execution_id, step_key], separators=(",", ":"))


class Push(NamedTuple):
    """The keys and arguments of :data:`PUSH_SCRIPT` that push one message and record it."""

    keys: list[str]
    args: list[str]

    def command(self) -> tuple[object, ...]:
        """The script as one ``EVAL`` command (for a pipeline, where EVALSHA's fallback cannot run)."""
        return ("eval", PUSH_SCRIPT, len(self.keys), *self.keys, *self.args)


def push(list_key: str, message: str, step_member: str, message_id: str, at: float) -> Push:
    """What pushes ``message`` onto ``list_key`` and records it.

    ``step_member`` is '' for a message that is not a step's: it is pushed (and counted, on a
    list that step messages go to) but not recorded.
    """
    return Push([list_key, PUSHED_KEY, LEDGER_KEY, PLACES_KEY], [message, step_member, repr(at), message_id])


class Place(NamedTuple):
    """Where a step's latest message was pushed: its id, its list and its position there."""

    message_id: str
    list_key: str
    position: int

    @classmethod
    def decode(cls, raw: bytes | None) -> Place | None:
        if raw is None:
            return None
        message_id, list_key, position = json.loads(raw)
        return cls(message_id, list_key, int(position))


class RedisMessageLedger:
    """Records of the step messages waiting in the broker (written by the broker transport)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._taken_script = client.register_script(TAKEN_SCRIPT)
        self._expire_script = client.register_script(EXPIRE_SCRIPT)
        self._pending: list[str] = []  # member, message id, member, message id, ...: taken, not yet removed
        self._busy = False  # the flusher is removing a batch
        self._hurry = False  # flush() waits: remove what is pending without lingering
        self._changed = threading.Condition()
        self._flusher: threading.Thread | None = None

    @classmethod
    def from_url(cls, url: str) -> RedisMessageLedger:
        return cls(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5))

    def taken(self, tenant: str, execution_id: str, step_key: str, message_id: str) -> None:
        """A worker received message ``message_id`` (best effort: see the module docstring)."""
        self._remove([member(tenant, execution_id, step_key), message_id])

    def taken_soon(self, tenant: str, execution_id: str, step_key: str, message_id: str) -> None:
        """:meth:`taken`, done by the ledger's thread with the other messages taken meanwhile."""
        with self._changed:
            first = not self._pending
            self._pending += (member(tenant, execution_id, step_key), message_id)
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_loop, name="conveyor-ledger", daemon=True)
                self._flusher.start()
            if first or len(self._pending) >= 2 * TAKEN_BATCH:
                self._changed.notify_all()  # otherwise the thread lingers undisturbed (TAKEN_LINGER)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every message marked with :meth:`taken_soon` is removed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            self._hurry = True
            self._changed.notify_all()
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
                    self._hurry = False
                    self._changed.wait()
                linger_until = time.monotonic() + TAKEN_LINGER
                while not self._hurry and len(self._pending) < 2 * TAKEN_BATCH:
                    remaining = linger_until - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                batch, self._pending = self._pending[: 2 * TAKEN_BATCH], self._pending[2 * TAKEN_BATCH :]
                self._busy = True
            try:
                self._remove(batch)
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def _remove(self, pairs: list[str]) -> None:
        try:
            self._taken_script(keys=[LEDGER_KEY, PLACES_KEY], args=pairs)
        except redis.RedisError as exc:
            log.warning("could not mark step messages as taken", count=len(pairs) // 2, error=str(exc))

    def held(self, steps: Sequence[StepRecord], since: float) -> list[bool]:
        """Whether each step's message still waits in its list, pushed at ``since`` or later.

        Drops records older than ``since``. On a Redis error nothing counts as held: a
        duplicate message is harmless, a step nobody sends again is not.
        """
        if not steps:
            return []
        members = [member(s.tenant, s.execution_id, s.key) for s in steps]
        try:
            pipe = self.client.pipeline(transaction=False)
            self._expire_script(keys=[LEDGER_KEY, PLACES_KEY], args=[repr(since), EXPIRE_BATCH], client=pipe)
            pipe.zmscore(LEDGER_KEY, members)
            pipe.hmget(PLACES_KEY, members)
            _, scores, raw_places = pipe.execute()
            places = [Place.decode(raw) for raw in raw_places]
            lengths = self._list_lengths(sorted({p.list_key for p in places if p is not None}))
        except redis.RedisError as exc:
            log.warning("message ledger unavailable; re-sending every stale step", error=str(exc))
            return [False] * len(steps)
        return [
            score is not None and score >= since and (place is None or _still_queued(place, *lengths[place.list_key]))
            for score, place in zip(scores, places, strict=True)
        ]

    def _list_lengths(self, list_keys: list[str]) -> dict[str, tuple[int, int]]:
        """For each list, its length and the messages pushed onto it, read at one moment."""
        if not list_keys:
            return {}
        pipe = self.client.pipeline(transaction=True)
        for key in list_keys:
            pipe.llen(key)
            pipe.hget(PUSHED_KEY, key)
        values = pipe.execute()
        return {key: (int(values[2 * i]), int(values[2 * i + 1] or 0)) for i, key in enumerate(list_keys)}


def _still_queued(place: Place, length: int, pushed: int) -> bool:
    # Every message pushed after this one is still in the list while this one is.
    return length >= 1 + pushed - place.position
