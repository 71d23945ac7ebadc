"""Starts made by triggers (events and schedules), bounded by the tenant's quota of active executions.

A use case that may start executions for triggers first asks :meth:`TriggerStarts.budgets`
how many each tenant may still start and sets them on its recorder (``rec.start_budget``);
:meth:`TriggerStarts.start` then refuses a start past that budget with ``QuotaExceeded``
(writing nothing), and :meth:`TriggerStarts.start_all` counts such a refusal on the trigger
(``skipped``, the reason in ``last_error``) instead of failing the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from engine import eventlog
from engine.errors import InputInvalid, NotFound, PayloadTooLarge, QuotaExceeded
from engine.orchestration.recorder import Recorder
from engine.records import ExecutionRecord

if TYPE_CHECKING:
    from engine.service import Service

log = structlog.get_logger("conveyor.service")


class TriggerStarts:
    """The start use case as triggers use it: with the tenant's quota, inside the caller's transaction."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def budgets(self, wanted: dict[str, int]) -> dict[str, int]:
        """How many executions each tenant may still start: its quota less its active executions.

        ``wanted`` is how many starts each tenant's use case may make. Counted before the
        transaction, as for API starts (``enforce_quota``): a bound, not an exact count under
        concurrency (see :class:`engine.quota.ActiveCounts`).
        """
        active_counts = self.service.active_counts
        return {tenant: active_counts.budget(tenant, count) for tenant, count in wanted.items() if count > 0}

    def start(
        self, rec: Recorder, tenant: str, workflow: str, payload: Any, idempotency_key: str, trigger_id: str
    ) -> ExecutionRecord:
        """A trigger's start; ``QuotaExceeded`` (nothing written) when it would pass the tenant's quota.

        The quota is checked when the use case set ``rec.start_budget`` for the tenant; a start
        whose key already has its execution returns that one, whatever the quota.
        """
        service = self.service
        service.check_payload(payload, "trigger input")
        budget = rec.start_budget.get(tenant)
        if budget is not None and budget <= 0:
            existing = rec.tx.find_execution_by_key(tenant, idempotency_key)
            if existing is not None:
                return existing
            limit = service.settings.max_concurrent_executions
            raise QuotaExceeded(f"the tenant has {limit - budget} active executions; the limit is {limit}")
        execution, created = service.start_in(rec, tenant, workflow, payload, None, idempotency_key, None, trigger_id)
        if created and budget is not None:
            rec.start_budget[tenant] = budget - 1
        return execution

    def start_all(self, rec: Recorder, tenant: str, starts: Sequence[eventlog.TriggerStart]) -> list[ExecutionRecord]:
        """Start each of ``starts``; one that cannot start is left out, its reason recorded as its
        trigger's ``last_error`` (and counted in ``skipped`` if over the quota)."""
        started = []
        for start in starts:
            if start.error is not None:
                record_start_error(rec, tenant, start.trigger_id, start.idempotency_key, start.error)
                continue
            try:
                started.append(
                    self.start(rec, tenant, start.workflow, start.input, start.idempotency_key, start.trigger_id)
                )
            except QuotaExceeded as exc:
                count_quota_skip(rec, tenant, start.trigger_id, start.idempotency_key, exc)
            except (NotFound, InputInvalid, PayloadTooLarge) as exc:
                # Checked before the start writes anything, so the rest of the transaction stands.
                log.warning("an event trigger cannot start", trigger_id=start.trigger_id, error=exc.message)
                record_start_error(rec, tenant, start.trigger_id, start.idempotency_key, _reason(exc))
        return started


def _reason(exc: NotFound | InputInvalid | PayloadTooLarge) -> str:
    if isinstance(exc, InputInvalid) and exc.problems:
        return f"{exc.message}: " + "; ".join(f"{p.path}: {p.message}" for p in exc.problems)
    return exc.message


def record_start_error(
    rec: Recorder, tenant: str, trigger_id: str, key: str, reason: str, *, skipped: bool = False
) -> None:
    """Record on the trigger why its start ``key`` started nothing (``last_error``; ``skipped`` counts it)."""
    trigger = rec.tx.get_trigger(tenant, trigger_id)
    if trigger is not None:
        trigger.skipped += 1 if skipped else 0
        trigger.last_error = f"{key}: {reason}"
        rec.tx.put_trigger(trigger)


def count_quota_skip(rec: Recorder, tenant: str, trigger_id: str, key: str, exc: QuotaExceeded) -> None:
    """Count a start refused by the tenant's quota on its trigger (``skipped``, ``last_error``)."""
    log.warning("a trigger start is over the tenant's quota; skipped", trigger_id=trigger_id, key=key)
    record_start_error(rec, tenant, trigger_id, key, f"skipped: {exc.message}", skipped=True)
