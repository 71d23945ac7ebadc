"""kombu's Redis transport, recording each step message in the message ledger as it is queued.

kombu pushes a message onto its queue's Redis list with one ``LPUSH``; this transport pushes
it with the ledger's Lua script instead (:data:`~engine.adapters.ledger_redis.PUSH_SCRIPT`),
which also counts the push and, for a step message, records the step and the message's place
in the same atomic step (see :mod:`engine.adapters.ledger_redis` for why the ledger needs
both). A step message says which step it runs in the ``conveyor_step`` header, set by the
dispatcher; other messages (a task's own retry without it, say) are pushed and counted only.

Celery uses it for every Redis broker URL (``broker_transport``, see
:func:`~engine.adapters.celery_config.celery_config`); consuming is kombu's, unchanged.
"""

from __future__ import annotations

import time
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from engine.adapters.ledger_redis import push_command

#: The message header naming the step a message runs: the ledger's member for it.
STEP_HEADER = "conveyor_step"


class Channel(kombu_redis.Channel):
    """A Redis channel whose pushes go through the ledger's script."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[no-untyped-call]
        headers = message.get("headers") or {}
        step = headers.get(STEP_HEADER)
        command = push_command(
            self._list(queue, priority),
            dumps(message),  # type: ignore[no-untyped-call]
            step if isinstance(step, str) else "",
            str(headers.get("id") or ""),
            time.time(),
        )
        # What kombu's _put does besides its LPUSH: refresh the expiry of a queue declared with one.
        expiry = (
            [("pexpire", self._list(queue, p), self._expires[queue]) for p in self.priority_steps]
            if (self._expires and queue in self._expires)
            else []
        )
        batch = kwargs.pop("_publish_batch", None)
        if batch is not None:  # the producer's batch sends it with the others in one pipeline
            for name, *args in (command, *expiry):
                batch.add(name, *args)
            return
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            for name, *args in (command, *expiry):
                getattr(pipe, str(name))(*args)
            pipe.execute()

    def _list(self, queue: str, priority: int) -> str:
        """The Redis list of ``queue`` holding messages of ``priority`` (kombu's naming)."""
        return str(self._q_for_pri(queue, priority))  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
