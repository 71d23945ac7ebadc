"""Run one step end to end: claim, render, run the handler with a lease heartbeat, record.

The handler runs outside any transaction. While it runs, a heartbeat thread extends the
lease; if the lease is lost (the step was cancelled or taken over), the context reports
``cancelled()`` and the late result is refused by fencing.
"""

from __future__ import annotations

import asyncio
import threading
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from engine import steptypes
from engine.errors import ConveyorError, LeaseLost, StepFailure
from engine.expressions import compile_expression, render
from engine.orchestration import planner
from engine.orchestration.steps import Claimed
from engine.service import Service
from engine.steptypes.base import StepConfig, StepContext, Succeeded, Wait

log = structlog.get_logger("conveyor.runner")


@dataclass(frozen=True)
class RunReport:
    """What happened to one delivery of a step message (for logs and tests)."""

    outcome: str
    step_key: str


class _Heartbeat:
    """Extends a lease every third of its length until stopped or lost."""

    def __init__(self, service: Service, claimed: Claimed) -> None:
        self.service = service
        self.step = claimed.step
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"heartbeat-{self.step.key}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def beat(self) -> None:
        try:
            self.service.heartbeat(self.step.tenant, self.step.execution_id, self.step.key, self.step.lease_epoch)
        except LeaseLost:
            self.lost.set()

    def _loop(self) -> None:
        interval = max(0.2, self.service.settings.lease_seconds / 3)
        while not self._stop.wait(interval) and not self.lost.is_set():
            try:
                self.beat()
            except ConveyorError as exc:
                log.warning("heartbeat failed", error=str(exc))


def _error(exc: BaseException) -> dict[str, Any]:
    error_type = exc.error_type if isinstance(exc, StepFailure) else type(exc).__name__
    message = exc.message if isinstance(exc, ConveyorError) else str(exc) or error_type
    return {
        "type": error_type,
        "message": message,
        "traceback": "".join(traceback.format_exception(exc, limit=-8))[-4000:],
    }


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StepFailure):
        return exc.retryable
    return not isinstance(exc, ConveyorError)


class StepRunner:
    """Executes step messages against a :class:`Service`."""

    def __init__(self, service: Service, services: Mapping[str, Any] | None = None) -> None:
        self.service = service
        self.services = dict(services or {})

    def run(self, tenant: str, execution_id: str, step_key: str) -> RunReport:
        claimed = self.service.claim(tenant, execution_id, step_key)
        if claimed is None:
            return RunReport("ignored", step_key)
        step = claimed.step
        bound = log.bind(execution_id=execution_id, step_key=step_key, attempt=step.attempt)
        with _Heartbeat(self.service, claimed) as heartbeat:
            try:
                outcome = asyncio.run(self._handle(claimed, heartbeat))
            except LeaseLost:
                return RunReport("lease-lost", step_key)
            except Exception as exc:  # user code may raise anything: it is recorded, never lost
                bound.info("step attempt failed", error=str(exc))
                error, retryable = _error(exc), _retryable(exc)
                return self._record(
                    lambda: self.service.fail(
                        tenant, execution_id, step_key, step.lease_epoch, error, retryable=retryable
                    ),
                    "failed",
                    step_key,
                )
        if isinstance(outcome, Wait):
            wait = outcome
            return self._record(
                lambda: self.service.park(
                    tenant,
                    execution_id,
                    step_key,
                    step.lease_epoch,
                    until=wait.until,
                    on_wake=wait.on_wake,
                    match=dict(wait.match),
                ),
                "waiting",
                step_key,
            )
        output = outcome.output
        return self._record(
            lambda: self.service.complete(tenant, execution_id, step_key, step.lease_epoch, output),
            "succeeded",
            step_key,
        )

    def _record(self, action: Callable[[], None], outcome: str, step_key: str) -> RunReport:
        try:
            action()
        except LeaseLost:
            return RunReport("lease-lost", step_key)
        return RunReport(outcome, step_key)

    async def _handle(self, claimed: Claimed, heartbeat: _Heartbeat) -> Succeeded | Wait:
        step, execution, compiled = claimed.step, claimed.execution, claimed.compiled
        definition = compiled.step(step.step_id)
        step_type = steptypes.get(definition.type)
        if step_type is None:
            raise StepFailure(f"unknown step type {definition.type!r}", retryable=False)
        variables = planner.variables(execution, claimed.referenced, item=step.item, index=step.index)
        try:
            config: StepConfig = step_type.Config.model_validate(render(definition.config, variables))
        except ValidationError as exc:
            message = f"step configuration is invalid: {exc}"
            raise StepFailure(message, retryable=False, error_type="ConfigInvalid") from None
        ctx = StepContext(
            tenant=step.tenant,
            execution_id=step.execution_id,
            step_key=step.key,
            step_id=step.step_id,
            attempt=step.attempt,
            input=execution.input,
            item=step.item,
            index=step.index,
            now=self.service.clock.now,
            evaluate=lambda source: compile_expression(source).evaluate(variables),
            heartbeat=heartbeat.beat,
            cancelled=heartbeat.lost.is_set,
            services=self.services,
        )
        running = step_type.run(ctx, config)
        try:
            if definition.timeout is None:
                return await running
            return await asyncio.wait_for(running, definition.timeout)
        except TimeoutError:
            raise StepFailure(f"step timed out after {definition.timeout:g}s", error_type="StepTimeout") from None
