"""Execution retention: a finished execution is deleted, with everything derived from it, once
its retention has passed (or when asked to).

**Policy.** An execution that reaches a terminal status gets ``expires_at`` = that time plus
its retention: its workflow's ``retention:`` if the definition has one, else
``CONVEYOR_EXECUTION_RETENTION_DAYS`` (``0``, either way: kept forever). Running, waiting and
paused executions have none and are never deleted; a retry clears it. The time is fixed when
the execution ends, so a changed setting applies to executions that end afterwards.

**What goes.** The header, its steps, history events, out-of-line payloads, foreach item
chunks, markers, signals, waiters, idempotency key and search side rows (the store, a batch
at a time: :meth:`~engine.ports.Store.purge_execution`), the steps' logs
(:class:`~engine.ports.StepLogStore`), and the agent checkpoints of its ``ai.agent`` steps and
the long-term memory notes it wrote (:class:`~engine.ports.AgentData`). Aggregates that are
not one execution's stay: bandit counts, trigger counters, the event log (which has its own
retention).

**Children.** A child execution (started by a ``subworkflow`` step) gets no expiry of its own:
it is kept as long as its parent and deleted first when the parent is, so a parent never
points at a deleted child. Deleting a child explicitly is allowed (the parent keeps the
output it copied).

**Idempotency keys** are deleted with their execution: a start with the same key afterwards
starts a new execution.

**Crashes.** Everything derived goes before the header, and the header (still terminal, still
expired) is what the reconciler scans for: a purge cut short by a crash or by the end of a
pass is finished by the next pass, and nothing is left that no header reaches. An execution
past its retention cannot be retried (``control.retry`` refuses), so a half-deleted one never
runs again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import structlog

from engine.errors import ConveyorError, NotFound
from engine.orchestration.children import child_key
from engine.orchestration.workflows import Workflows
from engine.ports import AgentData, StepLogStore, Store, Transaction
from engine.records import ExecutionRecord, StepRecord
from engine.states import require_terminal

log = structlog.get_logger("conveyor.retention")

_DAY = 86_400.0
_SUBWORKFLOW = "subworkflow"
_AGENT = "ai.agent"


class RetentionPolicy:
    """How long an execution that just ended is kept: the recorder's ``retention`` hook."""

    def __init__(self, workflows: Workflows, default_days: float) -> None:
        self._workflows = workflows
        self._default = default_days * _DAY

    def __call__(self, execution: ExecutionRecord) -> float | None:
        """Seconds to keep ``execution`` from now, or ``None`` (forever, or with its parent)."""
        if execution.parent:
            return None  # deleted with its parent
        declared = self._workflows.get(execution.tenant, execution.workflow, execution.version).definition.retention
        seconds = self._default if declared is None else declared
        return seconds or None


class Purger:
    """Deletes terminal executions and everything derived from them (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        workflows: Workflows,
        *,
        step_logs: StepLogStore | None = None,
        agent_data: AgentData | None = None,
        batch: int = 200,
        concurrency: int = 1,
    ) -> None:
        self.store = store
        self._workflows = workflows
        self._step_logs = step_logs
        self._agent_data = agent_data
        #: Store records deleted per store call (each call one committed batch), and expired
        #: executions found per scan.
        self._batch = batch
        #: Executions deleted at once by :meth:`purge_expired`.
        self._concurrency = concurrency

    def delete(self, tenant: str, execution_id: str, now: float) -> None:
        """Delete a terminal execution now: ``NotFound`` if unknown, ``ExecutionActive`` unless terminal.

        Its ``expires_at`` is brought forward to ``now`` first, so a purge a crash cuts short is
        finished by the reconciler.
        """

        def expire(tx: Transaction) -> None:
            execution = tx.get_execution(tenant, execution_id)
            if execution is None:
                raise NotFound(f"execution {execution_id} not found")
            require_terminal(execution_id, execution.status)
            if execution.expires_at is None or execution.expires_at > now:
                execution.expires_at = now
                tx.put_execution(execution)

        self.store.atomic(expire)
        self.purge(tenant, execution_id)

    def purge(self, tenant: str, execution_id: str, over: Callable[[], bool] = lambda: False) -> bool:
        """Delete the execution, its children and everything derived; ``True`` once it is gone.

        ``False``: ``over()`` said stop between two batches; calling again goes on. Refused
        with ``ExecutionActive`` while the execution (or a child) is not terminal.
        """
        execution = self.store.get_execution(tenant, execution_id)
        if execution is None:
            return True
        require_terminal(execution_id, execution.status)
        steps = self.store.list_steps(tenant, execution_id)
        for child in self._children(execution, steps):
            if not self.purge(tenant, child.id, over):
                return False
        if self._step_logs is not None and steps:
            self._step_logs.delete_step_logs(tenant, execution_id, [step.key for step in steps])
        agent_keys = self._of_type(execution, steps, _AGENT)
        if self._agent_data is not None and agent_keys:
            self._agent_data.forget_execution(tenant, execution_id, [step.key for step in agent_keys])
        while not self.store.purge_execution(tenant, execution_id, self._batch):
            if over():
                return False
        log.info("execution deleted", tenant=tenant, execution_id=execution_id, workflow=execution.workflow)
        return True

    def purge_expired(self, now: float, over: Callable[[], bool]) -> tuple[int, int]:
        """Delete executions whose retention passed by ``now``, a scan batch at a time until
        ``over()`` or none is left; (how many were deleted, how many failed)."""
        purged = failed = 0
        while not over():
            try:
                expired = self.store.expired_executions(now, self._batch)
            except ConveyorError as exc:  # the store is away, or its index is missing: next pass
                log.warning("scanning for expired executions failed", error=str(exc))
                return purged, failed + 1
            outcomes = self._purge_all(expired, over)
            done_here = outcomes.count(True)
            purged, failed = purged + done_here, failed + outcomes.count(None)
            if len(expired) < self._batch or not done_here:
                break  # none left, or only ones that fail: the next pass tries again
        return purged, failed

    def _purge_all(self, executions: Sequence[ExecutionRecord], over: Callable[[], bool]) -> list[bool | None]:
        """:meth:`purge` each, ``concurrency`` at a time (each waits mostly for the store); per
        execution: done, cut short (``False``) or failed (``None``: one stuck execution must not
        stop the others)."""

        def one(execution: ExecutionRecord) -> bool | None:
            if over():
                return False
            try:
                return self.purge(execution.tenant, execution.id, over)
            except ConveyorError as exc:
                log.warning("deleting an expired execution failed", execution_id=execution.id, error=str(exc))
                return None

        if self._concurrency <= 1 or len(executions) <= 1:
            return [one(execution) for execution in executions]
        with ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="conveyor-purge") as pool:
            return list(pool.map(one, executions))

    def _of_type(self, execution: ExecutionRecord, steps: Sequence[StepRecord], step_type: str) -> list[StepRecord]:
        if not steps:
            return []  # all deleted already (a purge cut short): the definition is not needed
        compiled = self._workflows.of(execution)
        return [step for step in steps if compiled.step(step.step_id).type == step_type]

    def _children(self, execution: ExecutionRecord, steps: Sequence[StepRecord]) -> list[ExecutionRecord]:
        keys = [child_key(execution.id, step.key) for step in self._of_type(execution, steps, _SUBWORKFLOW)]
        if not keys:
            return []
        found = self.store.read(lambda reads: reads.find_executions_by_keys(execution.tenant, keys))
        return list(found.values())
