"""No lost wake-ups, no double resumes: events published at random moments around the wait.

Real threads, real stores, real clock, no reconciler: every wake-up must come from the two
halves of the protocol (the waiter's event-log scan after its WAITING commit, and the router's
waiter lookup after its event commit). Each execution gets two matching events, published
from other threads at random moments around the one its step starts waiting.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from engine.ports import Dispatch, Store
from engine.router import EventRouter
from engine.runner import StepRunner
from engine.service import Service
from engine.settings import Settings
from engine.states import ExecutionStatus, StepStatus
from tests.harness import CollectingSink

TENANT = "race"
WORKFLOW = {
    "name": "race",
    "steps": [
        {"id": "first", "type": "transform", "with": {"value": "${input.key}"}},
        {
            "id": "paid",
            "type": "wait_for_event",
            "needs": ["first"],
            "with": {"type": "payment.settled", "correlation_key": "input.key", "timeout": "1h"},
        },
    ],
}


class ThreadedDispatcher:
    """Runs each dispatched step on a worker thread after a random pause (jitter around the wait)."""

    def __init__(self, pool: ThreadPoolExecutor, max_jitter: float) -> None:
        self.pool = pool
        self.max_jitter = max_jitter
        self.runner: StepRunner | None = None

    def dispatch(self, dispatches: Sequence[Dispatch]) -> None:
        for dispatch in dispatches:
            self.pool.submit(self._run, dispatch)

    def _run(self, dispatch: Dispatch) -> None:
        time.sleep(dispatch.countdown + random.uniform(0, self.max_jitter))
        assert self.runner is not None
        self.runner.run(dispatch.tenant, dispatch.execution_id, dispatch.step_key, first_delivery=True)


def _race(store: Store, tmp_path: Path, executions: int, max_jitter: float) -> None:
    settings = Settings(sqlite_path=tmp_path / "race.db", lease_seconds=600, redispatch_after=600)
    with ThreadPoolExecutor(8) as workers, ThreadPoolExecutor(8) as publishers:
        dispatcher = ThreadedDispatcher(workers, max_jitter)
        service = Service(store, dispatcher, CollectingSink(), settings)
        dispatcher.runner = StepRunner(service)
        router = EventRouter(service)
        service.apply_workflow(TENANT, WORKFLOW)
        errors: list[BaseException] = []

        def publish(key: str, n: int) -> None:
            time.sleep(random.uniform(0, 2 * max_jitter))
            try:
                router.publish(
                    TENANT, type="payment.settled", correlation_key=key, event_id=f"{key}-{n}", data={"n": n}
                )
            except BaseException as exc:
                errors.append(exc)

        ids = []
        for number in range(executions):
            key = f"order-{number}"
            ids.append(service.start(TENANT, "race", {"key": key}).execution.id)
            publishers.submit(publish, key, 1)
            publishers.submit(publish, key, 2)
        publishers.shutdown(wait=True)
        deadline = time.monotonic() + 120
        waiting = set(ids)
        while waiting and time.monotonic() < deadline:
            waiting = {i for i in waiting if store.get_execution(TENANT, i).status is ExecutionStatus.RUNNING}  # type: ignore[union-attr]
            time.sleep(0.2)
    assert errors == []
    lost = [i for i in ids if store.get_execution(TENANT, i).status is not ExecutionStatus.SUCCEEDED]  # type: ignore[union-attr]
    assert lost == [], f"{len(lost)} lost wake-ups"
    resumes: Counter[str] = Counter()
    for execution_id in ids:
        events = service.events_after(TENANT, execution_id, None)
        resumes[execution_id] = sum(1 for e in events if e.step_key == "paid" and e.status == StepStatus.SUCCEEDED)
        delivered = {s.key: s for s in store.list_steps(TENANT, execution_id)}["paid"].wait["delivered"]  # type: ignore[index]
        assert delivered["kind"] == "event"
    assert set(resumes.values()) == {1}, "a step was resumed twice"


def test_hundreds_of_racing_events_on_sqlite_lose_no_wake_up_and_resume_once(tmp_path: Path) -> None:
    from engine.adapters.store_sqlite import SqliteStore

    store = SqliteStore(tmp_path / "race.db")
    try:
        _race(store, tmp_path, executions=200, max_jitter=0.02)
    finally:
        store.close()


@pytest.mark.usefixtures("firestore_emulator")
def test_racing_events_on_firestore_lose_no_wake_up_and_resume_once(tmp_path: Path, unique_project: str) -> None:
    from engine.adapters.store_firestore import FirestoreStore

    store = FirestoreStore(project=unique_project)
    try:
        _race(store, tmp_path, executions=40, max_jitter=0.05)
    finally:
        store.close()
