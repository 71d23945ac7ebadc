"""``conveyor beat``: Celery Beat firing Conveyor's periodic jobs, one active instance at a time.

A :class:`PeriodicJob` fires every ``every`` seconds. A job with a task is normally sent to
the workers by name (beat never imports the task code); with ``local`` (the default in
embedded mode, where no worker in another process could receive it) beat runs the job in
its own process against a :class:`~engine.service.Service` instead. A job without a task
always runs in beat: the reconciler does, so that recovery never waits in the step queues
behind a backlog (see docs/architecture.md, "The reconciler").

Several beat instances may run for availability: before each firing the scheduler makes
sure it holds the Redis lease (:mod:`engine.adapters.lease_redis`); the others stand by.
Without Redis (embedded mode) there is no lease and the single instance is always active.
A job beat runs itself runs on a thread of its own (one per job, one run at a time: a firing
that finds the previous run still going is skipped), so a reconciler pass (up to
``reconcile_pass_seconds``) never holds up the schedule poller on beat's own thread, and the
passes of the reconciler never overlap.

To add a periodic job, append a factory to :data:`JOB_FACTORIES`. Schedule triggers are
not Celery entries: one :class:`~beat.schedules.SchedulePoller` runs in the beat process
(production and embedded alike) while it holds the lease, polling due triggers every
second or sooner.
"""

from __future__ import annotations

import dataclasses
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from celery.beat import Scheduler

from beat.schedules import SchedulePoller
from engine.adapters.celery_config import is_embedded, make_celery
from engine.adapters.lease_redis import RedisLease
from engine.adapters.liveness import LivenessFile
from engine.bootstrap import build_service, reconciler_lease, reconciler_lease_key
from engine.errors import ConveyorError
from engine.service import Service
from engine.settings import Settings

log = structlog.get_logger("conveyor.beat")


@dataclass(frozen=True)
class PeriodicJob:
    """One periodic firing: send ``task`` every ``every`` seconds, or call ``run_local``.

    A job without ``task`` is always run by beat itself.
    """

    name: str
    task: str | None
    every: float
    run_local: Callable[[Service], object]


def reconcile(service: Service) -> None:
    """One reconciler pass, logged when it did something."""
    try:
        report = service.reconcile()
    except ConveyorError as exc:  # the store is unreachable: the next firing tries again
        log.warning("reconciler pass failed", error=str(exc))
        return
    if report.total or report.failed or not report.complete:
        log.info("reconciled", **dataclasses.asdict(report))


def reconciler_job(settings: Settings) -> PeriodicJob:
    """Expired leases, lost dispatches, due timers and deadlines (ARCHITECTURE §2.6), in beat."""
    return PeriodicJob("conveyor.reconcile", None, settings.reconcile_interval, reconcile)


#: Every periodic job of beat, as factories of settings.
JOB_FACTORIES: list[Callable[[Settings], PeriodicJob]] = [reconciler_job]


def periodic_jobs(settings: Settings) -> list[PeriodicJob]:
    return [factory(settings) for factory in JOB_FACTORIES]


def beat_lease(settings: Settings) -> RedisLease | None:
    """The lease on ``CONVEYOR_REDIS_URL`` (or a Redis broker); ``None`` without Redis.

    Beats serving the same default queue share one lease: two deployments on one Redis
    (with different queues) each keep their own active beat. It is the reconciler's lease
    (``conveyor run --reconcile`` takes it too): beat runs the reconciler.
    """
    return reconciler_lease(settings)


def lease_key(settings: Settings) -> str:
    return reconciler_lease_key(settings)


#: Seconds a standby beat waits before trying the lease again: it takes over soon after it lapses.
STANDBY_RETRY = 1.0


def schedule_poller(settings: Settings, service: Callable[[], Service], lease: RedisLease | None) -> SchedulePoller:
    """The schedule job; with a lease, its Redis ``TIME`` is the clock drift reference."""
    return SchedulePoller(
        service,
        interval=settings.schedule_poll_interval,
        reference_time=None if lease is None else lease.server_time,
    )


class LeasedScheduler(Scheduler):  # type: ignore[misc]
    """A Celery Beat scheduler over a fixed list of jobs that fires only while holding the lease.

    The schedule is kept in memory: a missed firing of an interval job needs no catching up,
    so there is no schedule file to persist or share.
    """

    def __init__(
        self,
        *args: Any,
        jobs: Sequence[PeriodicJob],
        lease: RedisLease | None,
        service: Callable[[], Service],
        run_local: bool = False,
        liveness: LivenessFile | None = None,
        schedules: SchedulePoller | None = None,
        **kwargs: Any,
    ) -> None:
        self.jobs = {job.name: job for job in jobs}
        self.schedules = schedules
        self.liveness = liveness
        self.lease = lease
        self.service = service
        self.run_local = run_local
        self._running: dict[str, threading.Thread] = {}
        super().__init__(*args, **kwargs)

    def setup_schedule(self) -> None:
        self.merge_inplace(
            {
                job.name: {"task": job.task or job.name, "schedule": job.every, "options": {"expires": job.every}}
                for job in self.jobs.values()
            }
        )

    def tick(self, *args: Any, **kwargs: Any) -> float:
        if self.liveness is not None:
            self.liveness.touch()
        if self.lease is None:
            return self._fire_schedules(float(super().tick(*args, **kwargs)))
        if not self.lease.hold():
            return min(self.lease.renew_every, STANDBY_RETRY)
        # Wake up in time to renew, however far away the next firing is.
        return min(self._fire_schedules(float(super().tick(*args, **kwargs))), self.lease.renew_every)

    def _fire_schedules(self, interval: float) -> float:
        """Run the schedule job if due; the sooner of ``interval`` and its next poll."""
        return interval if self.schedules is None else min(interval, self.schedules.tick())

    def apply_async(self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any) -> Any:
        if not self.run_local and self.jobs[entry.name].task is not None:
            return super().apply_async(entry, producer, advance, **kwargs)
        entry = self.reserve(entry) if advance else entry
        self._run_in_background(self.jobs[entry.name])
        return None

    def _run_in_background(self, job: PeriodicJob) -> None:
        """Run a job beat runs itself on its own thread, unless its previous run is still going.

        Beat's thread goes straight back to ticking: the schedule poller keeps firing while a
        reconciler pass runs (a fire due meanwhile is not delayed by the pass).
        """
        running = self._running.get(job.name)
        if running is not None and running.is_alive():
            log.debug("previous run still going; this firing is skipped", job=job.name)
            return
        thread = threading.Thread(target=self._run_job, args=(job,), name=f"beat-{job.name}", daemon=True)
        self._running[job.name] = thread
        thread.start()

    def _run_job(self, job: PeriodicJob) -> None:
        try:
            job.run_local(self.service())
        except Exception:  # beat must outlive one bad run; the next firing tries again
            log.exception("periodic job failed", job=job.name)

    def wait_for_jobs(self, timeout: float | None = None) -> None:
        """Wait for the jobs running on their threads to finish (the store is not left mid-transaction)."""
        for thread in list(self._running.values()):
            thread.join(timeout)

    def close(self) -> None:
        try:
            self.wait_for_jobs()
            super().close()
        finally:
            if self.lease is not None:
                self.lease.release()


def scheduler_factory(settings: Settings, *, local: bool | None = None) -> Callable[..., LeasedScheduler]:
    """What Celery Beat instantiates; ``local`` defaults to True in embedded mode."""
    run_local = is_embedded(settings) if local is None else local
    # Schedules and the reconciler always run in this process; other jobs only with ``local``.
    service = functools.cache(lambda: build_service(settings))
    liveness = LivenessFile(settings.liveness_file) if settings.liveness_file else None
    lease = beat_lease(settings)
    return functools.partial(
        LeasedScheduler,
        jobs=periodic_jobs(settings),
        lease=lease,
        service=service,
        run_local=run_local,
        liveness=liveness,
        schedules=schedule_poller(settings, service, lease),
    )


def run_beat(settings: Settings, *, local: bool | None = None, loglevel: str | None = None) -> None:
    """Run Celery Beat in the foreground until interrupted."""
    app = make_celery(settings, "conveyor-beat")
    app.Beat(scheduler=scheduler_factory(settings, local=local), loglevel=loglevel or settings.log_level).run()
