"""OpenTelemetry tracing (the ``conveyor[otel]`` extra): an API request, the step messages it
dispatches and the steps that run from them form one trace.

FastAPI's instrumentation opens a span per request; Celery's injects the current context into
each step message's headers when it is published and continues it when a worker runs the task,
so a step's run (and the messages its completion dispatches) are children of the request that
started the execution. Spans go to the OTLP exporter configured by the standard ``OTEL_*``
variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ...), or to a given exporter (tests).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter


def tracer_provider(service_name: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider for one process: batches to OTLP, or hands each span to ``exporter`` at once."""
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def instrument_celery(provider: TracerProvider) -> None:
    """Trace step messages (publish and run) of every Celery app in this process."""
    CeleryInstrumentor().instrument(tracer_provider=provider)  # type: ignore[no-untyped-call]


def uninstrument_celery() -> None:
    CeleryInstrumentor().uninstrument()  # type: ignore[no-untyped-call]


def instrument_api(app: Any, provider: TracerProvider) -> None:
    """A server span per request of the FastAPI ``app``; /healthz, /readyz and /metrics are left out."""
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls="healthz,readyz,metrics")
