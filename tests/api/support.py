"""Test doubles and helpers for API tests: a real SQLite store, a collecting dispatcher,
an in-process live event log, and a driver that runs dispatched steps in process."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.adapters.events_memory import MemoryEventLog
from engine.adapters.logs_sqlite import SqliteStepLogs
from engine.adapters.store_sqlite import SqliteStore
from engine.auth import Role
from engine.bootstrap import build_decision_stats, build_step_ports
from engine.keys import ApiKeys
from engine.ports import Dispatch, EventSink, Store
from engine.runner import StepRunner
from engine.service import Service
from engine.settings import Settings

TENANT_A = "acme"
TENANT_B = "globex"

HELLO: dict[str, Any] = {
    "name": "hello",
    "inputs": {"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]},
    "steps": [
        {"id": "greet", "type": "transform", "with": {"value": "${'hello ' + input.who}"}},
        {"id": "shout", "type": "transform", "needs": ["greet"], "with": {"value": "${steps.greet.output + '!'}"}},
    ],
    "outputs": {"message": "steps.shout.output"},
}

#: A step that waits (for an hour, or until signalled).
WAITER: dict[str, Any] = {
    "name": "waiter",
    "steps": [
        {"id": "hold", "type": "wait", "with": {"duration": "1h"}},
        {"id": "after", "type": "transform", "needs": ["hold"], "with": {"value": "${steps.hold.output}"}},
    ],
}


class CollectingDispatcher:
    """A Dispatcher that keeps messages instead of sending them (the API never runs steps)."""

    def __init__(self) -> None:
        self.sent: list[Dispatch] = []
        self._lock = threading.Lock()

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        with self._lock:
            self.sent.extend(dispatches)

    def take(self) -> list[Dispatch]:
        with self._lock:
            taken, self.sent = self.sent, []
        return taken


def api_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "auth_enabled": True,
        "redis_url": None,
        "broker_url": None,
        "rate_limit": "100000/minute",
        "tenant_rate_limit": "1000000/minute",
        "max_request_bytes": 64 * 1024,
        "allowed_origins": ["http://allowed.example"],
        "oidc_jwks_url": None,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


class CountingStore:
    """Wraps a store and counts calls per port method (to prove batching)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if not callable(target):
            return target

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return target(*args, **kwargs)

        return counted


def make_service(
    tmp_path: Path, settings: Settings, events: EventSink | None = None, *, counting: bool = False
) -> Service:
    store: Store = SqliteStore(tmp_path / "conveyor.db")
    return Service(
        CountingStore(store) if counting else store,  # type: ignore[arg-type]
        CollectingDispatcher(),
        events or MemoryEventLog(),
        settings,
        step_logs=SqliteStepLogs(tmp_path / "conveyor-logs.db"),
        decisions=build_decision_stats(store),
    )


class Driver:
    """Runs dispatched steps in process, the way a worker would."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.runner = StepRunner(service, ports=build_step_ports(service.settings, service.store))
        dispatcher = service.dispatcher
        assert isinstance(dispatcher, CollectingDispatcher)
        self.dispatcher = dispatcher

    def run_once(self) -> int:
        """Run every step dispatched so far; return how many messages were handled."""
        pending = self.dispatcher.take()
        for item in pending:
            self.runner.run(item.tenant, item.execution_id, item.step_key)
        return len(pending)

    def run_all(self, limit: int = 100) -> None:
        for _ in range(limit):
            if not self.run_once():
                return


def issue_keys(service: Service, tenants: Sequence[str]) -> dict[tuple[str, Role], str]:
    """One key per (tenant, role)."""
    keys = ApiKeys(service.store, service.clock)
    return {(tenant, role): keys.create(tenant, role, f"{tenant}-{role}").token for tenant in tenants for role in Role}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
