"""Moving an execution forward after any step finished: plan, expand, settle.

These functions run inside a transaction with the execution header and *all* its step
records loaded: fan-in is decided from the needs' own records, never from counters.
"""

from __future__ import annotations

from typing import Any

from engine.compile import CompiledWorkflow
from engine.errors import ExpressionError
from engine.orchestration import planner
from engine.orchestration.recorder import Recorder
from engine.records import ExecutionRecord, StepRecord
from engine.states import STEP_ACTIVE, Cause, ExecutionStatus, StepStatus

Records = dict[str, StepRecord]


def error_info(message: str, error_type: str = "StepFailure", **extra: Any) -> dict[str, Any]:
    return {"type": error_type, "message": message, **extra}


def advance(rec: Recorder, compiled: CompiledWorkflow, execution: ExecutionRecord, records: Records) -> None:
    """Create every step that became ready, then settle the execution if nothing is left."""
    if execution.status is not ExecutionStatus.RUNNING:
        return
    # Topological order lets one pass propagate skips: a skipped need is recorded
    # before its dependants are planned.
    for step_id in compiled.order:
        if step_id in records:
            continue
        plan = planner.plan_step(compiled, execution, records, step_id)
        if plan is not None:
            _apply(rec, compiled, execution, records, plan)
    settle(rec, compiled, execution, records)


def _apply(
    rec: Recorder, compiled: CompiledWorkflow, execution: ExecutionRecord, records: Records, plan: planner.StepPlan
) -> None:
    step = compiled.step(plan.step_id)
    record = StepRecord(
        execution_id=execution.id,
        tenant=execution.tenant,
        key=plan.step_id,
        step_id=plan.step_id,
        status=StepStatus.QUEUED,
        queue=step.queue,
        run=execution.run,
    )
    if plan.action == "expand" and len(plan.items) > rec.max_foreach_items:
        plan = planner.StepPlan(
            plan.step_id, "fail", f"foreach gave {len(plan.items)} items; the limit is {rec.max_foreach_items}"
        )
    if plan.action == "skip":
        record.status = StepStatus.SKIPPED
        record.finished_at = rec.now
        rec.create_step(record, {"reason": plan.reason})
    elif plan.action == "fail":
        record.status = StepStatus.FAILED
        record.error = error_info(plan.reason, "PlanningFailed")
        record.finished_at = rec.now
        rec.create_step(record, {"error": record.error})
    elif plan.action == "expand":
        _expand(rec, compiled, records, record, list(plan.items))
        return
    else:
        rec.create_step(record)
    records[record.key] = record


def _expand(rec: Recorder, compiled: CompiledWorkflow, records: Records, parent: StepRecord, items: list[Any]) -> None:
    """Start a foreach: the parent runs while at most ``concurrency`` items are in flight."""
    parent.items = items
    if not items:
        parent.status = StepStatus.SUCCEEDED
        parent.output = []
        parent.finished_at = rec.now
        rec.create_step(parent, {"items": 0})
        records[parent.key] = parent
        return
    parent.status = StepStatus.RUNNING
    parent.started_at = rec.now
    rec.create_step(parent, {"items": len(items)})
    records[parent.key] = parent
    for index in range(min(len(items), planner.foreach_concurrency(compiled, parent.step_id))):
        create_item(rec, records, parent, index)


def create_item(rec: Recorder, records: Records, parent: StepRecord, index: int) -> None:
    assert parent.items is not None
    child = StepRecord(
        execution_id=parent.execution_id,
        tenant=parent.tenant,
        key=planner.item_key(parent.step_id, index),
        step_id=parent.step_id,
        status=StepStatus.QUEUED,
        queue=parent.queue,
        index=index,
        item=parent.items[index],
        run=parent.run,
    )
    rec.create_step(child)
    records[child.key] = child


def item_finished(
    rec: Recorder, compiled: CompiledWorkflow, execution: ExecutionRecord, records: Records, child: StepRecord
) -> None:
    """After a foreach item ended: start the next item, and finish the parent after the last."""
    parent = records[child.step_id]
    assert parent.items is not None and child.index is not None
    successor = child.index + planner.foreach_concurrency(compiled, child.step_id)
    if successor < len(parent.items) and planner.item_key(child.step_id, successor) not in records:
        create_item(rec, records, parent, successor)
    if planner.blocks(compiled, child) and parent.status is StepStatus.RUNNING:
        parent.error = error_info(f"item {child.index} failed", "ItemFailed", item=child.index)
        rec.move_step(parent, StepStatus.FAILED, Cause.COMPLETE, {"error": parent.error})
        return
    items = planner.items_of(records, child.step_id)
    if parent.status is not StepStatus.RUNNING or any(item.status in STEP_ACTIVE for item in items):
        return
    parent.output = [item.output for item in items]
    failed = [item.index for item in items if item.status is StepStatus.FAILED]
    if failed:
        parent.error = error_info(f"items {failed} failed", "ItemFailed", items=failed)
        rec.move_step(parent, StepStatus.FAILED, Cause.COMPLETE, {"error": parent.error})
    else:
        rec.move_step(parent, StepStatus.SUCCEEDED, Cause.COMPLETE)


def settle(rec: Recorder, compiled: CompiledWorkflow, execution: ExecutionRecord, records: Records) -> None:
    """Finish the execution when a failure blocks it or when every step has ended."""
    if execution.status is not ExecutionStatus.RUNNING:
        return
    blocking = [r for r in records.values() if not planner.is_item(r) and planner.blocks(compiled, r)]
    if blocking:
        first = min(blocking, key=lambda r: r.finished_at or 0.0)
        fail_execution(rec, execution, records, {**(first.error or {}), "step": first.key})
        return
    if planner.has_active(records) or not planner.finished(compiled, records):
        return
    try:
        execution.output = planner.outputs(compiled, execution, records)
    except ExpressionError as exc:
        fail_execution(rec, execution, records, error_info(exc.message, "ExpressionError"))
        return
    rec.move_execution(execution, ExecutionStatus.SUCCEEDED, Cause.COMPLETE)


def cancel_active(rec: Recorder, records: Records, reason: str) -> None:
    """Cancel every unfinished step; a running one loses its lease so its result is refused."""
    for record in records.values():
        if record.status in STEP_ACTIVE:
            if record.status is StepStatus.RUNNING:
                record.lease_epoch += 1
            rec.move_step(record, StepStatus.CANCELLED, Cause.CANCEL, {"reason": reason})


def fail_execution(rec: Recorder, execution: ExecutionRecord, records: Records, error: dict[str, Any]) -> None:
    execution.error = error
    cancel_active(rec, records, "execution failed")
    rec.move_execution(execution, ExecutionStatus.FAILED, Cause.COMPLETE, {"error": error})


def end_execution(
    rec: Recorder, execution: ExecutionRecord, records: Records, target: ExecutionStatus, cause: Cause, reason: str
) -> None:
    """Cancel or time out an execution and everything still running in it."""
    cancel_active(rec, records, reason)
    rec.move_execution(execution, target, cause, {"reason": reason})
