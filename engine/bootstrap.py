"""Build the engine from settings: the only module that imports adapters.

Embedded defaults (no environment): SQLite under ``.conveyor/``, Celery on kombu's
in-memory transport, live events kept in process. Production: Firestore, Redis broker,
Redis Streams for live events.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.ai import AgentOutcome, AgentRequest, Choice, ChoiceRequest
from engine.egress import EgressPolicy
from engine.errors import ConveyorError
from engine.functions import import_modules
from engine.ports import (
    AgentData,
    AgentRuntime,
    DeadLetterLog,
    DecisionStats,
    Dispatcher,
    EventSink,
    HttpClient,
    ModelTelemetry,
    PromptStore,
    Publisher,
    Resolver,
    StepLogStore,
    Store,
    Telemetry,
)
from engine.service import Service
from engine.settings import Settings
from engine.steptypes.base import StepContext, StepPorts

if TYPE_CHECKING:
    from engine.adapters.lease_redis import RedisLease
    from engine.adapters.ledger_redis import RedisMessageLedger
    from engine.adapters.pubsub import StreamingBridge


def build_store(settings: Settings) -> Store:
    if settings.store == "firestore":
        from engine.adapters.store_firestore import FirestoreStore

        return FirestoreStore(
            project=settings.firestore_project,
            database=settings.firestore_database,
            inline_payload_bytes=settings.inline_payload_bytes,
            wire=settings.firestore_wire,
        )
    from engine.adapters.store_sqlite import SqliteStore

    path = settings.resolved_sqlite_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStore(path, inline_payload_bytes=settings.inline_payload_bytes)


def build_step_log_store(settings: Settings, store: Store) -> StepLogStore:
    """Where finished attempts' logs go: the Firestore store's database, or a SQLite file beside the SQLite store's.

    Chosen by the store given (tests and tools pass one whatever the settings say).
    """
    from engine.adapters.store_sqlite import SqliteStore

    client = None if isinstance(store, SqliteStore) else getattr(store, "client", None)
    if client is not None:
        from engine.adapters.logs_firestore import FirestoreStepLogs

        return FirestoreStepLogs(client)
    if settings.store == "firestore":
        raise ConveyorError("step logs on Firestore need the Firestore store's client")
    from engine.adapters.logs_sqlite import SqliteStepLogs

    path = settings.resolved_step_logs_path()
    if settings.step_logs_path is None and isinstance(store, SqliteStore):
        path = Path(store.path).with_name(f"{Path(store.path).stem}-logs.db")  # beside the store actually used
    path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteStepLogs(path)


def build_event_sink(settings: Settings) -> EventSink:
    if settings.redis_url:
        from engine.adapters.events_redis import RedisEventLog

        return RedisEventLog.from_url(settings.redis_url, maxlen=settings.event_stream_maxlen)
    from engine.adapters.events_memory import MemoryEventLog

    return MemoryEventLog.shared(maxlen=settings.event_stream_maxlen)


def build_dead_letter_log(settings: Settings) -> DeadLetterLog:
    """The bridge's recent dead letters: in Redis when there is one (shared with the API), else in memory."""
    from engine.adapters.deadletters import MemoryDeadLetters, RedisDeadLetters

    if settings.redis_url:
        return RedisDeadLetters(settings.redis_url, settings.bridge_dead_letters_kept)
    return MemoryDeadLetters(settings.bridge_dead_letters_kept)


def _redis_broker(settings: Settings) -> str | None:
    url = settings.broker_url
    return url if url and url.startswith(("redis://", "rediss://")) else None


def build_ledger(settings: Settings) -> RedisMessageLedger | None:
    """The ledger of held step messages, on a Redis broker (none on the in-memory transport)."""
    url = _redis_broker(settings)
    if url is None:
        return None
    from engine.adapters.ledger_redis import RedisMessageLedger

    return RedisMessageLedger.from_url(url)


def build_dispatcher(settings: Settings) -> Dispatcher:
    from engine.adapters.dispatcher_celery import CeleryDispatcher

    return CeleryDispatcher.from_settings(settings)


def reconciler_lease(settings: Settings) -> RedisLease | None:
    """The lease a reconciler holds while it runs passes, so two never run at once.

    On ``CONVEYOR_REDIS_URL`` or a Redis broker; ``None`` without Redis (a single embedded
    process). Beats and ``conveyor run --reconcile`` of one deployment (one default queue)
    share it: the holder reconciles, the others stand by.
    """
    candidates = (settings.redis_url, settings.broker_url)
    url = next((u for u in candidates if u and u.startswith(("redis://", "rediss://"))), None)
    if url is None:
        return None
    from engine.adapters.lease_redis import RedisLease

    return RedisLease.from_url(url, reconciler_lease_key(settings))


def reconciler_lease_key(settings: Settings) -> str:
    return f"conveyor:beat:lease:{settings.default_queue}"


def build_telemetry(settings: Settings) -> Telemetry:
    """Prometheus metrics in every process (served by the API's /metrics and ``conveyor worker --metrics-port``)."""
    from engine.adapters.metrics_prometheus import PrometheusTelemetry

    return PrometheusTelemetry()


def configure_tracing(settings: Settings, component: str) -> Any:
    """With ``CONVEYOR_TRACING_ENABLED``: an OpenTelemetry provider for this process, step messages
    traced (``conveyor[otel]``); else None. ``component`` names the service (``conveyor-api``)."""
    if not settings.tracing_enabled:
        return None
    from engine.adapters import tracing

    provider = tracing.tracer_provider(f"conveyor-{component}")
    tracing.instrument_celery(provider)
    return provider


def instrument_api(app: Any, settings: Settings) -> None:
    """Trace the API's requests (and through them the steps they dispatch) when tracing is on."""
    provider = configure_tracing(settings, "api")
    if provider is not None:
        from engine.adapters.tracing import instrument_api as instrument

        instrument(app, provider)


def configure_error_reporting(settings: Settings, component: str) -> bool:
    """With ``CONVEYOR_SENTRY_DSN``: report unhandled errors of this process to Sentry
    (``conveyor[sentry]``; its FastAPI and Celery integrations load automatically)."""
    if not settings.sentry_dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment or settings.profile,
        server_name=component,
        traces_sample_rate=0.0,
    )
    return True


def engine_metrics() -> bytes:
    """The engine's metrics of this process (all pool processes' in multiprocess mode), for /metrics."""
    from engine.adapters.metrics_prometheus import render

    return render()


def serve_worker_metrics(port: int, address: str) -> None:
    """Serve the engine's metrics on ``address:port`` from a worker's main process."""
    from engine.adapters import metrics_prometheus

    metrics_prometheus.serve_worker_metrics(port, address)


def forget_worker_process(pid: int) -> None:
    """A pool process exited: drop its live gauges from the multiprocess metrics."""
    from engine.adapters.metrics_prometheus import process_exited

    process_exited(pid)


def build_service(
    settings: Settings | None = None,
    *,
    store: Store | None = None,
    dispatcher: Dispatcher | None = None,
    events: EventSink | None = None,
    telemetry: Telemetry | None = None,
) -> Service:
    """The service wired from settings; any port may be given explicitly instead."""
    settings = settings or Settings()
    import_modules(settings.imports)
    ledger = build_ledger(settings)
    store = store or build_store(settings)
    return Service(
        store=store,
        dispatcher=dispatcher or build_dispatcher(settings),
        events=events or build_event_sink(settings),
        settings=settings,
        ledger=ledger if dispatcher is None else None,
        telemetry=telemetry or build_telemetry(settings),
        step_logs=build_step_log_store(settings, store),
        decisions=build_decision_stats(store),
        agent_data=build_agent_data(settings, store),
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


class _LazyAgentRuntime:
    """Builds the LangGraph runtime on first use: importing LangChain takes seconds, which a
    worker that never runs an AI step should not pay when its pool processes start."""

    def __init__(self, build: Callable[[], AgentRuntime]) -> None:
        self._build = build
        self._runtime: AgentRuntime | None = None
        self._lock = threading.Lock()

    def _get(self) -> AgentRuntime:
        with self._lock:
            if self._runtime is None:
                self._runtime = self._build()
            return self._runtime

    async def run_agent(self, ctx: StepContext, request: AgentRequest) -> AgentOutcome:
        return await self._get().run_agent(ctx, request)

    async def choose(self, ctx: StepContext, request: ChoiceRequest) -> Choice:
        return await self._get().choose(ctx, request)


def _langgraph_runtime(settings: Settings, store: Store) -> AgentRuntime:
    from engine.adapters.ai_models import ModelRegistry
    from engine.adapters.ai_runtime import LangGraphRuntime, firestore_checkpointer, sqlite_checkpointer

    if settings.store == "firestore":
        from engine.adapters.memory_firestore import FirestoreMemoryStore
        from engine.adapters.store_firestore import FirestoreStore

        assert isinstance(store, FirestoreStore)
        checkpointer = functools.partial(firestore_checkpointer, store.client)
        memory = FirestoreMemoryStore(store.client)
        return LangGraphRuntime(ModelRegistry(), checkpointer, settings.ai_prices, _model_telemetry(), memory)
    from engine.adapters.ai_memory import sqlite_memory

    path = settings.resolved_ai_checkpoint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpointer = functools.partial(sqlite_checkpointer, str(path))
    return LangGraphRuntime(
        ModelRegistry(), checkpointer, settings.ai_prices, _model_telemetry(), sqlite_memory(str(_memory_path(path)))
    )


def _memory_path(checkpoint_path: Path) -> Path:
    """Agents' long-term memory on the embedded store: a file beside the checkpoints."""
    return checkpoint_path.with_name(f"{checkpoint_path.stem}-memory.db")


def build_agent_data(settings: Settings, store: Store) -> AgentData | None:
    """What deletes an execution's agent checkpoints and memory notes, beside the store (as
    the runtime keeps them); ``None`` without the ``conveyor[ai]`` extra (nothing was kept)."""
    if importlib.util.find_spec("langgraph") is None:
        return None
    if settings.store == "firestore":  # chosen as _langgraph_runtime chooses where to keep them
        from engine.adapters.ai_retention import FirestoreAgentData

        return FirestoreAgentData(store.client)  # type: ignore[attr-defined]
    from engine.adapters.ai_retention import SqliteAgentData

    path = settings.resolved_ai_checkpoint_path()
    return SqliteAgentData(path, _memory_path(path))


def _model_telemetry() -> ModelTelemetry:
    from engine.adapters.metrics_prometheus import PrometheusTelemetry

    return PrometheusTelemetry()


def build_agent_runtime(settings: Settings, store: Store) -> AgentRuntime | None:
    """LangGraph for AI steps, or ``None`` when the ``conveyor[ai]`` extra is not installed.

    Checkpoints go to the store's backend: a SQLite file beside the embedded store, or
    Firestore (fenced by each step's lease epoch).
    """
    if importlib.util.find_spec("langchain") is None or importlib.util.find_spec("langgraph") is None:
        return None
    return _LazyAgentRuntime(functools.partial(_langgraph_runtime, settings, store))


def build_publisher(settings: Settings) -> Publisher | None:
    """Pub/Sub publishing, or ``None`` without ``CONVEYOR_PUBSUB_PROJECT``."""
    if settings.pubsub_project is None:
        return None
    from engine.adapters.pubsub import PubSubPublisher

    return PubSubPublisher(settings.pubsub_project)


def _sqlite_backed(store: Store) -> bool:
    """Whether ``store`` is the SQLite store (or wraps it): adapters beside it share its file.

    Chosen by the store given, as the step log store is (tests and tools pass one whatever the
    settings say); a wrapper of the SQLite store (tests count its calls) passes its methods on.
    """
    return callable(getattr(store, "run_write", None))


def build_prompt_store(store: Store) -> PromptStore:
    """The tenants' stored prompt templates, beside the store (same SQLite file or Firestore database)."""
    if _sqlite_backed(store):
        from engine.adapters.prompts_sqlite import SqlitePromptStore

        return SqlitePromptStore(store)  # type: ignore[arg-type]
    from engine.adapters.prompts_firestore import FirestorePromptStore

    return FirestorePromptStore(store.client)  # type: ignore[attr-defined]


def build_decision_stats(store: Store) -> DecisionStats:
    """Bandit counts beside the store (same SQLite file or Firestore database)."""
    if _sqlite_backed(store):
        from engine.adapters.decisions_sqlite import SqliteDecisionStats

        return SqliteDecisionStats(store)  # type: ignore[arg-type]
    from engine.adapters.decisions_firestore import FirestoreDecisionStats

    return FirestoreDecisionStats(store)  # type: ignore[arg-type]


def build_step_ports(settings: Settings, store: Store) -> StepPorts:
    """The services step types use, from settings and the service's store."""
    return StepPorts(
        ai=build_agent_runtime(settings, store),
        decisions=build_decision_stats(store),
        publisher=build_publisher(settings),
        http=build_http_client(settings),
        live=build_event_sink(settings),
        prompts=build_prompt_store(store),
    )


#: Test hook: a bridge started with this set kills itself after committing an event, before
#: acknowledging its message (the crash the bridge's ack-after-commit order is built for).
CRASH_AFTER_COMMIT_ENV = "CONVEYOR_TEST_BRIDGE_CRASH_AFTER_COMMIT"


def build_bridge(settings: Settings, service: Service | None = None) -> StreamingBridge:
    """``conveyor bridge``: streaming pull over the configured subscriptions into the event router."""
    from engine.adapters.pubsub import PubSubPublisher, StreamingBridge
    from engine.bridge import Bridge
    from engine.router import EventRouter

    if settings.pubsub_project is None:
        raise ConveyorError("the bridge needs CONVEYOR_PUBSUB_PROJECT")
    if settings.bridge_dead_letter_topic is None:
        raise ConveyorError("the bridge needs CONVEYOR_BRIDGE_DEAD_LETTER_TOPIC")
    after_commit = None
    if os.environ.get(CRASH_AFTER_COMMIT_ENV):
        after_commit = lambda message: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    bridge = Bridge(
        EventRouter(service or build_service(settings)),
        PubSubPublisher(settings.pubsub_project),
        settings.bridge_dead_letter_topic,
        max_attempts=settings.bridge_max_attempts,
        max_message_bytes=settings.bridge_max_message_bytes,
        after_commit=after_commit,
        dead_letter_log=build_dead_letter_log(settings),
    )
    return StreamingBridge(
        bridge,
        settings.bridge_subscriptions,
        project=settings.pubsub_project,
        max_messages=settings.bridge_max_messages,
        batch_size=settings.bridge_batch_size,
    )
