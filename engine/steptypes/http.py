"""``type: http``: one outbound HTTP request under the egress policy (SSRF guard).

The request goes through the worker's :class:`~engine.ports.HttpClient` (see
:mod:`engine.adapters.http_guarded` and :mod:`engine.egress`): internal, loopback,
link-local and metadata destinations are refused before a connection is opened, redirects
are re-checked, and size and time are limited.

Retries come from the step's ``retry:`` policy, but only for idempotent methods (GET, HEAD,
OPTIONS, PUT, DELETE) unless ``retry_non_idempotent: true``: a POST that timed out may have
been applied. Refused destinations and oversized responses are never retried.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal
from urllib.parse import urlencode

from pydantic import Field

from engine.errors import EgressDenied, OutboundRequestFailed, StepFailure
from engine.model import Duration
from engine.ports import HttpRequest, HttpResponse
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Succeeded

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Statuses worth another attempt: the server may answer differently later.
TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpConfig(StepConfig):
    """An HTTP request. ``body`` is sent as JSON unless it is a string (sent as is)."""

    method: Literal["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"] = "GET"
    url: str = Field(min_length=1)
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str | int | float | bool] = Field(default_factory=dict)
    body: Any = None
    timeout: Duration | None = None
    max_response_bytes: int | None = Field(default=None, gt=0)
    follow_redirects: bool = True
    #: A status of 400 or more fails the step (error type ``HttpStatus``); ``false`` returns it.
    fail_on_status: bool = True
    retry_non_idempotent: bool = False


def _encode(config: HttpConfig) -> tuple[bytes | None, dict[str, str]]:
    headers = dict(config.headers)
    if config.body is None:
        return None, headers
    if isinstance(config.body, str):
        return config.body.encode(), headers
    if not any(name.lower() == "content-type" for name in headers):
        headers["Content-Type"] = "application/json"
    return json.dumps(config.body, separators=(",", ":")).encode(), headers


def _decode(response: HttpResponse) -> Any:
    """JSON bodies come back parsed, other text as a string."""
    content_type = next((v for k, v in response.headers.items() if k.lower() == "content-type"), "")
    text = response.body.decode("utf-8", errors="replace")
    if "json" in content_type.lower() and text.strip():
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _with_query(url: str, query: dict[str, str | int | float | bool]) -> str:
    if not query:
        return url
    pairs = {k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in query.items()}
    return f"{url}{'&' if '?' in url else '?'}{urlencode(pairs)}"


class HttpStep(BaseStepType):
    name: ClassVar[str] = "http"
    Config: ClassVar[type[StepConfig]] = HttpConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, HttpConfig)
        client = ctx.ports.require_http()
        body, headers = _encode(config)
        request = HttpRequest(
            method=config.method,
            url=_with_query(config.url, config.query),
            headers=headers,
            body=body,
            timeout=config.timeout,
            max_response_bytes=config.max_response_bytes,
            follow_redirects=config.follow_redirects,
        )
        may_retry = config.method in IDEMPOTENT_METHODS or config.retry_non_idempotent
        try:
            response = await client.send(request)
        except EgressDenied as exc:
            raise StepFailure(exc.message, retryable=False, error_type="EgressDenied") from exc
        except OutboundRequestFailed as exc:
            error_type = "Http" + "".join(part.title() for part in exc.kind.split("-"))
            raise StepFailure(exc.message, retryable=exc.transient and may_retry, error_type=error_type) from exc
        if config.fail_on_status and response.status >= 400:
            raise StepFailure(
                f"{config.method} {response.url} answered {response.status}",
                retryable=response.status in TRANSIENT_STATUSES and may_retry,
                error_type="HttpStatus",
            )
        return Succeeded(
            {
                "status": response.status,
                "headers": response.headers,
                "body": _decode(response),
                "url": response.url,
                "redirects": response.redirects,
            }
        )


register(HttpStep())
