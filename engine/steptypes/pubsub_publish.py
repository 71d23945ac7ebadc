"""``type: pubsub.publish``: publish one message to a Pub/Sub topic from a workflow.

``data`` (any JSON value, templates rendered) becomes the message body as JSON; string
``attributes`` travel as message attributes. Publishing is idempotent for consumers: every
message carries the step's idempotency key (stable across retries and redeliveries) as the
``idempotency_key`` attribute and, unless given, as ``event_id``, the attribute the
Conveyor bridge deduplicates on, so a step retried after a publish that did go through
starts nothing twice downstream. The output is ``{"message_id", "topic"}``.

The publisher is the ``Publisher`` port of :class:`~engine.steptypes.base.StepPorts`, built
by the composition root from ``CONVEYOR_PUBSUB_PROJECT``; without it the step fails at once.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from pydantic import Field

from engine import payloads
from engine.errors import NotFound, StepFailure
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded

#: Attribute carrying the step's idempotency key.
IDEMPOTENCY_ATTRIBUTE = "idempotency_key"


class PubSubPublishConfig(StepConfig):
    topic: str = Field(min_length=1, max_length=255)
    data: Any = None
    attributes: dict[str, str] = Field(default_factory=dict)


class PubSubPublishStep(BaseStepType):
    name: ClassVar[str] = "pubsub.publish"
    Config: ClassVar[type[StepConfig]] = PubSubPublishConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, PubSubPublishConfig)
        publisher = ctx.ports.publisher
        if publisher is None:
            raise StepFailure(
                "pubsub.publish needs Pub/Sub: set CONVEYOR_PUBSUB_PROJECT on the workers",
                retryable=False,
                error_type="NotConfigured",
            )
        attributes = {"event_id": ctx.idempotency_key, **config.attributes, IDEMPOTENCY_ATTRIBUTE: ctx.idempotency_key}
        body = payloads.to_json(config.data).encode()
        try:
            message_id = await asyncio.to_thread(publisher.publish, config.topic, body, attributes)
        except NotFound as exc:
            raise StepFailure(exc.message, retryable=False, error_type="TopicNotFound") from None
        return Succeeded({"message_id": message_id, "topic": config.topic})


register(PubSubPublishStep())
