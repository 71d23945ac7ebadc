"""Parent and child executions: a ``subworkflow`` step starts a child and waits for it.

- The worker's outcome transaction starts the child (same tenant, idempotency key
  ``<parent execution>/<step key>``) and parks the parent step in WAITING, together.
- When the child reaches a terminal status, the transaction that ends it resumes the parent
  step (:meth:`Links.child_settled`, called by the recorder): the child's outputs become the
  step's output, and a failed, timed-out or cancelled child fails the step with
  ``SubworkflowFailed`` carrying the child's error.
- When the parent step is cancelled (the parent was cancelled, failed or timed out), the
  same transaction cancels the child (:meth:`Links.cancel_child`), and its children in turn.

Both sides commit together, so no notification can be lost between them. ``depth`` on the
child's ``parent`` reference bounds nesting (``subworkflow_max_depth``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.compile import CompiledWorkflow
from engine.errors import InvalidRequest, NotFound
from engine.orchestration import control, progress, steps
from engine.orchestration.recorder import Recorder
from engine.orchestration.snapshot import Snapshot
from engine.orchestration.workflows import Workflows
from engine.ports import Transaction
from engine.records import ExecutionRecord, StepRecord
from engine.states import EXECUTION_ACTIVE, ExecutionStatus, StepStatus

#: Finds the child's workflow (and the version number) inside the starting transaction.
Resolve = Callable[[Transaction], tuple[CompiledWorkflow, int]]


def child_key(execution_id: str, step_key: str) -> str:
    """The idempotency key of the child a parent step starts: one child per parent step."""
    return f"{execution_id}/{step_key}"


def start_child(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    key: str,
    fence: steps.Fence,
    timing: steps.Timing,
    *,
    resolve: Resolve,
    input: Any,
    max_depth: int,
) -> None:
    """Start the child of subworkflow step ``key`` (fenced by ``fence``) and park the step.

    A child already started under the step's key (the parent was retried) is reused: a
    succeeded child ends the step at once, a failed or timed-out one is retried from its
    failed steps, a cancelled one fails the step (a cancelled execution never runs again).
    """
    snap = steps.open_step(rec.tx, workflows, tenant, execution_id, key)
    step = steps.owned(rec, snap, key, fence, timing)
    depth = int((snap.execution.parent or {}).get("depth", 0)) + 1
    if depth > max_depth:
        message = f"subworkflows nest deeper than {max_depth} levels (subworkflow_max_depth)"
        steps.fail_owned(rec, snap, step, progress.error_info(message, "SubworkflowTooDeep"))
        return
    existing = rec.tx.find_execution_by_key(tenant, child_key(execution_id, key))
    if existing is not None:
        _reuse(rec, workflows, snap, step, existing)
        return
    try:
        compiled, version = resolve(rec.tx)
        compiled.validate_input(input)
    except (NotFound, InvalidRequest) as exc:
        steps.fail_owned(rec, snap, step, progress.error_info(exc.message, "SubworkflowInvalid"))
        return
    child_id = control.new_execution_id()
    _wait_for(rec, step, child_id, compiled.definition.name)
    control.start(
        rec,
        compiled,
        tenant=tenant,
        version=version,
        input=input,
        idempotency_key=child_key(execution_id, key),
        parent={"execution_id": execution_id, "step_key": key, "depth": depth},
        execution_id=child_id,
    )


def _wait_for(rec: Recorder, step: StepRecord, child_id: str, workflow: str) -> None:
    steps.wait_step(
        rec,
        step,
        wait={"kind": "subworkflow", "on_wake": "succeed", "child": child_id, "workflow": workflow},
    )


def _reuse(rec: Recorder, workflows: Workflows, snap: Snapshot, step: StepRecord, child: ExecutionRecord) -> None:
    if child.status is ExecutionStatus.SUCCEEDED:
        step.output = child.output
        steps.complete_owned(rec, snap, step)
    elif child.status is ExecutionStatus.CANCELLED:
        steps.fail_owned(rec, snap, step, _child_error(child))
    else:
        _wait_for(rec, step, child.id, child.workflow)
        if child.status in (ExecutionStatus.FAILED, ExecutionStatus.TIMED_OUT):
            control.retry(rec, workflows, child.tenant, child.id)


def _child_error(child: ExecutionRecord) -> dict[str, Any]:
    cause = (child.error or {}).get("message", str(child.status).lower())
    message = f"child execution {child.id} of {child.workflow!r} ended {child.status}: {cause}"
    return progress.error_info(message, "SubworkflowFailed", child_execution=child.id, child_error=child.error)


class Links:
    """The recorder's :class:`~engine.orchestration.recorder.ExecutionLinks` over the service's workflows."""

    def __init__(self, workflows: Workflows) -> None:
        self.workflows = workflows

    def child_settled(self, rec: Recorder, child: ExecutionRecord) -> None:
        parent = child.parent or {}
        parent_id, key = parent.get("execution_id"), parent.get("step_key")
        if not isinstance(parent_id, str) or not isinstance(key, str):
            return
        try:
            snap = steps.open_step(rec.tx, self.workflows, child.tenant, parent_id, key)
        except NotFound:
            return  # the parent is gone: nothing waits for this child
        step = snap.records.get(key)
        if (
            step is None
            or step.status is not StepStatus.WAITING
            or (step.wait or {}).get("child") != child.id
            or snap.execution.status not in EXECUTION_ACTIVE
        ):
            return  # e.g. the parent step was cancelled first, which is what cancelled the child
        succeeded = child.status is ExecutionStatus.SUCCEEDED
        delivery = steps.Delivery(
            "child",
            f"child:{child.id}",
            child.output if succeeded else None,
            error=None if succeeded else _child_error(child),
            record={"child_execution": child.id, "child_status": str(child.status)},
        )
        steps.resume(rec, snap, step, delivery)

    def cancel_child(self, rec: Recorder, step: StepRecord, reason: str) -> None:
        child_id = (step.wait or {}).get("child")
        if not isinstance(child_id, str):
            return
        child = rec.tx.get_execution(step.tenant, child_id)
        if child is None or child.status not in EXECUTION_ACTIVE:
            return
        control.cancel(rec, self.workflows, step.tenant, child_id, f"parent step {step.key} cancelled: {reason}")
