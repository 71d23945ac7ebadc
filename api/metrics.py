"""Prometheus metrics of the API, in a registry of its own per app.

A registry per app (not the global default) lets tests build many apps in one process.
Labels carry route templates, never raw paths or tenants, so cardinality stays bounded.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from engine.bootstrap import engine_metrics


class Metrics:
    """The API's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "conveyor_api_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "conveyor_api_request_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.starts = Counter(
            "conveyor_api_executions_started_total",
            "Executions started through the API (replays of an idempotency key excluded)",
            registry=self.registry,
        )
        self.streams = Gauge(
            "conveyor_api_open_streams",
            "Open progress streams by transport",
            ["transport"],
            registry=self.registry,
        )
        self.slow_consumers = Counter(
            "conveyor_api_slow_consumers_total",
            "Stream clients disconnected because their buffer filled",
            ["transport"],
            registry=self.registry,
        )

    def render(self) -> bytes:
        """The API's own metrics, then the engine's (executions started, cancelled, ... here)."""
        return generate_latest(self.registry) + engine_metrics()


def route_template(app: ASGIApp, scope: Scope) -> str:
    """The path template the request matched (``/v1/executions/{execution_id}``)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    for candidate in getattr(app, "routes", []):
        match, _ = candidate.matches(scope)
        if match is Match.FULL:
            return str(getattr(candidate, "path", "unmatched"))
    return "unmatched"


class MetricsMiddleware:
    """Counts and times every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics, router: ASGIApp) -> None:
        self.app = app
        self.metrics = metrics
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = route_template(self.router, scope)
            method = scope["method"]
            self.metrics.requests.labels(route, method, str(status)).inc()
            self.metrics.latency.labels(route, method).observe(time.perf_counter() - started)
