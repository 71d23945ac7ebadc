"""Trigger definitions: create, read, update, enable/disable and delete, over the Store port.

This is bookkeeping only. Firing schedule triggers belongs to beat
(:mod:`engine.orchestration.schedule_runs`) and routing events to event triggers to the
event router; what this module guarantees is that every stored trigger is valid and that
an enabled schedule trigger carries the ``next_fire_at`` the ``due_triggers`` scan looks for.

Specs (schedule policies: :mod:`engine.schedules`)::

    kind: schedule   spec: {cron: "*/5 * * * *", timezone: "Europe/Paris"}  or  {every: "10m"}
                     optional: anchor, catchup (latest|all), catchup_window, overlap
    kind: event      spec: {type: "order.created", match: 'event.data.total > 100'}
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from engine.compile import compile_workflow
from engine.errors import ExpressionError, InvalidRequest, NotFound, Problem
from engine.expressions import compile_expression, split_template, template_strings
from engine.model import WORKFLOW_NAME_PATTERN
from engine.payloads import to_json
from engine.ports import Clock, Store, Transaction
from engine.records import Page, TriggerRecord, WorkflowVersionRecord
from engine.schedules import FirePreview, ScheduleSpec, preview

TriggerKind = Literal["schedule", "event"]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EventSpec(_Spec):
    """Fire for external events of ``type`` that satisfy the CEL ``match`` (over ``event``)."""

    type: str = Field(min_length=1, max_length=200)
    match: str | None = Field(default=None, max_length=4000)

    @field_validator("match")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            expression = compile_expression(value)
            extra = expression.variables - {"event"}
            if extra:
                raise ValueError(f"a match may only use 'event', not {', '.join(sorted(extra))}")
        return value


_SPECS: dict[str, type[BaseModel]] = {"schedule": ScheduleSpec, "event": EventSpec}


def parse_spec(kind: str, spec: dict[str, Any]) -> BaseModel:
    """Validate a spec for ``kind``; ``InvalidRequest`` lists every problem with its path."""
    model = _SPECS.get(kind)
    if model is None:
        raise InvalidRequest(f"unknown trigger kind {kind!r}", [Problem("kind", f"expected one of {sorted(_SPECS)}")])
    try:
        return model.model_validate(spec)
    except ValidationError as exc:
        problems = [
            Problem(".".join(["spec", *(str(p) for p in err["loc"])]), err["msg"].removeprefix("Value error, "))
            for err in exc.errors()
        ]
        raise InvalidRequest("the trigger spec is invalid", problems) from None
    except InvalidRequest as exc:  # an expression that does not compile
        raise InvalidRequest("the trigger spec is invalid", [Problem("spec.match", exc.message)]) from None


def check_input_mapping(kind: str, input: dict[str, Any]) -> None:
    """An event trigger's input may map the event with ``${event...}`` templates, and nothing else."""
    if kind != "event":
        return
    problems = []
    for path, source in template_strings(input, "input"):
        try:
            parts = split_template(source)
        except ExpressionError as exc:
            problems.append(Problem(path, exc.message))
            continue
        for part in parts:
            if isinstance(part, tuple):
                try:
                    extra = compile_expression(part[0]).variables - {"event"}
                except ExpressionError as exc:
                    problems.append(Problem(path, exc.message))
                    continue
                if extra:
                    problems.append(
                        Problem(path, f"an input mapping may only use 'event', not {', '.join(sorted(extra))}")
                    )
    if problems:
        raise InvalidRequest("the trigger input mapping is invalid", problems)


def check_schedule_input(latest: WorkflowVersionRecord, input: dict[str, Any]) -> None:
    """A schedule's input is fixed, so it is checked now against the workflow's latest version
    (``InputInvalid``, every problem with its path) instead of failing every fire later.

    A fire still records why it started nothing (``last_error``) when a newer version refuses it.
    """
    compile_workflow(latest.definition).validate_input(input)


@dataclass(frozen=True)
class TriggerChanges:
    """Fields of an update; ``None`` leaves a field as it is."""

    workflow: str | None = None
    spec: dict[str, Any] | None = None
    input: dict[str, Any] | None = None
    enabled: bool | None = None


class Triggers:
    """Trigger bookkeeping use cases for one store."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def create(
        self,
        tenant: str,
        *,
        workflow: str,
        kind: str,
        spec: dict[str, Any],
        input: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> TriggerRecord:
        """Validate and store a new trigger for an existing workflow."""
        latest = self._check_workflow(tenant, workflow)
        to_json(spec, "trigger spec")  # plain JSON only: NaN or Infinity would be stored as null
        to_json(input or {}, "trigger input")
        parse_spec(kind, spec)
        check_input_mapping(kind, input or {})
        if kind == "schedule":
            check_schedule_input(latest, input or {})
        now = self.clock.now()
        record = TriggerRecord(
            id=uuid.uuid4().hex,
            tenant=tenant,
            workflow=workflow,
            kind=kind,
            spec=dict(spec),
            enabled=enabled,
            input=dict(input or {}),
            created_at=now,
            updated_at=now,
        )
        self._schedule(record, now)
        self.store.put_trigger(record)
        return record

    def get(self, tenant: str, trigger_id: str) -> TriggerRecord:
        record = self.store.get_trigger(tenant, trigger_id)
        if record is None:
            raise NotFound(f"trigger {trigger_id!r} not found")
        return record

    def list_page(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        return self.store.list_triggers(tenant, cursor=cursor, limit=limit)

    def update(self, tenant: str, trigger_id: str, changes: TriggerChanges) -> TriggerRecord:
        """Apply ``changes``; the schedule is recomputed when the spec or enablement changes.

        One transaction, so an update never undoes what a fire committed meanwhile (its
        counters, ``next_fire_at``, running executions).
        """
        latest = self._check_workflow(tenant, changes.workflow) if changes.workflow is not None else None
        to_json(changes.spec, "trigger spec")
        to_json(changes.input, "trigger input")
        now = self.clock.now()

        def body(tx: Transaction) -> TriggerRecord:
            record = tx.get_trigger(tenant, trigger_id)
            if record is None:
                raise NotFound(f"trigger {trigger_id!r} not found")
            if changes.workflow is not None:
                record.workflow = changes.workflow
            if changes.spec is not None:
                parse_spec(record.kind, changes.spec)
                record.spec = dict(changes.spec)
            if changes.input is not None:
                check_input_mapping(record.kind, changes.input)
                record.input = dict(changes.input)
            if record.kind == "schedule" and (changes.workflow is not None or changes.input is not None):
                check_schedule_input(latest or self._check_workflow(tenant, record.workflow), record.input)
            if changes.enabled is not None:
                record.enabled = changes.enabled
            record.updated_at = now
            if changes.spec is not None or changes.enabled is not None:
                self._schedule(record, now)
            tx.put_trigger(record)
            return record

        return self.store.atomic(body)

    def set_enabled(self, tenant: str, trigger_id: str, enabled: bool) -> TriggerRecord:
        return self.update(tenant, trigger_id, TriggerChanges(enabled=enabled))

    def delete(self, tenant: str, trigger_id: str) -> None:
        if not self.store.delete_trigger(tenant, trigger_id):
            raise NotFound(f"trigger {trigger_id!r} not found")

    def _check_workflow(self, tenant: str, workflow: str) -> WorkflowVersionRecord:
        """The latest version of ``workflow`` (``NotFound`` if it has none)."""
        if not re.match(WORKFLOW_NAME_PATTERN, workflow):
            raise InvalidRequest(f"invalid workflow name {workflow!r}")
        latest = self.store.get_workflow_version(tenant, workflow)
        if latest is None:
            raise NotFound(f"workflow {workflow!r} not found")
        return latest

    @staticmethod
    def _schedule(record: TriggerRecord, now: float) -> None:
        # Only enabled schedule triggers are due; disabling clears the time so the scan skips
        # it, and drops the fires it buffered.
        if record.kind == "schedule" and record.enabled:
            spec = ScheduleSpec.model_validate(record.spec)
            record.next_fire_at = spec.schedule(record.created_at).next_after(now)
        else:
            record.next_fire_at = None
            record.pending = []


#: Fire times a created or updated trigger shows.
PREVIEW_COUNT = 5


def next_fires(record: TriggerRecord, count: int = PREVIEW_COUNT) -> list[FirePreview]:
    """The next ``count`` fire times of an enabled schedule trigger, from its ``next_fire_at``.

    Each carries a note where a daylight-saving shift moves it. Empty for an event trigger
    and for a disabled one (it will not fire).
    """
    if record.kind != "schedule" or record.next_fire_at is None:
        return []
    try:
        spec = ScheduleSpec.model_validate(record.spec)
    except ValidationError:  # stored before a stricter check; firing it records why (last_error)
        return []
    return preview(spec.schedule(record.created_at), record.next_fire_at - 0.001, count)
