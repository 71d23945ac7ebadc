"""``type: approval``: wait until a person approves or rejects, or until a timeout.

The step waits in WAITING. A decision comes through REST
(``POST /v1/executions/{id}/steps/{key}/approval``), the GraphQL mutation
``decideApproval``, or a signed single-use link; only principals whose role is listed in
``roles`` may decide. The decision (who, role, when, comment, through what) is the step's
output and is recorded in the history.

- approved: the step succeeds with ``approved: true``.
- rejected: ``on_reject: fail`` (default) fails the step with ``ApprovalRejected`` (the
  output still holds the decision); ``on_reject: continue`` succeeds with ``approved: false``
  so later steps can branch on it.
- no decision within ``timeout``: ``on_timeout: fail`` (default) fails with
  ``ApprovalTimeout``; ``reject`` is treated as a rejection (then ``on_reject`` applies);
  ``approve`` succeeds with ``approved: true``. The decision's ``by`` is then ``null``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from engine.auth import Role
from engine.model import Duration
from engine.orchestration.approvals import decision_output, rejection_error
from engine.steptypes import register
from engine.steptypes.base import BaseStepType, StepConfig, StepContext, StepOutcome, Wait

#: Who may decide when ``roles`` is not given: everyone who may signal an execution.
DEFAULT_ROLES = [Role.OPERATOR, Role.EDITOR, Role.ADMIN]


class ApprovalConfig(StepConfig):
    """``message`` is shown to approvers; the other fields are described in the module docstring."""

    message: str | None = None
    roles: list[Role] = Field(default_factory=lambda: list(DEFAULT_ROLES), min_length=1)
    timeout: Duration | None = Field(default=None, gt=0)
    on_timeout: Literal["fail", "reject", "approve"] = "fail"
    on_reject: Literal["fail", "continue"] = "fail"


class ApprovalStep(BaseStepType):
    name: ClassVar[str] = "approval"
    Config: ClassVar[type[StepConfig]] = ApprovalConfig

    async def run(self, ctx: StepContext, config: StepConfig) -> StepOutcome:
        assert isinstance(config, ApprovalConfig)
        until = None if config.timeout is None else ctx.now() + config.timeout
        details: dict[str, Any] = {
            "roles": [str(role) for role in config.roles],
            "on_reject": config.on_reject,
            "message": config.message,
        }
        on_wake = "succeed"
        if until is not None:
            approved = config.on_timeout == "approve"
            timed_out = decision_output(approved, by=None, role=None, at=until, comment=None, via="timeout")
            if config.on_timeout == "fail":
                on_wake = "fail"
                details["timeout_error"] = {"type": "ApprovalTimeout", "message": "no decision before the timeout"}
            elif not approved and config.on_reject == "fail":
                on_wake = "fail"
                details["timeout_error"] = rejection_error(timed_out)
            else:
                details["timeout_output"] = timed_out
        return Wait(until=until, on_wake=on_wake, kind="approval", details=details)


register(ApprovalStep())
