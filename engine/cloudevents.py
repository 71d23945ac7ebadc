"""CloudEvents 1.0 structured mode: one event as a JSON envelope (``application/cloudevents+json``).

``POST /v1/events`` and the Pub/Sub bridge read it beside their own forms (a plain JSON body
with ``type``/``data``/``id``; Pub/Sub attributes, CloudEvents binary mode among them). An
envelope maps to Conveyor's event fields:

========================  ==========================================================
CloudEvents attribute     Conveyor event
========================  ==========================================================
``id`` (required)         event id (the deduplication key)
``type`` (required)       type
``source`` (required)     source
``data``                  data: a JSON object (absent or ``null``: ``{}``)
``correlationkey``        correlation key (an extension attribute; CloudEvents names are
                          lowercase letters and digits only)
========================  ==========================================================

``specversion`` must be ``1.0``. ``datacontenttype``, when given, must be JSON
(``application/json`` or ``…/…+json``): event data is a JSON object, so ``data_base64`` is
refused. The other context attributes (``time``, ``subject``, ``dataschema``, other
extensions) are accepted and not kept. Batched mode (``application/cloudevents-batch+json``)
is refused: send one event per request or message.
"""

from __future__ import annotations

from typing import Any

from engine.errors import InvalidRequest, Problem

#: The media type of one event in structured mode.
STRUCTURED_MEDIA_TYPE = "application/cloudevents+json"
#: The media type of batched mode, which Conveyor refuses.
BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"
#: The extension attribute carrying the correlation key.
CORRELATION_ATTRIBUTE = "correlationkey"

_REQUIRED = ("id", "type", "source")


def is_structured(media_type: str | None) -> bool:
    """Whether a content type (parameters allowed) names structured mode."""
    return _bare(media_type) == STRUCTURED_MEDIA_TYPE


def is_batch(media_type: str | None) -> bool:
    return _bare(media_type) == BATCH_MEDIA_TYPE


def _bare(media_type: str | None) -> str:
    return (media_type or "").split(";", 1)[0].strip().lower()


def from_structured(envelope: Any) -> dict[str, Any]:
    """The event an envelope carries, as keyword arguments of ``EventRouter.publish``.

    ``InvalidRequest`` (with every problem found) when it is not a CloudEvent Conveyor takes.
    """
    if not isinstance(envelope, dict):
        raise InvalidRequest("a structured-mode CloudEvent is a JSON object")
    problems: list[Problem] = []
    if envelope.get("specversion") != "1.0":
        problems.append(Problem("specversion", 'must be "1.0"'))
    for name in _REQUIRED:
        value = envelope.get(name)
        if not isinstance(value, str) or not value:
            problems.append(Problem(name, "required: a non-empty string"))
    content_type = envelope.get("datacontenttype")
    if content_type is not None and not _is_json(content_type):
        problems.append(Problem("datacontenttype", "must be JSON (application/json or a +json type)"))
    if "data_base64" in envelope:
        problems.append(Problem("data_base64", "binary data is not accepted: event data is a JSON object"))
    data = envelope.get("data")
    if data is not None and not isinstance(data, dict):
        problems.append(Problem("data", "must be a JSON object"))
    key = envelope.get(CORRELATION_ATTRIBUTE)
    if key is not None and (not isinstance(key, str) or not key):
        problems.append(Problem(CORRELATION_ATTRIBUTE, "must be a non-empty string"))
    if problems:
        raise InvalidRequest("the CloudEvent cannot be accepted", problems)
    return {
        "type": envelope["type"],
        "data": data or {},
        "event_id": envelope["id"],
        "source": envelope["source"],
        "correlation_key": key,
    }


def _is_json(content_type: Any) -> bool:
    bare = _bare(content_type) if isinstance(content_type, str) else ""
    return bare == "application/json" or (bare.startswith("application/") and bare.endswith("+json"))
