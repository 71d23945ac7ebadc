"""Two real ``conveyor beat`` processes on Redis and the Firestore emulator fire one every-second
schedule for a minute; the active one is SIGKILLed halfway. Every fire time gets exactly one
execution, none is started twice, and the standby takes over within the lease time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest
import redis

from engine.adapters.lease_redis import DEFAULT_TTL_SECONDS
from engine.bootstrap import build_service
from engine.records import ExecutionRecord
from engine.service import Service
from engine.settings import Settings
from engine.trigger_admin import TriggerChanges, Triggers

pytestmark = pytest.mark.backend

TENANT = "beats"
RUN_SECONDS = 60.0
KILL_AFTER = 25.0


class Beat:
    def __init__(self, name: str, env: dict[str, str], tmp_path: Path) -> None:
        self.log_path = tmp_path / f"{name}.log"
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conveyor", "beat", "--send"],
                env=env,
                cwd=tmp_path,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def active(self) -> bool:
        return "beat lease acquired" in self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


def fire_times(service: Service, trigger_id: str) -> list[float]:
    """The fire time of every execution the trigger started, read from its idempotency key."""
    executions: list[ExecutionRecord] = []
    cursor = None
    while True:
        page = service.list_executions(TENANT, cursor=cursor, limit=200)
        executions += page.items
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert all(e.trigger_id == trigger_id for e in executions)
    keys = [str(e.idempotency_key) for e in executions]
    assert len(keys) == len(set(keys)), "a fire time was started twice"
    return sorted(datetime.fromisoformat(key.split(":", 1)[1].replace("Z", "+00:00")).timestamp() for key in keys)


def test_two_beats_fire_each_second_exactly_once_and_survive_a_sigkill(
    tmp_path: Path, firestore_emulator: str, unique_project: str, redis_server_url: str
) -> None:
    queue = f"beats-{uuid.uuid4().hex[:8]}"
    options = {
        "store": "firestore",
        "firestore_project": unique_project,
        "broker_url": redis_server_url,
        "redis_url": redis_server_url,
        "default_queue": queue,
    }
    settings = Settings(**options)
    service = build_service(settings)
    service.apply_workflow(TENANT, {"name": "tick", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
    triggers = Triggers(service.store, service.clock)
    # Created disabled: it starts firing once both beats run, so the first fire times are not
    # all caught up at once by whichever beat starts first.
    trigger = triggers.create(
        TENANT, workflow="tick", kind="schedule", enabled=False,
        spec={"every": "1s", "catchup": "all", "overlap": "allow_all"},
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({f"CONVEYOR_{k.upper()}": str(v) for k, v in options.items()}, PYTHONUNBUFFERED="1")
    beats = [Beat("beat-a", env, tmp_path), Beat("beat-b", env, tmp_path)]
    client = redis.Redis.from_url(redis_server_url)
    try:
        deadline = time.monotonic() + 60
        while not any(b.active for b in beats):
            assert time.monotonic() < deadline, "no beat took the lease"
            time.sleep(0.2)
        started = time.time()
        first = triggers.update(TENANT, trigger.id, TriggerChanges(enabled=True)).next_fire_at
        time.sleep(KILL_AFTER)

        active = [b for b in beats if b.active]
        assert len(active) == 1, "exactly one beat holds the lease"
        os.killpg(active[0].proc.pid, signal.SIGKILL)
        killed_at = time.time()
        standby = next(b for b in beats if b is not active[0])
        time.sleep(RUN_SECONDS - KILL_AFTER)
        triggers.set_enabled(TENANT, trigger.id, False)
        stopped = time.time()
        assert standby.active, "the standby took the lease over"
    finally:
        for beat in beats:
            beat.stop()
        client.delete(queue)

    moments = fire_times(service, trigger.id)
    assert first is not None
    # Exactly one execution per fire time, from the first to the last one before the stop.
    assert moments == [first + k for k in range(len(moments))]
    assert moments[-1] >= stopped - 3 and moments[0] <= started + 2
    # Fire times owed while the killed beat's lease ran out were caught up by the standby,
    # which started its first execution within the lease time.
    after_kill = sorted(
        e.created_at for e in service.list_executions(TENANT, created_after=killed_at, limit=200).items
    )
    assert after_kill, "nothing fired after the kill"
    assert after_kill[0] - killed_at <= DEFAULT_TTL_SECONDS + 3
    stored = triggers.get(TENANT, trigger.id)
    assert stored.fired == len(moments) and stored.missed == 0
