"""Fencing: a worker whose lease ran out cannot record anything; one active beat at a time.

Steps: a worker that stalls past its lease loses the step to the reconciler, another worker
runs it, and the stalled worker's late completion is refused by the ``lease_epoch``
precondition: the recorded output is the second worker's.

Beat: the Redis lease of :mod:`engine.adapters.lease_redis` lets exactly one of several beat instances fire.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import cast

import pytest
import redis

from beat.scheduler import LeasedScheduler, PeriodicJob
from engine.adapters.celery_config import make_celery
from engine.adapters.lease_redis import RedisLease
from engine.errors import LeaseLost
from engine.records import StepRecord
from engine.service import Service
from engine.settings import Settings
from engine.states import ExecutionStatus, StepStatus
from tests.integration import flows
from tests.integration.conftest import TENANT, World

pytestmark = pytest.mark.backend


def _wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_late_result_after_lease_expiry_is_refused_and_the_takeover_result_stands(
    make_world: Callable[..., World],
) -> None:
    world = make_world(lease_seconds=1.0)
    world.apply({"name": "it-fence", "steps": [flows.task("work", "gated")]})
    flows.GATE.clear()
    execution_id = world.start("it-fence")  # its message waits in the queue: no worker yet

    # Worker A (this test) takes the step, then stalls: it never heartbeats.
    first = world.service.claim(TENANT, execution_id, "work")
    assert first is not None
    stale_epoch = first.step.lease_epoch

    def step() -> StepRecord:
        return {s.key: s for s in world.service.list_steps(TENANT, execution_id)}["work"]

    try:
        with world.worker():
            # Worker B gets the original message while A holds the step: acknowledged, ignored.
            world.wait_handled(1)
            assert world.runner.outcomes == {"ignored": 1}

            lease_until = first.step.lease_until
            assert lease_until is not None
            _wait_until(lambda: time.time() > lease_until, 5, "A's lease to run out")
            assert world.service.reconcile().expired_leases == 1

            # B claims the re-queued step and runs it (held at the gate, heartbeating).
            _wait_until(lambda: step().lease_epoch > stale_epoch + 1, 10, "worker B to claim the step")
            taken = step()
            assert taken.status is StepStatus.RUNNING

            # A wakes up: everything it tries with its old epoch is refused.
            with pytest.raises(LeaseLost):
                world.service.complete(TENANT, execution_id, "work", stale_epoch, {"by": "first worker"})
            with pytest.raises(LeaseLost):
                world.service.heartbeat(TENANT, execution_id, "work", stale_epoch)
            with pytest.raises(LeaseLost):
                world.service.fail(
                    TENANT, execution_id, "work", stale_epoch, {"type": "Late", "message": "late"}, retryable=True
                )
            assert step() == taken  # the refused calls changed nothing

            flows.GATE.set()
            execution = world.wait(execution_id, timeout=30)
    finally:
        flows.GATE.set()

    assert execution.status is ExecutionStatus.SUCCEEDED
    final = step()
    assert final.output == {"by": "second worker", "attempt": 2}
    assert world.runner.outcomes == {"ignored": 1, "succeeded": 1}
    with pytest.raises(LeaseLost):  # still refused once the step is finished
        world.service.complete(TENANT, execution_id, "work", stale_epoch, {"by": "first worker"})
    history = world.service.events_after(TENANT, execution_id, None)
    assert [(e.type, e.attempt) for e in history if e.step_key == "work"] == [
        ("step.queued", 0),
        ("step.running", 1),
        ("step.queued", 1),  # the reconciler took it back
        ("step.running", 2),
        ("step.succeeded", 2),
    ]


# --- the beat lease --------------------------------------------------------------------------


@pytest.fixture
def lease_key(redis_client: redis.Redis) -> Iterator[str]:
    key = f"conveyor-it:lease:{uuid.uuid4().hex[:10]}"
    yield key
    redis_client.delete(key)


def test_one_holder_at_a_time_and_release_hands_over(redis_client: redis.Redis, lease_key: str) -> None:
    a, b = RedisLease(redis_client, lease_key), RedisLease(redis_client, lease_key)
    assert a.hold() and not b.hold()
    assert a.hold()  # renewal
    assert 0 < redis_client.pttl(lease_key) <= a.ttl_ms
    a.release()
    assert b.hold() and not a.hold()
    a.release()  # not the holder: must not delete B's lease
    assert redis_client.get(lease_key) == b.token.encode()


def test_an_expired_lease_passes_to_a_standby_and_the_old_holder_notices(
    redis_client: redis.Redis, lease_key: str
) -> None:
    a = RedisLease(redis_client, lease_key, ttl_seconds=0.3)
    b = RedisLease(redis_client, lease_key, ttl_seconds=0.3)
    assert a.hold()
    time.sleep(0.4)  # A stalled past its lease
    assert b.hold()
    assert not a.hold() and not a.held
    assert b.hold()


def test_an_unreachable_redis_means_not_holding() -> None:
    lease = RedisLease.from_url("redis://127.0.0.1:1/0", "conveyor-it:lease:nowhere")
    assert not lease.hold()
    lease.release()


def test_only_the_lease_holder_of_two_schedulers_fires(
    redis_server_url: str, redis_client: redis.Redis, lease_key: str
) -> None:
    fired: list[str] = []
    service = cast(Service, None)  # the jobs below ignore the service they are given
    app = make_celery(Settings(broker_url=redis_server_url, default_queue=f"conveyor-it-{lease_key[-10:]}"), "it-beat")

    def scheduler(name: str) -> LeasedScheduler:
        job = PeriodicJob("tick", "conveyor.tick", 0.1, run_local=lambda _service: fired.append(name))
        return LeasedScheduler(
                app=app, jobs=[job], lease=RedisLease(redis_client, lease_key), service=lambda: service, run_local=True
            )

    active, standby = scheduler("active"), scheduler("standby")
    # Counted in ticks and fires, not in seconds: a loaded machine ticks less often, and a
    # window of wall time would measure that rather than who fires.
    guard = time.monotonic() + 60  # only against a hang
    while fired.count("active") < 3:
        assert time.monotonic() < guard, f"the lease holder fired {fired.count('active')} times"
        active.tick()
        standby.tick()
        time.sleep(0.02)
    active.close()  # waits for its job threads, then releases the lease
    assert set(fired) == {"active"}
    fired.clear()
    standby.tick()  # takes the lease over at its next tick, and its job is due: it fires
    standby.wait_for_jobs()
    assert fired == ["standby"]
    standby.close()
