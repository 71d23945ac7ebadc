"""kombu's Redis transport, recording each step message in the message ledger as it is queued.

kombu pushes a message onto its queue's Redis list with one ``LPUSH``; this transport pushes
it with the ledger's Lua script instead (:data:`~engine.adapters.ledger_redis.PUSH_SCRIPT`),
which also counts the push and, for a step message, records the step and the message's place
in the same atomic step (see :mod:`engine.adapters.ledger_redis` for why the ledger needs
both). A step message says which step it runs in the ``conveyor_step`` header, set by the
dispatcher; other messages (a task's own retry without it, say) are pushed and counted only.

Celery uses it for every Redis broker URL (``broker_transport``, see
:func:`~engine.adapters.celery_config.celery_config`); consuming is kombu's, unchanged.

This is the only module that touches private names of kombu (:data:`PRIVATE_NAMES`, plus the
``_expires`` attribute a channel sets in its constructor). ``tests/unit/test_broker_redis_pins.py``
pins them and what kombu's own ``_put`` does with them; ``pyproject.toml`` bounds kombu to the
versions that test passed on. Should an installed kombu lack one or call it differently anyway,
:func:`ledger_transport_usable` says so (with a warning, once) and Celery keeps kombu's stock
Redis transport (setting ``broker_transport``: ``auto``; ``stock`` always keeps it, ``ledger``
refuses to start without those names): messages are then queued without a ledger record, and the reconciler sends
again every step still QUEUED after ``redispatch_after`` (a duplicate message is harmless).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from typing import Any

import kombu
from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from engine.adapters.ledger_redis import PUSH_SCRIPT, push

#: The message header naming the step a message runs: the ledger's member for it.
STEP_HEADER = "conveyor_step"

log = logging.getLogger(__name__)

#: Private names of kombu's Redis transport that :class:`Channel` uses, as (owner, name,
#: parameters): the parameter names it is called with, or None for a plain attribute.
PRIVATE_NAMES: tuple[tuple[Any, str, tuple[str, ...] | None], ...] = (
    (kombu_redis.Channel, "_put", ("self", "queue", "message", "kwargs")),  # what we override
    (kombu_redis.Channel, "_get_message_priority", ("self", "message", "reverse")),
    (kombu_redis.Channel, "_q_for_pri", ("self", "queue", "pri")),  # a priority's list
    (kombu_redis.Channel, "conn_or_acquire", ("self", "client")),
    (kombu_redis.Channel, "priority_steps", None),
    # A producer's batch calls _put with ``_publish_batch=`` this, which buffers our commands.
    (getattr(kombu_redis, "PublishBatch", None), "add", ("self", "name", "args")),
)


def missing_private_names() -> list[str]:
    """The private names :class:`Channel` needs that this kombu lacks or calls differently."""
    missing = []
    for owner, name, parameters in PRIVATE_NAMES:
        label = f"{getattr(owner, '__name__', 'kombu.transport.redis.PublishBatch')}.{name}"
        value = getattr(owner, name, None)
        if value is None:
            missing.append(label)
        elif parameters is not None and tuple(inspect.signature(value).parameters) != parameters:
            missing.append(f"{label}{inspect.signature(value)}")
    return missing


@functools.cache
def ledger_transport_usable() -> bool:
    """True when this kombu has what :class:`Transport` relies on; else warns, once per process."""
    missing = missing_private_names()
    if missing:
        log.warning(
            "kombu %s lacks or changed %s: Celery uses kombu's stock Redis transport, step messages are "
            "not recorded in the message ledger and every step still queued after redispatch_after "
            "is sent again (set CONVEYOR_BROKER_TRANSPORT=stock to silence this)",
            getattr(kombu, "__version__", "?"),
            ", ".join(missing),
        )
    return not missing


class Channel(kombu_redis.Channel):
    """A Redis channel whose pushes go through the ledger's script."""

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[no-untyped-call]
        headers = message.get("headers") or {}
        step = headers.get(STEP_HEADER)
        pushing = push(
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
            for name, *args in (pushing.command(), *expiry):
                batch.add(name, *args)
            return
        with self.conn_or_acquire() as client:
            if not expiry:
                # One script call, as kombu's one LPUSH: no MULTI/EXEC pipeline around it, and
                # EVALSHA (redis-py loads the script once per server) rather than the whole script.
                self._push_script(client)(keys=pushing.keys, args=pushing.args, client=client)
                return
            with client.pipeline() as pipe:
                for name, *args in (pushing.command(), *expiry):
                    getattr(pipe, str(name))(*args)
                pipe.execute()

    def _push_script(self, client: Any) -> Any:
        """The ledger's push script, made once per channel (redis-py computes its SHA1 then)."""
        script = self.__dict__.get("_ledger_push_script")
        if script is None:
            script = self.__dict__["_ledger_push_script"] = client.register_script(PUSH_SCRIPT)
        return script

    def _list(self, queue: str, priority: int) -> str:
        """The Redis list of ``queue`` holding messages of ``priority`` (kombu's naming)."""
        return str(self._q_for_pri(queue, priority))  # type: ignore[no-untyped-call]


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with :class:`Channel`."""

    Channel = Channel
