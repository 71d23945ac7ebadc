"""The pure planner: which steps became ready, and is the execution finished?

Everything here is a function of the compiled workflow, the execution header and the step
records; nothing reads or writes a store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from engine.ai import usage_total
from engine.compile import CompiledWorkflow
from engine.errors import ExpressionError
from engine.records import ExecutionRecord, StepRecord
from engine.states import STEP_ACTIVE, STEP_TERMINAL, StepStatus

DEFAULT_FOREACH_CONCURRENCY = 100


@dataclass(frozen=True)
class StepPlan:
    """What to do with a step whose needs are all finished."""

    step_id: str
    action: Literal["queue", "skip", "expand", "fail"]
    reason: str = ""
    items: tuple[Any, ...] = ()


def item_key(step_id: str, index: int) -> str:
    return f"{step_id}[{index}]"


def parse_key(key: str) -> tuple[str, int | None]:
    """``(step_id, index)`` of a step key: the index is ``None`` for a top-level step."""
    step_id, bracket, rest = key.partition("[")
    index = rest[:-1] if rest.endswith("]") else ""
    return (step_id, int(index)) if bracket and index.isdigit() else (key, None)


def is_item(record: StepRecord) -> bool:
    return record.index is not None


def is_foreach_parent(record: StepRecord) -> bool:
    """A top-level record whose foreach has been expanded into items."""
    return record.index is None and item_count(record) is not None


def item_count(record: StepRecord) -> int | None:
    """How many items an expanded foreach parent has; ``None`` for any other record.

    A parent expanded before ``item_count`` existed holds its whole list in ``items``.
    """
    if record.item_count is not None:
        return record.item_count
    return None if record.items is None else len(record.items)


def blocks(compiled: CompiledWorkflow, record: StepRecord) -> bool:
    """A failed step stops the execution unless its definition says ``on_error: continue``."""
    return record.status is StepStatus.FAILED and compiled.step(record.step_id).on_error == "fail"


def step_view(records: Mapping[str, StepRecord]) -> dict[str, dict[str, Any]]:
    """The ``steps`` variable of expressions: output, status and error of each top-level step."""
    return {
        key: {"output": record.output, "status": str(record.status), "error": record.error}
        for key, record in records.items()
        if not is_item(record)
    }


class Variables(Mapping[str, Any]):
    """Bound variables for CEL; ``input`` is taken from the header only when it is looked up.

    Expressions look up only the variables they read, so a large input (see
    :class:`~engine.records.ExecutionRecord`) is decoded only for expressions that use it.
    """

    def __init__(self, execution: ExecutionRecord, values: dict[str, Any]) -> None:
        self._execution = execution
        self._values = values

    def __getitem__(self, name: str) -> Any:
        return self._execution.input if name == "input" else self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(("input", *self._values))

    def __len__(self) -> int:
        return len(self._values) + 1


def variables(
    execution: ExecutionRecord, records: Mapping[str, StepRecord], *, item: Any = None, index: int | None = None
) -> Variables:
    """Bound variables for CEL: ``input``, ``steps``, ``execution`` (and ``item``/``index``)."""
    bound: dict[str, Any] = {
        "steps": step_view(records),
        "execution": {
            "id": execution.id,
            "workflow": execution.workflow,
            "version": execution.version,
            "run": execution.run,
            "usage": usage_total(execution.usage).as_dict(),
        },
    }
    if index is not None:
        bound["item"] = item
        bound["index"] = index
    return Variables(execution, bound)


def plan_step(
    compiled: CompiledWorkflow, execution: ExecutionRecord, records: Mapping[str, StepRecord], step_id: str
) -> StepPlan | None:
    """Plan one step that has no record yet; ``None`` while it must keep waiting."""
    needs = [records.get(need) for need in compiled.needs[step_id]]
    if any(need is None or need.status not in STEP_TERMINAL for need in needs):
        return None
    if any(need is not None and blocks(compiled, need) for need in needs):
        return None
    if needs and all(need is not None and need.status is StepStatus.SKIPPED for need in needs):
        return StepPlan(step_id, "skip", "every need was skipped")
    bound = variables(execution, records)
    try:
        condition = compiled.when.get(step_id)
        if condition is not None and not condition.evaluate_bool(bound):  # not a boolean: the step fails
            return StepPlan(step_id, "skip", f"condition is false: {condition.source}")
        over = compiled.foreach.get(step_id)
        if over is None:
            return StepPlan(step_id, "queue")
        items = over.evaluate(bound)
    except ExpressionError as exc:
        return StepPlan(step_id, "fail", exc.message)
    if not isinstance(items, list):
        return StepPlan(step_id, "fail", f"foreach must give a list, got {type(items).__name__}")
    return StepPlan(step_id, "expand", items=tuple(items))


def foreach_concurrency(compiled: CompiledWorkflow, step_id: str) -> int:
    return compiled.step(step_id).concurrency or DEFAULT_FOREACH_CONCURRENCY


def items_of(records: Mapping[str, StepRecord], step_id: str) -> list[StepRecord]:
    return sorted((r for r in records.values() if r.step_id == step_id and is_item(r)), key=lambda r: r.index or 0)


def has_active(records: Mapping[str, StepRecord]) -> bool:
    return any(record.status in STEP_ACTIVE for record in records.values())


def finished(compiled: CompiledWorkflow, records: Mapping[str, StepRecord]) -> bool:
    """Every step of the definition has a terminal record."""
    return all(step_id in records and records[step_id].status in STEP_TERMINAL for step_id in compiled.order)


def outputs(compiled: CompiledWorkflow, execution: ExecutionRecord, records: Mapping[str, StepRecord]) -> Any:
    """The execution's outputs, from the definition's ``outputs`` expressions."""
    bound = variables(execution, records)
    return {name: expression.evaluate(bound) for name, expression in compiled.outputs.items()}
