"""Every transition of the three state machines (execution, step, foreach parent), creation
edges included: each allowed edge, each refused one, each cause rule."""

from __future__ import annotations

import itertools

import pytest

from engine.errors import TransitionRefused
from engine.states import (
    EXECUTION_ACTIVE,
    EXECUTION_ALLOWED,
    EXECUTION_TERMINAL,
    FOREACH_ALLOWED,
    NEW,
    STEP_ACTIVE,
    STEP_ALLOWED,
    STEP_TERMINAL,
    TABLES,
    Cause,
    ExecutionStatus,
    Machine,
    StepStatus,
    propose,
    require,
)

STATUSES = {Machine.EXECUTION: ExecutionStatus, Machine.STEP: StepStatus, Machine.FOREACH: StepStatus}


def _name(status):
    return "NEW" if status is None else str(status)


def _edges(machine: Machine, allowed: bool):
    """Every (current, target) pair of ``machine``, NEW included on both sides."""
    states = [NEW, *STATUSES[machine]]
    table = TABLES[machine]
    for current, target in itertools.product(states, states):
        if (target in table.get(current, {})) is allowed:
            yield machine, current, target


ALLOWED_EDGES = [edge for machine in Machine for edge in _edges(machine, True)]
REFUSED_EDGES = [edge for machine in Machine for edge in _edges(machine, False)]


def _id(value) -> str:
    return _name(value)[:12]


@pytest.mark.parametrize(("machine", "current", "target"), ALLOWED_EDGES, ids=_id)
def test_allowed_edge_accepts_its_cause(machine, current, target):
    required = TABLES[machine][current][target]
    causes = [required] if required is not None else list(Cause)
    for cause in causes:
        assert propose(current, target, cause, machine).accepted
    if machine is not Machine.FOREACH and (current, target) != (NEW, NEW):
        assert propose(current, target, causes[0]).accepted  # the machine follows from the statuses


@pytest.mark.parametrize(("machine", "current", "target"), ALLOWED_EDGES, ids=_id)
def test_allowed_edge_refuses_any_other_cause(machine, current, target):
    required = TABLES[machine][current][target]
    if required is None:
        return
    for cause in set(Cause) - {required}:
        decision = propose(current, target, cause, machine)
        assert not decision.accepted
        assert f"{machine} moves from {_name(current)} to {_name(target)} only by {required}" in decision.reason
        with pytest.raises(TransitionRefused, match=f"only by {required}"):
            require(current, target, cause, machine)


@pytest.mark.parametrize(("machine", "current", "target"), REFUSED_EDGES, ids=_id)
def test_edge_outside_the_table_is_refused_for_every_cause(machine, current, target):
    for cause in Cause:
        decision = propose(current, target, cause, machine)
        assert not decision.accepted
        if current is NEW and target is NEW:
            continue
        assert f"{machine} cannot move from {_name(current)} to {_name(target)}" in decision.reason
    with pytest.raises(TransitionRefused):
        require(current, target, Cause.COMPLETE, machine)


def test_a_transition_between_two_nothings_is_refused():
    decision = propose(NEW, NEW, Cause.PLAN)
    assert not decision.accepted
    assert "at least one side" in decision.reason


def test_records_are_created_only_in_their_first_statuses():
    """No record is born terminal except by planning; an execution is born RUNNING."""
    assert EXECUTION_ALLOWED[NEW] == {ExecutionStatus.RUNNING: Cause.START}
    assert STEP_ALLOWED[NEW] == {StepStatus.QUEUED: Cause.PLAN, StepStatus.SKIPPED: Cause.PLAN, StepStatus.FAILED: Cause.PLAN}
    assert FOREACH_ALLOWED[NEW] == {StepStatus.RUNNING: Cause.PLAN, StepStatus.SUCCEEDED: Cause.PLAN}
    assert not propose(NEW, StepStatus.SUCCEEDED, Cause.PLAN).accepted  # only an empty foreach
    assert not propose(NEW, StepStatus.RUNNING, Cause.PLAN).accepted  # a step is claimed, never born running


def test_a_foreach_parent_is_never_queued_or_claimed():
    """The parent goes FAILED -> RUNNING on retry, not through QUEUED (it has no worker)."""
    for status in FOREACH_ALLOWED:
        assert StepStatus.QUEUED not in FOREACH_ALLOWED[status]
        assert StepStatus.RETRY_WAIT not in FOREACH_ALLOWED[status]
    assert propose(StepStatus.FAILED, StepStatus.RUNNING, Cause.RETRY, Machine.FOREACH).accepted
    assert not propose(StepStatus.FAILED, StepStatus.RUNNING, Cause.RETRY).accepted
    assert not propose(StepStatus.RUNNING, StepStatus.QUEUED, Cause.LEASE_EXPIRED, Machine.FOREACH).accepted


def test_terminal_and_active_sets_partition_each_machine():
    assert set(ExecutionStatus) == EXECUTION_TERMINAL | EXECUTION_ACTIVE
    assert not EXECUTION_TERMINAL & EXECUTION_ACTIVE
    assert set(StepStatus) == STEP_TERMINAL | STEP_ACTIVE
    assert not STEP_TERMINAL & STEP_ACTIVE


def test_terminal_states_leave_only_by_retry():
    for status in EXECUTION_TERMINAL:
        assert all(cause is Cause.RETRY for cause in EXECUTION_ALLOWED[status].values())
    for status in STEP_TERMINAL:
        assert all(cause is Cause.RETRY for cause in STEP_ALLOWED[status].values())
        assert all(cause is Cause.RETRY for cause in FOREACH_ALLOWED.get(status, {}).values())


def test_succeeded_and_skipped_are_final():
    assert EXECUTION_ALLOWED[ExecutionStatus.SUCCEEDED] == {}
    assert EXECUTION_ALLOWED[ExecutionStatus.CANCELLED] == {}
    assert STEP_ALLOWED[StepStatus.SUCCEEDED] == {}
    assert STEP_ALLOWED[StepStatus.SKIPPED] == {}


def test_architecture_edges_are_present():
    """The edges ARCHITECTURE.md §3 promises."""
    e, s = ExecutionStatus, StepStatus
    for target in (e.SUCCEEDED, e.FAILED, e.CANCELLED, e.TIMED_OUT, e.PAUSED):
        assert target in EXECUTION_ALLOWED[e.RUNNING]
    assert e.RUNNING in EXECUTION_ALLOWED[e.PAUSED]
    assert e.RUNNING in EXECUTION_ALLOWED[e.FAILED]
    assert s.RUNNING in STEP_ALLOWED[s.QUEUED] and s.SKIPPED in STEP_ALLOWED[s.QUEUED]
    for target in (s.SUCCEEDED, s.FAILED, s.CANCELLED, s.RETRY_WAIT, s.WAITING):
        assert target in STEP_ALLOWED[s.RUNNING]
    assert s.QUEUED in STEP_ALLOWED[s.RETRY_WAIT]
    for target in (s.QUEUED, s.SUCCEEDED, s.FAILED):
        assert target in STEP_ALLOWED[s.WAITING]
