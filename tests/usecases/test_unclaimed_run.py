"""A first delivery runs its step before claiming it; the outcome's transaction claims it.

Over each real store: what runs unclaimed and what is claimed first, how many transactions
each way costs, and every way the late claim is refused (another copy recorded first, the
execution was cancelled, the reconciler sent the step again). The history is the same as
the long way's: the claim's RUNNING event, then the outcome's.
"""

from __future__ import annotations

import threading
import time

import pytest

from engine.errors import LeaseLost
from engine.orchestration.steps import Unclaimed
from engine.states import ExecutionStatus, StepStatus
from tests.usecases.test_usecases import task

ONE = {"name": "one", "steps": [task("only", "echo", value="done")]}


class TransactionCount:
    """Counts the store's transactions and its reads outside any transaction."""

    def __init__(self, harness, monkeypatch):
        self.atomic = self.read = 0
        real_atomic, real_read = harness.store.atomic, harness.store.read

        def atomic(fn, **options):
            self.atomic += 1
            return real_atomic(fn, **options)

        def read(fn):
            self.read += 1
            return real_read(fn)

        monkeypatch.setattr(harness.store, "atomic", atomic)
        monkeypatch.setattr(harness.store, "read", read)


def started(h, definition=ONE, payload=None):
    h.apply(definition)
    execution_id = h.start(definition["name"], payload)
    h.dispatcher.sent.clear()
    return execution_id


def fence_of(claimed):
    return Unclaimed(claimed.step.lease_epoch, claimed.step.started_at)


def step_history(h, execution_id, key="only"):
    return [e.status for e in h.history(execution_id) if e.step_key == key]


def test_a_first_delivery_runs_then_claims_and_records_in_one_transaction(h, monkeypatch):
    execution_id = started(h)
    count = TransactionCount(h, monkeypatch)
    report = h.runner.run("t1", execution_id, "only", first_delivery=True)
    assert report.outcome == "succeeded"
    assert (count.read, count.atomic) == (1, 1)
    step = h.steps(execution_id)["only"]
    assert (step.status, step.attempt, step.lease_epoch, step.output) == (StepStatus.SUCCEEDED, 1, 1, "done")
    assert step_history(h, execution_id) == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_a_redelivered_message_is_claimed_before_its_step_runs(h, monkeypatch):
    execution_id = started(h)
    count = TransactionCount(h, monkeypatch)
    assert h.runner.run("t1", execution_id, "only", first_delivery=False).outcome == "succeeded"
    assert (count.read, count.atomic) == (0, 2)
    assert step_history(h, execution_id) == ["QUEUED", "RUNNING", "SUCCEEDED"]


def test_a_zero_unclaimed_run_time_claims_every_step_first(make_harness, monkeypatch):
    h = make_harness(unclaimed_run_seconds=0)
    execution_id = started(h)
    count = TransactionCount(h, monkeypatch)
    assert h.runner.run("t1", execution_id, "only", first_delivery=True).outcome == "succeeded"
    assert (count.read, count.atomic) == (0, 2)


def test_the_peek_foresees_the_claim_without_writing_it(h):
    execution_id = started(h)
    peeked = h.service.peek("t1", execution_id, "only")
    assert (peeked.step.attempt, peeked.step.lease_epoch, peeked.step.started_at) == (1, 1, h.clock.now())
    stored = h.steps(execution_id)["only"]
    assert (stored.status, stored.attempt, stored.lease_epoch) == (StepStatus.QUEUED, 0, 0)
    assert step_history(h, execution_id) == ["QUEUED"]


def test_a_step_claimed_before_is_not_peeked(h):
    execution_id = started(h)
    h.service.claim("t1", execution_id, "only")
    assert h.service.peek("t1", execution_id, "only") is None


def test_a_retry_is_claimed_first_so_its_attempt_counts(h):
    flaky = {"name": "flaky", "steps": [
        {**task("only", "flaky", key="k", failures=1), "retry": {"max_attempts": 3, "initial": "1s"}},
    ]}  # fmt: skip
    execution_id = started(h, flaky)
    assert h.runner.run("t1", execution_id, "only", first_delivery=True).outcome == "failed"
    step = h.steps(execution_id)["only"]
    assert (step.status, step.attempt) == (StepStatus.RETRY_WAIT, 1)
    h.clock.advance(2)
    h.service.reconcile()  # the retry's timer: QUEUED again, attempt 1 spent
    assert h.service.peek("t1", execution_id, "only") is None
    h.drain()
    assert (h.steps(execution_id)["only"].attempt, h.execution(execution_id).status) == (2, ExecutionStatus.SUCCEEDED)


def test_a_step_the_reconciler_sent_again_is_claimed_first(h, monkeypatch):
    execution_id = started(h)
    h.clock.advance(h.settings.redispatch_after + 1)
    assert h.service.reconcile().redispatched == 1
    assert h.steps(execution_id)["only"].lease_epoch == 1
    assert h.service.peek("t1", execution_id, "only") is None
    count = TransactionCount(h, monkeypatch)
    assert h.runner.run("t1", execution_id, "only", first_delivery=True).outcome == "succeeded"
    assert (count.read, count.atomic) == (1, 2)


def test_a_message_nearly_old_enough_to_be_sent_again_is_claimed_first(h):
    execution_id = started(h)
    h.clock.advance(h.settings.redispatch_after * 0.75)
    assert h.service.peek("t1", execution_id, "only") is None


def test_steps_of_an_execution_that_is_not_running_are_not_peeked(h):
    execution_id = started(h)
    h.service.pause("t1", execution_id)
    assert h.service.peek("t1", execution_id, "only") is None


def test_of_two_copies_run_at_once_only_the_first_outcome_is_recorded(h):
    execution_id = started(h)
    first = h.service.peek("t1", execution_id, "only")
    second = h.service.peek("t1", execution_id, "only")
    h.service.complete("t1", execution_id, "only", fence_of(first), "first")
    with pytest.raises(LeaseLost):
        h.service.complete("t1", execution_id, "only", fence_of(second), "second")
    with pytest.raises(LeaseLost):
        h.service.fail("t1", execution_id, "only", fence_of(second), {"type": "Boom"}, retryable=True)
    assert h.steps(execution_id)["only"].output == "first"
    assert step_history(h, execution_id) == ["QUEUED", "RUNNING", "SUCCEEDED"]


def test_a_copy_that_ran_while_another_claimed_the_step_is_refused(h):
    execution_id = started(h)
    peeked = h.service.peek("t1", execution_id, "only")
    h.service.claim("t1", execution_id, "only")  # a redelivered copy, claimed first
    with pytest.raises(LeaseLost):
        h.service.complete("t1", execution_id, "only", fence_of(peeked), "late")
    assert h.steps(execution_id)["only"].status is StepStatus.RUNNING


def test_the_outcome_of_a_step_cancelled_while_it_ran_unclaimed_is_refused(h):
    execution_id = started(h)
    peeked = h.service.peek("t1", execution_id, "only")
    h.service.cancel("t1", execution_id)
    with pytest.raises(LeaseLost):
        h.service.complete("t1", execution_id, "only", fence_of(peeked), "late")
    assert h.steps(execution_id)["only"].status is StepStatus.CANCELLED
    assert "SUCCEEDED" not in step_history(h, execution_id)


def test_a_wait_step_run_unclaimed_is_claimed_and_parked_at_once(h):
    sleepy = {"name": "sleepy", "steps": [{"id": "only", "type": "wait", "with": {"duration": "1h"}}]}
    execution_id = started(h, sleepy)
    assert h.runner.run("t1", execution_id, "only", first_delivery=True).outcome == "waiting"
    step = h.steps(execution_id)["only"]
    assert (step.status, step.attempt) == (StepStatus.WAITING, 1)
    assert step_history(h, execution_id) == ["QUEUED", "RUNNING", "WAITING"]


def test_the_started_time_is_when_the_worker_started_not_when_it_recorded(h):
    execution_id = started(h)
    peeked = h.service.peek("t1", execution_id, "only")
    h.clock.advance(0.5)
    h.service.complete("t1", execution_id, "only", fence_of(peeked), "done")
    step = h.steps(execution_id)["only"]
    assert step.finished_at - step.started_at == pytest.approx(0.5)


def _run_in_background(h, execution_id, key="only"):
    reports = []
    worker = threading.Thread(target=lambda: reports.append(h.runner.run("t1", execution_id, key, first_delivery=True)))
    worker.start()
    return worker, reports


def test_a_step_still_running_after_the_unclaimed_time_is_claimed_while_it_runs(make_harness):
    h = make_harness(unclaimed_run_seconds=0.1)
    execution_id = started(h, {"name": "long", "steps": [task("only", "slow", seconds=1.5)]})
    worker, reports = _run_in_background(h, execution_id)
    deadline = time.monotonic() + 1.2
    while h.steps(execution_id)["only"].status is StepStatus.QUEUED and time.monotonic() < deadline:
        time.sleep(0.02)
    claimed_while_running = h.steps(execution_id)["only"]
    worker.join()
    assert (claimed_while_running.status, claimed_while_running.lease_epoch) == (StepStatus.RUNNING, 1)
    assert [r.outcome for r in reports] == ["succeeded"]
    step = h.steps(execution_id)["only"]
    assert (step.status, step.attempt, step.output) == (StepStatus.SUCCEEDED, 1, "done")
    assert step_history(h, execution_id) == ["QUEUED", "RUNNING", "SUCCEEDED"]


def test_a_step_claimed_while_it_runs_keeps_the_time_it_started(make_harness, monkeypatch):
    """The keeper's late claim must not move the start to the claim's time: a 1.2 s step
    showed 0.1 s in `conveyor executions show` and the console (found from outside)."""
    h = make_harness(unclaimed_run_seconds=0.1)
    execution_id = started(h, {"name": "long", "steps": [task("only", "slow", seconds=0.5)]})
    real_peek = h.service.peek

    def peek_then_time_passes(*args, **kwargs):
        peeked = real_peek(*args, **kwargs)
        h.clock.advance(5.0)  # the step runs 5 s (on the store's clock) before the keeper claims it
        return peeked

    monkeypatch.setattr(h.service, "peek", peek_then_time_passes)
    start = h.clock.now()
    worker, reports = _run_in_background(h, execution_id)
    worker.join()
    assert [r.outcome for r in reports] == ["succeeded"]
    step = h.steps(execution_id)["only"]
    running = [e for e in h.history(execution_id) if e.step_key == "only" and e.status == "RUNNING"]
    assert len(running) == 1 and running[0].at > start  # claimed later, while it ran
    assert step.started_at == start


def test_a_step_that_heartbeats_is_claimed_by_its_first_heartbeat(h, monkeypatch):
    execution_id = started(h, {"name": "beating", "steps": [task("only", "beat_then_return")]})
    count = TransactionCount(h, monkeypatch)
    assert h.runner.run("t1", execution_id, "only", first_delivery=True).outcome == "succeeded"
    assert count.atomic == 2  # the claim the heartbeat made, then the completion
    step = h.steps(execution_id)["only"]
    assert (step.status, step.attempt, step.output) == (StepStatus.SUCCEEDED, 1, 1)


def test_a_step_taken_over_while_it_ran_unclaimed_learns_it_when_the_keeper_claims(make_harness, monkeypatch):
    h = make_harness(unclaimed_run_seconds=0.1)
    execution_id = started(h, {"name": "polite", "steps": [task("only", "wait_for_cancel", seconds=20)]})
    peeked = h.service.peek("t1", execution_id, "only")
    h.service.claim("t1", execution_id, "only")  # a copy of the message, claimed right after this peek
    monkeypatch.setattr(h.service, "peek", lambda *args: peeked)
    started_at = time.monotonic()
    report = h.runner.run("t1", execution_id, "only", first_delivery=True)
    assert report.outcome == "lease-lost"
    assert time.monotonic() - started_at < 10, "the step ran its 20 s: it never learned it was taken over"
    assert h.steps(execution_id)["only"].status is StepStatus.RUNNING  # the other worker's to finish
