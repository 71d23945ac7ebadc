"""Moving an execution forward after any step finished: plan, expand, settle.

These functions run inside a transaction on a :class:`Snapshot` of the execution. Fan-in is
decided from the needs' own records, never from counters; whatever concerns the whole
execution loads every record first.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.compile import CompiledWorkflow
from engine.errors import ConveyorError, ExpressionError
from engine.orchestration import planner
from engine.orchestration.recorder import Recorder
from engine.orchestration.snapshot import Snapshot
from engine.records import ExecutionRecord, ItemChunkRecord, StepRecord
from engine.states import STEP_ACTIVE, STEP_TERMINAL, Cause, ExecutionStatus, StepStatus

Records = dict[str, StepRecord]

#: Elements of a foreach's list per stored slice (:class:`ItemChunkRecord`): creating an item
#: decodes one slice, whatever the length of the list.
ITEMS_PER_CHUNK = 100


def error_info(message: str, error_type: str = "StepFailure", **extra: Any) -> dict[str, Any]:
    return {"type": error_type, "message": message, **extra}


def advance(rec: Recorder, snap: Snapshot, ended: str | None = None) -> None:
    """Create every step that became ready, then settle the execution if it may be done.

    ``ended`` names a top-level step that just ended: only its successors are planned (and
    theirs, as far as steps get skipped), from the records they need. Without it, or when the
    snapshot holds every record, every step without a record is considered.
    """
    if snap.execution.status is not ExecutionStatus.RUNNING:
        return
    if ended is None or snap.whole:
        snap.load_all()
        _plan(rec, snap, snap.compiled.order)
        settle(rec, snap)
        return
    created: list[StepRecord] = []
    frontier = set(snap.compiled.successors[ended])
    while frontier:
        snap.ensure_plannable(frontier)
        planned = _plan(rec, snap, [step_id for step_id in snap.compiled.order if step_id in frontier])
        created += planned
        frontier = {
            successor
            for record in planned
            if record.status in STEP_TERMINAL
            for successor in snap.compiled.successors[record.step_id]
        }
    # A step that just became active proves the execution is not done; anything else (a sink
    # ended, successors skipped, a planning failure) needs the whole picture.
    if any(record.status in STEP_ACTIVE for record in created) and not any(
        planner.blocks(snap.compiled, record) for record in created
    ):
        return
    snap.load_all()
    settle(rec, snap)


def _plan(rec: Recorder, snap: Snapshot, step_ids: Iterable[str]) -> list[StepRecord]:
    """Plan, in topological order, each of ``step_ids`` that has no record yet.

    Topological order lets one pass propagate skips: a skipped need is recorded before its
    dependants are planned.
    """
    created: list[StepRecord] = []
    for step_id in step_ids:
        if step_id in snap.records:
            continue
        plan = planner.plan_step(snap.compiled, snap.execution, snap.records, step_id)
        if plan is not None:
            created.append(_apply(rec, snap, plan))
    return created


def _apply(rec: Recorder, snap: Snapshot, plan: planner.StepPlan) -> StepRecord:
    execution = snap.execution
    step = snap.compiled.step(plan.step_id)
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
        _expand(rec, snap, record, list(plan.items))
    else:
        rec.create_step(record)
    snap.records[record.key] = record
    return record


def _expand(rec: Recorder, snap: Snapshot, parent: StepRecord, items: list[Any]) -> None:
    """Start a foreach: the parent runs while at most ``concurrency`` items are in flight.

    The parent records only how many items there are. The first ``concurrency`` items are
    created with their elements; the rest of the list is stored in slices of
    :data:`ITEMS_PER_CHUNK` for the items that create them later (:func:`item_ended`). The
    parent's ``lease_until`` is when the reconciler checks its fan-in, in case the worker
    that should have finished it died between its commit and that check.
    """
    parent.item_count = len(items)
    if not items:
        parent.status = StepStatus.SUCCEEDED
        parent.output = []
        parent.finished_at = rec.now
        rec.create_step(parent, {"items": 0})
        return
    parent.status = StepStatus.RUNNING
    parent.started_at = rec.now
    parent.lease_until = rec.now + rec.fanin_check_seconds
    rec.create_step(parent, {"items": len(items)})
    snap.records[parent.key] = parent
    first = min(len(items), planner.foreach_concurrency(snap.compiled, parent.step_id))
    for index in range(first):
        create_item(rec, snap, parent, index, items[index])
    for chunk in range(first // ITEMS_PER_CHUNK, -(-len(items) // ITEMS_PER_CHUNK)):
        start = chunk * ITEMS_PER_CHUNK
        rec.tx.put_item_chunk(
            ItemChunkRecord(
                parent.tenant, parent.execution_id, parent.step_id, chunk, items[start : start + ITEMS_PER_CHUNK]
            )
        )


def _element(snap: Snapshot, parent: StepRecord, index: int) -> Any:
    """Element ``index`` of a foreach's list, read from its slice (or a legacy parent's inline list)."""
    if parent.items is not None:
        return parent.items[index]
    chunk = snap.tx.get_item_chunk(snap.tenant, parent.execution_id, parent.step_id, index // ITEMS_PER_CHUNK)
    if chunk is None:
        raise ConveyorError(f"the stored list of foreach {parent.step_id!r} has no element {index}")
    return chunk.items[index % ITEMS_PER_CHUNK]


def create_item(rec: Recorder, snap: Snapshot, parent: StepRecord, index: int, element: Any) -> None:
    child = StepRecord(
        execution_id=parent.execution_id,
        tenant=parent.tenant,
        key=planner.item_key(parent.step_id, index),
        step_id=parent.step_id,
        status=StepStatus.QUEUED,
        queue=parent.queue,
        index=index,
        item=element,
        run=parent.run,
    )
    rec.create_step(child)
    snap.records[child.key] = child


def item_ended(rec: Recorder, snap: Snapshot, child: StepRecord) -> None:
    """After a foreach item ended: start the next item; fail the parent on a blocking failure.

    Otherwise the parent finishes once every item has ended. Deciding that needs every item's
    record, and an item does not read its siblings (concurrent items would contend on them).
    It reads the records :func:`later_items` names: while one of them is active, or not
    created yet (so an item before it is still active), an item that ends later will decide.
    Otherwise it asks for a fan-in check after commit (:meth:`Recorder.check_fanin`). The item
    that ends last always asks: every other item has ended by then.
    """
    assert child.index is not None
    later = later_items(snap.compiled, child.step_id, child.index)
    snap.ensure([child.step_id, *later])
    parent = snap.records[child.step_id]
    successor = child.index + planner.foreach_concurrency(snap.compiled, child.step_id)
    if successor < (planner.item_count(parent) or 0) and later[0] not in snap.records:
        create_item(rec, snap, parent, successor, _element(snap, parent, successor))
    if parent.status is not StepStatus.RUNNING:
        return
    if planner.blocks(snap.compiled, child):
        parent.error = error_info(f"item {child.index} failed", "ItemFailed", item=child.index)
        rec.move_step(parent, StepStatus.FAILED, Cause.COMPLETE, {"error": parent.error})
        advance(rec, snap, ended=parent.key)
    elif snap.whole:
        finish_foreach(rec, snap, parent)
    elif not any(_still_to_end(snap, parent, key) for key in later):
        rec.check_fanin(parent, last_items(snap.compiled, parent))


def later_items(compiled: CompiledWorkflow, step_id: str, index: int) -> list[str]:
    """The items whose records tell item ``index`` whether an item will end after it.

    The item that starts after it (``index + concurrency``, which it creates), and its
    neighbor (``index + 1``) when that was created with the foreach. A neighbor created later
    is left out on purpose: its creator would wait for this transaction's read lock while this
    one waits for its neighbor's, a cycle once ``concurrency`` items end at the same time.
    With these reads a transaction only ever waits for one of a lower index.
    """
    concurrency = planner.foreach_concurrency(compiled, step_id)
    later = [planner.item_key(step_id, index + concurrency)]
    if index + 1 < concurrency:
        later.append(planner.item_key(step_id, index + 1))
    return later


def last_items(compiled: CompiledWorkflow, parent: StepRecord) -> tuple[str, ...]:
    """Keys of the last ``concurrency`` items of a foreach: the last item of each chain of items.

    Empty when every item ends a chain (no more items than ``concurrency``): reading them all
    would cost what counting them does.
    """
    count = planner.item_count(parent) or 0
    concurrency = planner.foreach_concurrency(compiled, parent.step_id)
    if count <= concurrency:
        return ()
    return tuple(planner.item_key(parent.step_id, index) for index in range(count - concurrency, count))


def _still_to_end(snap: Snapshot, parent: StepRecord, key: str) -> bool:
    """Whether item ``key`` of ``parent`` is active or, within range, not created yet."""
    index = planner.parse_key(key)[1]
    assert index is not None
    if index >= (planner.item_count(parent) or 0):
        return False
    record = snap.records.get(key)
    return record is None or record.status in STEP_ACTIVE


def finish_foreach(rec: Recorder, snap: Snapshot, parent: StepRecord) -> bool:
    """Finish a running foreach parent whose items have all ended; whether it finished.

    Needs the whole snapshot: an item without a record has not started, so it has not ended.
    """
    snap.load_all()
    items = planner.items_of(snap.records, parent.step_id)
    if parent.status is not StepStatus.RUNNING or len(items) < (planner.item_count(parent) or 0):
        return False
    if any(item.status in STEP_ACTIVE for item in items):
        return False
    parent.output = [item.output for item in items]
    failed = [item.index for item in items if item.status is StepStatus.FAILED]
    if failed:
        parent.error = error_info(f"items {failed} failed", "ItemFailed", items=failed)
        rec.move_step(parent, StepStatus.FAILED, Cause.COMPLETE, {"error": parent.error})
    else:
        rec.move_step(parent, StepStatus.SUCCEEDED, Cause.COMPLETE)
    advance(rec, snap, ended=parent.key)
    return True


def settle(rec: Recorder, snap: Snapshot) -> None:
    """Finish the execution when a failure blocks it or when every step has ended."""
    if snap.execution.status is not ExecutionStatus.RUNNING:
        return
    snap.load_all()
    compiled, execution, records = snap.compiled, snap.execution, snap.records
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
            waited_child = (record.wait or {}).get("child") if record.status is StepStatus.WAITING else None
            rec.move_step(record, StepStatus.CANCELLED, Cause.CANCEL, {"reason": reason})
            if waited_child and rec.links is not None:
                rec.links.cancel_child(rec, record, reason)


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
