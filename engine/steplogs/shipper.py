"""Ship captured lines out of the hot path: live ``step.log`` events and one stored record per attempt.

One daemon thread per process (started on first use, again in a forked child) wakes every
``interval`` seconds while attempts run or wait to be stored. It sends each running
attempt's new lines to the live event stream, and for each finished attempt sends its last
lines (``done``) and writes its record; every finished attempt of one wake-up goes to the
log store in one batch. A step never waits for any of this: the runner only hands the
attempt over when it ends.

What is not shipped yet when a process dies (at most ``interval`` seconds of lines, and the
lines of attempts still running) is lost; a process that exits normally ships everything
first (:meth:`LogShipper.flush`, called at exit and when a worker's pool process stops).
"""

from __future__ import annotations

import atexit
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from engine.errors import ConveyorError
from engine.events import new_event_id
from engine.ports import EventSink, StepLogStore
from engine.records import EventRecord
from engine.steplogs.capture import AttemptLog

log = structlog.get_logger("conveyor.steplogs")

#: Seconds between two wake-ups of the shipping thread.
SHIP_INTERVAL = 0.2
#: Lines per live event at most (a long burst is sent as several events).
LINES_PER_EVENT = 200


def iso(at: float) -> str:
    """Epoch seconds as RFC 3339 UTC with microseconds, as the API writes times.

    The same text as ``datetime.fromtimestamp(at, UTC).isoformat(timespec="microseconds")``
    with ``Z``, microseconds rounded as ``datetime`` rounds them (half to even), but the
    date and time of day are formatted once per second: lines of one second share them.
    """
    fraction, whole = math.modf(at)
    micros = round(fraction * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    global _second
    second, text = _second
    if second != whole:
        second, text = _second = (int(whole), datetime.fromtimestamp(int(whole), UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{text}.{micros:06d}Z"


#: The last second :func:`iso` formatted and its text (one tuple: replaced whole, never torn).
_second: tuple[float, str] = (-1.0, "")


def live_events(attempt: AttemptLog, lines: Sequence[dict[str, Any]], *, done: bool, at: float) -> list[EventRecord]:
    """``step.log`` events carrying ``lines`` (times as RFC 3339 text); none when there is nothing to say."""
    if not lines and not (done and (attempt.sent or attempt.dropped)):
        return []
    if len(lines) <= LINES_PER_EVENT:  # nearly always: one event
        chunks: Sequence[Sequence[dict[str, Any]]] = [lines]
    else:
        chunks = [lines[i : i + LINES_PER_EVENT] for i in range(0, len(lines), LINES_PER_EVENT)]
    return [
        EventRecord(
            id=new_event_id(at),
            execution_id=attempt.execution_id,
            tenant=attempt.tenant,
            type="step.log",
            at=at,
            step_key=attempt.step_key,
            attempt=attempt.attempt,
            data={
                "run": attempt.run,
                "lines": [{**line, "at": iso(line["at"])} for line in chunk],
                "dropped": attempt.dropped,
                "done": done and i == len(chunks) - 1,
            },
        )
        for i, chunk in enumerate(chunks)
    ]


class LogShipper:
    """The shipping thread of one process, for one log store and one live event sink."""

    def __init__(
        self,
        store: StepLogStore | None,
        live: EventSink | None,
        clock: Callable[[], float] = time.time,
        interval: float = SHIP_INTERVAL,
    ) -> None:
        self.store = store
        self.live = live
        self.clock = clock
        self.interval = interval
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        atexit.register(self.flush)

    def _reset(self) -> None:
        self._cond = threading.Condition()
        self._running: dict[int, AttemptLog] = {}
        self._finished: list[AttemptLog] = []
        self._busy = False
        self._hurry = False
        self._idle = False
        self._thread: threading.Thread | None = None

    def started(self, attempt: AttemptLog) -> None:
        with self._cond:
            self._running[id(attempt)] = attempt
            self._ensure_thread()
            if self._idle:
                self._cond.notify_all()  # wake the idle thread (not one waiting out its interval)

    def finished(self, attempt: AttemptLog) -> None:
        with self._cond:
            self._running.pop(id(attempt), None)
            if attempt.lines or attempt.dropped:
                self._finished.append(attempt)
                self._ensure_thread()
                if self._idle:
                    self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship every finished attempt now; whether that was done within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._thread is None:
                return not self._finished
            self._hurry = True
            self._cond.notify_all()
            while self._finished or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="conveyor-step-logs", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._finished and not self._running:
                    self._idle = True
                    self._cond.wait()  # idle: woken when an attempt starts or ends
                self._idle = False
                # Then a whole interval, so what ends meanwhile is shipped in one batch;
                # only a flush cuts it short.
                wake = time.monotonic() + self.interval
                while not self._hurry and (left := wake - time.monotonic()) > 0:
                    self._cond.wait(left)
                self._hurry = False
                finished, self._finished = self._finished, []
                running = list(self._running.values())
                self._busy = True
            try:
                self._ship(running, finished)
            except Exception:  # the thread must outlive any failure: later attempts still ship
                log.exception("shipping step logs failed", attempts=len(finished))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _ship(self, running: list[AttemptLog], finished: list[AttemptLog]) -> None:
        now = self.clock()
        events: list[EventRecord] = []
        for attempt in running:
            events += live_events(attempt, attempt.unsent(), done=False, at=now)
        for attempt in finished:
            events += live_events(attempt, attempt.unsent(), done=True, at=now)
        if events and self.live is not None:
            self.live.publish(events)  # best effort, like every live event: it never raises
        if finished and self.store is not None:
            try:
                self.store.put_step_logs([attempt.record() for attempt in finished])
            except ConveyorError as exc:
                log.warning("could not store step logs", attempts=len(finished), error=exc.message)
