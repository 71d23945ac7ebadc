"""The objects one API process works with, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.auth import RECHECK_SECONDS, Authenticator
from api.metrics import Metrics
from api.ratelimit import RateLimiter
from engine.bootstrap import build_dead_letter_log, build_prompt_store
from engine.keys import ApiKeys
from engine.ports import DeadLetterLog
from engine.prompts import PromptLibrary
from engine.router import EventRouter
from engine.service import Service
from engine.settings import Settings


@dataclass(frozen=True)
class StreamOptions:
    """Knobs of the progress streams (WebSocket, SSE, GraphQL subscription)."""

    heartbeat_seconds: float = 15.0
    #: Messages queued for one client before it counts as too slow and is disconnected.
    buffer_size: int = 256
    #: How long one read of the live event log blocks before the stream checks in.
    block_ms: int = 5000
    #: A resume cursor more than this many events behind gets a fresh snapshot instead of a
    #: replay (the live log keeps this many per execution: ``settings.event_stream_maxlen``).
    max_replay: int = 10_000
    #: How long a WebSocket client may take to send its auth message.
    auth_timeout_seconds: float = 10.0
    #: How often a stream opened with an API key checks that the key was not revoked.
    recheck_seconds: float = RECHECK_SECONDS


@dataclass
class Runtime:
    """Everything a request handler needs besides the request."""

    settings: Settings
    service: Service
    keys: ApiKeys
    auth: Authenticator
    limiter: RateLimiter
    metrics: Metrics
    router: EventRouter
    prompts: PromptLibrary
    dead_letters: DeadLetterLog
    streams: StreamOptions = field(default_factory=StreamOptions)

    @classmethod
    def build(
        cls,
        settings: Settings,
        service: Service,
        metrics: Metrics,
        *,
        streams: StreamOptions | None = None,
    ) -> Runtime:
        keys = ApiKeys(service.store, service.clock)
        return cls(
            settings=settings,
            service=service,
            keys=keys,
            auth=Authenticator.from_settings(settings, keys),
            limiter=RateLimiter(settings.rate_limit, settings.tenant_rate_limit, redis_url=settings.redis_url),
            metrics=metrics,
            router=EventRouter(service),
            prompts=PromptLibrary(build_prompt_store(service.store), service.clock),
            dead_letters=build_dead_letter_log(settings),
            streams=streams
            or StreamOptions(
                heartbeat_seconds=settings.stream_heartbeat_seconds, max_replay=settings.event_stream_maxlen
            ),
        )
