"""What a step's attempts logged: ``GET /v1/executions/{id}/steps/{key}/logs``."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from engine.steplogs.pages import AttemptSummary, LogLine, LogPage
from engine.times import to_datetime


class StepLogLine(BaseModel):
    """One line a step logged (a ``logging`` record, or a line it printed: logger ``stdout``)."""

    run: int = Field(description="The execution's run (an execution retry starts the next)")
    attempt: int
    seq: int = Field(description="The line's place in its attempt, from 0")
    at: datetime
    level: str = Field(examples=["INFO"])
    logger: str = Field(examples=["orders"])
    message: str = Field(description="Redacted: secrets named in the settings show as ***")

    @classmethod
    def build(cls, line: LogLine) -> StepLogLine:
        return cls(
            run=line.run,
            attempt=line.attempt,
            seq=line.seq,
            at=to_datetime(line.at),
            level=line.level,
            logger=line.logger,
            message=line.message,
        )


class StepLogAttempt(BaseModel):
    """One attempt's stored logs: ``lines`` kept, ``dropped`` over the per-attempt bound (counted, not kept)."""

    run: int
    attempt: int
    lines: int
    dropped: int
    started_at: datetime
    finished_at: datetime

    @classmethod
    def build(cls, summary: AttemptSummary) -> StepLogAttempt:
        return cls(
            run=summary.run,
            attempt=summary.attempt,
            lines=summary.lines,
            dropped=summary.dropped,
            started_at=to_datetime(summary.started_at),
            finished_at=to_datetime(summary.finished_at),
        )


class StepLogPage(BaseModel):
    """A page of lines, with the attempts they belong to. Pass ``next_cursor`` as ``cursor`` for more."""

    items: list[StepLogLine]
    attempts: list[StepLogAttempt]
    next_cursor: str | None = Field(default=None, description="Absent on the last page")

    @classmethod
    def build(cls, page: LogPage) -> StepLogPage:
        return cls(
            items=[StepLogLine.build(line) for line in page.items],
            attempts=[StepLogAttempt.build(a) for a in page.attempts],
            next_cursor=page.next_cursor,
        )
