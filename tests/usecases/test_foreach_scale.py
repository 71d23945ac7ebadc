"""A foreach item costs the same whatever the length of its list, over each real store.

An item's claim and completion must not read (or decode) the whole list: not through the
foreach parent, not through the step the list came from, not through the execution input.
These tests run one item of a short and of a long list and compare what its transactions
read and how many bytes of JSON the store decoded for them.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from engine.orchestration import progress
from engine.states import ExecutionStatus
from tests.usecases.test_usecases import F, task

#: Small, so a long list creates few records up front.
CONCURRENCY = 10


def wide(source: str) -> dict[str, Any]:
    """A foreach over ``input.items`` or over a step's output, then a join reading every output."""
    each = {
        "id": "each",
        "type": "task",
        "concurrency": CONCURRENCY,
        "foreach": "input.items",
        "with": {"function": f"{F}.echo", "args": {"value": "${item}"}},
    }
    steps: list[dict[str, Any]] = [each, task("join", "echo", ["each"], value="${steps.each.output}")]
    if source == "step":
        steps.insert(0, {"id": "make", "type": "transform", "with": {"value": "${input.items}"}})
        each.update(needs=["make"], foreach="steps.make.output")
    return {"name": f"wide-{source}", "steps": steps, "outputs": {"all": "steps.join.output"}}


def elements(count: int) -> list[dict[str, Any]]:
    return [{"i": i, "pad": "x" * 60} for i in range(count)]


class Reads:
    """What the store read and decoded while active: step keys, item chunks, bytes of JSON."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.chunks: list[int] = []
        self.decoded = 0
        self.active = False


class _LoggingReads:
    def __init__(self, reads: Any, log: Reads) -> None:
        self._reads, self._log = reads, log

    def get_steps(self, tenant, execution_id, keys):
        self._log.keys.extend(keys)
        return self._reads.get_steps(tenant, execution_id, keys)

    def get_execution_and_steps(self, tenant, execution_id, keys):
        self._log.keys.extend(keys)
        return self._reads.get_execution_and_steps(tenant, execution_id, keys)

    def get_item_chunk(self, tenant, execution_id, step_id, chunk):
        self._log.chunks.append(chunk)
        return self._reads.get_item_chunk(tenant, execution_id, step_id, chunk)

    def __getattr__(self, name):
        return getattr(self._reads, name)


def install(monkeypatch, h) -> Reads:
    """Log the reads of every transaction and ``Store.read``, and the JSON the adapters decode."""
    log = Reads()
    real_atomic, real_read, real_loads = h.store.atomic, h.store.read, json.loads

    def loads(text, *args, **kwargs):
        if log.active:
            log.decoded += len(text)
        return real_loads(text, *args, **kwargs)

    monkeypatch.setattr(
        h.store, "atomic", lambda fn, **options: real_atomic(lambda tx: fn(_LoggingReads(tx, log)), **options)
    )
    monkeypatch.setattr(h.store, "read", lambda fn: real_read(lambda reads: fn(_LoggingReads(reads, log))))
    monkeypatch.setattr(json, "loads", loads)
    return log


def run_first_item(h, monkeypatch, source: str, count: int) -> Reads:
    """Start a foreach of ``count`` elements and run its item 0 as a worker does; what that read."""
    h.apply(wide(source))
    execution_id = h.start(f"wide-{source}", {"items": elements(count)})
    if source == "step":
        h.dispatcher.sent.clear()
        h.runner.run("t1", execution_id, "make", first_delivery=True)
    assert h.steps(execution_id)["each"].item_count == count
    h.dispatcher.sent.clear()
    log = install(monkeypatch, h)
    # One item only: the completion must not go on to run the item it starts (see _claim_follower).
    complete = h.service.complete
    monkeypatch.setattr(h.service, "complete", lambda *args, follow, **kwargs: complete(*args, follow=False, **kwargs))
    log.active = True
    report = h.runner.run("t1", execution_id, "each[0]", first_delivery=True)
    log.active = False
    monkeypatch.undo()
    assert report.outcome == "succeeded"
    assert [d.step_key for d in h.dispatcher.sent] == [f"each[{CONCURRENCY}]"]
    return log


@pytest.mark.parametrize("source", ["input", "step"])
def test_an_item_reads_and_decodes_the_same_for_a_short_and_a_long_list(make_harness, monkeypatch, source):
    short = run_first_item(make_harness(), monkeypatch, source, 100)
    long = run_first_item(make_harness(), monkeypatch, source, 2000)
    # The item, its parent, the item it starts and its neighbor; never the list's source.
    assert sorted(set(long.keys)) == sorted(set(short.keys)) == ["each", "each[0]", "each[10]", "each[1]"]
    assert long.chunks == short.chunks == [CONCURRENCY // progress.ITEMS_PER_CHUNK]
    # Only the parent's item count grows by a digit or two.
    assert short.decoded > 0
    assert long.decoded - short.decoded <= 8, (short.decoded, long.decoded)


def test_a_long_list_finishing_in_any_order_gives_every_output_in_list_order(h):
    count = 450  # items of several stored slices of the list, created as earlier ones end
    h.apply(wide("step"))
    execution_id = h.start("wide-step", {"items": elements(count)})
    shuffle = random.Random(7)
    while h.dispatcher.sent:
        dispatch = h.dispatcher.sent.pop(shuffle.randrange(len(h.dispatcher.sent)))
        h.runner.run(dispatch.tenant, dispatch.execution_id, dispatch.step_key, first_delivery=True)
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output == {"all": elements(count)}
    assert h.steps(execution_id)["each"].output == elements(count)


def test_items_ending_while_other_chains_run_do_not_query_every_item(h, monkeypatch):
    counted = []
    count = h.store.count_active_items
    monkeypatch.setattr(h.store, "count_active_items", lambda *args: counted.append(args) or count(*args))
    h.apply(wide("input"))
    execution_id = h.start("wide-input", {"items": elements(2 * CONCURRENCY)})  # two items per chain
    # In reverse order: each item of the second half asks, and finds one of lower index active.
    h.dispatcher.sent.reverse()
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert counted == [("t1", execution_id, "each")]  # only the item that ended last counted


def test_a_parent_expanded_before_item_counts_existed_still_runs_from_its_inline_list(h):
    h.apply(wide("input"))
    execution_id = h.start("wide-input", {"items": elements(3 * CONCURRENCY)})

    def as_written_before(tx):
        parent = tx.get_steps("t1", execution_id, ["each"])["each"]
        parent.items, parent.item_count = elements(3 * CONCURRENCY), None
        parent.items[CONCURRENCY] = "from the inline list"
        tx.put_step(parent)

    h.store.atomic(as_written_before)
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output["all"][CONCURRENCY] == "from the inline list"
    assert len(execution.output["all"]) == 3 * CONCURRENCY
