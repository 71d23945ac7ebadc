"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import console, problems
from api.bodylimit import BodySizeLimit
from api.graphql.schema import graphql_router
from api.hosts import HostAllowList
from api.metrics import Metrics, MetricsMiddleware
from api.routes import (
    approval_links,
    bulk,
    decisions,
    events,
    executions,
    health,
    keys,
    prompts,
    session,
    triggers,
    workflows,
)
from api.routes import streams as stream_routes
from api.runtime import Runtime, StreamOptions
from engine.bootstrap import configure_error_reporting, instrument_api
from engine.service import Service
from engine.settings import Settings

DESCRIPTION = """
Conveyor's API: workflows, executions, triggers, events and API keys under `/v1`, GraphQL at
`/graphql`, live progress at `/v1/executions/{id}/events` (WebSocket and SSE).

Authenticate with `Authorization: Bearer <API key or OIDC token>`. Errors are RFC 9457
problem documents (`application/problem#json`).
""".replace("#", "+")


def create_app(
    settings: Settings | None = None,
    *,
    service: Service | None = None,
    streams: StreamOptions | None = None,
) -> FastAPI:
    """Build the API.

    The lifespan builds the engine from ``settings`` (``engine.bootstrap.build_service``)
    unless a ``service`` is given, which tests use to inject their own ports.
    """
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        if service is None:
            from engine.bootstrap import build_service

            built = build_service(settings)
        else:
            built = service
        app.state.runtime = Runtime.build(settings, built, metrics, streams=streams)
        try:
            yield
        finally:
            # The Redis live log keeps one asyncio client per event loop: close this loop's.
            aclose = getattr(built.events, "aclose", None)
            if aclose is not None:
                await aclose()
            if owned:
                built.store.close()

    app = FastAPI(
        title="Conveyor",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
    )
    problems.install(app)
    # bulk before executions: /v1/executions/bulk/cancel is not the cancel route of an execution "bulk".
    modules = (
        workflows,
        prompts,
        bulk,
        executions,
        approval_links,
        decisions,
        stream_routes,
        triggers,
        events,
        keys,
        session,
        health,
    )
    for module in modules:
        app.include_router(module.router)
    app.include_router(graphql_router(settings))
    console.install(app)
    problems.document_openapi(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics, router=app.router)
    app.add_middleware(HostAllowList, settings=settings)
    configure_error_reporting(settings, "conveyor-api")
    instrument_api(app, settings)
    return app
