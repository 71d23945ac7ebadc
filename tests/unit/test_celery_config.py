"""Celery wiring without a server: configuration, the dispatcher on the in-memory broker,
the worker command line and the beat schedule."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, cast

import pytest

from beat.scheduler import LeasedScheduler, beat_lease, lease_key, periodic_jobs, scheduler_factory
from conveyor.commands.worker import Pool, worker_argv
from engine.adapters.broker_redis import STEP_HEADER
from engine.adapters.celery_config import (
    MEMORY_POLLING_INTERVAL,
    NORMAL_PRIORITY,
    REDIS_TRANSPORT,
    URGENT_PRIORITY,
    celery_config,
    is_embedded,
    make_celery,
    queue_keys,
)
from engine.adapters.dispatcher_celery import EPOCH_HEADER, RUN_STEP_TASK, CeleryDispatcher
from engine.adapters.ledger_redis import member
from engine.errors import ConveyorError, StoreUnavailable
from engine.ports import Dispatch
from engine.reconcile import ReconcileReport
from engine.service import Service
from engine.settings import Settings

CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"  # nothing listens on port 1: connections are refused


def test_production_config_serves_the_delivery_guarantees() -> None:
    settings = Settings(broker_url="redis://broker:6379/0", visibility_timeout=900, default_queue="work")
    config = celery_config(settings)
    assert config["broker_url"] == "redis://broker:6379/0"
    assert config["broker_transport_options"]["visibility_timeout"] == 900
    assert "polling_interval" not in config["broker_transport_options"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["accept_content"] == ["json"]
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert config["broker_connection_retry_on_startup"] is True
    assert config["task_default_queue"] == "work"
    assert config["task_ignore_result"] is True and config["result_backend"] is None
    assert not is_embedded(settings)


def test_embedded_mode_uses_the_memory_transport_with_a_short_poll() -> None:
    settings = Settings(broker_url=None)
    config = celery_config(settings)
    assert config["broker_url"] == "memory://"
    assert config["broker_transport_options"]["polling_interval"] == MEMORY_POLLING_INTERVAL
    assert is_embedded(settings)


def test_make_celery_applies_the_config_and_includes_task_modules() -> None:
    app = make_celery(Settings(default_queue="q1"), "unit", include=["tasks.steps"])
    assert app.main == "unit"
    assert app.conf.task_default_queue == "q1"
    assert app.conf.accept_content == ["json"]
    assert list(app.conf.include) == ["tasks.steps"]


def _unique_queue() -> str:
    # The memory transport's queues are process-wide: a name of its own keeps tests apart.
    return f"unit-{uuid.uuid4().hex[:8]}"


def test_dispatcher_sends_run_step_by_name_to_the_step_queue_with_countdown() -> None:
    default, gpu = _unique_queue(), _unique_queue()
    dispatcher = CeleryDispatcher.from_settings(Settings(default_queue=default))
    dispatcher.dispatch(
        [
            Dispatch("t1", "e1", "a", epoch=0),
            Dispatch("t1", "e1", "b[0]", queue=gpu, countdown=2.5, epoch=3),
            Dispatch("t1", "e1", "c"),
        ]
    )
    received: dict[str, list[Any]] = {}
    with dispatcher.app.connection_for_read() as connection:
        for queue in (default, gpu):
            simple = connection.SimpleQueue(queue)
            while simple.qsize():
                message = simple.get(timeout=1)
                received.setdefault(queue, []).append(message)
                message.ack()
    assert [m.payload[0] for m in received[default]] == [["t1", "e1", "a"], ["t1", "e1", "c"]]
    assert [m.payload[0] for m in received[gpu]] == [["t1", "e1", "b[0]"]]
    for message in received[default] + received[gpu]:
        assert message.headers["task"] == RUN_STEP_TASK
        assert message.content_type == "application/json"
    assert received[default][0].headers["eta"] is None
    assert received[gpu][0].headers["eta"] is not None
    # The step's epoch rides in a header (a worker of an older version ignores it); none if unknown.
    assert [m.headers.get(EPOCH_HEADER) for m in received[default]] == [0, None]
    assert received[gpu][0].headers[EPOCH_HEADER] == 3
    # ...and the step it runs, for the message ledger (engine/adapters/broker_redis.py).
    assert [m.headers[STEP_HEADER] for m in received[gpu]] == [member("t1", "e1", "b[0]")]


def test_a_broker_outage_is_logged_not_raised_and_ping_reports_it() -> None:
    dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=CLOSED_PORT_BROKER))
    began = time.monotonic()
    dispatcher.dispatch([Dispatch("t1", "e1", "a"), Dispatch("t1", "e1", "b")])  # the reconciler re-sends
    assert time.monotonic() - began < 5
    with pytest.raises(StoreUnavailable):
        dispatcher.ping()
    CeleryDispatcher.from_settings(Settings(broker_url=None)).ping()


def test_worker_consumes_the_default_queue_first_plus_extra_queues() -> None:
    settings = Settings(default_queue="conveyor", log_level="WARNING")
    argv = worker_argv(
        settings, queues=["gpu,io", "gpu", "conveyor"], concurrency=4, pool=Pool.threads, loglevel=None, hostname="a@%h"
    )
    assert argv == [
        "worker",
        "--loglevel=WARNING",
        "--pool=threads",
        "--queues=conveyor,gpu,io",
        "--concurrency=4",
        "--hostname=a@%h",
    ]
    assert worker_argv(settings, queues=[], concurrency=None, pool=Pool.prefork, loglevel="DEBUG", hostname=None) == [
        "worker",
        "--loglevel=DEBUG",
        "--pool=prefork",
        "--queues=conveyor",
    ]


def test_beat_runs_the_reconciler_itself_every_reconcile_interval() -> None:
    """No task: the pass never waits in the step queues behind a backlog."""
    [job] = periodic_jobs(Settings(reconcile_interval=2.5))
    assert (job.name, job.task, job.every) == ("conveyor.reconcile", None, 2.5)


def test_the_beat_lease_lives_in_redis_and_is_scoped_by_queue() -> None:
    assert beat_lease(Settings(broker_url=None, redis_url=None)) is None
    lease = beat_lease(Settings(broker_url="redis://b:6379/0", default_queue="prod"))
    assert lease is not None and lease.key == lease_key(Settings(default_queue="prod")) == "conveyor:beat:lease:prod"


def test_embedded_beat_runs_jobs_in_process_without_a_lease() -> None:
    settings = Settings(broker_url=None, redis_url=None, reconcile_interval=0.05, default_queue=_unique_queue())
    reconciled: list[float] = []

    class FakeService:
        def reconcile(self) -> ReconcileReport:
            reconciled.append(time.monotonic())
            return ReconcileReport()

    factory = scheduler_factory(settings)
    scheduler: LeasedScheduler = factory(app=make_celery(settings, "unit-beat"))
    assert scheduler.lease is None and scheduler.service is not None
    scheduler.service = lambda: cast(Service, FakeService())
    scheduler.schedules = None  # the schedule job is tested on its own
    deadline = time.monotonic() + 10  # generous: the machine may be loaded
    while len(reconciled) < 3 and time.monotonic() < deadline:
        time.sleep(max(0.0, min(scheduler.tick(), 0.02)))  # like beat: a negative delay means now
    assert len(reconciled) >= 3
    scheduler.close()


def test_beat_runs_the_reconciler_itself_even_when_it_sends_jobs_to_workers() -> None:
    settings = Settings(broker_url=None, redis_url=None, reconcile_interval=0.05, default_queue=_unique_queue())
    reconciled: list[float] = []

    class FakeService:
        def reconcile(self) -> ReconcileReport:
            reconciled.append(time.monotonic())
            return ReconcileReport(redispatched=1, complete=False)

    scheduler: LeasedScheduler = scheduler_factory(settings, local=False)(app=make_celery(settings, "unit-beat"))
    assert not scheduler.run_local
    scheduler.service = lambda: cast(Service, FakeService())
    sent: list[Any] = []
    scheduler.send_task = lambda *args, **kwargs: sent.append(args)  # nothing may be sent
    scheduler.schedules = None  # the schedule job is tested on its own
    deadline = time.monotonic() + 10  # generous: the machine may be loaded
    while len(reconciled) < 2 and time.monotonic() < deadline:
        time.sleep(max(0.0, min(scheduler.tick(), 0.02)))
    assert len(reconciled) >= 2 and sent == []
    scheduler.close()


def test_urgent_dispatches_are_published_on_the_lane_workers_drain_first() -> None:
    """kombu's Redis transport serves the lowest priority number first."""
    config = celery_config(Settings(broker_url="redis://broker:6379/0"))
    assert config["broker_transport_options"]["priority_steps"] == [URGENT_PRIORITY, NORMAL_PRIORITY]
    assert URGENT_PRIORITY < NORMAL_PRIORITY
    assert queue_keys("work") == ["work", "work\x06\x169"]
    assert "priority_steps" not in celery_config(Settings(broker_url=None))["broker_transport_options"]


def test_a_redis_broker_queues_through_the_transport_that_records_the_ledger() -> None:
    import ssl

    from kombu.transport import resolve_transport

    from engine.adapters import broker_redis

    assert broker_redis.missing_private_names() == []
    config = celery_config(Settings(broker_url="redis://broker:6379/0"))
    assert resolve_transport(config["broker_transport"]) is broker_redis.Transport
    assert "broker_use_ssl" not in config
    # naming the transport hides the URL's scheme from kombu: rediss:// keeps kombu's default TLS...
    tls = celery_config(Settings(broker_url="rediss://:pw@broker:6378/0"))
    assert tls["broker_transport"] == config["broker_transport"]
    assert tls["broker_use_ssl"] == {"ssl_cert_reqs": ssl.CERT_NONE}
    # ...and TLS options in the URL still win (kombu reads them from the URL)
    assert "broker_use_ssl" not in celery_config(Settings(broker_url="rediss://broker:6378/0?ssl_cert_reqs=required"))
    assert "broker_transport" not in celery_config(Settings(broker_url=None))


class _SlowPassService:
    """A reconciler pass that lasts until the schedule job has polled (or 10 s went by)."""

    def __init__(self) -> None:
        import threading

        self.settings = Settings(broker_url=None, redis_url=None)
        self.polled = threading.Event()
        self.pass_started = threading.Event()
        self.in_pass = False
        self.polls_during_pass = 0

    def reconcile(self, should_stop: Any = None) -> ReconcileReport:
        self.in_pass = True
        self.pass_started.set()
        self.polled.wait(10)
        self.in_pass = False
        return ReconcileReport()

    def fire_due_triggers(self, horizon: float = 1.0) -> float | None:
        if self.in_pass:
            self.polls_during_pass += 1
            self.polled.set()
        return None


def test_a_long_reconciler_pass_does_not_hold_up_the_schedule_job_in_beat() -> None:
    from beat.schedules import SchedulePoller

    settings = Settings(broker_url=None, redis_url=None, reconcile_interval=0.05, default_queue=_unique_queue())
    fake = _SlowPassService()
    scheduler: LeasedScheduler = scheduler_factory(settings)(app=make_celery(settings, "unit-beat"))
    scheduler.service = lambda: cast(Service, fake)
    scheduler.schedules = SchedulePoller(lambda: cast(Service, fake), interval=0.05)
    deadline = time.monotonic() + 10  # generous: the machine may be loaded
    while not fake.polled.is_set() and time.monotonic() < deadline:
        time.sleep(max(0.0, min(scheduler.tick(), 0.02)))
    scheduler.close()
    assert fake.pass_started.is_set() and fake.polls_during_pass >= 1


def test_a_long_reconciler_pass_does_not_hold_up_schedules_in_embedded_mode() -> None:
    from conveyor.embedded import Reconciler

    fake = _SlowPassService()
    reconciler = Reconciler(cast(Service, fake), 0.05, schedules=True)
    reconciler.start()
    fake.polled.wait(10)
    reconciler.stop()
    assert fake.pass_started.is_set() and fake.polls_during_pass >= 1


def test_without_kombus_private_names_a_redis_broker_keeps_kombus_stock_transport_and_warns_once(
    kombu_without_a_private_name: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="engine.adapters.broker_redis"):
        config = celery_config(Settings(broker_url="rediss://broker:6378/0"))
        celery_config(Settings(broker_url="redis://broker:6379/0"))
    assert "broker_transport" not in config and "broker_use_ssl" not in config  # kombu's, by the URL's scheme
    warnings = [r.getMessage() for r in caplog.records if r.name == "engine.adapters.broker_redis"]
    assert len(warnings) == 1
    assert "Channel._gone_in_a_future_kombu" in warnings[0] and "stock Redis transport" in warnings[0]


def test_broker_transport_stock_keeps_kombus_own_and_ledger_refuses_to_go_without_its_private_names(
    kombu_without_a_private_name: None,
) -> None:
    from engine.adapters import broker_redis

    assert "broker_transport" not in celery_config(Settings(broker_url="redis://b:6379/0", broker_transport="stock"))
    with pytest.raises(ConveyorError, match=r"broker_transport=ledger.*Channel\._gone_in_a_future_kombu"):
        celery_config(Settings(broker_url="redis://b:6379/0", broker_transport="ledger"))
    # in-memory: no Redis transport to choose, whatever the setting
    assert "broker_transport" not in celery_config(Settings(broker_url=None, broker_transport="ledger"))
    assert broker_redis.ledger_transport_usable.cache_info().currsize == 0  # stock never looked


def test_broker_transport_ledger_names_the_ledgers_transport_when_kombu_has_its_private_names() -> None:
    config = celery_config(Settings(broker_url="redis://b:6379/0", broker_transport="ledger"))
    assert config["broker_transport"] == REDIS_TRANSPORT
