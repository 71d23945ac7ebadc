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
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from engine import cloudevents
from engine.errors import ConveyorError, InvalidRequest, PayloadTooLarge, StoreUnavailable
from engine.eventlog import Accepted
from engine.ports import DeadLetterLog, Publisher
from engine.records import DeadLetterRecord, InboundEventRecord
from engine.router import EventRouter
from engine.settings import BridgeSubscription

log = structlog.get_logger("conveyor.bridge")

#: Attributes that name the event (CloudEvents binary mode uses the ``ce-`` ones).
ID_ATTRIBUTES = ("event_id", "ce-id")
TYPE_ATTRIBUTES = ("type", "ce-type")
SOURCE_ATTRIBUTES = ("source", "ce-source")
KEY_ATTRIBUTES = ("correlation_key", "ce-correlationkey")
#: CloudEvents structured mode: this attribute is ``application/cloudevents+json`` and the data
#: is the event's JSON envelope (see :mod:`engine.cloudevents`).
CONTENT_TYPE_ATTRIBUTE = "content-type"
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
    if cloudevents.is_structured(attributes.get(CONTENT_TYPE_ATTRIBUTE)):
        return _structured(message)
    if cloudevents.is_batch(attributes.get(CONTENT_TYPE_ATTRIBUTE)):
        raise Unusable("malformed", "CloudEvents batched mode is not accepted: publish one event per message")
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
        "correlation_key": _first(attributes, KEY_ATTRIBUTES),
    }


def _structured(message: Message) -> dict[str, Any]:
    """A CloudEvents structured-mode message: the event is the JSON envelope in the data."""
    try:
        envelope = json.loads(message.data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Unusable("malformed", f"the CloudEvent is not JSON: {exc}") from None
    try:
        return cloudevents.from_structured(envelope)
    except InvalidRequest as exc:
        raise Unusable("malformed", exc.message.replace("\n", " ")) from None


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
        return self.judge_many([(message, subscription)])[0]

    def judge_many(
        self,
        items: Sequence[tuple[Message, BridgeSubscription]],
        answer: Callable[[int, Verdict], None] | None = None,
    ) -> list[Verdict]:
        """:meth:`judge` for messages pulled together: their events commit in one transaction.

        Each message is judged on its own first (filtered, unusable); the events of the rest
        are accepted and their triggers' executions started in one store transaction, so a
        batch costs one commit and one dispatch instead of one per message. A batch that
        fails otherwise than by the store being unreachable is retried message by message, so
        one bad event never holds up the others.

        ``answer(index, verdict)`` hears each verdict as soon as it is known: an accepted
        event's right after its commit, before the steps it started are dispatched (a lost
        dispatch is re-sent by the reconciler, a lost routing done by it) so the message can
        be acked sooner. Every verdict is also returned.
        """
        verdicts: dict[int, Verdict] = {}

        def give(index: int, verdict: Verdict) -> None:
            verdicts[index] = verdict
            if answer is not None:
                answer(index, verdict)

        ready: dict[int, InboundEventRecord] = {}
        for index, (message, subscription) in enumerate(items):
            try:
                fields = event_fields(message, subscription, self.max_message_bytes)
                if fields is None:
                    give(index, Verdict("ack", "filtered"))
                    continue
                ready[index] = self.router.prepare(subscription.tenant, **fields)
            except Unusable as exc:
                give(index, Verdict("dead-letter", exc.reason, exc.message))
            except (InvalidRequest, PayloadTooLarge) as exc:
                reason: Reason = "too-large" if isinstance(exc, PayloadTooLarge) else "malformed"
                give(index, Verdict("dead-letter", reason, exc.message))
        if ready:
            self._commit([message for message, _ in items], ready, give, verdicts)
        return [verdicts[index] for index in range(len(items))]

    def _commit(
        self,
        messages: list[Message],
        ready: dict[int, InboundEventRecord],
        give: Callable[[int, Verdict], None],
        verdicts: Mapping[int, Verdict],
    ) -> Exception | None:
        """Accept the events of ``ready`` (message index → event) in one transaction and give their verdicts.

        Returns the error that failed them, if one did.
        """

        def committed(stored: list[Accepted]) -> None:
            for index, accepted in zip(ready, stored, strict=True):
                message = messages[index]
                log.info(
                    "event accepted",
                    message_id=message.message_id,
                    event_id=accepted.event.id,
                    duplicate=accepted.duplicate,
                )
                if self.after_commit is not None:
                    self.after_commit(message)
                self.attempts.forget(message)
                give(index, Verdict("ack", "duplicate" if accepted.duplicate else "accepted"))

        try:
            self.router.publish_events(list(ready.values()), committed)
        except Exception as exc:
            left = {index: event for index, event in ready.items() if index not in verdicts}
            if not left:
                # Committed and answered; what failed after (routing) the reconciler does.
                log.warning("routing accepted events failed; the reconciler routes them", error=str(exc))
            elif len(left) > 1:
                # E.g. a commit too large for the store (Firestore refuses requests over 10 MiB,
                # its emulator over 4 MiB): each event alone may fit.
                log.warning("a batch of events failed; retrying them one by one", size=len(left), error=str(exc))
                self._one_by_one(messages, left, give, verdicts)
            else:
                for index in left:
                    give(index, self._failed(messages[index], exc))
                return exc
        return None

    def _one_by_one(
        self,
        messages: list[Message],
        ready: dict[int, InboundEventRecord],
        give: Callable[[int, Verdict], None],
        verdicts: Mapping[int, Verdict],
    ) -> None:
        """Commit each event alone; once the store is found unreachable, the rest are not tried."""
        outage: StoreUnavailable | None = None
        for index, event in ready.items():
            if outage is not None:
                give(index, self._failed(messages[index], outage))
                continue
            failure = self._commit(messages, {index: event}, give, verdicts)
            if isinstance(failure, StoreUnavailable):
                outage = failure

    def _failed(self, message: Message, exc: Exception) -> Verdict:
        """A transient (the store is down) or unexpected failure: retried, then dead-lettered."""
        attempt = self.attempts.attempt(message)
        kind = "store unavailable" if isinstance(exc, StoreUnavailable) else type(exc).__name__
        log.warning("message failed; it is retried", message_id=message.message_id, attempt=attempt, error=str(exc))
        if attempt >= self.max_attempts:
            return Verdict("dead-letter", "attempts-exhausted", f"{attempt} attempts failed; last: {kind}: {exc}")
        return Verdict("nack", "transient", str(exc))

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


#: Batches judged at once: while one waits for its commit, the next one is being built.
BATCH_WORKERS = 2
#: Message bytes one batch holds at most (a larger message is a batch alone): its events and
#: the inputs mapped from them must fit one commit (Firestore: 10 MiB, its emulator: 4 MiB).
BATCH_MAX_BYTES = 1024 * 1024


@dataclass
class _Pending:
    message: Message
    subscription: BridgeSubscription
    done: threading.Event = field(default_factory=threading.Event)
    verdict: Verdict = field(default_factory=lambda: Verdict("nack", "transient", "not judged"))


class BatchJudge:
    """Gathers the messages the pulling threads hand over into batches for :meth:`Bridge.judge_many`.

    :meth:`judge` blocks its caller until the message's batch committed and returns the
    message's verdict, so every message is still answered (acked) after the commit by the
    thread the streaming pull gave it to, and a graceful stop that waits for those threads
    waits for the batches too. Batches form without waiting: each of ``workers`` threads takes
    every message queued (up to ``max_batch``) when it is free, so a batch grows with the load
    while one arriving alone is judged at once. A batch also holds at most ``max_bytes`` of
    message data.
    """

    def __init__(
        self, bridge: Bridge, *, max_batch: int, max_bytes: int = BATCH_MAX_BYTES, workers: int = BATCH_WORKERS
    ) -> None:
        self.bridge = bridge
        self.max_batch = max_batch
        self.max_bytes = max_bytes
        self._queue: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"bridge-batch-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def judge(self, message: Message, subscription: BridgeSubscription) -> Verdict:
        pending = _Pending(message, subscription)
        self._queue.put(pending)
        pending.done.wait()
        return pending.verdict

    def close(self) -> None:
        """Judge what is queued, then stop the workers."""
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        carried: _Pending | None = None  # the message that did not fit in the last batch
        while True:
            first = carried or self._queue.get()
            carried = None
            if first is None:
                return
            batch, size = [first], len(first.message.data)
            stop = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                if size + len(item.message.data) > self.max_bytes:
                    carried = item
                    break
                batch.append(item)
                size += len(item.message.data)
            self._judge(batch)
            if stop:
                return

    def _judge(self, batch: list[_Pending]) -> None:
        def answer(index: int, verdict: Verdict) -> None:
            batch[index].verdict = verdict
            batch[index].done.set()  # its thread acks now, while the batch's steps are dispatched

        try:
            verdicts = self.bridge.judge_many([(p.message, p.subscription) for p in batch], answer)
        except Exception as exc:  # a bug must not leave the pulling threads waiting for ever
            log.exception("judging a batch failed; its messages are redelivered")
            verdicts = [Verdict("nack", "transient", str(exc)) for _ in batch]
        for pending, verdict in zip(batch, verdicts, strict=True):
            if not pending.done.is_set():  # not answered early
                pending.verdict = verdict
                pending.done.set()
