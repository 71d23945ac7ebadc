"""The use cases end to end over each real store (SQLite, Firestore emulator), manual clock, no broker."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from engine.errors import InputInvalid, LeaseLost, NotFound, PayloadTooLarge, TransitionRefused
from engine.states import ExecutionStatus, StepStatus
from tests.unit.fixtures import corefns

F = "tests.unit.fixtures.corefns"


def task(step_id, function, needs=(), args=None, **kwargs):
    """A task step calling a fixture function; keyword arguments become its args."""
    return {"id": step_id, "type": "task", "needs": list(needs),
            "with": {"function": f"{F}.{function}", "args": args if args is not None else kwargs}}


def statuses(h, execution_id):
    return {key: str(step.status) for key, step in h.steps(execution_id).items()}


def test_linear_workflow_passes_outputs_and_computes_outputs(h):
    h.apply({
        "name": "linear",
        "inputs": {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer"}}},
        "steps": [
            task("a", "double", args={"x": "${input.x}"}),
            task("b", "add", ["a"], args={"a": "${steps.a.output}", "b": 1}),
            {"id": "c", "type": "transform", "needs": ["b"], "with": {"value": {"total": "${steps.b.output}"}}},
        ],
        "outputs": {"result": "steps.c.output.total"},
    })
    execution_id = h.start("linear", {"x": 5})
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output == {"result": 11}
    assert statuses(h, execution_id) == {"a": "SUCCEEDED", "b": "SUCCEEDED", "c": "SUCCEEDED"}


def test_foreach_respects_concurrency_and_keeps_item_order(h):
    h.apply({
        "name": "fan",
        "steps": [
            {"id": "each", "type": "task", "foreach": "input.items", "concurrency": 3,
             "with": {"function": f"{F}.double", "args": {"x": "${item}"}}},
            task("join", "echo", ["each"], args={"value": "${steps.each.output}"}),
        ],
        "outputs": {"doubled": "steps.join.output"},
    })
    execution_id = h.start("fan", {"items": list(range(10))})
    assert [d.step_key for d in h.dispatcher.sent] == ["each[0]", "each[1]", "each[2]"]
    h.drain()
    assert h.execution(execution_id).output == {"doubled": [i * 2 for i in range(10)]}
    in_flight = max_in_flight(h.history(execution_id), "each[")
    assert in_flight <= 3


def max_in_flight(events, prefix):
    active, peak = set(), 0
    for event in events:
        if not (event.step_key or "").startswith(prefix):
            continue
        if event.status in ("QUEUED", "RUNNING", "RETRY_WAIT"):
            active.add(event.step_key)
        else:
            active.discard(event.step_key)
        peak = max(peak, len(active))
    return peak


def test_empty_foreach_succeeds_with_empty_list(h):
    h.apply({"name": "empty", "steps": [
        {"id": "each", "type": "task", "foreach": "input.items", "with": {"function": f"{F}.double", "args": {"x": 1}}},
    ], "outputs": {"n": "size(steps.each.output)"}})
    execution_id = h.start("empty", {"items": []})
    h.drain()
    assert h.execution(execution_id).output == {"n": 0}


def test_switch_and_when_skip_the_branch_not_taken_and_skips_propagate(h):
    h.apply({"name": "branch", "steps": [
        {"id": "route", "type": "switch", "with": {"cases": [{"when": "input.amount > 100", "value": "review"}],
                                                   "default": "auto"}},
        {"id": "review", "type": "transform", "needs": ["route"], "when": "steps.route.output.value == 'review'",
         "with": {"value": "reviewed"}},
        {"id": "after_review", "type": "transform", "needs": ["review"], "with": {"value": 1}},
        {"id": "auto", "type": "transform", "needs": ["route"], "when": "steps.route.output.value == 'auto'",
         "with": {"value": "approved"}},
    ]})
    execution_id = h.start("branch", {"amount": 5})
    h.drain()
    assert statuses(h, execution_id) == {
        "route": "SUCCEEDED", "review": "SKIPPED", "after_review": "SKIPPED", "auto": "SUCCEEDED",
    }
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_transient_failures_are_retried_with_backoff(make_harness):
    h = make_harness(short_timer_threshold=0)  # force durable timers through the reconciler
    h.apply({"name": "flaky", "steps": [
        {**task("f", "flaky", key="k", failures=2),
         "retry": {"max_attempts": 3, "initial": "1s", "jitter": False}},
    ]})
    execution_id = h.start("flaky")
    h.drain()
    assert h.steps(execution_id)["f"].status is StepStatus.RETRY_WAIT
    h.clock.advance(1)
    assert h.service.reconcile().timers == 1
    h.drain()
    h.clock.advance(2)
    h.service.reconcile()
    h.drain()
    step = h.steps(execution_id)["f"]
    assert (step.status, step.attempt, step.output) == (StepStatus.SUCCEEDED, 3, "ok after 2")
    kinds = Counter(e.type for e in h.history(execution_id) if e.step_key == "f")
    assert kinds["step.retry_wait"] == 2 and kinds["step.succeeded"] == 1


def test_short_retry_delay_uses_a_countdown_dispatch(h):
    h.apply({"name": "quick", "steps": [
        {**task("f", "flaky", key="q", failures=1), "retry": {"max_attempts": 2, "initial": "500ms"}},
    ]})
    execution_id = h.start("quick")
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_non_retryable_failure_fails_execution_and_cancels_siblings(h):
    h.apply({"name": "bad", "steps": [
        {**task("boom", "broken"), "retry": {"max_attempts": 5}},
        task("other", "echo", value=1),
        task("later", "echo", ["boom", "other"], value=2),
    ]})
    execution_id = h.start("bad")
    h.runner.run("t1", execution_id, "boom")
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.FAILED
    assert execution.error["step"] == "boom" and execution.error["type"] == "Broken"
    assert statuses(h, execution_id) == {"boom": "FAILED", "other": "CANCELLED"}
    assert corefns.calls["broken"] == 1


def test_non_retryable_error_types_listed_in_policy(h):
    h.apply({"name": "nr", "steps": [
        {**task("f", "flaky", key="nr", failures=5),
         "retry": {"max_attempts": 5, "non_retryable": ["ConnectionError"]}},
    ]})
    execution_id = h.start("nr")
    h.drain()
    assert h.steps(execution_id)["f"].attempt == 1
    assert h.execution(execution_id).status is ExecutionStatus.FAILED


def test_on_error_continue_lets_successors_run(h):
    h.apply({"name": "cont", "steps": [
        {**task("boom", "broken"), "on_error": "continue"},
        task("next", "echo", ["boom"], value="${steps.boom.status}"),
    ]})
    execution_id = h.start("cont")
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(execution_id)["next"].output == "FAILED"


def test_retry_execution_resumes_from_failed_step_keeping_outputs(h):
    h.apply({"name": "resume", "steps": [
        task("first", "double", args={"x": 2}),
        {**task("second", "flaky", ["first"], key="resume", failures=1)},
        task("third", "echo", ["second"], value="${steps.first.output}"),
    ]})
    execution_id = h.start("resume")
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.FAILED
    h.service.retry("t1", execution_id)
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED and execution.run == 2
    assert corefns.calls["double"] == 1  # the successful step did not run again
    assert h.steps(execution_id)["third"].output == 4


def test_retry_of_failed_foreach_reruns_only_failed_items(h):
    h.apply({"name": "fe", "steps": [
        {"id": "each", "type": "task", "foreach": "input.items", "concurrency": 2,
         "with": {"function": f"{F}.flaky", "args": {"key": "${string(item)}", "failures": "${item == 3 ? 1 : 0}"}}},
    ], "outputs": {"out": "steps.each.output"}})
    execution_id = h.start("fe", {"items": [1, 2, 3, 4]})
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.FAILED
    kept = [key for key, status in statuses(h, execution_id).items() if key.startswith("each[") and status == "SUCCEEDED"]
    calls_before = corefns.calls["flaky"]
    h.service.retry("t1", execution_id)
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert len(execution.output["out"]) == 4
    # Every item runs again except those that had succeeded (the failed one, the ones the
    # failure cancelled, the ones not started yet).
    assert kept and corefns.calls["flaky"] - calls_before == 4 - len(kept)


def test_retry_refused_for_running_or_succeeded(h):
    h.apply({"name": "one", "steps": [task("a", "echo", value=1)]})
    execution_id = h.start("one")
    with pytest.raises(TransitionRefused):
        h.service.retry("t1", execution_id)
    h.drain()
    with pytest.raises(TransitionRefused):
        h.service.retry("t1", execution_id)
    with pytest.raises(TransitionRefused):
        h.service.cancel("t1", execution_id)


def test_cancel_stops_everything_and_fences_running_step(h):
    h.apply({"name": "cancel", "steps": [task("a", "echo", value=1), task("b", "echo", ["a"], value=2)]})
    execution_id = h.start("cancel")
    claimed = h.service.claim("t1", execution_id, "a")
    h.service.cancel("t1", execution_id)
    with pytest.raises(LeaseLost):
        h.service.complete("t1", execution_id, "a", claimed.step.lease_epoch, "late")
    assert h.execution(execution_id).status is ExecutionStatus.CANCELLED
    assert statuses(h, execution_id) == {"a": "CANCELLED"}
    h.drain()
    assert statuses(h, execution_id) == {"a": "CANCELLED"}


def test_wait_step_is_a_durable_timer(h):
    h.apply({"name": "sleepy", "steps": [
        {"id": "nap", "type": "wait", "with": {"duration": "1h"}},
        task("after", "echo", ["nap"], value="woke"),
    ]})
    execution_id = h.start("sleepy")
    h.drain()
    assert h.steps(execution_id)["nap"].status is StepStatus.WAITING
    assert h.service.reconcile().timers == 0
    h.clock.advance(3600)
    assert h.service.reconcile().timers == 1
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_short_wait_completes_through_countdown(h):
    h.apply({"name": "blink", "steps": [{"id": "nap", "type": "wait", "with": {"duration": "2s"}}]})
    execution_id = h.start("blink")
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_deadline_times_out_execution(h):
    h.apply({"name": "late", "deadline": "1m", "steps": [{"id": "nap", "type": "wait", "with": {"duration": "1h"}}]})
    execution_id = h.start("late")
    h.drain()
    h.clock.advance(61)
    assert h.service.reconcile().timed_out == 1
    assert h.execution(execution_id).status is ExecutionStatus.TIMED_OUT
    assert statuses(h, execution_id) == {"nap": "CANCELLED"}


def test_expired_lease_requeues_and_fences_the_lost_worker(h):
    h.apply({"name": "lease", "steps": [task("a", "echo", value="x")]})
    execution_id = h.start("lease")
    h.dispatcher.sent.clear()
    first = h.service.claim("t1", execution_id, "a")
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.service.reconcile().expired_leases == 1
    h.drain()
    with pytest.raises(LeaseLost):
        h.service.complete("t1", execution_id, "a", first.step.lease_epoch, "late")
    step = h.steps(execution_id)["a"]
    assert (step.status, step.output, step.attempt) == (StepStatus.SUCCEEDED, "x", 2)


def test_lost_dispatch_is_sent_again(h):
    h.apply({"name": "lost", "steps": [task("a", "echo", value=1)]})
    execution_id = h.start("lost")
    h.dispatcher.sent.clear()  # the broker lost the message
    assert h.service.reconcile().redispatched == 0
    h.clock.advance(h.settings.redispatch_after + 1)
    assert h.service.reconcile().redispatched == 1
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_duplicate_delivery_runs_the_step_once(h):
    h.apply({"name": "dup", "steps": [task("a", "double", args={"x": 1}), task("b", "double", ["a"], args={"x": 2})]})
    execution_id = h.start("dup")
    h.dispatcher.sent = h.dispatcher.sent * 3
    h.drain()
    assert corefns.calls["double"] == 2
    assert [r.outcome for r in h.reports].count("ignored") == 2
    completions = [e for e in h.history(execution_id) if e.type == "step.succeeded"]
    assert sorted(e.step_key for e in completions) == ["a", "b"]


def test_idempotency_key_returns_the_same_execution(h):
    h.apply({"name": "idem", "steps": [task("a", "echo", value=1)]})
    first = h.service.start("t1", "idem", {}, idempotency_key="k1")
    second = h.service.start("t1", "idem", {}, idempotency_key="k1")
    assert first.created and not second.created
    assert first.execution.id == second.execution.id


def test_invalid_input_writes_nothing(h):
    h.apply({"name": "schema", "inputs": {"type": "object", "required": ["id"]}, "steps": [task("a", "echo")]})
    with pytest.raises(InputInvalid) as info:
        h.service.start("t1", "schema", {"other": 1})
    assert "id" in str(info.value)
    assert h.service.list_executions("t1").items == []


def test_oversized_input_is_refused(h):
    h.apply({"name": "big", "steps": [task("a", "echo")]})
    h.service.settings.max_payload_bytes = 1000
    with pytest.raises(PayloadTooLarge):
        h.service.start("t1", "big", {"blob": "x" * 2000})
    assert h.service.list_executions("t1").items == []


def test_pause_holds_new_steps_until_resume(h):
    h.apply({"name": "pause", "steps": [task("a", "echo", value=1), task("b", "echo", ["a"], value=2)]})
    execution_id = h.start("pause")
    h.service.pause("t1", execution_id)
    h.drain()
    assert statuses(h, execution_id) == {"a": "QUEUED"}
    h.service.resume("t1", execution_id)
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_signal_completes_a_waiting_step(h):
    h.apply({"name": "sig", "steps": [
        {"id": "hold", "type": "wait", "with": {"duration": "1d"}},
        task("after", "echo", ["hold"], value="${steps.hold.output.ok}"),
    ]})
    execution_id = h.start("sig")
    h.drain()
    h.service.signal("t1", execution_id, "hold", {"ok": True})
    h.drain()
    assert h.steps(execution_id)["after"].output is True
    with pytest.raises(TransitionRefused):
        h.service.signal("t1", execution_id, "hold", {})
    with pytest.raises(NotFound):
        h.service.signal("t1", execution_id, "missing", {})


def test_step_timeout_is_a_retryable_failure(h):
    h.apply({"name": "slow", "steps": [{**task("s", "slow", seconds=1.0), "timeout": "100ms"}]})
    execution_id = h.start("slow")
    h.drain()
    step = h.steps(execution_id)["s"]
    assert step.status is StepStatus.FAILED and step.error["type"] == "StepTimeout"


def test_unknown_function_fails_without_retry(h):
    h.apply({"name": "nofn", "steps": [{**task("a", "missing_function"), "retry": {"max_attempts": 3}}]})
    execution_id = h.start("nofn")
    h.drain()
    step = h.steps(execution_id)["a"]
    assert step.status is StepStatus.FAILED and step.attempt == 1
    assert step.error["type"] == "FunctionNotFound"


def test_context_gives_stable_idempotency_key(h):
    h.apply({"name": "ctx", "steps": [task("a", "whoami")]})
    execution_id = h.start("ctx")
    h.drain()
    assert h.steps(execution_id)["a"].output == {
        "key": "a", "attempt": 1, "idempotency_key": f"{execution_id}/a",
    }


def test_tenants_cannot_see_each_other(h):
    h.apply({"name": "mine", "steps": [task("a", "echo", value=1)]}, tenant="t1")
    execution_id = h.start("mine", tenant="t1")
    with pytest.raises(NotFound):
        h.service.get_execution("t2", execution_id)
    with pytest.raises(NotFound):
        h.service.start("t2", "mine")


def test_every_transition_has_exactly_one_event(h):
    h.apply({"name": "ev", "steps": [task("a", "echo", value=1), task("b", "echo", ["a"], value=2)]})
    execution_id = h.start("ev")
    h.drain()
    assert [(e.type, e.step_key) for e in h.history(execution_id)] == [
        ("execution.running", None),
        ("step.queued", "a"), ("step.running", "a"), ("step.succeeded", "a"),
        ("step.queued", "b"), ("step.running", "b"), ("step.succeeded", "b"),
        ("execution.succeeded", None),
    ]
    assert [e.id for e in h.sink.events] == [e.id for e in h.history(execution_id)]


def test_apply_is_idempotent_and_versions_are_immutable(h):
    definition = {"name": "ver", "steps": [task("a", "echo", value=1)]}
    assert h.apply(definition) == 1
    assert h.apply(definition) == 1
    definition["steps"][0]["with"]["args"]["value"] = 2
    assert h.apply(definition) == 2
    assert h.service.get_workflow("t1", "ver", 1).definition["steps"][0]["with"]["args"]["value"] == 1


def test_long_step_is_kept_alive_by_heartbeats(make_harness):
    h = make_harness(lease_seconds=0.3)
    beats = []
    original = h.service.heartbeat
    h.service.heartbeat = lambda *args: (beats.append(args), original(*args))[1]
    h.apply({"name": "long", "steps": [task("s", "slow", seconds=0.5)]})
    execution_id = h.start("long")
    h.drain()
    assert len(beats) >= 2
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_running_step_sees_cancellation_through_its_context(make_harness):
    import threading

    h = make_harness(lease_seconds=0.3)
    h.apply({"name": "coop", "steps": [task("s", "wait_for_cancel", seconds=5)]})
    execution_id = h.start("coop")
    h.dispatcher.sent.clear()
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", h.runner.run("t1", execution_id, "s")))
    worker.start()
    deadline = time.monotonic() + 5
    while h.steps(execution_id)["s"].status is not StepStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.01)
    h.service.cancel("t1", execution_id)
    worker.join(timeout=5)
    assert result["r"].outcome == "lease-lost"
    assert h.steps(execution_id)["s"].status is StepStatus.CANCELLED


def test_foreach_over_the_item_limit_fails_the_step(make_harness):
    h = make_harness(max_foreach_items=5)
    h.apply({"name": "toomany", "steps": [
        {"id": "each", "type": "transform", "foreach": "input.items", "with": {"value": "${item}"}},
    ]})
    execution_id = h.start("toomany", {"items": list(range(6))})
    step = h.steps(execution_id)["each"]
    assert step.status is StepStatus.FAILED
    assert "the limit is 5" in step.error["message"]
    assert h.execution(execution_id).status is ExecutionStatus.FAILED


def _step_history(h, execution_id, key):
    events = h.service.list_events("t1", execution_id, limit=500).items
    return [str(e.status) for e in events if e.step_key == key]


def test_a_retried_foreach_parent_goes_back_to_running_never_through_queued(h):
    """The parent has its own machine: FAILED -> RUNNING by retry, no QUEUED/CANCELLED detour."""
    h.apply({"name": "fe-history", "steps": [
        {"id": "each", "type": "task", "foreach": "input.items", "concurrency": 2,
         "with": {"function": f"{F}.flaky", "args": {"key": "h${string(item)}", "failures": "${item == 2 ? 1 : 0}"}}},
    ]})
    execution_id = h.start("fe-history", {"items": [1, 2, 3]})
    h.drain()
    h.service.retry("t1", execution_id)
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert _step_history(h, execution_id, "each") == ["RUNNING", "FAILED", "RUNNING", "SUCCEEDED"]


def test_a_foreach_whose_list_failed_is_planned_afresh_on_retry(h):
    """Withdrawn (FAILED -> NEW) and created again by planning, not moved through QUEUED."""
    h.apply({"name": "fe-replan", "steps": [
        {"id": "each", "type": "transform", "foreach": "input.missing", "with": {"value": "${item}"}},
    ]})
    execution_id = h.start("fe-replan", {})
    assert h.steps(execution_id)["each"].error["type"] == "PlanningFailed"
    h.service.retry("t1", execution_id)
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.FAILED
    assert h.steps(execution_id)["each"].run == 2
    assert _step_history(h, execution_id, "each") == ["FAILED", "FAILED"]
