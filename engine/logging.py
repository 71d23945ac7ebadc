"""Structured logging (structlog) for every Conveyor process.

Log lines carry ``tenant``, ``execution_id`` and ``step_key`` where they are known: the runner
binds them (structlog context variables) for each step attempt, a step followed inline included,
and stdlib ``logging`` records (Celery's, libraries', your steps') go through the same processors,
so they carry them too. ``CONVEYOR_LOG_JSON=true`` emits one JSON object per line for collectors.

What this process prints is filtered at ``CONVEYOR_LOG_LEVEL``; the root logger's own level is
the lower of that and ``CONVEYOR_STEP_LOGS_LEVEL``, so step logs (:mod:`engine.steplogs`) can
capture a step's INFO lines even where only warnings are printed (``conveyor run``).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO, cast

import structlog

from engine.settings import Settings


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is now: tests and embedded runs swap it."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings) -> None:
    """Route structlog and stdlib logging to stderr at the configured level."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if settings.log_json else structlog.dev.ConsoleRenderer(colors=False)
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(_CurrentStderr())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_conveyor", False)]:
        root.removeHandler(old)
    handler._conveyor = True  # type: ignore[attr-defined]  # ours, replaced when logging is configured again
    handler.setLevel(level)
    root.addHandler(handler)
    # Step logs may capture lines below what this process prints (CONVEYOR_STEP_LOGS_LEVEL):
    # the root logger lets them through, and the handler above filters its output.
    capture = logging.getLevelNamesMapping().get(settings.step_logs_level.upper(), logging.INFO)
    root.setLevel(min(level, capture) if settings.step_logs_enabled else level)
