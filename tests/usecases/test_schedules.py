"""Firing schedule triggers through the Service on each real store, with a manual clock."""

from __future__ import annotations

import itertools
import threading

import pytest

from engine.schedules import fire_key
from engine.service import Service
from engine.states import ExecutionStatus
from engine.trigger_admin import TriggerChanges, Triggers, next_fires

SLEEPY = {"name": "sleepy", "steps": [{"id": "nap", "type": "wait", "with": {"duration": "1h"}}]}
QUICK = {"name": "quick", "steps": [{"id": "done", "type": "transform", "with": {"value": 1}}]}


@pytest.fixture
def sleepy(h):
    h.apply(SLEEPY)
    h.triggers = Triggers(h.store, h.clock)
    return h


def schedule(h, workflow="sleepy", **spec):
    h.clock.value = 1_700_000_000.0  # the anchor: a whole minute (22:13:20 UTC + 40 s below)
    return h.triggers.create("t1", workflow=workflow, kind="schedule", spec={"every": "1m", **spec})


def by_key(h, trigger_id, moment):
    return h.store.read(lambda reads: reads.find_execution_by_key("t1", fire_key(trigger_id, moment)))


def fire_at(h, moment):
    h.clock.value = moment
    h.service.fire_due_triggers()
    h.drain()


def test_a_due_trigger_starts_one_execution_per_fire_time_and_advances(sleepy):
    h = sleepy
    trigger = schedule(h)
    first = trigger.next_fire_at
    assert first == 1_700_000_060.0
    fire_at(h, first - 0.5)
    assert by_key(h, trigger.id, first) is None
    fire_at(h, first + 0.2)
    fire_at(h, first + 0.4)  # the same fire time again: nothing more
    execution = by_key(h, trigger.id, first)
    assert execution is not None and execution.trigger_id == trigger.id
    assert execution.idempotency_key == f"{trigger.id}:2023-11-14T22:14:20Z"
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.next_fire_at, stored.last_fire_at) == (1, first + 60, first)
    assert stored.running == [execution.id]
    assert len(h.service.list_executions("t1").items) == 1


def test_two_beats_firing_at_once_start_each_fire_time_once(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="allow_all", catchup="all")
    other = Service(h.store, h.dispatcher, h.sink, h.settings, h.clock)
    h.clock.value = trigger.next_fire_at + 180  # four fire times owed
    barrier = threading.Barrier(2)

    def beat(service):
        barrier.wait(timeout=10)
        service.fire_due_triggers()

    threads = [threading.Thread(target=beat, args=(s,)) for s in (h.service, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    keys = sorted(e.idempotency_key for e in h.service.list_executions("t1").items)
    assert keys == sorted(fire_key(trigger.id, trigger.next_fire_at + 60 * k) for k in range(4))
    assert h.triggers.get("t1", trigger.id).fired == 4


def test_skip_drops_fires_while_the_previous_execution_runs(sleepy):
    h = sleepy
    trigger = schedule(h)
    fire_at(h, trigger.next_fire_at)
    fire_at(h, trigger.next_fire_at + 60)
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.skipped) == (1, 1)
    assert by_key(h, trigger.id, trigger.next_fire_at + 60) is None


def test_a_buffered_fire_starts_in_the_transaction_that_ends_the_previous_execution(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="buffer_one")
    first, second, third = (trigger.next_fire_at + 60 * k for k in range(3))
    fire_at(h, first)
    fire_at(h, second)
    fire_at(h, third)
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.buffered, stored.skipped, stored.pending) == (1, 1, 1, [second])
    running = by_key(h, trigger.id, first)
    h.service.cancel("t1", running.id)  # no beat pass in between
    released = by_key(h, trigger.id, second)
    assert released is not None and released.status is ExecutionStatus.RUNNING
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.pending, stored.running) == (2, [], [released.id])


def test_buffer_all_releases_every_buffered_fire_in_order(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="buffer_all")
    moments = [trigger.next_fire_at + 60 * k for k in range(3)]
    for moment in moments:
        fire_at(h, moment)
    assert h.triggers.get("t1", trigger.id).pending == moments[1:]
    for earlier, later in itertools.pairwise(moments):
        h.service.cancel("t1", by_key(h, trigger.id, earlier).id)
        assert by_key(h, trigger.id, later).status is ExecutionStatus.RUNNING
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.buffered, stored.pending) == (3, 2, [])


def test_cancel_other_cancels_the_running_execution_and_starts_the_new_fire(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="cancel_other")
    fire_at(h, trigger.next_fire_at)
    fire_at(h, trigger.next_fire_at + 60)
    assert by_key(h, trigger.id, trigger.next_fire_at).status is ExecutionStatus.CANCELLED
    newer = by_key(h, trigger.id, trigger.next_fire_at + 60)
    assert newer.status is ExecutionStatus.RUNNING
    assert h.triggers.get("t1", trigger.id).running == [newer.id]


def test_allow_all_overlaps_and_catchup_all_starts_every_owed_fire(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="allow_all", catchup="all")
    fire_at(h, trigger.next_fire_at + 150)  # three fire times owed
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.missed, len(stored.running)) == (3, 0, 3)


def test_catchup_latest_counts_the_older_fires_missed(sleepy):
    h = sleepy
    trigger = schedule(h, catchup_window="2m")
    fire_at(h, trigger.next_fire_at + 600)  # 11 owed: 8 outside the window, 2 older inside it
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.missed) == (1, 10)
    assert by_key(h, trigger.id, trigger.next_fire_at + 600) is not None


def test_an_execution_that_finishes_leaves_the_running_list(h):
    h.apply(QUICK)
    h.triggers = Triggers(h.store, h.clock)
    trigger = schedule(h, workflow="quick")
    fire_at(h, trigger.next_fire_at)
    assert by_key(h, trigger.id, trigger.next_fire_at).status is ExecutionStatus.SUCCEEDED
    fire_at(h, trigger.next_fire_at + 60)
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.skipped, stored.running) == (2, 0, [])


def test_disabling_or_changing_a_trigger_takes_effect_on_the_next_pass(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="allow_all")
    h.triggers.set_enabled("t1", trigger.id, False)
    fire_at(h, trigger.next_fire_at)
    assert h.service.list_executions("t1").items == []
    changed = h.triggers.update("t1", trigger.id, TriggerChanges(spec={"cron": "0 * * * *"}, enabled=True))
    assert changed.next_fire_at == 1_700_002_800.0  # the next full hour, 23:00 UTC
    fire_at(h, trigger.next_fire_at + 60)
    assert h.service.list_executions("t1").items == []
    fire_at(h, changed.next_fire_at)
    assert by_key(h, trigger.id, changed.next_fire_at) is not None


def test_a_fire_the_engine_refuses_is_kept_on_the_trigger_and_does_not_block_it(sleepy):
    h = sleepy
    trigger = schedule(h, overlap="allow_all")
    h.service.archive_workflow("t1", "sleepy")
    fire_at(h, trigger.next_fire_at)
    stored = h.triggers.get("t1", trigger.id)
    assert stored.fired == 0 and "archived" in stored.last_error
    assert stored.next_fire_at == trigger.next_fire_at + 60


def test_an_execution_lost_from_the_running_list_does_not_block_a_skip_schedule(sleepy):
    h = sleepy
    trigger = schedule(h)
    stored = h.triggers.get("t1", trigger.id)
    stored.running = ["gone"]  # an id whose execution does not exist (or ended unseen)
    h.store.put_trigger(stored)
    fire_at(h, trigger.next_fire_at)
    started = by_key(h, trigger.id, trigger.next_fire_at)
    assert started is not None
    assert h.triggers.get("t1", trigger.id).running == [started.id]


def test_a_stored_spec_that_is_no_longer_valid_stops_only_its_own_trigger(sleepy):
    h = sleepy
    broken = schedule(h)
    healthy = schedule(h)
    stored = h.triggers.get("t1", broken.id)
    stored.spec = {"cron": "0 0 * * * *"}  # 6 fields: accepted by the former cron library
    h.store.put_trigger(stored)
    assert next_fires(stored) == []
    fire_at(h, healthy.next_fire_at)
    assert by_key(h, healthy.id, healthy.next_fire_at) is not None
    after = h.triggers.get("t1", broken.id)
    assert after.next_fire_at is None and "5 fields" in after.last_error


def test_a_fire_over_the_tenant_quota_is_skipped_and_counted(make_harness):
    h = make_harness(max_concurrent_executions=1)
    h.apply(SLEEPY)
    h.triggers = Triggers(h.store, h.clock)
    trigger = schedule(h, overlap="allow_all")
    first = trigger.next_fire_at
    fire_at(h, first)
    fire_at(h, first + 60)  # the first fire's execution still runs: the tenant is at its quota
    assert by_key(h, trigger.id, first) is not None and by_key(h, trigger.id, first + 60) is None
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.skipped, stored.next_fire_at) == (1, 1, first + 120)
    assert "skipped" in stored.last_error and "the limit is 1" in stored.last_error
    h.service.cancel("t1", by_key(h, trigger.id, first).id)
    fire_at(h, first + 120)
    assert by_key(h, trigger.id, first + 120) is not None
    assert h.triggers.get("t1", trigger.id).fired == 2


def quota_of_one_with_a_buffered_fire(make_harness):
    """A ``buffer_one`` schedule at a quota of 1: its first fire runs, its second is buffered."""
    h = make_harness(max_concurrent_executions=1)
    h.apply(SLEEPY)
    h.triggers = Triggers(h.store, h.clock)
    trigger = schedule(h, overlap="buffer_one")
    first, second = trigger.next_fire_at, trigger.next_fire_at + 60
    fire_at(h, first)
    fire_at(h, second)
    assert h.triggers.get("t1", trigger.id).pending == [second]
    return h, trigger, first, second


def test_a_buffered_fire_over_the_tenant_quota_is_skipped_and_counted(make_harness):
    h, trigger, first, second = quota_of_one_with_a_buffered_fire(make_harness)
    other = h.start("sleepy")  # an API start without the quota check: the tenant is now over it
    h.service.cancel("t1", by_key(h, trigger.id, first).id)  # releases the buffered fire
    assert by_key(h, trigger.id, second) is None
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.skipped, stored.pending, stored.running) == (1, 1, [], [])
    assert stored.last_error.startswith(fire_key(trigger.id, second)) and "the limit is 1" in stored.last_error
    assert h.service.get_execution("t1", other).status is ExecutionStatus.RUNNING


def test_a_buffered_fire_takes_the_place_of_the_execution_that_ended_within_the_quota(make_harness):
    h, trigger, first, second = quota_of_one_with_a_buffered_fire(make_harness)
    h.service.cancel("t1", by_key(h, trigger.id, first).id)  # the tenant was at its quota of 1
    released = by_key(h, trigger.id, second)
    assert released is not None and released.status is ExecutionStatus.RUNNING
    stored = h.triggers.get("t1", trigger.id)
    assert (stored.fired, stored.skipped, stored.running, stored.last_error) == (2, 0, [released.id], None)
