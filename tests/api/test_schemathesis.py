"""Schemathesis against the app's own OpenAPI document, in process (ASGI), authenticated.

Every operation gets a bounded number of generated requests; no answer may be a 5xx, and
every answer must match the documented status codes, content types and schemas.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case
from schemathesis.checks import positive_data_acceptance

from api import create_app
from engine.auth import Role
from tests.api.conftest import FAST_STREAMS
from tests.api.support import HELLO, TENANT_A, Driver, api_settings, bearer, issue_keys, make_service

APP_SETTINGS = api_settings(max_request_bytes=256 * 1024)
app = create_app(APP_SETTINGS, streams=FAST_STREAMS)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)

MAX_EXAMPLES = 25


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serve the module's app on a real store with some tenant-A data; yields an admin key."""
    from fastapi.testclient import TestClient

    directory: Path = tmp_path_factory.mktemp("schemathesis")
    service = make_service(directory, APP_SETTINGS)
    app.router.lifespan_context = _lifespan_with(service)
    with TestClient(app) as client:
        keys = issue_keys(service, [TENANT_A])
        admin = keys[(TENANT_A, Role.ADMIN)]
        client.put("/v1/workflows/hello", json=HELLO, headers=bearer(admin))
        client.post("/v1/executions", json={"workflow": "hello", "input": {"who": "st"}}, headers=bearer(admin))
        Driver(service).run_all()
        yield admin


def _lifespan_with(service):  # type: ignore[no-untyped-def]
    from contextlib import asynccontextmanager

    from api.metrics import Metrics
    from api.runtime import Runtime

    @asynccontextmanager
    async def lifespan(application):  # type: ignore[no-untyped-def]
        application.state.runtime = Runtime.build(APP_SETTINGS, service, Metrics(), streams=FAST_STREAMS)
        yield

    return lifespan


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_schema(case: Case, token: str) -> None:
    # "Schema-valid request rejected" does not apply to this API: a schema cannot express that
    # a definition is acyclic, that an input matches the workflow's own input schema, that a
    # CEL expression compiles or that a cursor was issued by the server; those are 422s by
    # design. Every other check (no 5xx, documented statuses, content types, response schemas,
    # Allow headers, auth) applies to every generated request.
    case.call_and_validate(headers=bearer(token), excluded_checks=[positive_data_acceptance])
