"""Step logs on each store: captured per attempt, bounded, redacted, paged, and sent live."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from engine.errors import InvalidRequest, NotFound
from engine.functions import import_modules
from engine.records import EventRecord
from engine.states import ExecutionStatus
from tests.unit.fixtures import logfns

F = "tests.unit.fixtures.logfns"
import_modules([F])


pytestmark = pytest.mark.usefixtures("info_logging")  # tests/conftest.py


def task(step_id: str, function: str, needs: list[str] | None = None, **args: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "task", "needs": needs or [], "with": {"function": f"{F}.{function}", "args": args}}


def run(h: Any, definition: dict[str, Any], tenant: str = "t1") -> str:
    h.apply(definition, tenant=tenant)
    execution_id = h.start(definition["name"], tenant=tenant)
    h.drain()
    assert h.runner.step_logs.flush()
    return execution_id


def all_lines(h: Any, execution_id: str, key: str, **filters: Any) -> list[Any]:
    lines, cursor = [], None
    while True:
        page = h.service.step_logs_page("t1", execution_id, key, cursor=cursor, **filters)
        lines += page.items
        cursor = page.next_cursor
        if cursor is None:
            return lines


def log_events(h: Any, key: str) -> list[EventRecord]:
    return [e for e in h.sink.events if e.type == "step.log" and e.step_key == key]


def test_each_step_keeps_what_it_logged_and_printed_in_order(make_harness):
    h = make_harness(step_logs=True)
    execution_id = run(h, {"name": "talk", "steps": [
        task("sync", "chatty", lines=25),
        task("async", "chatty_async", ["sync"], lines=3),
    ]})
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED

    lines = all_lines(h, execution_id, "sync", limit=10)
    assert [line.seq for line in lines] == list(range(25))
    assert lines[0].level == "INFO" and lines[0].logger == "tests.logfns" and lines[0].message == "chatty line 0"
    assert (lines[9].logger, lines[9].message) == ("stdout", "chatty printed 9")
    assert {(line.run, line.attempt) for line in lines} == {(1, 1)}
    assert all(lines[i].at <= lines[i + 1].at for i in range(24))

    page = h.service.step_logs_page("t1", execution_id, "async")
    assert [(line.level, line.message) for line in page.items] == [
        ("WARNING", "async line 0"), ("WARNING", "async line 1"), ("WARNING", "async line 2"), ("INFO", "async done"),
    ]
    assert page.next_cursor is None
    assert [(a.lines, a.dropped) for a in page.attempts] == [(4, 0)]


def test_a_step_logging_100000_lines_keeps_the_bound_and_counts_the_rest(make_harness):
    h = make_harness(step_logs=True, step_logs_max_lines=500)
    execution_id = run(h, {"name": "flood", "steps": [task("flood", "chatty", lines=100_000)]})

    page = h.service.step_logs_page("t1", execution_id, "flood", limit=1000)
    assert len(page.items) == 500 and page.next_cursor is None
    assert [(a.lines, a.dropped) for a in page.attempts] == [(500, 99_500)]
    assert page.items[-1].message == "chatty printed 499"  # the first lines are kept
    # Live events carry only the kept lines, and say how many were dropped when the attempt ends.
    events = log_events(h, "flood")
    assert sum(len(e.data["lines"]) for e in events) == 500
    assert events[-1].data["done"] is True and events[-1].data["dropped"] == 99_500


def test_the_byte_bound_cuts_long_lines_and_counts_the_rest(make_harness):
    h = make_harness(step_logs=True, step_logs_max_bytes=4096, step_logs_max_line_chars=100)
    execution_id = run(h, {"name": "wide", "steps": [task("wide", "chatty", lines=200, name="x" * 300)]})
    page = h.service.step_logs_page("t1", execution_id, "wide")
    kept, dropped = page.attempts[0].lines, page.attempts[0].dropped
    assert 0 < kept < 200 and kept + dropped == 200
    assert all(len(line.message) == 100 + len(" [truncated]") for line in page.items)


def test_every_attempt_and_every_run_has_its_own_logs(make_harness):
    h = make_harness(step_logs=True)
    definition = {"name": "declined", "steps": [
        {**task("charge", "log_then_fail"), "retry": {"max_attempts": 2, "initial": "1s", "jitter": False}},
    ]}
    execution_id = run(h, definition)
    assert h.execution(execution_id).status is ExecutionStatus.FAILED
    h.service.retry("t1", execution_id)
    h.drain()
    assert h.runner.step_logs.flush()

    lines = all_lines(h, execution_id, "charge")
    assert [(line.run, line.attempt, line.seq) for line in lines] == [
        (1, 1, 0), (1, 1, 1), (1, 2, 0), (1, 2, 1), (2, 1, 0), (2, 1, 1), (2, 2, 0), (2, 2, 1),
    ]
    assert lines[1].level == "ERROR" and "ValueError: gateway said no" in lines[1].message  # the traceback
    second = h.service.step_logs_page("t1", execution_id, "charge", attempt=2)
    assert [(line.run, line.attempt) for line in second.items] == [(1, 2), (1, 2), (2, 2), (2, 2)]
    rerun = h.service.step_logs_page("t1", execution_id, "charge", run=2)
    assert {(line.run, line.attempt) for line in rerun.items} == {(2, 1), (2, 2)}
    only = h.service.step_logs_page("t1", execution_id, "charge", run=1, attempt=1, limit=1)
    assert [line.seq for line in only.items] == [0] and only.next_cursor is not None


def test_secrets_are_redacted_before_anything_keeps_them(make_harness, monkeypatch):
    monkeypatch.setenv("LOGFNS_API_TOKEN", "tok-5up3r-s3cr3t")
    h = make_harness(
        step_logs=True,
        step_logs_redact_env=["LOGFNS_API_TOKEN"],
        step_logs_redact_patterns=[r"password=\S+", r"\b(?:\d{4}-){3}\d{4}\b"],
    )
    execution_id = run(h, {"name": "leak", "steps": [task("leak", "leaky")]})
    messages = [line.message for line in h.service.step_logs_page("t1", execution_id, "leak").items]
    assert messages == ["calling the API with token ***", "*** and card *** for ***"]
    live = [line["message"] for e in log_events(h, "leak") for line in e.data["lines"]]
    assert live == messages


def test_steps_run_at_once_in_one_process_keep_their_own_lines(make_harness):
    h = make_harness(step_logs=True)
    h.apply({"name": "pair", "steps": [task("talk", "together", name="${input.name}", lines=20)]})
    first, second = h.start("pair", {"name": "left"}), h.start("pair", {"name": "right"})
    logfns.together_barrier["barrier"] = threading.Barrier(2)
    h.dispatcher.sent.clear()
    threads = [threading.Thread(target=h.runner.run, args=("t1", e, "talk")) for e in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert h.runner.step_logs.flush()
    for execution_id, name in ((first, "left"), (second, "right")):
        assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
        messages = [line.message for line in h.service.step_logs_page("t1", execution_id, "talk").items]
        expected = [m for i in range(20) for m in (f"{name} {i}", f"{name} print {i}")]
        assert messages == expected


def test_steps_followed_inline_each_get_their_own_logs(make_harness):
    h = make_harness(step_logs=True)
    execution_id = run(h, {"name": "chain", "steps": [
        task("one", "chatty", lines=2, name="one"),
        task("two", "chatty", ["one"], lines=2, name="two"),
        task("three", "chatty_async", ["two"], lines=1, name="three"),
    ]})
    assert any(report.followed for report in h.reports), "the chain ran from one message"
    assert [line.message for line in all_lines(h, execution_id, "one")] == ["one line 0", "one line 1"]
    assert [line.message for line in all_lines(h, execution_id, "two")] == ["two line 0", "two line 1"]
    assert [line.message for line in all_lines(h, execution_id, "three")] == ["three line 0", "three done"]


def test_live_events_name_their_attempt_and_lines(make_harness):
    h = make_harness(step_logs=True)
    execution_id = run(h, {"name": "live", "steps": [task("live", "chatty", lines=3)]})
    (event,) = log_events(h, "live")
    assert (event.execution_id, event.tenant, event.attempt) == (execution_id, "t1", 1)
    assert event.data["run"] == 1 and event.data["done"] is True and event.data["dropped"] == 0
    assert [line["seq"] for line in event.data["lines"]] == [0, 1, 2]
    assert event.data["lines"][0]["at"].endswith("Z") and event.data["lines"][0]["message"] == "chatty line 0"
    assert not [e for e in h.history(execution_id) if e.type == "step.log"], "never written to the history"


def test_logs_are_read_only_within_their_tenant_and_step(make_harness):
    h = make_harness(step_logs=True)
    execution_id = run(h, {"name": "own", "steps": [task("own", "chatty", lines=1)]})
    assert len(h.service.step_logs_page("t1", execution_id, "own").items) == 1
    with pytest.raises(NotFound):
        h.service.step_logs_page("t2", execution_id, "own")
    with pytest.raises(NotFound):
        h.service.step_logs_page("t1", execution_id, "nope")
    with pytest.raises(InvalidRequest):
        h.service.step_logs_page("t1", execution_id, "own", cursor="bm90IGEgY3Vyc29y")


def test_nothing_is_captured_when_step_logs_are_off(make_harness):
    h = make_harness(step_logs=True, step_logs_enabled=False)
    assert h.runner.step_logs is None
    h.apply({"name": "quiet", "steps": [task("quiet", "chatty", lines=3)]})
    execution_id = h.start("quiet")
    h.drain()
    assert h.service.step_logs_page("t1", execution_id, "quiet").items == []
    assert not log_events(h, "quiet")


def test_attempts_after_the_shipper_went_idle_are_shipped_without_a_flush(make_harness):
    """The shipping thread sleeps when no attempt runs; a later attempt must wake it (no flush here)."""
    from tests.services import wait_for

    h = make_harness(step_logs=True)
    definition = {"name": "again", "steps": [task("talk", "chatty", lines=3)]}
    h.apply(definition)
    first = h.start("again")
    h.drain()
    wait_for(lambda: all_lines(h, first, "talk"), 10, "the first attempt's lines stored")
    wait_for(lambda: not h.runner.step_logs.shipper._running and not h.runner.step_logs.shipper._busy, 10, "idle")
    second = h.start("again")
    h.drain()
    lines = wait_for(lambda: all_lines(h, second, "talk"), 10, "the second attempt's lines stored, unprompted")
    assert len(lines) == 3
