"""The hot path's shortcuts over each real store: followers run inline, fan-in without siblings.

Each shortcut must give the same records and history as the long way; these tests pin the
shortcut itself (what ran inline, what a transaction read) and its crash recovery.
"""

from __future__ import annotations

import pytest

from engine import runner as runner_module
from engine.service import Service
from engine.states import ExecutionStatus, StepStatus
from tests.usecases.test_usecases import F, statuses, task


def chain(n, **extra):
    steps = [task("s1", "echo", value=0)]
    steps += [task(f"s{i}", "echo", [f"s{i - 1}"], value=f"${{steps.s{i - 1}.output}}") for i in range(2, n + 1)]
    return {"name": "chain", "steps": steps, **extra}


def fan(items_concurrency=None):
    each = {
        "id": "each",
        "type": "task",
        "foreach": "input.items",
        "with": {"function": f"{F}.double", "args": {"x": "${item}"}},
    }
    if items_concurrency is not None:
        each["concurrency"] = items_concurrency
    return {
        "name": "fan",
        "steps": [each, task("join", "echo", ["each"], value="${steps.each.output}")],
        "outputs": {"doubled": "steps.join.output"},
    }


class ReadLog:
    """Records the step keys every transaction reads, around the real store."""

    def __init__(self, store):
        self.store = store
        self.reads: list[list[str]] = []

    def install(self, monkeypatch, harness):
        real_atomic = self.store.atomic

        def atomic(fn, **options):
            def body(tx):
                keys: list[str] = []
                self.reads.append(keys)
                return fn(_LoggingTx(tx, keys))

            return real_atomic(body, **options)

        monkeypatch.setattr(harness.store, "atomic", atomic)


class _LoggingTx:
    def __init__(self, tx, keys):
        self._tx, self._keys = tx, keys

    def get_steps(self, tenant, execution_id, keys):
        self._keys.extend(keys)
        return self._tx.get_steps(tenant, execution_id, keys)

    def get_execution_and_steps(self, tenant, execution_id, keys):
        self._keys.extend(keys)
        return self._tx.get_execution_and_steps(tenant, execution_id, keys)

    def __getattr__(self, name):
        return getattr(self._tx, name)


def test_a_chain_runs_from_one_message_with_one_transaction_per_step(h):
    h.apply(chain(5))
    execution_id = h.start("chain")
    assert [d.step_key for d in h.dispatcher.sent] == ["s1"]
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert [(r.step_key, r.outcome, r.followed) for r in h.reports] == [("s1", "succeeded", 4)]
    history = [(e.step_key, e.status) for e in h.history(execution_id) if e.step_key == "s3"]
    assert history == [("s3", "QUEUED"), ("s3", "RUNNING"), ("s3", "SUCCEEDED")]
    assert h.steps(execution_id)["s5"].output == 0


def test_a_step_on_another_queue_is_dispatched_not_followed(h):
    definition = chain(3)
    definition["steps"][1]["queue"] = "other"
    h.apply(definition)
    execution_id = h.start("chain")
    h.drain()
    assert [(r.step_key, r.followed) for r in h.reports] == [("s1", 0), ("s2", 0), ("s3", 0)]
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_following_stops_after_the_limit_and_the_rest_goes_through_the_broker(h, monkeypatch):
    monkeypatch.setattr(runner_module, "MAX_FOLLOWED_STEPS", 2)
    h.apply(chain(6))
    execution_id = h.start("chain")
    h.drain()
    assert [(r.step_key, r.followed) for r in h.reports] == [("s1", 2), ("s4", 2)]
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_a_worker_lost_while_following_leaves_a_lease_the_reconciler_expires(h, monkeypatch):
    h.apply(chain(3))
    execution_id = h.start("chain")
    h.dispatcher.sent.clear()
    claimed = h.service.claim("t1", execution_id, "s1")
    follower = h.service.complete("t1", execution_id, "s1", claimed.step.lease_epoch, 0, follow=True)
    assert follower.step.key == "s2" and follower.step.status is StepStatus.RUNNING
    assert h.dispatcher.sent == []
    # The worker dies here, before running s2.
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.service.reconcile().expired_leases == 1
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED
    assert h.steps(execution_id)["s2"].attempt == 2


def test_completing_a_step_of_a_chain_reads_its_successor_not_the_whole_chain(h, monkeypatch):
    h.apply(chain(8))
    execution_id = h.start("chain")
    h.dispatcher.sent.clear()
    claimed = h.service.claim("t1", execution_id, "s1")
    log = ReadLog(h.store)
    log.install(monkeypatch, h)
    h.service.complete("t1", execution_id, "s1", claimed.step.lease_epoch, 0)
    (read,) = log.reads
    assert set(read) == {"s1", "s2"}


def test_a_foreach_item_reads_its_parent_and_successor_not_its_siblings(h, monkeypatch):
    h.apply(fan(items_concurrency=3))
    execution_id = h.start("fan", {"items": list(range(6))})
    h.dispatcher.sent.clear()
    claimed = h.service.claim("t1", execution_id, "each[1]")
    log = ReadLog(h.store)
    log.install(monkeypatch, h)
    h.service.complete("t1", execution_id, "each[1]", claimed.step.lease_epoch, 2)
    assert set(log.reads[0]) == {"each[1]", "each", "each[4]", "each[2]"}  # parent, successor, neighbor
    assert [d.step_key for d in h.dispatcher.sent] == ["each[4]"]
    assert len(log.reads) == 1  # items still run: the fan-in check found work left, no transaction


def test_the_last_item_finishes_the_parent_and_the_join_runs(h):
    h.apply(fan())
    execution_id = h.start("fan", {"items": [1, 2, 3]})
    h.drain()
    execution = h.execution(execution_id)
    assert execution.status is ExecutionStatus.SUCCEEDED
    assert execution.output == {"doubled": [2, 4, 6]}
    parent = [e for e in h.history(execution_id) if e.step_key == "each" and e.status == "SUCCEEDED"]
    assert len(parent) == 1
    # The worker that finished the foreach ran the join too, without a message.
    assert [(r.step_key, r.followed) for r in h.reports] == [("each[0]", 0), ("each[1]", 0), ("each[2]", 1)]


def test_a_fanin_check_lost_to_a_crash_is_made_by_the_reconciler(h, monkeypatch):
    h.apply(fan())
    monkeypatch.setattr(Service, "_check_fanin", lambda self, check, follow=None: None)  # the worker died after commit
    execution_id = h.start("fan", {"items": [1, 2]})
    h.drain()
    assert statuses(h, execution_id) == {"each": "RUNNING", "each[0]": "SUCCEEDED", "each[1]": "SUCCEEDED"}
    monkeypatch.undo()
    assert h.service.reconcile().expired_leases == 0  # not due yet
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.service.reconcile().expired_leases == 1
    h.drain()
    assert h.execution(execution_id).output == {"doubled": [2, 4]}


def test_the_reconciler_leaves_a_foreach_with_active_items_running_and_checks_again_later(h):
    h.apply(fan())
    execution_id = h.start("fan", {"items": [1, 2]})
    h.clock.advance(h.settings.lease_seconds + 1)
    assert h.service.reconcile().expired_leases == 1
    parent = h.steps(execution_id)["each"]
    assert parent.status is StepStatus.RUNNING
    assert parent.lease_until == pytest.approx(h.clock.now() + h.settings.lease_seconds)
    h.drain()
    assert h.execution(execution_id).status is ExecutionStatus.SUCCEEDED


def test_skipping_every_successor_settles_the_execution_in_the_same_transaction(h):
    h.apply(
        {
            "name": "skips",
            "steps": [
                task("a", "echo", value=1),
                {**task("b", "echo", ["a"], value=2), "when": "steps.a.output > 5"},
                task("c", "echo", ["b"], value=3),
            ],
            "outputs": {"a": "steps.a.output"},
        }
    )
    execution_id = h.start("skips")
    h.drain()
    assert statuses(h, execution_id) == {"a": "SUCCEEDED", "b": "SKIPPED", "c": "SKIPPED"}
    assert h.execution(execution_id).output == {"a": 1}


def test_only_an_item_whose_successor_and_neighbor_have_ended_counts_the_active_items(h, monkeypatch):
    counted = []
    count = h.store.count_active_items
    monkeypatch.setattr(h.store, "count_active_items", lambda *args: counted.append(args) or count(*args))
    h.apply(fan())
    execution_id = h.start("fan", {"items": [1, 2, 3, 4]})
    h.drain()  # in index order: each item's neighbor (the next index) is still queued, but the last has none
    assert h.execution(execution_id).output == {"doubled": [2, 4, 6, 8]}
    assert counted == [("t1", execution_id, "each")]


def test_of_two_items_that_both_see_the_foreach_done_one_finishes_it(h, monkeypatch):
    checks = []
    monkeypatch.setattr(Service, "_check_fanin", lambda self, check, follow=None: checks.append(check))
    h.apply(fan())
    execution_id = h.start("fan", {"items": [1, 2]})
    h.dispatcher.sent.reverse()  # item 1 (no neighbor) ends first, then item 0 (neighbor ended)
    h.drain()
    monkeypatch.undo()
    assert len(checks) == 2  # each asks; both counts would now find no item active
    log = ReadLog(h.store)
    log.install(monkeypatch, h)
    for check in checks:
        h.service._check_fanin(check)
    assert len(log.reads) == 1  # one finishing transaction, elected by the marker
    h.drain()
    assert h.execution(execution_id).output == {"doubled": [2, 4]}
