"""Google Cloud Pub/Sub: the publisher port and the bridge's streaming pull.

Vendor types and exceptions stay in this module: the bridge's decisions are made by
:class:`engine.bridge.Bridge` on plain :class:`~engine.bridge.Message` values, and every
``google.api_core`` error is translated (``NotFound`` for a missing topic, otherwise
``StoreUnavailable``). With ``PUBSUB_EMULATOR_HOST`` set the clients talk to the emulator.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog
from google.api_core import exceptions as gexc
from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
from google.cloud.pubsub_v1.subscriber.scheduler import ThreadScheduler
from google.cloud.pubsub_v1.types import FlowControl

from engine.bridge import BatchJudge, Bridge, Message
from engine.errors import ConveyorError, NotFound, StoreUnavailable
from engine.settings import BridgeSubscription

log = structlog.get_logger("conveyor.pubsub")

#: Longest wait for Pub/Sub to confirm a publish.
PUBLISH_TIMEOUT = 60.0
#: Each lease extension of a message being handled asks for this many seconds (Pub/Sub's
#: minimum): the client keeps extending while the bridge works on the message, and a bridge
#: that died holding messages lets Pub/Sub redeliver them this soon, not after a minute.
LEASE_EXTENSION_SECONDS = 10
#: Threads handing messages over per subscription: each waits for its message's batch to
#: commit, so there are as many as flow control lets the bridge hold (up to this many).
MAX_CALLBACK_THREADS = 256
#: Pub/Sub's bounds of a native dead-letter policy's ``max_delivery_attempts``.
NATIVE_ATTEMPTS_BOUNDS = (5, 100)


def _path(kind: str, project: str, name: str) -> str:
    return name if name.startswith("projects/") else f"projects/{project}/{kind}/{name}"


class PubSubPublisher:
    """The :class:`~engine.ports.Publisher` port on a Pub/Sub ``PublisherClient``."""

    def __init__(self, project: str, client: PublisherClient | None = None) -> None:
        self.project = project
        self.client = client or PublisherClient()

    def topic_path(self, topic: str) -> str:
        return _path("topics", self.project, topic)

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message and wait until Pub/Sub has it; its message id."""
        try:
            future = self.client.publish(self.topic_path(topic), data, **dict(attributes))
            return str(future.result(timeout=PUBLISH_TIMEOUT))
        except gexc.NotFound:
            raise NotFound(f"Pub/Sub topic {topic!r} does not exist") from None
        except (gexc.GoogleAPIError, TimeoutError) as exc:
            raise StoreUnavailable(f"publishing to Pub/Sub topic {topic!r} failed: {exc}") from None


class StreamingBridge:
    """Streaming pull over the configured subscriptions, each message judged by a :class:`Bridge`.

    Flow control caps the messages held at once per subscription. :meth:`run` returns after
    ``stop`` is set and every message in flight was answered (graceful SIGTERM).
    """

    def __init__(
        self,
        bridge: Bridge,
        subscriptions: Sequence[BridgeSubscription],
        *,
        project: str,
        max_messages: int,
        batch_size: int = 1,
        client: SubscriberClient | None = None,
    ) -> None:
        if not subscriptions:
            raise ConveyorError("the bridge has no subscriptions: set CONVEYOR_BRIDGE_SUBSCRIPTIONS")
        self.bridge = bridge
        self.subscriptions = list(subscriptions)
        self.project = project
        self.max_messages = max_messages
        self.batch_size = batch_size
        self.client = client or SubscriberClient()

    def subscription_path(self, subscription: BridgeSubscription) -> str:
        return _path("subscriptions", self.project, subscription.subscription)

    def ensure_subscriptions(self, dead_letter_topic: str, max_attempts: int) -> None:
        """Create each missing subscription that names its ``topic``, with a native dead-letter policy.

        The native policy (``max_attempts + 2`` deliveries) is a backstop for a message that
        crashes the bridge before it can be judged; the bridge dead-letters on its own first.
        """
        low, high = NATIVE_ATTEMPTS_BOUNDS
        policy = {
            "dead_letter_topic": _path("topics", self.project, dead_letter_topic),
            "max_delivery_attempts": min(high, max(low, max_attempts + 2)),
        }
        for subscription in self.subscriptions:
            if subscription.topic is None:
                continue
            request: dict[str, Any] = {
                "name": self.subscription_path(subscription),
                "topic": _path("topics", self.project, subscription.topic),
                "dead_letter_policy": policy,
            }
            try:
                self.client.create_subscription(request=request)
            except gexc.AlreadyExists:
                continue
            except gexc.GoogleAPIError as exc:
                raise StoreUnavailable(f"cannot create subscription {subscription.subscription!r}: {exc}") from None

    def run(self, stop: threading.Event) -> None:
        """Pull until ``stop`` is set, then stop pulling, finish the messages in flight and return.

        Messages pulled together are judged in batches of up to ``batch_size`` (one store
        transaction each, see :class:`~engine.bridge.BatchJudge`); each is acked by its own
        callback once its batch committed. Before pulling, the subscriptions' tenants' event
        triggers are loaded (a store that cannot be reached stops the bridge at once).
        """
        try:
            self.bridge.router.warm_up({sub.tenant for sub in self.subscriptions})
        except ConveyorError:
            self.client.close()
            raise
        flow = FlowControl(max_messages=self.max_messages, max_duration_per_lease_extension=LEASE_EXTENSION_SECONDS)
        judge = BatchJudge(self.bridge, max_batch=self.batch_size)
        futures = [
            self.client.subscribe(
                self.subscription_path(sub),
                callback=self._callback(sub, judge),
                flow_control=flow,
                scheduler=ThreadScheduler(
                    ThreadPoolExecutor(min(MAX_CALLBACK_THREADS, self.max_messages), thread_name_prefix="bridge")
                ),
                await_callbacks_on_shutdown=True,  # stopping waits for the messages in flight
            )
            for sub in self.subscriptions
        ]
        log.info("bridge pulling", subscriptions=[s.subscription for s in self.subscriptions])
        try:
            while not stop.wait(0.5):
                failed = [f for f in futures if f.done()]
                if failed:
                    # A stream that ended on its own (subscription deleted, credentials revoked).
                    error = failed[0].exception()
                    raise StoreUnavailable(f"a subscription stream stopped: {error}")
        finally:
            for future in futures:
                future.cancel()  # stop pulling; result() returns once in-flight callbacks answered
            for future in futures:
                try:
                    future.result(timeout=30)
                except Exception as exc:
                    log.debug("subscription stream ended", error=str(exc))
            judge.close()
            self.client.close()
            log.info("bridge stopped")

    def _callback(self, subscription: BridgeSubscription, judge: BatchJudge) -> Callable[[Any], None]:
        def handle(received: Any) -> None:
            message = Message(
                message_id=str(received.message_id),
                data=bytes(received.data),
                attributes=dict(received.attributes),
                delivery_attempt=received.delivery_attempt,
            )
            verdict = judge.judge(message, subscription)
            if verdict.action == "ack":
                received.ack()
            elif verdict.action == "nack":
                received.nack()
            else:
                try:
                    self.bridge.dead_letter(message, subscription, verdict)
                except ConveyorError as exc:
                    log.warning("dead-lettering failed; the message is redelivered", error=exc.message)
                    received.nack()
                    return
                received.ack()

        return handle
