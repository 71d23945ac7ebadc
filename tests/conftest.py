"""Shared fixtures: real backends, started or reused, never skipped."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest

from tests.jwks import Jwks
from tests.services import emulator, redis_url


@pytest.fixture(scope="session")
def firestore_emulator() -> Iterator[str]:
    with emulator("emulators firestore", "FIRESTORE_EMULATOR_HOST", []) as address:
        yield address


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[str]:
    with emulator("beta emulators pubsub", "PUBSUB_EMULATOR_HOST", ["--project=conveyor-test"]) as address:
        yield address


@pytest.fixture(scope="session")
def redis_server_url() -> str:
    return redis_url()


@pytest.fixture
def unique_project() -> str:
    """A Firestore project id of its own, so tests never see each other's documents."""
    return f"conveyor-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def info_logging() -> Iterator[None]:
    """Let INFO records through the root logger, as Conveyor's processes do (CONVEYOR_LOG_LEVEL)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    """The test's own OIDC provider: a JWKS on a local port with one key, ``k1`` (no external IdP)."""
    server = Jwks()
    server.add_key("k1")
    yield server
    server.close()


@pytest.fixture
def kombu_without_a_private_name(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """kombu as a future version lacking one private name the ledger's transport uses."""
    from kombu.transport import redis as kombu_redis

    from engine.adapters import broker_redis

    gone = (kombu_redis.Channel, "_gone_in_a_future_kombu", None)
    monkeypatch.setattr(broker_redis, "PRIVATE_NAMES", (*broker_redis.PRIVATE_NAMES, gone))
    broker_redis.ledger_transport_usable.cache_clear()
    yield
    broker_redis.ledger_transport_usable.cache_clear()
