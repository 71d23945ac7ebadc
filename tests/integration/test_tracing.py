"""OpenTelemetry: the API request that starts an execution, the step messages it dispatches and
the steps a real Celery worker runs from them are one trace (spans in an in-memory exporter)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api import create_app
from engine.adapters import tracing
from engine.auth import Role
from engine.bootstrap import configure_tracing
from engine.settings import Settings
from tests.api.support import bearer, issue_keys
from tests.integration.conftest import TENANT

pytestmark = pytest.mark.backend

DEFINITION: dict[str, Any] = {
    "name": "traced",
    "steps": [
        {"id": "a", "type": "transform", "with": {"value": 1}},
        {"id": "b", "type": "transform", "needs": ["a"], "with": {"value": 2}},
        {"id": "c", "type": "transform", "needs": ["a"], "with": {"value": 3}},
    ],
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = tracing.tracer_provider("conveyor-test", exporter)
    tracing.instrument_celery(provider)
    exporter.provider = provider  # type: ignore[attr-defined]
    try:
        yield exporter
    finally:
        tracing.uninstrument_celery()
        provider.shutdown()


def test_a_request_and_the_steps_it_starts_are_one_trace(make_world: Any, spans: InMemorySpanExporter) -> None:
    world = make_world()
    world.apply(DEFINITION)
    key = issue_keys(world.service, [TENANT])[(TENANT, Role.OPERATOR)]
    app = create_app(world.settings, service=world.service)
    tracing.instrument_api(app, spans.provider)  # type: ignore[attr-defined]
    with world.worker(), TestClient(app) as client:
        response = client.post("/v1/executions", json={"workflow": "traced"}, headers=bearer(key))
        assert response.status_code == 201, response.text
        assert world.wait(response.json()["id"]).status.value == "SUCCEEDED"

    finished = spans.get_finished_spans()
    (request,) = [s for s in finished if s.name == "POST /v1/executions" and s.kind.name == "SERVER"]
    trace_id = request.context.trace_id
    publishes = [s for s in finished if s.name == "apply_async/conveyor.run_step"]
    runs = [s for s in finished if s.name == "run/conveyor.run_step"]
    assert {s.context.trace_id for s in publishes + runs} == {trace_id}, "one trace from the request to every step"
    assert len(runs) >= 2, "the first step and the ones its completion dispatched ran in the worker"
    by_id = {s.context.span_id: s for s in finished}

    def ancestors(span: Any) -> list[str]:
        names = []
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            names.append(span.name)
        return names

    for run in runs:
        assert "POST /v1/executions" in ancestors(run), [run.name, *ancestors(run)]


def test_tracing_is_off_unless_enabled() -> None:
    assert configure_tracing(Settings(_env_file=None), "worker") is None  # type: ignore[call-arg]
