"""Fixtures for API tests: an app on a real SQLite store, keys for two tenants and every role."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from api import create_app
from api.runtime import StreamOptions
from engine.auth import Role
from engine.ports import EventSink
from engine.service import Service
from engine.settings import Settings
from tests.api.support import HELLO, TENANT_A, TENANT_B, Driver, api_settings, bearer, issue_keys, make_service


@dataclass
class Api:
    """A running app with a client, its service, and keys for every tenant and role."""

    app: FastAPI
    client: TestClient
    service: Service
    keys: dict[tuple[str, Role], str]
    driver: Driver

    def headers(self, role: Role = Role.ADMIN, tenant: str = TENANT_A, **extra: str) -> dict[str, str]:
        return {**bearer(self.keys[(tenant, role)]), **extra}

    def gql(
        self, query: str, variables: dict[str, Any] | None = None, role: Role = Role.ADMIN, tenant: str = TENANT_A
    ) -> Any:
        """POST a GraphQL document; returns the decoded body (asserting HTTP 200)."""
        response = self.client.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=self.headers(role, tenant)
        )
        assert response.status_code == 200, response.text
        return response.json()

    def call(self, method: str, path: str, role: Role = Role.ADMIN, tenant: str = TENANT_A, **kwargs: Any) -> Any:
        headers = {**self.headers(role, tenant), **kwargs.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kwargs)


ApiFactory = Callable[..., Api]

#: Streams that heartbeat and check for gaps quickly, so tests do not wait.
FAST_STREAMS = StreamOptions(
    heartbeat_seconds=0.3, block_ms=100, buffer_size=64, auth_timeout_seconds=1.0, recheck_seconds=0.3
)


@pytest.fixture
def make_api(tmp_path: Path) -> Iterator[ApiFactory]:
    """Build an app with settings overrides; clients are closed at teardown."""
    opened: list[TestClient] = []

    def build(
        settings: Settings | None = None,
        *,
        counting: bool = False,
        streams: StreamOptions | None = None,
        events: EventSink | None = None,
        **overrides: Any,
    ) -> Api:
        settings = settings or api_settings(**overrides)
        directory = tmp_path / f"app{len(opened)}"
        directory.mkdir()
        service = make_service(directory, settings, events, counting=counting)
        app = create_app(settings, service=service, streams=streams or FAST_STREAMS)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        keys = issue_keys(service, [TENANT_A, TENANT_B])
        return Api(app, client, service, keys, Driver(service))

    yield build
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: ApiFactory) -> Api:
    return make_api()


@pytest.fixture
def counted(make_api: ApiFactory) -> Api:
    """An app over a counting store, with ``hello`` applied and the admin key's cache warm
    (store calls counted from now on come from resolvers)."""
    api = make_api(counting=True)
    api.call("PUT", "/v1/workflows/hello", json=HELLO)
    api.gql("{ workflows { items { name } } }")
    return api
