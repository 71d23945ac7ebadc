"""Accepting external events into the log together with the executions their triggers start.

The use cases behind :class:`~engine.router.EventRouter` (and so behind the Pub/Sub bridge,
``POST /v1/events`` and ``conveyor events publish``): a batch of events is appended to their
tenants' logs and their triggers' executions are started in one transaction, within each
tenant's quota (see :mod:`engine.trigger_starts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from engine import eventlog
from engine.orchestration.recorder import Recorder
from engine.records import ExecutionRecord, InboundEventRecord
from engine.trigger_starts import TriggerStarts

if TYPE_CHECKING:
    from engine.service import Service


class EventIntake:
    """Commits accepted events and their trigger starts (see the module docstring)."""

    def __init__(self, service: Service, starts: TriggerStarts) -> None:
        self.service = service
        self.starts = starts

    def accept_events(
        self,
        batch: Sequence[tuple[InboundEventRecord, Sequence[eventlog.TriggerStart]]],
        committed: Callable[[list[eventlog.Accepted]], None] | None = None,
    ) -> list[eventlog.Accepted]:
        """Append events to their tenants' logs and start their triggers' executions, in one transaction.

        One transaction for the whole batch (the bridge hands over the messages it pulled
        together): each event is accepted once per id (a second copy in the same batch is a
        duplicate), and a duplicate starts nothing. An event no step can wait for (it has no
        correlation key) is routed by this commit; one with a key stays unrouted until the
        router offered it to the waiters. A start whose workflow is gone, whose match or input
        mapping failed or whose mapped input is invalid is left out, as retrying would fail the
        same way, and the reason becomes its trigger's ``last_error``; one over the tenant's
        quota of active executions is skipped and counted on its trigger.

        ``committed`` is called once the transaction committed, before its steps are
        dispatched (the bridge acks there: a lost dispatch is re-sent by the reconciler).
        """
        wanted: dict[str, int] = {}
        for event, starts in batch:
            wanted[event.tenant] = wanted.get(event.tenant, 0) + sum(start.error is None for start in starts)
        budgets = self.starts.budgets(wanted)

        def use_case(rec: Recorder) -> list[eventlog.Accepted]:
            rec.start_budget = dict(budgets)
            stored = eventlog.accept_many(rec.tx, [event for event, _ in batch])
            fresh = [pair for accepted, pair in zip(stored, batch, strict=True) if not accepted.duplicate]
            found: dict[str, ExecutionRecord] = {}
            for tenant in {event.tenant for event, _ in fresh}:  # every start's key, in one read
                keys = [start.idempotency_key for event, starts in fresh if event.tenant == tenant for start in starts]
                found.update(rec.tx.find_executions_by_keys(tenant, keys) if keys else {})
            for event, starts in fresh:
                self.starts.start_all(rec, event.tenant, [s for s in starts if s.idempotency_key not in found])
            return stored

        result, effects = self.service.commit(use_case)
        if committed is not None:
            committed(result)
        self.service.perform(effects)
        return result

    def start_for_event(
        self, event: InboundEventRecord, starts: Sequence[eventlog.TriggerStart]
    ) -> list[ExecutionRecord]:
        """Start (or find, by their keys) the executions of an event's triggers, in one transaction."""
        if not starts:
            return []
        budgets = self.starts.budgets({event.tenant: sum(start.error is None for start in starts)})

        def use_case(rec: Recorder) -> list[ExecutionRecord]:
            rec.start_budget = dict(budgets)
            return self.starts.start_all(rec, event.tenant, starts)

        return self.service.transact(use_case)
