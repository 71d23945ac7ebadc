"""Schedules: when a schedule trigger fires, and what each fire owed does. Pure code.

Nothing here reads a clock: every function takes the time it decides for, so beat, the API
and the tests (with an injected clock) get the same answers.

Fire times
    ``every``: anchored at ``anchor + k·every`` (the anchor is the spec's ``anchor`` or the
    trigger's creation time, to the second), never ``now + every``, so a late or restarted
    beat does not shift the grid.

    ``cron``: a standard 5-field expression evaluated in an IANA ``timezone`` by cronsim,
    whose daylight-saving policy is Debian cron's:

    * an expression with a fixed minute and hour (``30 2 * * *``) fires once a day even
      when the clocks change: a time that falls in a spring-forward gap fires at the first
      instant after the gap (03:00), a time in the repeated fall-back hour fires once, at
      its first occurrence;
    * every other expression (a ``*`` or a step in the minute or hour field) follows
      elapsed time: it fires at every real instant whose local time matches, so nothing
      fires in a skipped hour and a repeated hour fires twice.

    Fire times are strictly increasing; :meth:`Schedule.next_after` never returns a time it
    was given or an earlier one, whatever the library does around a shift.

What a fire does (:func:`plan_fires`)
    Catch-up: fire times older than ``catchup_window`` are *missed*; of the ones within the
    window, ``latest`` starts the newest (the others are missed) and ``all`` starts every
    one, at most :data:`MAX_CATCHUP`.

    Overlap, while executions this trigger started are still running: ``skip`` drops the
    fire, ``buffer_one`` keeps one fire to start when the running one ends (and drops the
    rest), ``buffer_all`` keeps up to :data:`MAX_BUFFERED`, ``cancel_other`` cancels the
    running ones and starts, ``allow_all`` starts regardless.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from engine.durations import parse_duration

#: A schedule may not fire more often than this (seconds).
MIN_INTERVAL = 1.0
#: Fire times ``catchup: all`` starts at most, per catch-up.
MAX_CATCHUP = 100
#: Fires ``overlap: buffer_all`` keeps waiting at most.
MAX_BUFFERED = 100
#: Active executions a trigger keeps track of (``allow_all`` may have many; the other policies
#: need at most a few). Bounds the trigger document, which Firestore caps at 1 MiB.
MAX_TRACKED_RUNNING = 1000
#: How late a fire may start before it counts as missed (seconds), unless the spec says.
DEFAULT_CATCHUP_WINDOW = 300.0
#: Fire times counted one by one when a cron schedule missed many (beyond: counted as this many).
_MAX_COUNTED = 10_000


class CatchUp(StrEnum):
    """Which owed fire times within the catch-up window start."""

    LATEST = "latest"
    ALL = "all"


class Overlap(StrEnum):
    """What a fire does while executions the trigger started before are still running."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    ALLOW_ALL = "allow_all"


class Schedule(ABC):
    """A strictly increasing sequence of fire times (seconds since the epoch)."""

    @abstractmethod
    def next_after(self, moment: float) -> float:
        """The first fire time strictly after ``moment``."""

    def count_before(self, start: float, end: float) -> int:
        """How many fire times lie in ``[start, end)`` (at most ``_MAX_COUNTED`` counted exactly)."""
        count, moment = 0, self.next_after(start - 0.001)
        while moment < end and count < _MAX_COUNTED:
            count, moment = count + 1, self.next_after(moment)
        return count

    def notes(self, moments: list[float], since: float) -> list[str | None]:
        """A note per fire time where a daylight-saving shift moves it; ``None`` elsewhere."""
        return [None] * len(moments)


class IntervalSchedule(Schedule):
    """``anchor + k·every`` for whole ``k``, in elapsed time."""

    def __init__(self, every: float, anchor: float) -> None:
        self.every = every
        self.anchor = anchor

    def _at(self, k: int) -> float:
        return round(self.anchor + k * self.every, 3)

    def next_after(self, moment: float) -> float:
        k = math.floor((moment - self.anchor) / self.every) + 1
        while self._at(k) <= moment:
            k += 1
        while self._at(k - 1) > moment:
            k -= 1
        return self._at(k)

    def count_before(self, start: float, end: float) -> int:
        first = self.next_after(start - 0.001)
        return 0 if first >= end else math.ceil(round((end - first) / self.every, 6))


class CronSchedule(Schedule):
    """A 5-field cron expression in an IANA time zone (DST policy: see the module docstring)."""

    def __init__(self, expression: str, timezone: str) -> None:
        self.expression = expression
        self.zone = ZoneInfo(timezone)
        parsed = CronSim(expression, datetime(2000, 1, 1, tzinfo=self.zone))
        #: Debian cron's rule: a fixed minute and hour keep their wall-clock time across shifts.
        minute, hour = expression.split()[:2]
        self.fixed_time = not minute.startswith("*") and not hour.startswith("*")
        self._minutes, self._hours = parsed.minutes, parsed.hours

    def next_after(self, moment: float) -> float:
        start = datetime.fromtimestamp(moment, self.zone)
        for found in CronSim(self.expression, start):
            # Inside a repeated hour the library works in wall time and may offer a time
            # already passed (its first occurrence): skip it, never fire it again.
            if found.timestamp() > moment:
                return found.timestamp()
        raise ValueError(f"cron expression {self.expression!r} never fires")  # pragma: no cover - cronsim stops first

    def notes(self, moments: list[float], since: float) -> list[str | None]:
        result: list[str | None] = []
        previous = datetime.fromtimestamp(since, self.zone).utcoffset()
        for moment in moments:
            local = datetime.fromtimestamp(moment, self.zone)
            offset = local.utcoffset()
            result.append(self._note(local, offset != previous))
            previous = offset
        return result

    def _note(self, local: datetime, shifted: bool) -> str | None:
        where = f"{local:%Y-%m-%d}"
        if not self.fixed_time:
            return f"the UTC offset changes to {_offset(local)} ({local:%Z}) before this fire" if shifted else None
        if local.minute not in self._minutes or local.hour not in self._hours:
            return f"the scheduled time does not exist on {where} (clocks spring forward); fires at {local:%H:%M %Z}"
        if _repeated(local):
            return f"{local:%H:%M} occurs twice on {where} (clocks fall back); fires once, at the first ({local:%Z})"
        return None


def _repeated(local: datetime) -> bool:
    """Whether this wall-clock time happens twice (the fall-back hour)."""
    other = local.replace(fold=1 - local.fold)
    return other.utcoffset() != local.utcoffset()


def _offset(local: datetime) -> str:
    return local.strftime("%z")[:3] + ":" + local.strftime("%z")[3:]


class ScheduleSpec(BaseModel):
    """A schedule trigger's spec: ``cron`` (in ``timezone``) or ``every``, and its policies."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    anchor: datetime | None = None
    catchup: CatchUp = CatchUp.LATEST
    catchup_window: float = DEFAULT_CATCHUP_WINDOW
    overlap: Overlap = Overlap.SKIP

    @field_validator("every", "catchup_window", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        if (self.cron is None) == (self.every is None):
            raise ValueError("give exactly one of 'cron' or 'every'")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        if self.cron is not None:
            if len(self.cron.split()) != 5:
                raise ValueError(f"invalid cron expression {self.cron!r}: expected 5 fields (minute to day of week)")
            try:
                CronSchedule(self.cron, self.timezone)
            except CronSimError as exc:
                raise ValueError(f"invalid cron expression {self.cron!r}: {exc}") from None
        if self.every is not None and self.every < MIN_INTERVAL:
            raise ValueError(f"'every' must be at least {MIN_INTERVAL:g}s")
        if self.anchor is not None and self.anchor.tzinfo is None:
            raise ValueError("'anchor' needs a UTC offset, e.g. 2027-01-01T00:00:00Z")
        return self

    def schedule(self, created_at: float) -> Schedule:
        """The fire times; an interval without ``anchor`` is anchored at ``created_at`` (whole second)."""
        if self.cron is not None:
            return CronSchedule(self.cron, self.timezone)
        assert self.every is not None
        anchor = self.anchor.timestamp() if self.anchor is not None else math.floor(created_at)
        return IntervalSchedule(self.every, anchor)


@dataclass(frozen=True)
class FirePreview:
    """One upcoming fire time, with a note when a daylight-saving shift moves it."""

    at: float
    note: str | None = None


def preview(schedule: Schedule, after: float, count: int) -> list[FirePreview]:
    """The next ``count`` fire times after ``after``."""
    moments: list[float] = []
    moment = after
    for _ in range(count):
        moment = schedule.next_after(moment)
        moments.append(moment)
    return [FirePreview(at, note) for at, note in zip(moments, schedule.notes(moments, after), strict=True)]


def fire_key(trigger_id: str, moment: float) -> str:
    """The idempotency key of one fire: ``trigger_id:<UTC fire time, ISO 8601>``."""
    stamp = datetime.fromtimestamp(moment, UTC)
    spec = "seconds" if stamp.microsecond == 0 else "milliseconds"
    return f"{trigger_id}:{stamp.replace(tzinfo=None).isoformat(timespec=spec)}Z"


def iso(moment: float) -> str:
    """A fire time for people and logs, in UTC."""
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class FirePlan:
    """What one pass over a due trigger does; applied in the trigger's own transaction."""

    #: Fire times to start now, oldest first (buffered ones released first).
    start: list[float]
    #: Fire times waiting for the running executions to end (replaces the trigger's list).
    pending: list[float]
    #: Cancel the executions the trigger started before (``cancel_other``).
    cancel_running: bool
    #: The trigger's next fire time: the first after the last fire time owed.
    next_fire_at: float
    missed: int = 0
    skipped: int = 0
    buffered: int = 0


@dataclass(frozen=True)
class TriggerState:
    """The parts of a trigger record a fire decision reads."""

    next_fire_at: float
    running: int = 0
    pending: list[float] = field(default_factory=list)


def plan_fires(spec: ScheduleSpec, schedule: Schedule, state: TriggerState, now: float) -> FirePlan | None:
    """Decide every fire owed at ``now``; ``None`` when nothing is due yet."""
    if state.next_fire_at > now:
        return None
    window_start = now - spec.catchup_window
    missed = schedule.count_before(state.next_fire_at, window_start) if state.next_fire_at < window_start else 0
    owed: list[float] = []
    moment = max(state.next_fire_at, schedule.next_after(window_start - 0.001))
    while moment <= now:
        owed.append(moment)
        moment = schedule.next_after(moment)
    keep = 1 if spec.catchup is CatchUp.LATEST else MAX_CATCHUP
    fires = owed[-keep:]
    missed += len(owed) - len(fires)
    return _overlap(spec.overlap, fires, state, missed=missed, next_fire_at=moment)


def _overlap(policy: Overlap, fires: list[float], state: TriggerState, *, missed: int, next_fire_at: float) -> FirePlan:
    if policy is Overlap.ALLOW_ALL:
        return FirePlan(fires, [], False, next_fire_at, missed=missed)
    if policy is Overlap.CANCEL_OTHER:
        # Each start would cancel the one before it: only the newest fire is worth starting.
        start = fires[-1:]
        return FirePlan(start, [], bool(start) and state.running > 0, next_fire_at, missed, len(fires) - len(start))
    if policy is Overlap.SKIP:
        start = fires[:1] if state.running == 0 else []
        return FirePlan(start, [], False, next_fire_at, missed=missed, skipped=len(fires) - len(start))
    capacity = 1 if policy is Overlap.BUFFER_ONE else MAX_BUFFERED
    queue = [*state.pending, *fires]
    start = queue[:1] if state.running == 0 else []
    waiting = queue[len(start) :]
    pending = waiting[:capacity]
    new = [moment for moment in pending if moment in fires]
    return FirePlan(start, pending, False, next_fire_at, missed, len(waiting) - len(pending), len(new))


def track_running(running: list[str], execution_id: str) -> list[str]:
    """``running`` with ``execution_id`` added, unless present or :data:`MAX_TRACKED_RUNNING` are tracked."""
    if execution_id in running or len(running) >= MAX_TRACKED_RUNNING:
        return running
    return [*running, execution_id]


def release_buffered(pending: list[float]) -> tuple[float | None, list[float]]:
    """When a trigger's last running execution ended: the buffered fire to start, and the rest."""
    return (pending[0], pending[1:]) if pending else (None, [])
