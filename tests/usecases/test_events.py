"""External events end to end over each real store: the event log, triggers, wait_for_event, signals."""

from __future__ import annotations

import pytest

from engine import steptypes
from engine.errors import DefinitionInvalid, TransitionRefused
from engine.router import EventRouter
from engine.states import ExecutionStatus, StepStatus
from engine.trigger_admin import Triggers
from tests.usecases.test_usecases import statuses, task

ORDERS = {
    "name": "orders",
    "inputs": {"type": "object", "required": ["order_id"], "properties": {"order_id": {"type": "string"}}},
    "steps": [task("note", "echo", value="${input.order_id}")],
}

PAYMENT = {
    "name": "payment",
    "steps": [
        {
            "id": "paid",
            "type": "wait_for_event",
            "with": {
                "type": "payment.settled",
                "correlation_key": "input.order_id",
                "match": "event.data.amount >= input.amount",
                "timeout": "1h",
            },
        },
        task("after", "echo", ["paid"], value="${steps.paid.output.data.amount}"),
    ],
}


def _event_trigger(h, workflow="orders", **spec):
    return Triggers(h.store, h.clock).create(
        "t1",
        workflow=workflow,
        kind="event",
        spec={"type": "order.created", **spec},
        input={"order_id": "${event.data.id}"},
    )


def test_an_event_trigger_starts_its_workflow_once_per_event_id_with_the_mapped_input(h):
    h.apply(ORDERS)
    trigger = _event_trigger(h, match="event.data.total > 100")
    router = EventRouter(h.service)
    for _ in range(5):
        router.publish("t1", type="order.created", data={"id": "A-1", "total": 120}, event_id="evt-1")
    router.publish("t1", type="order.created", data={"id": "A-2", "total": 5}, event_id="evt-2")  # filtered out
    router.publish("t1", type="order.updated", data={"id": "A-3", "total": 500}, event_id="evt-3")  # other type
    h.drain()
    executions = h.service.list_executions("t1").items
    assert [(e.input, e.idempotency_key) for e in executions] == [({"order_id": "A-1"}, f"{trigger.id}:evt-1")]
    assert h.execution(executions[0].id).status is ExecutionStatus.SUCCEEDED
    assert h.store.due_inbound_events(h.clock.now() + 1) == []


def test_an_event_whose_router_died_is_routed_by_the_reconciler(h):
    h.apply(PAYMENT)
    execution_id = h.start("payment", {"order_id": "A-9", "amount": 1})
    h.drain()
    router = EventRouter(h.service)
    router.route = lambda event, **_: None  # the router dies right after the event was accepted
    accepted = router.publish("t1", type="payment.settled", correlation_key="A-9", data={"amount": 3})
    assert accepted.duplicate is False and accepted.event.routed is False
    assert statuses(h, execution_id) == {"paid": "WAITING"}
    h.clock.advance(h.settings.event_route_after + 1)
    report = h.service.reconcile()
    h.drain()
    assert report.routed_events == 1
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.service.reconcile().routed_events == 0


def test_an_event_without_correlation_key_is_routed_with_its_trigger_starts(h):
    h.apply(ORDERS)
    _event_trigger(h)
    accepted = EventRouter(h.service).publish("t1", type="order.created", data={"id": "A-3"}, event_id="evt-3")
    assert accepted.event.routed is True
    stored = h.store.atomic(lambda tx: tx.get_inbound_event("t1", "evt-3"))
    assert stored.routed is True and [e.input for e in h.service.list_executions("t1").items] == [{"order_id": "A-3"}]


def test_a_waiting_step_resumes_on_a_matching_event_and_ignores_others(h):
    h.apply(PAYMENT)
    execution_id = h.start("payment", {"order_id": "A-1", "amount": 50})
    h.drain()
    assert statuses(h, execution_id) == {"paid": "WAITING"}
    router = EventRouter(h.service)
    router.publish("t1", type="payment.settled", correlation_key="A-2", data={"amount": 90})  # other order
    router.publish("t1", type="payment.settled", correlation_key="A-1", data={"amount": 10})  # match false
    router.publish("t1", type="payment.failed", correlation_key="A-1", data={"amount": 90})  # other type
    h.drain()
    assert statuses(h, execution_id) == {"paid": "WAITING"}
    router.publish("t1", type="payment.settled", correlation_key="A-1", data={"amount": 60}, event_id="pay-7")
    router.publish("t1", type="payment.settled", correlation_key="A-1", data={"amount": 70}, event_id="pay-8")
    h.drain()
    paid = h.steps(execution_id)["paid"]
    assert paid.output["id"] == "pay-7" and paid.wait["delivered"] == {"kind": "event", "id": "pay-7"}
    assert h.steps(execution_id)["after"].output == 60
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.store.list_waiters("t1", paid.wait["route"]) == []


def test_an_event_accepted_before_the_step_waits_is_found_by_its_scan(h):
    h.apply(PAYMENT)
    execution_id = h.start("payment", {"order_id": "A-1", "amount": 5})
    EventRouter(h.service).publish("t1", type="payment.settled", correlation_key="A-1", data={"amount": 5})
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(execution_id)["after"].output == 5


def test_a_waiter_whose_scan_was_lost_is_scanned_by_the_reconciler(h):
    h.apply(PAYMENT)
    execution_id = h.start("payment", {"order_id": "A-1", "amount": 5})
    EventRouter(h.service).publish("t1", type="payment.settled", correlation_key="A-1", data={"amount": 5})
    scan = h.service.scan_events
    h.service.scan_events = lambda waiter: False  # the worker dies right after the step started waiting
    h.drain()
    assert statuses(h, execution_id) == {"paid": "WAITING"}
    h.service.scan_events = scan
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.service.reconcile().scans == 1
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


@pytest.mark.parametrize(("on_timeout", "status"), [("fail", StepStatus.FAILED), ("succeed", StepStatus.SUCCEEDED)])
def test_a_wait_for_event_times_out_with_its_declared_outcome(h, on_timeout, status):
    definition = {"name": "payment", "steps": [{**PAYMENT["steps"][0]}]}
    definition["steps"][0]["with"] = {**PAYMENT["steps"][0]["with"], "timeout": "10m", "on_timeout": on_timeout}
    h.apply(definition)
    execution_id = h.start("payment", {"order_id": "A-1", "amount": 5})
    h.drain()
    h.clock.advance(11 * 60)
    h.service.reconcile()
    h.drain()
    step = h.steps(execution_id)["paid"]
    assert step.status is status
    if status is StepStatus.FAILED:
        assert step.error["type"] == "WaitTimeout"
    EventRouter(h.service).publish("t1", type="payment.settled", correlation_key="A-1", data={"amount": 5})
    assert h.steps(execution_id)["paid"].status is status


def test_wait_for_event_config_is_checked_at_save_time(h):
    bad = {"name": "bad", "steps": [{"id": "w", "type": "wait_for_event", "with": {
        "type": "x", "correlation_key": "input.id", "match": "steps.other.output == 1"}}]}
    with pytest.raises(DefinitionInvalid) as caught:
        h.apply(bad)
    assert caught.value.problems[0].path == "steps[0].with.match"


def test_a_signal_sent_before_its_step_waits_is_kept_and_delivered_when_it_waits(h):
    h.apply({"name": "early", "steps": [
        task("first", "echo", value=1),
        {"id": "hold", "type": "wait", "needs": ["first"], "with": {"duration": "1d"}},
        task("after", "echo", ["hold"], value="${steps.hold.output.ok}"),
    ]})
    execution_id = h.start("early")
    shown = h.service.signal("t1", execution_id, "hold", {"ok": "early"})  # "hold" has no record yet
    assert shown.wait == {"signal_kept": True}
    with pytest.raises(TransitionRefused):
        h.service.signal("t1", execution_id, "hold", {"ok": "twice"})
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(execution_id)["after"].output == "early"


def test_a_signal_kept_for_a_step_that_waits_while_its_execution_is_paused_is_delivered_on_resume(h, monkeypatch):
    """Found in review: a step that began waiting while its execution was paused (a pause
    lets running steps finish) had its kept signal deleted without delivering it, and waited
    out its whole timer after the resume. Now the signal stays kept until the resume."""
    h.apply({"name": "early", "steps": [
        task("first", "echo", value=1),
        {"id": "hold", "type": "wait", "needs": ["first"], "with": {"duration": "1d"}},
        task("after", "echo", ["hold"], value="${steps.hold.output.ok}"),
    ]})
    execution_id = h.start("early")
    h.service.signal("t1", execution_id, "hold", {"ok": "early"})
    wait_type = steptypes.get("wait")
    assert wait_type is not None
    run = wait_type.run

    async def paused_while_running(ctx, config):
        h.service.pause("t1", execution_id)
        return await run(ctx, config)

    monkeypatch.setattr(wait_type, "run", paused_while_running)
    h.drain()
    monkeypatch.setattr(wait_type, "run", run)
    hold = h.steps(execution_id)["hold"]
    assert h.execution(execution_id).status is ExecutionStatus.PAUSED
    assert hold.status is StepStatus.WAITING and hold.wait["signal_kept"] is True
    h.service.resume("t1", execution_id)
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(execution_id)["after"].output == "early"

def test_a_wait_match_is_checked_for_every_signal(h):
    h.apply({"name": "gate", "steps": [
        {"id": "hold", "type": "wait", "with": {"duration": "1d", "match": "signal.approved == true"}},
    ]})
    execution_id = h.start("gate")
    h.drain()
    with pytest.raises(TransitionRefused, match="does not satisfy"):
        h.service.signal("t1", execution_id, "hold", {"approved": False})
    assert statuses(h, execution_id) == {"hold": "WAITING"}
    h.service.signal("t1", execution_id, "hold", {"approved": True})
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    with pytest.raises(DefinitionInvalid):
        h.apply({"name": "gate2", "steps": [{"id": "w", "type": "wait", "with": {"duration": "1s", "match": "ev.x"}}]})


def test_an_early_signal_the_match_refuses_is_refused_at_once_not_kept_and_dropped(h):
    """Found from outside: a signal sent before its step waited was kept without checking the
    step's `match`, then dropped silently when the step waited, while the right signal sent
    meanwhile had been refused because one was already kept. Now it is refused like a signal
    to the waiting step (409), and the right one is kept and delivered."""
    h.apply({"name": "early-gate", "steps": [
        task("first", "echo", value=1),
        {"id": "hold", "type": "wait", "needs": ["first"], "with": {"duration": "1d", "match": "signal.ok == true"}},
    ]})
    execution_id = h.start("early-gate")
    with pytest.raises(TransitionRefused, match="does not satisfy"):
        h.service.signal("t1", execution_id, "hold", {"ok": False})
    assert h.service.signal("t1", execution_id, "hold", {"ok": True}).wait == {"signal_kept": True}
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(execution_id)["hold"].output == {"ok": True}


def test_pubsub_publish_without_pubsub_configured_fails_clearly(h):
    h.apply({"name": "notify", "steps": [{"id": "announce", "type": "pubsub.publish", "with": {"topic": "t"}}]})
    execution_id = h.start("notify")
    h.drain()
    step = h.steps(execution_id)["announce"]
    assert step.status is StepStatus.FAILED and step.error["type"] == "NotConfigured"
    assert "CONVEYOR_PUBSUB_PROJECT" in step.error["message"]


def test_a_signal_for_a_step_that_never_waits_is_refused_not_kept(h):
    h.apply({"name": "plain", "steps": [task("first", "echo", value=1)]})
    execution_id = h.start("plain")
    with pytest.raises(TransitionRefused, match="never waits"):
        h.service.signal("t1", execution_id, "first", {"x": 1})


def test_one_event_id_published_concurrently_is_accepted_and_started_once(h):
    from concurrent.futures import ThreadPoolExecutor

    h.apply(ORDERS)
    _event_trigger(h)
    router = EventRouter(h.service)

    def publish(_):
        return router.publish("t1", type="order.created", data={"id": "A-1"}, event_id="same").duplicate

    with ThreadPoolExecutor(6) as pool:
        duplicates = list(pool.map(publish, range(6)))
    assert sorted(duplicates) == [False] + [True] * 5
    assert [e.input for e in h.service.list_executions("t1").items] == [{"order_id": "A-1"}]


def test_the_reconciler_trims_routed_events_past_their_retention(make_harness):
    h = make_harness(event_retention_seconds=3600, event_route_after=5000)
    h.apply(ORDERS)
    _event_trigger(h)
    router = EventRouter(h.service)
    router.publish("t1", type="order.created", data={"id": "A-1"}, event_id="old")
    dead = EventRouter(h.service)
    dead.route = lambda event, **_: None  # its router dies: it stays unrouted
    dead.publish("t1", type="order.created", correlation_key="K", data={"id": "A-2"}, event_id="unrouted")
    h.clock.advance(1800)
    router.publish("t1", type="order.created", data={"id": "A-3"}, event_id="recent")
    h.clock.advance(1800 + 1)
    report = h.service.reconcile()
    assert (report.trimmed_events, report.routed_events) == (1, 0)  # past retention, but never while unrouted
    kept = h.store.atomic(lambda tx: tx.get_inbound_events("t1", ["old", "unrouted", "recent"]))
    assert sorted(kept) == ["recent", "unrouted"]
    h.clock.advance(3600)
    report = h.service.reconcile()
    assert (report.trimmed_events, report.routed_events) == (2, 1)  # routed by this pass, then trimmed
    # Executions outlive the log: a copy of a trimmed event is accepted anew but starts nothing twice.
    router.publish("t1", type="order.created", data={"id": "A-1"}, event_id="old")
    h.drain()
    assert sorted(e.input["order_id"] for e in h.service.list_executions("t1").items) == ["A-1", "A-2", "A-3"]


def test_one_pass_trims_batch_after_batch_until_the_log_is_within_retention(make_harness):
    h = make_harness(event_retention_seconds=60, reconcile_batch=2)
    router = EventRouter(h.service)
    for n in range(5):
        router.publish("t1", type="tick", data={"n": n}, event_id=f"e-{n}")
    h.clock.advance(61)
    router.publish("t1", type="tick", data={"n": 5}, event_id="recent")
    assert h.service.reconcile().trimmed_events == 5  # three batches of at most 2 in one pass
    assert sorted(h.store.atomic(lambda tx: tx.get_inbound_events("t1", [f"e-{n}" for n in range(5)] + ["recent"]))) == [
        "recent"
    ]


def test_a_keyed_event_over_the_quota_is_counted_once_on_its_trigger(make_harness):
    """An event with a correlation key is routed after its accepting commit, which made its
    trigger starts already: the skip over the quota is counted there, not again by the routing."""
    h = make_harness(max_concurrent_executions=1)
    h.apply(PAYMENT)
    h.start("payment", {"order_id": "A-0", "amount": 1})  # the tenant is at its quota
    h.apply(ORDERS)
    trigger = _event_trigger(h)
    EventRouter(h.service).publish("t1", type="order.created", correlation_key="K", data={"id": "A-1"})
    stored = Triggers(h.store, h.clock).get("t1", trigger.id)
    assert stored.skipped == 1 and "the limit is 1" in stored.last_error
    assert [e.workflow for e in h.service.list_executions("t1").items] == ["payment"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"total": 120}, "no such key: 'id'"),  # the input mapping fails
        ({"id": 7}, "input does not match"),  # the mapped input is refused by the workflow's schema
        ({"id": "A-1", "total": "x"}, "match"),  # the match cannot be evaluated
    ],
)
def test_an_event_trigger_that_cannot_start_says_why_on_the_trigger(h, data, expected):
    """An accepted event whose trigger starts nothing is not silent: the reason is the trigger's
    `last_error`, as for a schedule (found from outside: only the bridge's log said it)."""
    h.apply(ORDERS)
    trigger = _event_trigger(h, **({"match": "event.data.total > 100"} if "total" in data else {}))
    EventRouter(h.service).publish("t1", type="order.created", data=data, event_id="evt-1")
    h.drain()
    assert h.service.list_executions("t1").items == []
    stored = Triggers(h.store, h.clock).get("t1", trigger.id)
    assert stored.last_error is not None and stored.last_error.startswith(f"{trigger.id}:evt-1: "), stored.last_error
    assert expected in stored.last_error
