"""Expected errors, returned as union members rather than raised."""

from __future__ import annotations

import strawberry
from pydantic import ValidationError

from api.problems import error_detail_text, error_details
from engine.errors import ConveyorError


@strawberry.type
class ProblemDetail:
    path: str
    message: str


@strawberry.type(description="An expected error (RFC 9457 fields): not found, invalid input, conflict, quota...")
class Problem:
    code: str
    status: str = strawberry.field(
        description="The HTTP status code REST answers with, as a string (e.g. \"404\"); a string so that "
        "`... on Execution { status } ... on Problem { status }` is valid in one selection"
    )
    message: str
    problems: list[ProblemDetail]

    @classmethod
    def from_error(cls, exc: ConveyorError) -> Problem:
        details = error_details(exc) or []
        return cls(
            code=exc.code,
            status=str(exc.status),
            message=error_detail_text(exc),
            problems=[ProblemDetail(path=d.path, message=d.message) for d in details],
        )

    @classmethod
    def from_validation(cls, exc: ValidationError) -> Problem:
        details = [ProblemDetail(path=".".join(str(p) for p in e["loc"]), message=e["msg"]) for e in exc.errors()]
        return cls(code="invalid", status="422", message="the input is not valid", problems=details)
