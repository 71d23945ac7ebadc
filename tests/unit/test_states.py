"""Every transition of both state machines: each allowed edge, each refused one, each cause rule."""

from __future__ import annotations

import itertools

import pytest

from engine.errors import TransitionRefused
from engine.states import (
    EXECUTION_ACTIVE,
    EXECUTION_ALLOWED,
    EXECUTION_TERMINAL,
    STEP_ACTIVE,
    STEP_ALLOWED,
    STEP_TERMINAL,
    Cause,
    ExecutionStatus,
    StepStatus,
    propose,
    require,
)

MACHINES = [(ExecutionStatus, EXECUTION_ALLOWED), (StepStatus, STEP_ALLOWED)]


def _edges(enum, table, allowed: bool):
    for current, target in itertools.product(enum, enum):
        if (target in table[current]) is allowed:
            yield current, target


ALLOWED_EDGES = [(c, t, table) for enum, table in MACHINES for c, t in _edges(enum, table, True)]
REFUSED_EDGES = [(c, t) for enum, table in MACHINES for c, t in _edges(enum, table, False)]


@pytest.mark.parametrize(("current", "target", "table"), ALLOWED_EDGES, ids=lambda v: str(v)[:12])
def test_allowed_edge_accepts_its_cause(current, target, table):
    required = table[current][target]
    causes = [required] if required is not None else list(Cause)
    for cause in causes:
        assert propose(current, target, cause).accepted


@pytest.mark.parametrize(("current", "target", "table"), ALLOWED_EDGES, ids=lambda v: str(v)[:12])
def test_allowed_edge_refuses_any_other_cause(current, target, table):
    required = table[current][target]
    if required is None:
        return
    for cause in set(Cause) - {required}:
        decision = propose(current, target, cause)
        assert not decision.accepted
        assert f"only by {required}" in decision.reason


@pytest.mark.parametrize(("current", "target"), REFUSED_EDGES, ids=str)
def test_edge_outside_the_table_is_refused_for_every_cause(current, target):
    for cause in Cause:
        decision = propose(current, target, cause)
        assert not decision.accepted
        assert f"cannot move from {current} to {target}" in decision.reason
    with pytest.raises(TransitionRefused):
        require(current, target, Cause.COMPLETE)


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
