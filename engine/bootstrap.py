"""Build the engine from settings: the only module that imports adapters.

Embedded defaults (no environment): SQLite under ``.conveyor/``, Celery on kombu's
in-memory transport, live events kept in process. Production: Firestore, Redis broker,
Redis Streams for live events.
"""

from __future__ import annotations

from engine.egress import EgressPolicy
from engine.functions import import_modules
from engine.ports import Dispatcher, EventSink, HttpClient, Resolver, Store
from engine.runner import StepRunner
from engine.service import Service
from engine.settings import Settings
from engine.steptypes.base import StepPorts


def build_store(settings: Settings) -> Store:
    if settings.store == "firestore":
        from engine.adapters.store_firestore import FirestoreStore

        return FirestoreStore(
            project=settings.firestore_project,
            database=settings.firestore_database,
            inline_payload_bytes=settings.inline_payload_bytes,
        )
    from engine.adapters.store_sqlite import SqliteStore

    path = settings.resolved_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path, inline_payload_bytes=settings.inline_payload_bytes)


def build_event_sink(settings: Settings) -> EventSink:
    if settings.redis_url:
        from engine.adapters.events_redis import RedisEventLog

        return RedisEventLog.from_url(settings.redis_url, maxlen=settings.event_stream_maxlen)
    from engine.adapters.events_memory import MemoryEventLog

    return MemoryEventLog.shared(maxlen=settings.event_stream_maxlen)


def build_dispatcher(settings: Settings) -> Dispatcher:
    from engine.adapters.dispatcher_celery import CeleryDispatcher

    return CeleryDispatcher.from_settings(settings)


def build_service(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    dispatcher: Dispatcher | None = None,
    events: EventSink | None = None,
) -> Service:
    """The service wired from settings; any port may be given explicitly instead."""
    settings = settings or Settings()
    import_modules(settings.imports)
    return Service(
        store=store or build_store(settings),
        dispatcher=dispatcher or build_dispatcher(settings),
        events=events or build_event_sink(settings),
        settings=settings,
    )


def build_http_client(settings: Settings, resolver: Resolver | None = None) -> HttpClient:
    """Outbound HTTP under the egress policy of ``settings`` (the http step, agent tools)."""
    from engine.adapters.http_guarded import GuardedHttpClient

    policy = EgressPolicy.from_lists(settings.http_allow_hosts, settings.http_allow_cidrs, settings.http_allow_ports)
    return GuardedHttpClient(
        policy,
        resolver,
        timeout=settings.http_timeout,
        max_response_bytes=settings.http_max_response_bytes,
        max_redirects=settings.http_max_redirects,
    )


def build_step_ports(settings: Settings) -> StepPorts:
    """The typed services step handlers get (see ``StepContext.ports``)."""
    return StepPorts(http=build_http_client(settings))


def build_runner(service: Service) -> StepRunner:
    """A step runner over ``service`` with the step ports its settings describe."""
    return StepRunner(service, ports=build_step_ports(service.settings))
