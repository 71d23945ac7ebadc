"""Schedules in embedded mode (what ``conveyor dev`` runs, no Redis): they fire, executions run on
the in-process worker, and a change to a trigger (disable, a new cron) takes effect within 2 s."""

from __future__ import annotations

import time

from conveyor.embedded import embedded_service
from engine.settings import Settings
from engine.states import ExecutionStatus
from engine.trigger_admin import TriggerChanges, Triggers
from tests.services import wait_for

TENANT = "dev"
#: The issue's bound for a change to a trigger to take effect.
TAKES_EFFECT = 2.0


def created_since(service, moment):  # type: ignore[no-untyped-def]
    return service.list_executions(TENANT, created_after=moment, limit=200).items




def test_schedules_fire_without_redis_and_changes_take_effect_within_two_seconds(tmp_path):
    settings = Settings(state_dir=tmp_path / "state")
    with embedded_service(settings, schedules=True) as service:
        service.apply_workflow(TENANT, {"name": "tick", "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]})
        triggers = Triggers(service.store, service.clock)
        trigger = triggers.create(TENANT, workflow="tick", kind="schedule", spec={"every": "1s"})

        def succeeded():  # type: ignore[no-untyped-def]
            done = [e for e in created_since(service, 0) if e.status is ExecutionStatus.SUCCEEDED]
            return len(done) >= 2

        wait_for(succeeded, 30, "two fires ran to success on the in-process worker")

        disabled_at = triggers.set_enabled(TENANT, trigger.id, False).updated_at
        time.sleep(TAKES_EFFECT + 1.5)
        assert created_since(service, disabled_at + TAKES_EFFECT) == []

        yearly = triggers.update(TENANT, trigger.id, TriggerChanges(spec={"cron": "0 0 1 1 *"}, enabled=True))
        time.sleep(TAKES_EFFECT + 1.5)
        assert created_since(service, yearly.updated_at + TAKES_EFFECT) == []

        every_second = triggers.update(TENANT, trigger.id, TriggerChanges(spec={"every": "1s"}))
        resumed = wait_for(lambda: created_since(service, every_second.updated_at), 10, "fires resume")
        assert min(e.created_at for e in resumed) - every_second.updated_at <= TAKES_EFFECT
