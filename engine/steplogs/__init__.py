"""Step logs: what each attempt of a step logs and prints, captured, bounded, redacted, shipped.

:mod:`engine.steplogs.capture` captures (per attempt, by context variable),
:mod:`engine.steplogs.shipper` sends lines live and stores finished attempts from a
background thread, :mod:`engine.steplogs.pages` reads them back a page at a time.
The runner opens one attempt around each step body with :meth:`StepLogs.attempt`.
"""

from __future__ import annotations

import logging
import time

from engine.ports import EventSink, StepLogStore
from engine.records import StepRecord
from engine.settings import Settings
from engine.steplogs import capture
from engine.steplogs.capture import AttemptLog, Redactor
from engine.steplogs.shipper import LogShipper


class StepLogs:
    """Captures the attempts run by one runner and ships them to ``store`` and ``live``."""

    def __init__(self, settings: Settings, store: StepLogStore | None, live: EventSink | None) -> None:
        self.settings = settings
        self.redact = Redactor.from_settings(settings)
        self.shipper = LogShipper(store, live)
        capture.install(logging.getLevelNamesMapping()[settings.step_logs_level])

    def attempt(self, step: StepRecord) -> _Capturing:
        """Capture everything logged in this context (and contexts copied from it) as ``step``'s
        attempt, while the returned context manager is entered (it gives the :class:`AttemptLog`)."""
        settings = self.settings
        attempt = AttemptLog(
            step.tenant,
            step.execution_id,
            step.key,
            step.run,
            step.attempt,
            max_lines=settings.step_logs_max_lines,
            max_bytes=settings.step_logs_max_bytes,
            max_line_chars=settings.step_logs_max_line_chars,
            redact=self.redact,
            started_at=time.time(),
        )
        return _Capturing(attempt, self.shipper)

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship every finished attempt now (tests, a process about to exit)."""
        return self.shipper.flush(timeout)


class _Capturing:
    """The context of one attempt: current while entered, handed to the shipper when left.

    A class rather than a generator-based context manager: it runs around every step.
    """

    __slots__ = ("attempt", "shipper", "token")

    def __init__(self, attempt: AttemptLog, shipper: LogShipper) -> None:
        self.attempt, self.shipper = attempt, shipper
        self.token: object = None

    def __enter__(self) -> AttemptLog:
        self.token = capture.enter(self.attempt)
        self.shipper.started(self.attempt)
        return self.attempt

    def __exit__(self, *exc: object) -> None:
        capture.leave(self.token)
        self.attempt.close(time.time())
        self.shipper.finished(self.attempt)


__all__ = ["AttemptLog", "Redactor", "StepLogs"]
