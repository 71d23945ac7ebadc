"""What a use case knows of one execution inside its transaction: the header and step records.

A use case reads only what its decision needs. Completing a step of a 20-step chain reads the
step, its successors and their needs, not the other 17 records; a foreach item reads its
parent, not its 99 siblings. Fewer reads make each transaction cheaper and, on Firestore,
keep its read set off the documents that concurrent completions write (fan-in without
contention). Decisions that are about the whole execution (has everything ended? cancel all
active steps) call :meth:`Snapshot.load_all` first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from engine.compile import CompiledWorkflow
from engine.errors import NotFound
from engine.orchestration import planner
from engine.orchestration.workflows import Workflows
from engine.ports import Reads
from engine.records import ExecutionRecord, StepRecord


@dataclass
class Snapshot:
    """The header and the step records read (or written) so far in one transaction.

    ``records`` holds every record read or created; a key in ``absent`` was read and has no
    record. Once ``whole`` is set, ``records`` holds every record of the execution.
    """

    tx: Reads
    compiled: CompiledWorkflow
    execution: ExecutionRecord
    records: dict[str, StepRecord]
    absent: set[str] = field(default_factory=set)
    whole: bool = False

    @property
    def tenant(self) -> str:
        return self.execution.tenant

    def ensure(self, keys: Iterable[str]) -> None:
        """Read the records among ``keys`` not known yet, in one round trip."""
        if self.whole:
            return
        missing = sorted({key for key in keys if key not in self.records and key not in self.absent})
        if not missing:
            return
        found = self.tx.get_steps(self.tenant, self.execution.id, missing)
        self.records.update(found)
        self.absent.update(key for key in missing if key not in found)

    def load_all(self) -> None:
        """Read every record of the execution: top-level steps, then the items of foreach steps."""
        if self.whole:
            return
        self.ensure(self.compiled.order)
        self.ensure(
            planner.item_key(record.step_id, index)
            for record in list(self.records.values())
            if not planner.is_item(record)
            for index in range(planner.item_count(record) or 0)
        )
        self.whole = True

    def ensure_plannable(self, step_ids: Iterable[str]) -> None:
        """Read what planning ``step_ids`` needs (:func:`planning_keys`)."""
        self.ensure(planning_keys(self.compiled, step_ids))


def planning_keys(compiled: CompiledWorkflow, step_ids: Iterable[str]) -> set[str]:
    """The records planning ``step_ids`` reads: their own, their needs', what their expressions read."""
    return {key for step_id in step_ids for key in (step_id, *compiled.planning_steps(step_id))}


#: The step keys a use case will need, given the workflow the execution runs.
KeysFor = Callable[[CompiledWorkflow], Iterable[str]]


def open_snapshot(
    tx: Reads,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    keys: Iterable[str] = (),
    prefetch: KeysFor | None = None,
) -> Snapshot:
    """Read the header and the steps among ``keys``, in one round trip.

    Which other steps a use case needs usually depends on the workflow, which the header
    names. For an execution seen before in this process (:meth:`Workflows.pinned`) the steps
    ``prefetch`` names come in the same read; otherwise the use case reads them with
    :meth:`Snapshot.ensure` once it knows the workflow.
    """
    first = list(keys)
    pinned = workflows.pinned(tenant, execution_id)
    if pinned is not None and prefetch is not None:
        first += prefetch(pinned)
    execution, records = tx.get_execution_and_steps(tenant, execution_id, first)
    if execution is None:
        raise NotFound(f"execution {execution_id!r} not found")
    snapshot = Snapshot(tx, workflows.of(execution), execution, records)
    snapshot.absent.update(key for key in first if key not in records)
    return snapshot


def load_whole(tx: Reads, workflows: Workflows, tenant: str, execution_id: str) -> Snapshot:
    """The header and every step record of an execution, read by key.

    Reading by key (top-level steps, then the items of expanded foreach steps) rather than
    with a query keeps the transaction's locks on those documents only: a query in a
    transaction may lock far more (the Firestore emulator locks the whole collection group).
    """
    snapshot = open_snapshot(tx, workflows, tenant, execution_id, prefetch=lambda compiled: compiled.order)
    snapshot.load_all()
    return snapshot
