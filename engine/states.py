"""Execution and step state machines, as data.

Each machine is a status enum, its TERMINAL and ACTIVE sets, and an ``ALLOWED`` table
mapping each status to the statuses it may move to, with the *cause* each edge requires
(``None`` means any cause). :func:`propose` is the single gate: use cases ask it before
every creation and every status change and raise :class:`~engine.errors.TransitionRefused`
on refusal.

Creation is an edge too: from :data:`NEW` ("no record yet") to the status a record is
created in. A foreach parent is a container, not a claimable step, so it has a machine of its
own (:data:`FOREACH_ALLOWED`): it is created RUNNING (or SUCCEEDED for an empty list), ends
when its items have, and a retry sends it straight back to RUNNING.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TypeVar

from engine.errors import ExecutionActive, TransitionRefused


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


def require_terminal(execution_id: str, status: ExecutionStatus) -> None:
    """Refuse (``ExecutionActive``) to delete an execution that is running or paused."""
    if status not in EXECUTION_TERMINAL:
        raise ExecutionActive(f"execution {execution_id} is {status.value}: only a finished execution can be deleted")


class Machine(StrEnum):
    """Which transition table a record follows."""

    EXECUTION = "execution"
    STEP = "step"
    FOREACH = "foreach parent"


#: The source of a creation edge (no record yet), or the target of a withdrawal (see STEP_ALLOWED).
NEW: Final = None

_E = ExecutionStatus
_S = StepStatus

#: Execution edges. A failed or timed-out execution may only re-enter RUNNING by retry.
EXECUTION_ALLOWED: dict[ExecutionStatus | None, dict[ExecutionStatus | None, Cause | None]] = {
    NEW: {_E.RUNNING: Cause.START},
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

#: Step edges (a top-level step or a foreach item). Planning creates a step QUEUED, or
#: SKIPPED, or FAILED when it cannot be planned (its foreach has too many items, an expression
#: fails). Terminal failures re-enter QUEUED only when their execution is retried; a foreach
#: step whose list could not be computed is withdrawn instead (``FAILED -> NEW``) and planned
#: again from scratch.
STEP_ALLOWED: dict[StepStatus | None, dict[StepStatus | None, Cause | None]] = {
    NEW: {_S.QUEUED: Cause.PLAN, _S.SKIPPED: Cause.PLAN, _S.FAILED: Cause.PLAN},
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
    _S.FAILED: {_S.QUEUED: Cause.RETRY, NEW: Cause.RETRY},
    _S.CANCELLED: {_S.QUEUED: Cause.RETRY},
    _S.SUCCEEDED: {},
    _S.SKIPPED: {},
}

#: Foreach parent edges. No worker runs a parent: it is created RUNNING with its first items
#: (SUCCEEDED when the list is empty), ends by its items (fan-in, or a blocking item failure)
#: or by cancellation, and a retry of its execution resumes it in RUNNING to re-run the
#: items that did not succeed.
FOREACH_ALLOWED: dict[StepStatus | None, dict[StepStatus | None, Cause | None]] = {
    NEW: {_S.RUNNING: Cause.PLAN, _S.SUCCEEDED: Cause.PLAN},
    _S.RUNNING: {_S.SUCCEEDED: Cause.COMPLETE, _S.FAILED: Cause.COMPLETE, _S.CANCELLED: Cause.CANCEL},
    _S.FAILED: {_S.RUNNING: Cause.RETRY},
    _S.CANCELLED: {_S.RUNNING: Cause.RETRY},
    _S.SUCCEEDED: {},
}

TABLES: dict[Machine, dict[Any, dict[Any, Cause | None]]] = {
    Machine.EXECUTION: EXECUTION_ALLOWED,
    Machine.STEP: STEP_ALLOWED,
    Machine.FOREACH: FOREACH_ALLOWED,
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


def _name(status: ExecutionStatus | StepStatus | None) -> str:
    return "NEW" if status is None else str(status)


def propose(current: S | None, target: S | None, cause: Cause, machine: Machine | None = None) -> Decision:
    """Decide whether ``current -> target`` is allowed for ``cause``.

    ``current`` is :data:`NEW` for a creation. ``machine`` defaults to the execution or step
    machine by the statuses' type; a foreach parent names :attr:`Machine.FOREACH`.
    """
    if machine is None:
        known = current if current is not None else target
        if known is None:
            return Decision(False, "a transition needs a status on at least one side")
        machine = Machine.EXECUTION if isinstance(known, ExecutionStatus) else Machine.STEP
    edges = TABLES[machine].get(current)
    if edges is None or target not in edges:
        return Decision(False, f"{machine} cannot move from {_name(current)} to {_name(target)}")
    required = edges[target]
    if required is not None and required != cause:
        return Decision(
            False, f"{machine} moves from {_name(current)} to {_name(target)} only by {required}, not by {cause}"
        )
    return Decision(True)


def require(current: S | None, target: S | None, cause: Cause, machine: Machine | None = None) -> None:
    """Like :func:`propose`, raising :class:`TransitionRefused` on refusal."""
    propose(current, target, cause, machine).raise_if_refused()
