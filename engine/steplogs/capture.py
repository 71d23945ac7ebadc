"""Capture what a step attempt logs: ``logging`` records and ``print`` output, per attempt.

The runner opens an :class:`AttemptLog` for each attempt and makes it current in a context
variable around the step's body. Two hooks, installed once per process, route by that
variable, so concurrent attempts in one process (worker threads, a sync step's thread,
asyncio tasks) each get their own lines and nothing else's:

- a handler on the root logger takes every record that reaches it while an attempt is current;
- ``sys.stdout`` is wrapped in a router that copies what is written while an attempt is
  current (whole lines) and always passes the text on to the stream it wraps.

Outside an attempt both hooks cost one context-variable read. A sync step's thread sees the
attempt because the task step runs it in a copy of the context; a thread the step starts
itself does not (its lines go to the worker's output only). Records at or above
``CONVEYOR_STEP_LOGS_LEVEL`` are taken, if the logger they are logged to lets them through
(Conveyor's logging configuration lets that level through the root logger).

Each attempt keeps at most ``max_lines`` lines and ``max_bytes`` bytes of messages; later
lines are only counted (``dropped``). Kept lines are redacted (:class:`Redactor`) before
anything else sees them.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from typing import Any, TextIO
from urllib.parse import urlsplit

from engine.records import StepLogRecord
from engine.settings import Settings

#: The attempt whose lines are being captured in this context, if any.
_current: ContextVar[AttemptLog | None] = ContextVar("conveyor_step_log", default=None)

#: Logger name of ``print`` output.
STDOUT = "stdout"
MASK = "***"
#: Secret values shorter than this are not redacted: masking every "1" would ruin every line.
MIN_SECRET_CHARS = 4
#: Per-line overhead counted against ``max_bytes`` besides the message and logger name.
LINE_OVERHEAD_BYTES = 48


class Redactor:
    """Replaces secret values and secret patterns in a text by ``***``."""

    def __init__(self, values: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        secrets = sorted({v for v in values if len(v) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        parts = [re.escape(v) for v in secrets] + [f"(?:{p})" for p in patterns]
        self._regex = re.compile("|".join(parts)) if parts else None

    def __call__(self, text: str) -> str:
        return self._regex.sub(MASK, text) if self._regex is not None else text

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> Redactor:
        """Values of ``step_logs_redact_env``'s variables, secrets among the settings, and the patterns."""
        environ = os.environ if environ is None else environ
        values = [environ[name] for name in settings.step_logs_redact_env if environ.get(name)]
        values += _setting_secrets(settings)
        return cls(values, settings.step_logs_redact_patterns)


def _setting_secrets(settings: Settings) -> list[str]:
    """Secrets Conveyor itself is configured with: they never belong in a step's log."""
    found = [settings.sentry_dsn or ""]
    if settings.approval_link_secret is not None:
        found.append(settings.approval_link_secret.get_secret_value())
    for url in (settings.broker_url, settings.redis_url):
        found.append((urlsplit(url).password or "") if url else "")
    found += [entry.split(":", 1)[1] for entry in settings.flower_basic_auth if ":" in entry]
    return [value for value in found if value]


class AttemptLog:
    """The captured lines of one attempt, bounded; appended to from any thread."""

    def __init__(
        self,
        tenant: str,
        execution_id: str,
        step_key: str,
        run: int,
        attempt: int,
        *,
        max_lines: int,
        max_bytes: int,
        max_line_chars: int,
        redact: Redactor,
        started_at: float,
    ) -> None:
        self.tenant, self.execution_id, self.step_key = tenant, execution_id, step_key
        self.run, self.attempt = run, attempt
        self.max_lines, self.max_bytes, self.max_line_chars = max_lines, max_bytes, max_line_chars
        self.redact = redact
        self.started_at = started_at
        self.finished_at = started_at
        self.lines: list[dict[str, Any]] = []
        self.dropped = 0
        #: How many lines the live stream has been sent (kept by the shipper).
        self.sent = 0
        self.closed = False
        self._bytes = 0
        self._full = max_lines == 0
        self._partial = ""
        self._lock = threading.Lock()

    def full(self) -> bool:
        return self._full

    def add(self, at: float, level: str, logger: str, message: str) -> None:
        """Keep one line, or count it as dropped once the attempt's bound is reached."""
        if self._full or self.closed:
            self._drop()
            return
        message = self.redact(message)
        if len(message) > self.max_line_chars:
            message = message[: self.max_line_chars] + " [truncated]"
        encoded = len(message) if message.isascii() else len(message.encode("utf-8", "replace"))
        size = encoded + len(logger) + LINE_OVERHEAD_BYTES
        with self._lock:
            if self._full or self._bytes + size > self.max_bytes:
                self._full = True
                self.dropped += 1
                return
            self._bytes += size
            self.lines.append({"seq": len(self.lines), "at": at, "level": level, "logger": logger, "message": message})
            if len(self.lines) >= self.max_lines:
                self._full = True

    def _drop(self) -> None:
        if not self.closed:
            with self._lock:
                self.dropped += 1

    def add_record(self, record: logging.LogRecord) -> None:
        if self._full or self.closed:
            self._drop()
            return
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in user code: keep what was given
            message = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and record.exc_info[0] is not None:
            message = f"{message}\n{_FORMATTER.formatException(record.exc_info)}"
        elif record.exc_text:
            message = f"{message}\n{record.exc_text}"
        self.add(record.created, record.levelname, record.name, message)

    def write(self, text: str) -> None:
        """Text written to stdout: each complete line is one line of level INFO, logger ``stdout``."""
        if self.closed:
            return
        with self._lock:
            text, self._partial = self._partial + text, ""
            *complete, rest = text.split("\n")
            self._partial = rest
        now = time.time()
        for line in complete:
            self.add(now, "INFO", STDOUT, line.rstrip("\r"))

    def close(self, finished_at: float) -> None:
        """End the attempt: an unfinished stdout line is kept; later lines are ignored."""
        with self._lock:
            partial, self._partial = self._partial, ""
        if partial:
            self.add(time.time(), "INFO", STDOUT, partial)
        self.finished_at = finished_at
        self.closed = True

    def record(self) -> StepLogRecord:
        with self._lock:
            lines = list(self.lines)
        return StepLogRecord(
            tenant=self.tenant,
            execution_id=self.execution_id,
            step_key=self.step_key,
            run=self.run,
            attempt=self.attempt,
            lines=lines,
            dropped=self.dropped,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )

    def unsent(self) -> list[dict[str, Any]]:
        """Lines not sent live yet (the shipper calls this from its one thread)."""
        with self._lock:
            new = self.lines[self.sent :]
        self.sent += len(new)
        return new


_FORMATTER = logging.Formatter()


class _CaptureHandler(logging.Handler):
    """Hands each record to the current attempt; does nothing outside one."""

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: an AttemptLog locks itself, and most records belong to no attempt.
        current = _current.get()
        if current is None or record.levelno < self.level:
            last_resort = logging.lastResort
            alone = _ROOT.handlers == [self]
            if alone and last_resort is not None and record.levelno >= last_resort.level and _alone(record.name):
                last_resort.handle(record)  # what logging does when no handler is configured
            return False
        current.add_record(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)


class _StdoutRouter:
    """``sys.stdout``: copies writes to the current attempt, passes everything on to ``target``."""

    def __init__(self, target: TextIO) -> None:
        self.target = target

    def write(self, text: str) -> int:
        current = _current.get()
        if current is not None:
            current.write(text)
        return self.target.write(text)

    def flush(self) -> None:
        self.target.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, fileno, isatty, buffer, ...
        return getattr(self.target, name)


def _alone(name: str) -> bool:
    """Whether no handler but ours would see a record of logger ``name`` (logging's own test)."""
    logger: logging.Logger | None = logging.getLogger(name)
    while logger is not None:
        if any(handler is not _HANDLER for handler in logger.handlers):
            return False
        logger = logger.parent if logger.propagate else None
    return True


_ROOT = logging.getLogger()
_HANDLER = _CaptureHandler()
_install_lock = threading.Lock()


def install(level: int | None = None) -> None:
    """Put the hooks in place (again, if a logging configuration or a test removed them)."""
    if level is not None:
        _HANDLER.setLevel(level)
    if _HANDLER not in _ROOT.handlers or not isinstance(sys.stdout, _StdoutRouter) or _ROOT.level > _HANDLER.level:
        with _install_lock:
            if _HANDLER not in _ROOT.handlers:
                _ROOT.addHandler(_HANDLER)
            if not isinstance(sys.stdout, _StdoutRouter):
                sys.stdout = _StdoutRouter(sys.stdout)  # type: ignore[assignment,unused-ignore]
            if _ROOT.level > _HANDLER.level:
                _let_through(_HANDLER.level)


def _let_through(level: int) -> None:
    """Lower the root logger to ``level`` without changing what its other handlers print.

    Each of them gets the root's former level (unless its own is higher), so it sees exactly
    the records it saw before; only the capture handler sees the lower ones. (A process that
    prints warnings only, as ``celery worker --loglevel WARNING`` or ``conveyor run`` set it
    up, still captures a step's INFO lines.)
    """
    former = _ROOT.level
    for handler in _ROOT.handlers:
        if handler is not _HANDLER and handler.level < former:
            handler.setLevel(former)
    _ROOT.setLevel(level)


def current() -> AttemptLog | None:
    """The attempt being captured in this context."""
    return _current.get()


def enter(attempt: AttemptLog) -> object:
    """Make ``attempt`` current in this context; pass the token to :func:`leave`."""
    install()
    return _current.set(attempt)


def leave(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
