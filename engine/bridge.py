"""The Pub/Sub bridge's decisions: what a pulled message becomes, and what to answer the broker.

The vendor side (streaming pull, acks, publishing) lives in :mod:`engine.adapters.pubsub`;
this module only decides, for one message of one configured subscription:

- **accept**: the message is an event; it is committed to the tenant's event log and routed
  through :class:`~engine.router.EventRouter` (the one path every event takes), then acked;
- **drop**: it lacks an attribute the subscription filters on: acked, nothing stored;
- **dead-letter**: it can never become an event (malformed, unroutable, too large), or it
  failed transiently ``max_attempts`` times: published to the dead-letter topic with the
  reason in attributes, and acked only after that publish succeeded;
- **retry**: a transient failure (the store is unreachable): nacked, redelivered later.

The tenant always comes from the subscription's configuration, never from the message.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from engine.errors import ConveyorError, InvalidRequest, PayloadTooLarge, StoreUnavailable
from engine.ports import DeadLetterLog, Publisher
from engine.records import DeadLetterRecord
from engine.router import EventRouter
from engine.settings import BridgeSubscription

log = structlog.get_logger("conveyor.bridge")

#: Attributes that name the event (CloudEvents binary mode uses the ``ce-`` ones).
ID_ATTRIBUTES = ("event_id", "ce-id")
TYPE_ATTRIBUTES = ("type", "ce-type")
SOURCE_ATTRIBUTES = ("source", "ce-source")
KEY_ATTRIBUTE = "correlation_key"
#: Attributes the bridge adds to a dead-lettered message.
REASON_ATTRIBUTE = "conveyor_reason"
DETAIL_ATTRIBUTE = "conveyor_detail"
#: How much of a dead letter's body its kept copy shows (the topic has all of it).
KEPT_DATA_BYTES = 4096

Reason = Literal["malformed", "unroutable", "too-large", "attempts-exhausted"]


@dataclass(frozen=True)
class Message:
    """A pulled message, as the bridge sees it (vendor types stay in the adapter)."""

    message_id: str
    data: bytes
    attributes: Mapping[str, str]
    #: What Pub/Sub says (only with a dead-letter policy); 0 or None when it does not know.
    delivery_attempt: int | None = None


@dataclass(frozen=True)
class Verdict:
    """What to answer for a message: ``ack``, ``nack``, or publish as a dead letter then ack."""

    action: Literal["ack", "nack", "dead-letter"]
    reason: str = ""
    detail: str = ""


class Unusable(ConveyorError):
    """A message that can never become an event."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass
class AttemptCounter:
    """Deliveries seen per message id, for when Pub/Sub does not count them (``delivery_attempt`` 0)."""

    capacity: int = 100_000
    _seen: OrderedDict[str, int] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, message: Message) -> int:
        """This delivery's number: Pub/Sub's when it has one, else ours."""
        with self._lock:
            count = self._seen.pop(message.message_id, 0) + 1
            self._seen[message.message_id] = count
            if len(self._seen) > self.capacity:
                self._seen.popitem(last=False)
        return max(count, message.delivery_attempt or 0)

    def forget(self, message: Message) -> None:
        with self._lock:
            self._seen.pop(message.message_id, None)


def event_fields(message: Message, subscription: BridgeSubscription, max_bytes: int) -> dict[str, Any] | None:
    """The event a message carries, as keyword arguments of ``EventRouter.publish``.

    ``None`` when the subscription's attribute filter drops it; :class:`Unusable` when it
    cannot be an event.
    """
    attributes = message.attributes
    if any(attributes.get(name) != value for name, value in subscription.attributes.items()):
        return None
    if len(message.data) > max_bytes:
        raise Unusable("too-large", f"the message is {len(message.data)} bytes; the limit is {max_bytes}")
    event_type = _first(attributes, TYPE_ATTRIBUTES) or subscription.event_type
    if not event_type:
        raise Unusable("unroutable", "no event type: no 'type' or 'ce-type' attribute and no event_type configured")
    try:
        data = json.loads(message.data.decode("utf-8")) if message.data else {}
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unusable("malformed", f"the message data is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Unusable("malformed", "the message data must be a JSON object")
    return {
        "type": event_type,
        "data": data,
        "event_id": _first(attributes, ID_ATTRIBUTES) or message.message_id,
        "source": _first(attributes, SOURCE_ATTRIBUTES) or subscription.subscription,
        "correlation_key": attributes.get(KEY_ATTRIBUTE) or None,
    }


def _first(attributes: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((attributes[name] for name in names if attributes.get(name)), None)


class Bridge:
    """Turns messages of configured subscriptions into events (see the module docstring)."""

    def __init__(
        self,
        router: EventRouter,
        dead_letters: Publisher,
        dead_letter_topic: str,
        *,
        max_attempts: int,
        max_message_bytes: int,
        after_commit: Callable[[Message], None] | None = None,
        dead_letter_log: DeadLetterLog | None = None,
    ) -> None:
        self.router = router
        self.dead_letters = dead_letters
        self.dead_letter_topic = dead_letter_topic
        self.max_attempts = max_attempts
        self.max_message_bytes = max_message_bytes
        self.attempts = AttemptCounter()
        #: Called after the event was committed, before the ack (tests kill the process here).
        self.after_commit = after_commit
        #: Where the recent dead letters are kept for people to look at (the console).
        self.dead_letter_log = dead_letter_log

    def judge(self, message: Message, subscription: BridgeSubscription) -> Verdict:
        """Commit the message's event (if it has one) and say what to answer the broker."""
        try:
            fields = event_fields(message, subscription, self.max_message_bytes)
            if fields is None:
                return Verdict("ack", "filtered")
            accepted = self.router.publish(subscription.tenant, **fields)
        except Unusable as exc:
            return Verdict("dead-letter", exc.reason, exc.message)
        except (InvalidRequest, PayloadTooLarge) as exc:
            reason: Reason = "too-large" if isinstance(exc, PayloadTooLarge) else "malformed"
            return Verdict("dead-letter", reason, exc.message)
        except Exception as exc:  # transient (the store is down) or unexpected: retried, then dead-lettered
            attempt = self.attempts.attempt(message)
            kind = "store unavailable" if isinstance(exc, StoreUnavailable) else type(exc).__name__
            log.warning("message failed; it is retried", message_id=message.message_id, attempt=attempt, error=str(exc))
            if attempt >= self.max_attempts:
                return Verdict("dead-letter", "attempts-exhausted", f"{attempt} attempts failed; last: {kind}: {exc}")
            return Verdict("nack", "transient", str(exc))
        log.info(
            "event accepted",
            message_id=message.message_id,
            event_id=accepted.event.id,
            duplicate=accepted.duplicate,
        )
        if self.after_commit is not None:
            self.after_commit(message)
        self.attempts.forget(message)
        return Verdict("ack", "duplicate" if accepted.duplicate else "accepted")

    def dead_letter(self, message: Message, subscription: BridgeSubscription, verdict: Verdict) -> None:
        """Publish the message to the dead-letter topic with why; raises if the publish failed."""
        attributes = {
            **message.attributes,
            REASON_ATTRIBUTE: verdict.reason,
            DETAIL_ATTRIBUTE: verdict.detail[:1024],
            "conveyor_subscription": subscription.subscription,
            "conveyor_tenant": subscription.tenant,
            "conveyor_message_id": message.message_id,
        }
        self.dead_letters.publish(self.dead_letter_topic, message.data, attributes)
        self.attempts.forget(message)
        log.warning("message dead-lettered", message_id=message.message_id, reason=verdict.reason)
        if self.dead_letter_log is not None:
            self._keep(self.dead_letter_log, message, subscription, verdict)

    def _keep(self, kept: DeadLetterLog, message: Message, subscription: BridgeSubscription, verdict: Verdict) -> None:
        """Add the dead letter to the tenant's recent list; the topic holds it already, so a failure only logs."""
        entry = DeadLetterRecord(
            tenant=subscription.tenant,
            message_id=message.message_id,
            subscription=subscription.subscription,
            reason=verdict.reason,
            detail=verdict.detail[:1024],
            at=self.router.service.clock.now(),
            attributes=dict(message.attributes),
            data=message.data[:KEPT_DATA_BYTES].decode("utf-8", "replace"),
            data_bytes=len(message.data),
        )
        try:
            kept.record(entry)
        except ConveyorError as exc:
            log.warning("dead letter not kept for the console", message_id=message.message_id, error=str(exc))
