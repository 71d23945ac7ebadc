"""Structured logging (structlog) for every Conveyor process.

Log lines carry ``execution_id`` and ``step_key`` where they are known: the runner binds
them per step. ``CONVEYOR_LOG_JSON=true`` emits one JSON object per line for collectors.
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
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _CurrentStderr())),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
