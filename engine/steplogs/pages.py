"""Read a step's stored logs a page of lines at a time, across its attempts.

Lines are ordered by (run, attempt, seq). The cursor names the next line to read; records
are fetched a few at a time, so a page costs reading the records it covers and no more.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequest
from engine.ports import StepLogStore
from engine.records import StepLogRecord

#: Records fetched per read of the log store.
RECORDS_PER_READ = 4


@dataclass(frozen=True)
class LogLine:
    run: int
    attempt: int
    seq: int
    at: float
    level: str
    logger: str
    message: str


@dataclass(frozen=True)
class AttemptSummary:
    """One stored attempt: how many lines it kept and how many it dropped over the bound."""

    run: int
    attempt: int
    lines: int
    dropped: int
    started_at: float
    finished_at: float

    @classmethod
    def of(cls, record: StepLogRecord) -> AttemptSummary:
        return cls(record.run, record.attempt, len(record.lines), record.dropped, record.started_at, record.finished_at)


@dataclass(frozen=True)
class LogPage:
    items: list[LogLine]
    #: The attempts this page read lines from (or passed over, having none).
    attempts: list[AttemptSummary]
    next_cursor: str | None = None


def _line(record: StepLogRecord, line: dict[str, Any]) -> LogLine:
    return LogLine(record.run, record.attempt, line["seq"], line["at"], line["level"], line["logger"], line["message"])


def encode_cursor(run: int, attempt: int, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{run}.{attempt}.{seq}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[int, int, int]:
    try:
        run, attempt, seq = (int(part) for part in base64.urlsafe_b64decode(cursor.encode()).decode().split("."))
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidRequest("the cursor is not valid") from None
    if run < 1 or attempt < 0 or seq < 0:
        raise InvalidRequest("the cursor is not valid")
    return run, attempt, seq


def read_page(
    store: StepLogStore,
    tenant: str,
    execution_id: str,
    step_key: str,
    *,
    run: int | None = None,
    attempt: int | None = None,
    cursor: str | None = None,
    limit: int = 200,
) -> LogPage:
    """Up to ``limit`` lines from ``cursor`` on (the first line without one), of ``run``/``attempt`` if given."""
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}")
    start: tuple[int, int, int] | None = decode_cursor(cursor) if cursor is not None else None
    after = (start[0], start[1] - 1) if start is not None else None
    items: list[LogLine] = []
    attempts: list[AttemptSummary] = []
    while True:
        records = store.list_step_logs(
            tenant, execution_id, step_key, after=after, run=run, attempt=attempt, limit=RECORDS_PER_READ
        )
        for record in records:
            first = start[2] if start is not None and (record.run, record.attempt) == start[:2] else 0
            if len(items) == limit:
                return LogPage(items, attempts, encode_cursor(record.run, record.attempt, first))
            attempts.append(AttemptSummary.of(record))
            lines = record.lines[first : first + limit - len(items)]
            items += [_line(record, line) for line in lines]
            if first + len(lines) < len(record.lines):
                return LogPage(items, attempts, encode_cursor(record.run, record.attempt, first + len(lines)))
            after = (record.run, record.attempt)
        if len(records) < RECORDS_PER_READ:
            return LogPage(items, attempts)
