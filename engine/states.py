"""Execution and step state machines, as data.

Each machine is a status enum, its TERMINAL and ACTIVE sets, and an ``ALLOWED`` table
mapping each status to the statuses it may move to, with the *cause* each edge requires
(``None`` means any cause). :func:`propose` is the single gate: use cases ask it before
every status change and raise :class:`~engine.errors.TransitionRefused` on refusal.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from engine.errors import TransitionRefused


class ExecutionStatus(StrEnum):
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


class StepStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    RETRY_WAIT = "RETRY_WAIT"
    WAITING = "WAITING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    CANCELLED = "CANCELLED"


class Cause(StrEnum):
    """Why a transition is proposed; some edges accept only one cause."""

    START = "start"
    CLAIM = "claim"
    COMPLETE = "complete"
    PLAN = "plan"
    TIMER = "timer"
    SIGNAL = "signal"
    LEASE_EXPIRED = "lease-expired"
    CANCEL = "cancel"
    PAUSE = "pause"
    RESUME = "resume"
    RETRY = "retry"
    DEADLINE = "deadline"


EXECUTION_TERMINAL = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED, ExecutionStatus.TIMED_OUT}
)
EXECUTION_ACTIVE = frozenset({ExecutionStatus.RUNNING, ExecutionStatus.PAUSED})

STEP_TERMINAL = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED})
STEP_ACTIVE = frozenset({StepStatus.QUEUED, StepStatus.RUNNING, StepStatus.RETRY_WAIT, StepStatus.WAITING})

_E = ExecutionStatus
_S = StepStatus

#: Execution edges. A failed or timed-out execution may only re-enter RUNNING by retry.
EXECUTION_ALLOWED: dict[ExecutionStatus, dict[ExecutionStatus, Cause | None]] = {
    _E.RUNNING: {
        _E.SUCCEEDED: Cause.COMPLETE,
        _E.FAILED: Cause.COMPLETE,
        _E.CANCELLED: Cause.CANCEL,
        _E.TIMED_OUT: Cause.DEADLINE,
        _E.PAUSED: Cause.PAUSE,
    },
    _E.PAUSED: {
        _E.RUNNING: Cause.RESUME,
        _E.CANCELLED: Cause.CANCEL,
        _E.TIMED_OUT: Cause.DEADLINE,
    },
    _E.FAILED: {_E.RUNNING: Cause.RETRY},
    _E.TIMED_OUT: {_E.RUNNING: Cause.RETRY},
    _E.SUCCEEDED: {},
    _E.CANCELLED: {},
}

#: Step edges. Terminal failures re-enter QUEUED only when their execution is retried.
STEP_ALLOWED: dict[StepStatus, dict[StepStatus, Cause | None]] = {
    _S.QUEUED: {
        _S.RUNNING: Cause.CLAIM,
        _S.SKIPPED: Cause.PLAN,
        _S.CANCELLED: None,
    },
    _S.RUNNING: {
        _S.SUCCEEDED: Cause.COMPLETE,
        _S.FAILED: None,
        _S.RETRY_WAIT: None,
        _S.WAITING: Cause.COMPLETE,
        _S.QUEUED: Cause.LEASE_EXPIRED,
        _S.CANCELLED: None,
    },
    _S.RETRY_WAIT: {_S.QUEUED: Cause.TIMER, _S.CANCELLED: None},
    _S.WAITING: {
        _S.QUEUED: None,
        _S.SUCCEEDED: None,
        _S.FAILED: None,
        _S.CANCELLED: None,
    },
    _S.FAILED: {_S.QUEUED: Cause.RETRY},
    _S.CANCELLED: {_S.QUEUED: Cause.RETRY},
    _S.SUCCEEDED: {},
    _S.SKIPPED: {},
}


@dataclass(frozen=True)
class Decision:
    """The answer of :func:`propose`: accepted, or refused with a reason."""

    accepted: bool
    reason: str = ""

    def raise_if_refused(self) -> None:
        if not self.accepted:
            raise TransitionRefused(self.reason)


S = TypeVar("S", ExecutionStatus, StepStatus)


def propose(current: S, target: S, cause: Cause) -> Decision:
    """Decide whether ``current -> target`` is allowed for ``cause``."""
    table: dict[S, dict[S, Cause | None]] = (
        EXECUTION_ALLOWED if isinstance(current, ExecutionStatus) else STEP_ALLOWED
    )
    kind = "execution" if isinstance(current, ExecutionStatus) else "step"
    edges = table[current]
    if target not in edges:
        return Decision(False, f"{kind} cannot move from {current} to {target}")
    required = edges[target]
    if required is not None and required != cause:
        return Decision(False, f"{kind} moves from {current} to {target} only by {required}, not by {cause}")
    return Decision(True)


def require(current: S, target: S, cause: Cause) -> None:
    """Like :func:`propose`, raising :class:`TransitionRefused` on refusal."""
    propose(current, target, cause).raise_if_refused()
