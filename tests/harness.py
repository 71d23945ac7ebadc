"""A deterministic in-process harness for the core: a real store, a manual clock, no broker.

Dispatches are collected and run one by one through the real :class:`StepRunner`;
countdowns advance the manual clock. Integration tests use real Celery instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from engine.bootstrap import build_agent_data, build_decision_stats, build_step_log_store, build_step_ports
from engine.ports import Dispatch, Store
from engine.records import EventRecord
from engine.runner import StepRunner
from engine.service import Service
from engine.settings import Settings


class ManualClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.value = start

    def now(self) -> float:
        return self.value

    def advance(self, seconds: float) -> None:
        self.value += seconds


class CollectingDispatcher:
    def __init__(self) -> None:
        self.sent: list[Dispatch] = []

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        self.sent.extend(dispatches)


class CollectingSink:
    def __init__(self) -> None:
        self.events: list[EventRecord] = []

    def publish(self, events: Sequence[EventRecord]) -> None:
        self.events.extend(events)


class Harness:
    """A Service on SQLite (or Firestore) with a manual clock; ``drain()`` runs every dispatched step."""

    def __init__(
        self, tmp_path: Path, *, firestore_project: str | None = None, step_logs: bool = False, **settings: Any
    ) -> None:
        self.clock = ManualClock()
        self.dispatcher = CollectingDispatcher()
        self.sink = CollectingSink()
        self.settings = Settings(sqlite_path=tmp_path / "core.db", **settings)
        self.store: Store
        if firestore_project is None:
            from engine.adapters.store_sqlite import SqliteStore

            self.store = SqliteStore(self.settings.resolved_sqlite_path())
        else:
            from engine.adapters.store_firestore import FirestoreStore

            self.store = FirestoreStore(project=firestore_project)
        # Step logs are captured only when asked for: their shipping thread outlives the test.
        logs = build_step_log_store(self.settings, self.store) if step_logs else None
        self.decisions = build_decision_stats(self.store)
        self.service = Service(
            self.store,
            self.dispatcher,
            self.sink,
            self.settings,
            self.clock,
            step_logs=logs,
            decisions=self.decisions,
            agent_data=build_agent_data(self.settings, self.store),
        )
        self.runner = StepRunner(self.service, ports=build_step_ports(self.settings, self.store))
        self.reports: list[Any] = []

    def apply(self, definition: dict[str, Any], tenant: str = "t1") -> int:
        return self.service.apply_workflow(tenant, definition).version.version

    def start(self, workflow: str, input: Any = None, tenant: str = "t1", **kwargs: Any) -> str:
        return self.service.start(tenant, workflow, input, **kwargs).execution.id

    def drain(self, limit: int = 10_000) -> None:
        """Run dispatched steps until none are left, honouring countdowns via the clock."""
        for _ in range(limit):
            if not self.dispatcher.sent:
                return
            self.dispatcher.sent.sort(key=lambda d: d.countdown)
            dispatch = self.dispatcher.sent.pop(0)
            if dispatch.countdown:
                self.clock.advance(dispatch.countdown)
                self.dispatcher.sent = [
                    replace(d, countdown=max(0.0, d.countdown - dispatch.countdown)) for d in self.dispatcher.sent
                ]
            self.reports.append(
                self.runner.run(dispatch.tenant, dispatch.execution_id, dispatch.step_key, epoch=dispatch.epoch)
            )
        raise AssertionError("drain did not finish")

    def execution(self, execution_id: str, tenant: str = "t1") -> Any:
        return self.service.get_execution(tenant, execution_id)

    def steps(self, execution_id: str, tenant: str = "t1") -> dict[str, Any]:
        return {s.key: s for s in self.service.list_steps(tenant, execution_id)}

    def agent_messages(self, execution_id: str, step_key: str = "agent", tenant: str = "t1") -> list[Any]:
        """The messages of an ai.agent step's checkpointed thread (embedded SQLite checkpointer)."""
        import asyncio

        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async def read() -> list[Any]:
            path = str(self.settings.resolved_ai_checkpoint_path())
            async with AsyncSqliteSaver.from_conn_string(path) as saver:
                config = {"configurable": {"thread_id": f"{tenant}/{execution_id}/{step_key}"}}
                saved = await saver.aget_tuple(config)  # type: ignore[arg-type]
            assert saved is not None, "the step has no checkpointed thread"
            return list(saved.checkpoint["channel_values"]["messages"])

        return asyncio.run(read())

    def history(self, execution_id: str, tenant: str = "t1") -> list[EventRecord]:
        return self.service.events_after(tenant, execution_id, None)
