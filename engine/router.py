"""The event router: accept an external event into the log, then route it.

One path for every source (``POST /v1/events``, ``conveyor events publish``, the Pub/Sub
bridge): :meth:`EventRouter.publish` commits the event to its tenant's event log (idempotent
by event id) in the same transaction as the executions its triggers start:

- every enabled event trigger of its type whose CEL ``match`` holds starts its workflow, with
  the trigger's input mapping rendered over ``event`` and the idempotency key
  ``<trigger id>:<event id>``, so routing an event twice starts nothing twice;
- then, for an event with a correlation key, every step registered as waiting on the event's
  route is offered the event through the one guarded resume transition
  (:func:`engine.orchestration.steps.resume`).

Then the event is marked routed. An event whose router died before that is routed again by
:meth:`EventRouter.route_due` (the reconciler); both halves are idempotent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import structlog
from typing_extensions import Unpack

from engine import eventlog
from engine.errors import ConveyorError, ExpressionError
from engine.expressions import compile_expression, render
from engine.records import InboundEventRecord, TriggerRecord

if TYPE_CHECKING:
    from engine.service import Service

log = structlog.get_logger("conveyor.router")

#: How long a tenant's list of event triggers is reused (a trigger change takes effect after it).
TRIGGER_CACHE_SECONDS = 1.0


class EventRouter:
    """Accepts external events into the durable log and routes them (see the module docstring)."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._triggers: dict[str, tuple[float, list[TriggerRecord]]] = {}
        self._lock = threading.Lock()

    def publish(self, tenant: str, **fields: Unpack[eventlog.EventFields]) -> eventlog.Accepted:
        """Accept an event (durably, once per id) with its trigger starts, then offer it to waiters.

        The event and the executions its triggers start commit in one transaction; an event
        without a correlation key is then routed. One with a key is offered to the steps
        waiting for it after that commit, then marked routed.
        """
        return self.publish_events([self.prepare(tenant, **fields)])[0]

    def prepare(self, tenant: str, **fields: Unpack[eventlog.EventFields]) -> InboundEventRecord:
        """The event to accept; ``InvalidRequest`` or ``PayloadTooLarge`` if it cannot be one."""
        settings, now = self.service.settings, self.service.clock.now()
        return eventlog.new_event(tenant, accepted_at=now, max_bytes=settings.max_payload_bytes, **fields)

    def publish_events(
        self,
        events: list[InboundEventRecord],
        committed: Callable[[list[eventlog.Accepted]], None] | None = None,
    ) -> list[eventlog.Accepted]:
        """:meth:`publish` for several prepared events, accepted and started in one transaction.

        Either every event of the batch is committed (with its starts) or none is; then
        ``committed`` is called, before the steps are dispatched and the events routed. Each
        event still unrouted (one with a correlation key, or an earlier copy whose router
        died) is then offered to its waiters, one after the other; one whose routing fails is
        routed by the reconciler.
        """
        stored = self.service.intake.accept_events([(event, self._starts(event)) for event in events], committed)
        unrouted = {(a.event.tenant, a.event.id): a for a in stored if not a.event.routed}
        for accepted in unrouted.values():
            # A new event's trigger starts were made by its accepting commit (a start over the
            # quota counted there): only an earlier copy's may be missing.
            self.route(accepted.event, start_triggers=accepted.duplicate)
        return stored

    def warm_up(self, tenants: Iterable[str]) -> None:
        """Load each tenant's event triggers and compile their workflows' latest versions.

        The bridge calls this before it pulls: a store it cannot reach fails it at once, and
        its first messages do not pay for the loading.
        """
        for tenant in tenants:
            for trigger in self._event_triggers(tenant):
                latest = self.service.store.get_workflow_version(tenant, trigger.workflow)
                if latest is not None:
                    self.service.compiled(tenant, trigger.workflow, latest.version)

    def route(self, event: InboundEventRecord, *, start_triggers: bool = True) -> None:
        """Start the event's triggers (unless its accepting commit did) and offer it to its
        waiters, then mark it routed.

        Both are idempotent (trigger starts by their key, resumes by the guarded transition),
        so an event whose first routing was interrupted is simply routed again. A store outage
        propagates: the event stays unrouted and the reconciler retries.
        """
        if start_triggers:
            self.service.intake.start_for_event(event, self._starts(event))
        if event.correlation_key is not None:
            for waiter in self.service.store.list_waiters(event.tenant, event.route):
                self.service.deliver_event(waiter, event)
        self.service.store.atomic(lambda tx: eventlog.mark_routed(tx, event.tenant, event.id))

    def route_due(self, before: float, limit: int = 200) -> int:
        """Route events accepted at or before ``before`` that are still unrouted; how many."""
        events = self.service.store.due_inbound_events(before, limit)
        for event in events:
            try:
                self.route(event)
            except ConveyorError as exc:
                log.warning("routing an event failed; the next pass retries it", event_id=event.id, error=str(exc))
        return len(events)

    # --- triggers -----------------------------------------------------------------------

    def _event_triggers(self, tenant: str) -> list[TriggerRecord]:
        now = time.monotonic()
        with self._lock:
            cached = self._triggers.get(tenant)
        if cached is not None and now - cached[0] < TRIGGER_CACHE_SECONDS:
            return cached[1]
        found: list[TriggerRecord] = []
        cursor: str | None = None
        while True:
            page = self.service.store.list_triggers(tenant, cursor=cursor, limit=200)
            found += [t for t in page.items if t.kind == "event" and t.enabled]
            cursor = page.next_cursor
            if cursor is None:
                break
        with self._lock:
            self._triggers[tenant] = (now, found)
        return found

    def _starts(self, event: InboundEventRecord) -> list[eventlog.TriggerStart]:
        """The executions the event's matching triggers start (input mapping rendered).

        A trigger whose ``match`` or input mapping fails on the event gets a start with its
        ``error`` (nothing starts; the reason is recorded on the trigger).
        """
        starts = []
        for trigger in self._event_triggers(event.tenant):
            if trigger.spec.get("type") != event.type:
                continue
            key, source = f"{trigger.id}:{event.id}", trigger.spec.get("match")
            try:
                if source and compile_expression(source).evaluate({"event": eventlog.event_view(event)}) is not True:
                    continue
            except ExpressionError as exc:
                log.warning("an event trigger's match failed", trigger_id=trigger.id, error=exc.message)
                starts.append(eventlog.TriggerStart(trigger.id, trigger.workflow, None, key, f"match: {exc.message}"))
                continue
            try:
                payload = render(trigger.input, {"event": eventlog.event_view(event)})
            except ExpressionError as exc:
                log.warning("an event trigger's input mapping failed", trigger_id=trigger.id, error=exc.message)
                starts.append(eventlog.TriggerStart(trigger.id, trigger.workflow, None, key, f"input: {exc.message}"))
                continue
            starts.append(eventlog.TriggerStart(trigger.id, trigger.workflow, payload, key))
        return starts
