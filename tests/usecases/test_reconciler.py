"""The reconciler pass: recovery goes out urgent, a pass is bounded in work and time, a step
whose message the broker still holds is not sent twice, and of two reconcilers running at once
one does each repair (over each real store)."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from engine.errors import StoreUnavailable
from engine.ports import DUE_FIELD
from engine.reconcile import Reconciler
from engine.records import StepRecord
from engine.states import StepStatus

F = "tests.unit.fixtures.corefns"
ONE_STEP = {
    "name": "one",
    "steps": [{"id": "a", "type": "task", "with": {"function": f"{F}.echo", "args": {"value": 1}}}],
}


class Ledger:
    """A message ledger that holds the message of every execution not in ``lost``."""

    def __init__(self) -> None:
        self.lost: set[str] = set()
        self.asked: list[float] = []

    def held(self, steps: Sequence[StepRecord], since: float) -> list[bool]:
        self.asked.append(since)
        return [step.execution_id not in self.lost for step in steps]


def _queued_without_message(h, count: int) -> list[str]:
    h.apply(ONE_STEP)
    ids = [h.start("one") for _ in range(count)]
    h.dispatcher.sent.clear()
    return ids


def test_recovered_steps_are_dispatched_urgent_and_new_steps_are_not(h):
    [execution_id] = _queued_without_message(h, 1)
    h.clock.advance(h.settings.redispatch_after + 1)
    assert h.service.reconcile().redispatched == 1
    [resent] = h.dispatcher.sent
    assert resent.urgent and resent.step_key == "a"
    h.dispatcher.sent.clear()
    claimed = h.service.claim("t1", execution_id, "a")
    assert claimed is not None
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.service.reconcile().expired_leases == 1
    [requeued] = h.dispatcher.sent
    assert requeued.urgent
    h.dispatcher.sent.clear()
    h.start("one")
    assert [d.urgent for d in h.dispatcher.sent] == [False]


def _one_lost_among(h, count: int, lost: int) -> tuple[list[str], Ledger]:
    """``count`` stale QUEUED steps whose messages the broker holds, but for the one at ``lost``."""
    ids = _queued_without_message(h, count)
    ledger = Ledger()
    ledger.lost = {ids[lost]}
    h.service.ledger = ledger
    h.clock.advance(h.settings.redispatch_after + 1)
    return ids, ledger


def test_a_step_whose_message_the_broker_holds_is_not_sent_again(h):
    ids, ledger = _one_lost_among(h, 5, 3)
    report = h.service.reconcile()
    assert (report.redispatched, report.held) == (1, 4)
    assert [d.execution_id for d in h.dispatcher.sent] == [ids[3]]
    assert ledger.asked == [h.clock.now() - h.settings.redispatch_held_after]


def test_the_lost_message_is_found_behind_pages_of_held_ones(make_harness):
    """The scan pages past a backlog of held messages, and goes on in the next pass."""
    h = make_harness(reconcile_batch=2)
    ids, _ = _one_lost_among(h, 7, 6)
    report = h.service.reconcile()
    assert (report.redispatched, report.held) == (1, 6)
    assert [d.execution_id for d in h.dispatcher.sent] == [ids[6]]
    assert h.steps(ids[6])["a"].lease_epoch == 1


def test_one_pass_handles_at_most_a_batch_of_each_kind_and_the_next_goes_on(make_harness):
    h = make_harness(reconcile_batch=2)
    ids = _queued_without_message(h, 5)
    h.clock.advance(h.settings.redispatch_after + 1)
    counts = [h.service.reconcile().redispatched for _ in range(4)]
    assert counts == [2, 2, 1, 0]
    assert sorted(d.execution_id for d in h.dispatcher.sent) == sorted(ids)


def test_a_pass_stops_at_its_time_budget(make_harness):
    h = make_harness(reconcile_pass_seconds=1e-9)
    _queued_without_message(h, 3)
    h.clock.advance(h.settings.redispatch_after + 1)
    report = h.service.reconcile()
    assert not report.complete and report.total == 0


def test_a_pass_stops_when_asked_and_the_next_one_goes_on(make_harness):
    h = make_harness(reconcile_concurrency=1)
    ids = _queued_without_message(h, 3)
    h.clock.advance(h.settings.redispatch_after + 1)
    asked: list[int] = []

    def stop_after_one() -> bool:
        asked.append(1)
        return len(h.dispatcher.sent) >= 1

    report = h.service.reconcile(should_stop=stop_after_one)
    assert (report.redispatched, report.complete) == (1, False)
    report = h.service.reconcile()
    assert (report.redispatched, report.complete) == (2, True)
    assert sorted(d.execution_id for d in h.dispatcher.sent) == sorted(ids)
    assert all(h.steps(e)["a"].status is StepStatus.QUEUED for e in ids)


NAP = {"name": "nap", "steps": [{"id": "nap", "type": "wait", "with": {"duration": "1h"}}]}


class _ListedEarlier:
    """A store whose due lists were taken before another reconciler's pass repaired them:
    what a reconciler running at the same moment as that pass lists."""

    def __init__(self, store, now: float) -> None:
        self._store = store
        self._due = {status: store.due_steps(status, now) for status in DUE_FIELD}

    def due_steps(self, status, before, limit=200, after=None):
        return [] if after is not None else self._due[status]

    def __getattr__(self, name):
        return getattr(self._store, name)


def _second_reconciler(h, **overrides) -> Reconciler:
    """A reconciler of its own (as in another beat) over the harness's store, listing now."""
    service = copy.copy(h.service)
    service.store = _ListedEarlier(h.store, h.clock.now())
    for name, value in overrides.items():
        setattr(service, name, value)
    return Reconciler(service)


def _due_nap(h) -> str:
    h.apply(NAP)
    execution_id = h.start("nap")
    h.drain()
    h.clock.advance(3601)
    return execution_id


def test_two_reconcilers_listing_one_due_timer_wake_it_once(h):
    execution_id = _due_nap(h)
    second = _second_reconciler(h)
    assert h.service.reconcile().timers == 1
    report = second.reconcile()  # listed the timer before the first pass woke it
    assert (report.timers, report.left_to_another) == (0, 1)
    queued = [e for e in h.service.events_after("t1", execution_id, None) if e.status == "QUEUED"]
    assert len(queued) == 1


def test_a_repair_whose_elected_reconciler_failed_is_elected_anew_next_interval(h):
    execution_id = _due_nap(h)

    def crash(use_case):
        raise StoreUnavailable("the elected reconciler lost its store mid-repair")

    assert _second_reconciler(h, transact=crash).reconcile().failed == 1
    report = h.service.reconcile()  # same interval: the marker of the failed one stands
    assert (report.timers, report.left_to_another) == (0, 1)
    h.clock.advance(h.settings.reconcile_interval)
    assert h.service.reconcile().timers == 1
    assert h.steps(execution_id)["nap"].status is not StepStatus.WAITING
