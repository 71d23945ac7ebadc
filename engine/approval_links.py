"""Signed single-use approval links: issuing one, reading its claims, and deciding with it.

The tokens themselves (HMAC over the tenant, execution, step and lease epoch) are made and
checked in :mod:`engine.orchestration.approvals`; this module adds the secret
(``CONVEYOR_APPROVAL_LINK_SECRET``: without it links are refused), the time-to-live cap and
the transaction that decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import InvalidRequest
from engine.orchestration import approvals
from engine.orchestration.snapshot import open_snapshot
from engine.records import StepRecord

if TYPE_CHECKING:
    from engine.service import Service


class ApprovalLinks:
    """Approval links over a service's store, settings and clock."""

    def __init__(self, service: Service) -> None:
        self.service = service

    def issue(
        self, tenant: str, execution_id: str, step_key: str, *, role: str, by: str, ttl: float | None = None
    ) -> tuple[str, approvals.LinkClaims]:
        """A signed single-use token that decides ``step_key`` on behalf of ``by`` (and its claims)."""
        service = self.service
        longest = service.settings.approval_link_ttl
        ttl = longest if ttl is None else min(ttl, longest)
        now = service.clock.now()
        claims = service.store.read(
            lambda reads: approvals.link_claims(
                open_snapshot(reads, service.workflows, tenant, execution_id, [step_key]),
                step_key,
                role=role,
                by=by,
                now=now,
                ttl=ttl,
            )
        )
        return approvals.sign_link(claims, self._secret()), claims

    def verify(self, token: str) -> approvals.LinkClaims:
        """The claims of a genuine, unexpired approval link (``AuthenticationFailed`` otherwise)."""
        return approvals.verify_link(token, self._secret(), self.service.clock.now())

    def decide(self, token: str, approved: bool, comment: str | None = None) -> StepRecord:
        """Decide with a signed link: valid once, for the wait it was issued in, until it expires."""
        claims = self.verify(token)
        decision = approvals.Decision(approved, claims.by, claims.role, comment, via="link")
        workflows = self.service.workflows
        return self.service.transact(
            lambda rec: approvals.decide(
                rec, workflows, claims.tenant, claims.execution_id, claims.step_key, decision, epoch=claims.epoch
            )
        )

    def _secret(self) -> bytes:
        secret = self.service.settings.approval_link_secret
        if secret is None:
            raise InvalidRequest("approval links are disabled: set CONVEYOR_APPROVAL_LINK_SECRET to enable them")
        return secret.get_secret_value().encode()
