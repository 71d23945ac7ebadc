"""The one error tree of Conveyor.

Every error the engine, its adapters, the API and the CLI raise on purpose derives from
:class:`ConveyorError`. Vendor exceptions (Firestore, SQLite, Redis, Celery) are translated
inside adapters. The API maps each class to an RFC 9457 problem in one place using
``status`` and ``code``.

    ConveyorError
    ├── InvalidRequest (422)
    │   ├── DefinitionInvalid          workflow definition problems, every one with its path
    │   ├── InputInvalid               execution input fails the version's JSON Schema
    │   ├── ExpressionError            a CEL expression failed to compile or evaluate
    │   ├── PayloadInvalid             a payload is not plain JSON (a datetime, NaN, a cycle)
    │   └── InvalidFilter (400)        an execution search that can never match or means nothing
    ├── PayloadTooLarge (413)
    ├── NotFound (404)
    ├── Conflict (409)
    │   ├── AlreadyExists
    │   ├── TransitionRefused          a state machine refused a transition
    │   ├── LeaseLost                  fencing: the caller's lease epoch is stale
    │   └── ExecutionActive            deleting an execution that is not terminal
    ├── AuthenticationFailed (401)
    ├── PermissionDenied (403)
    ├── RateLimited (429)
    ├── QuotaExceeded (429)
    ├── StoreUnavailable (503)         a backend could not be reached
    ├── EgressDenied (403)             the egress policy refused an outbound request; ``reason`` says why
    ├── OutboundRequestFailed (502)    an outbound HTTP request failed (connect, timeout, size, redirects)
    └── StepFailure                    raised by step handlers; ``retryable`` decides retries
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem found in user input, with the path where it was found."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConveyorError(Exception):
    """Root of every error Conveyor raises on purpose."""

    status: int = 500
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ConveyorError):
    """The request was understood but its content is not acceptable."""

    status = 422
    code = "invalid"

    def __init__(self, message: str, problems: Iterable[Problem] = ()) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        if self.problems:
            message = message + "\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(message)


class DefinitionInvalid(InvalidRequest):
    """A workflow definition failed validation; ``problems`` lists every issue found."""

    code = "definition-invalid"


class InputInvalid(InvalidRequest):
    """Execution input does not satisfy the workflow version's input schema."""

    code = "input-invalid"


class ExpressionError(InvalidRequest):
    """A CEL expression could not be compiled or evaluated."""

    code = "expression-error"


class PayloadInvalid(InvalidRequest):
    """A payload (input, output, signal, event data) is not plain JSON and cannot be stored."""

    code = "payload-invalid"


class InvalidFilter(InvalidRequest):
    """A search filter is malformed (a label that is not ``key:value``) or an invalid combination."""

    status = 400
    code = "invalid-filter"


class PayloadTooLarge(ConveyorError):
    """A payload exceeds the configured size limit."""

    status = 413
    code = "payload-too-large"


class NotFound(ConveyorError):
    """The named resource does not exist (or belongs to another tenant)."""

    status = 404
    code = "not-found"


class Conflict(ConveyorError):
    """The request conflicts with the current state of a resource."""

    status = 409
    code = "conflict"


class AlreadyExists(Conflict):
    """A resource with that identity already exists."""

    code = "already-exists"


class TransitionRefused(Conflict):
    """A state machine refused a transition."""

    code = "transition-refused"


class LeaseLost(Conflict):
    """The caller no longer holds the lease on a step (fencing)."""

    code = "lease-lost"


class ExecutionActive(Conflict):
    """An execution cannot be deleted while it is running or paused: only a terminal one can."""

    code = "execution-active"


class AuthenticationFailed(ConveyorError):
    """No valid credentials were presented."""

    status = 401
    code = "unauthenticated"


class PermissionDenied(ConveyorError):
    """The principal's role does not allow this action."""

    status = 403
    code = "forbidden"


class RateLimited(ConveyorError):
    """Too many requests; retry after ``retry_after`` seconds."""

    status = 429
    code = "rate-limited"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class QuotaExceeded(RateLimited):
    """A tenant quota (such as concurrent executions) is exhausted."""

    code = "quota-exceeded"


class StoreUnavailable(ConveyorError):
    """A storage or messaging backend could not be reached."""

    status = 503
    code = "unavailable"


class EgressDenied(ConveyorError):
    """The egress policy refused an outbound request before any connection was opened.

    ``reason`` is the short cause (``loopback``, ``private``, ``metadata``, ``port``,
    ``scheme``, ...); the message names the URL or address it applies to.
    """

    status = 403
    code = "egress-denied"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class OutboundRequestFailed(ConveyorError):
    """An outbound HTTP request did not produce a usable response.

    ``kind`` is ``connect``, ``timeout``, ``too-large``, ``too-many-redirects`` or
    ``protocol``; ``transient`` says whether sending it again may succeed.
    """

    status = 502
    code = "outbound-request-failed"

    def __init__(self, message: str, kind: str, *, transient: bool) -> None:
        super().__init__(message)
        self.kind = kind
        self.transient = transient


class StepFailure(ConveyorError):
    """Raised by a step handler to fail its step.

    ``retryable=False`` skips any remaining attempts. User code may raise any exception;
    those are retryable unless their class name is listed in the step's
    ``retry.non_retryable``.
    """

    status = 500
    code = "step-failed"

    def __init__(self, message: str, *, retryable: bool = True, error_type: str | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.error_type = error_type or type(self).__name__


def problems_text(problems: Sequence[Problem]) -> str:
    """Render problems one per line, for CLI output."""
    return "\n".join(str(p) for p in problems)
