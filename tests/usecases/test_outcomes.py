"""Every bad outcome of a step is recorded as itself, at once, under the step's retry policy.

Over each real store (SQLite, Firestore emulator) with the manual-clock harness.
"""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from engine.errors import PayloadInvalid
from engine.states import ExecutionStatus, StepStatus
from tests.unit.fixtures import outcomefns

F = "tests.unit.fixtures.outcomefns"


def task(step_id, function, retry=None, **args):
    step = {"id": step_id, "type": "task", "with": {"function": f"{F}.{function}", "args": args}}
    return {**step, "retry": retry} if retry else step


def run_one(h, step, input=None):
    h.apply({"name": "one", "steps": [step]})
    execution_id = h.start("one", input)
    h.drain()
    return h.steps(execution_id)[step["id"]], h.execution(execution_id)


def test_a_datetime_output_fails_the_attempt_at_once(h):
    step, execution = run_one(h, task("s", "returns_datetime"))
    assert (step.status, step.attempt) == (StepStatus.FAILED, 1)
    assert step.error["type"] == "OutputNotSerializable"
    assert step.error["message"] == (
        "output.when is a datetime, which is not JSON (return strings, numbers, lists and objects)"
    )
    assert execution.status is ExecutionStatus.FAILED


def test_an_unserializable_output_is_retried_per_the_policy(h):
    step, _ = run_one(h, task("s", "returns_datetime", retry={"max_attempts": 2, "initial": "10s"}))
    assert (step.status, step.attempt) == (StepStatus.RETRY_WAIT, 1)
    assert step.error["type"] == "OutputNotSerializable"


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_infinity_outputs_fail_instead_of_becoming_null(h, value):
    step, _ = run_one(h, task("s", "returns_float", value=value))
    assert (step.status, step.attempt) == (StepStatus.FAILED, 1)
    assert step.error["type"] == "OutputNotSerializable"
    assert step.error["message"].startswith(f"output.values[1] is {float(value)}, which JSON cannot represent")
    assert step.output is None


def test_an_exception_whose_str_raises_is_recorded_with_its_type(h):
    step, _ = run_one(h, task("s", "raises_unprintable"))
    assert (step.status, step.attempt) == (StepStatus.FAILED, 1)
    assert step.error["type"] == "UnprintableError"
    assert step.error["message"] == "<str() of the UnprintableError raised ValueError>"


def test_a_user_timeout_error_keeps_its_type_without_a_step_timeout(h):
    step, _ = run_one(h, task("s", "raises_socket_timeout"))
    assert (step.status, step.attempt) == (StepStatus.FAILED, 1)
    assert step.error["type"] == "TimeoutError"
    assert step.error["message"] == "the upstream server did not answer"


def test_a_user_timeout_error_keeps_its_type_under_a_step_timeout_and_honours_non_retryable(h):
    retry = {"max_attempts": 3, "non_retryable": ["TimeoutError"]}
    step, _ = run_one(h, {**task("s", "raises_socket_timeout", retry=retry), "timeout": "5s"})
    assert (step.status, step.attempt) == (StepStatus.FAILED, 1)
    assert step.error["type"] == "TimeoutError"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_infinity_inputs_are_refused_at_start(h, bad):
    h.apply({"name": "in", "steps": [task("s", "sleeps", seconds=0)]})
    with pytest.raises(PayloadInvalid, match=r"execution input\.x\[0\] is (nan|inf), which JSON cannot represent"):
        h.start("in", {"x": [bad]})
    assert h.service.list_executions("t1").items == []


def run_in_background(h, step, reports):
    """Start an execution of ``step`` on a worker thread; returns once the step is RUNNING."""
    h.apply({"name": "long", "steps": [step]})
    execution_id = h.start("long")
    h.dispatcher.sent.clear()
    worker = threading.Thread(target=lambda: reports.append(h.runner.run("t1", execution_id, step["id"])))
    worker.start()
    deadline = time.monotonic() + 10
    while h.steps(execution_id)[step["id"]].status is not StepStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    return execution_id, worker


def test_a_cancel_stops_waiting_for_a_sync_step_within_a_second(h):
    """The default lease (30 s) would first notice at a heartbeat, 10 s later."""
    reports = []
    execution_id, worker = run_in_background(h, task("s", "sleeps", seconds=30), reports)
    cancelled_at = time.monotonic()
    h.service.cancel("t1", execution_id)
    worker.join(timeout=10)
    assert reports and reports[0].outcome == "lease-lost"
    assert time.monotonic() - cancelled_at < 1.5
    assert h.steps(execution_id)["s"].status is StepStatus.CANCELLED


def test_ctx_cancelled_turns_true_within_a_second_of_a_cancel(h):
    execution_id, worker = run_in_background(h, task("s", "until_cancelled", label=h.settings.sqlite_path.name), [])
    cancelled_at = time.time()
    h.service.cancel("t1", execution_id)
    worker.join(timeout=10)
    label = h.settings.sqlite_path.name
    while label not in outcomefns.noticed and time.time() < cancelled_at + 10:
        time.sleep(0.01)  # the runner stopped waiting; the step's thread notices on its next poll
    assert outcomefns.noticed.pop(label) - cancelled_at < 1.0


def test_a_retry_message_that_arrives_early_does_not_start_the_retry(h):
    h.apply({"name": "early", "steps": [
        task("s", "raise_once", retry={"max_attempts": 2, "backoff": "fixed", "initial": "1s", "jitter": False},
             key=uuid.uuid4().hex),
    ]})
    execution_id = h.start("early")
    h.dispatcher.sent.clear()
    h.runner.run("t1", execution_id, "s")
    failed_at = h.clock.now()
    assert h.steps(execution_id)["s"].status is StepStatus.RETRY_WAIT
    [retry] = h.dispatcher.sent
    assert retry.countdown == 1.0
    assert retry.epoch == h.steps(execution_id)["s"].lease_epoch == 1  # the failed attempt's claim
    h.dispatcher.sent.clear()
    h.clock.advance(0.9)  # the broker delivers the countdown message 0.1 s early
    assert h.runner.run("t1", execution_id, "s", epoch=retry.epoch).outcome == "ignored"
    step = h.steps(execution_id)["s"]
    assert (step.status, step.attempt) == (StepStatus.RETRY_WAIT, 1)
    [again] = h.dispatcher.sent  # sent again for the rest of the delay, not left to the reconciler
    assert again.countdown == pytest.approx(0.1)
    assert again.epoch == retry.epoch
    h.drain()
    step = h.steps(execution_id)["s"]
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 2)
    assert step.started_at - failed_at >= 1.0


def test_a_stale_copy_of_a_failed_attempts_message_is_dropped_during_the_retry_wait(h):
    h.apply({"name": "stale", "steps": [
        task("s", "raise_once", retry={"max_attempts": 2, "backoff": "fixed", "initial": "1s", "jitter": False},
             key=uuid.uuid4().hex),
    ]})
    execution_id = h.start("stale")
    [first] = h.dispatcher.sent
    assert first.epoch == 0
    h.dispatcher.sent.clear()
    assert h.runner.run("t1", execution_id, "s", epoch=first.epoch).outcome == "failed"
    [retry] = h.dispatcher.sent
    h.dispatcher.sent.clear()
    # The broker delivers the first message a second time while the step waits for its retry.
    assert h.runner.run("t1", execution_id, "s", epoch=first.epoch).outcome == "ignored"
    assert h.dispatcher.sent == []  # recognised as stale: dropped, not sent again as an early timer
    step = h.steps(execution_id)["s"]
    assert (step.status, step.attempt) == (StepStatus.RETRY_WAIT, 1)
    h.clock.advance(1.0)
    assert h.runner.run("t1", execution_id, "s", epoch=retry.epoch).outcome == "succeeded"
    step = h.steps(execution_id)["s"]
    assert (step.status, step.attempt) == (StepStatus.SUCCEEDED, 2)


def test_a_when_that_is_not_a_boolean_fails_the_step(h):
    h.apply({"name": "cond", "steps": [
        {**task("s", "sleeps", seconds=0), "when": "input.flag"},
    ]})
    execution_id = h.start("cond", {"flag": "yes"})
    step = h.steps(execution_id)["s"]
    assert step.status is StepStatus.FAILED
    assert step.error["message"] == "expression 'input.flag' must be a boolean but returned a string"
    assert h.execution(execution_id).status is ExecutionStatus.FAILED


def _no_backoff(monkeypatch):
    """The backoffs the runner asks for while recording an outcome, not waited for."""
    from engine import runner as runner_module

    waits: list[float] = []
    backoff = runner_module.record_backoff

    def recorded(failed):
        waits.append(backoff(failed))
        return 0.0

    monkeypatch.setattr(runner_module, "record_backoff", recorded)
    return waits


def test_an_outcome_is_recorded_after_the_store_was_briefly_unavailable(h, monkeypatch):
    """Recording retries while the store is unavailable (fenced, so never twice), with backoff."""
    from engine.errors import StoreUnavailable

    waits = _no_backoff(monkeypatch)
    real_complete, failures = h.service.complete, iter([StoreUnavailable("store away")] * 2)

    def flaky_complete(*args, **kwargs):
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real_complete(*args, **kwargs)

    monkeypatch.setattr(h.service, "complete", flaky_complete)
    step, execution = run_one(h, task("s", "returns_float", value="1.5"))
    assert (step.status, step.attempt, execution.status) == (StepStatus.SUCCEEDED, 1, ExecutionStatus.SUCCEEDED)
    assert waits == [0.1, 0.2]


def test_an_outcome_the_store_never_takes_escapes_after_the_last_try(h, monkeypatch):
    from engine.errors import StoreUnavailable

    waits = _no_backoff(monkeypatch)

    def unavailable(*args, **kwargs):
        raise StoreUnavailable("store away")

    monkeypatch.setattr(h.service, "complete", unavailable)
    h.apply({"name": "one", "steps": [task("s", "returns_float", value="1.5")]})
    execution_id = h.start("one")
    with pytest.raises(StoreUnavailable):
        h.drain()
    assert waits == [0.1, 0.2, 0.4, 0.8]
    assert h.steps(execution_id)["s"].status is not StepStatus.SUCCEEDED
