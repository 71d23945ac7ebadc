"""Deciding an ``approval`` step: who may, what is recorded, and signed single-use links.

A decision resumes the WAITING step through the one guarded resume transition
(:func:`engine.orchestration.steps.resume`). A link is an HMAC-signed token bound to the
tenant, execution, step and the step's lease epoch: once the step is decided it is no
longer WAITING, and if it ever waits again (the execution was retried) its epoch has
moved on, so each link works at most once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from engine.errors import AuthenticationFailed, PermissionDenied, TransitionRefused
from engine.orchestration import steps
from engine.orchestration.recorder import Recorder
from engine.orchestration.snapshot import Snapshot
from engine.orchestration.workflows import Workflows
from engine.records import StepRecord


@dataclass(frozen=True)
class Decision:
    """An approver's answer: ``by`` names them, ``via`` the channel (``rest``, ``graphql``, ``link``)."""

    approved: bool
    by: str
    role: str
    comment: str | None = None
    via: str = "rest"


@dataclass(frozen=True)
class LinkClaims:
    """What a signed approval link is bound to, and who it was issued for."""

    tenant: str
    execution_id: str
    step_key: str
    epoch: int
    role: str
    by: str
    expires_at: float


def decision_output(
    approved: bool, *, by: str | None, role: str | None, at: float, comment: str | None, via: str
) -> dict[str, Any]:
    """The step output of a decided approval (also the ``decision`` in its history event).

    ``at`` (epoch seconds) is given as an RFC 3339 UTC date-time.
    """
    return {
        "approved": approved,
        "decision": "approved" if approved else "rejected",
        "by": by,
        "role": role,
        "at": datetime.fromtimestamp(at, UTC).isoformat(),
        "comment": comment,
        "via": via,
    }


def rejection_error(decision: dict[str, Any]) -> dict[str, Any]:
    """The step error of a rejection when the step declares ``on_reject: fail``."""
    who = decision.get("by") or "timeout"
    comment = decision.get("comment")
    return {"type": "ApprovalRejected", "message": f"rejected by {who}" + (f": {comment}" if comment else "")}


def approval_step(snap: Snapshot, key: str, role: str) -> StepRecord:
    """The WAITING approval step ``key``, if ``role`` may decide it (else a clear refusal)."""
    step = steps.waiting_step(snap, key, "an approval decision")
    wait = step.wait or {}
    if wait.get("kind") != "approval":
        raise TransitionRefused(f"step {key!r} is not an approval step")
    roles = list(wait.get("roles") or [])
    if role not in roles:
        raise PermissionDenied(
            f"role {role!r} may not decide approval {key!r}; it may be decided by: {', '.join(roles)}"
        )
    return step


def decide(
    rec: Recorder,
    workflows: Workflows,
    tenant: str,
    execution_id: str,
    key: str,
    decision: Decision,
    *,
    epoch: int | None = None,
) -> StepRecord:
    """Record ``decision`` on the approval step ``key``; ``epoch`` binds a link's decision to one wait."""
    snap = steps.open_step(rec.tx, workflows, tenant, execution_id, key)
    step = approval_step(snap, key, decision.role)
    if epoch is not None and step.lease_epoch != epoch:
        raise TransitionRefused(f"this approval link is no longer valid: step {key!r} has run again since")
    output = decision_output(
        decision.approved, by=decision.by, role=decision.role, at=rec.now, comment=decision.comment, via=decision.via
    )
    error = None
    if not decision.approved and (step.wait or {}).get("on_reject", "fail") == "fail":
        error = rejection_error(output)
    delivery = steps.Delivery(
        "approval", f"approval:{rec.now!r}", output, error=error, record={"decision": output}
    )
    if not steps.resume(rec, snap, step, delivery):
        raise TransitionRefused(f"step {key!r} could not take the decision")
    return step


def link_claims(snap: Snapshot, key: str, *, role: str, by: str, now: float, ttl: float) -> LinkClaims:
    """Claims for a link to decide ``key``, issued by a principal of ``role`` for ``by``."""
    step = approval_step(snap, key, role)
    return LinkClaims(snap.execution.tenant, snap.execution.id, key, step.lease_epoch, role, by, now + ttl)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_link(claims: LinkClaims, secret: bytes) -> str:
    """``<payload>.<HMAC-SHA256 of payload>``, both base64url."""
    payload = _b64(json.dumps(asdict(claims), separators=(",", ":"), sort_keys=True).encode())
    signature = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(signature)}"


def verify_link(token: str, secret: bytes, now: float) -> LinkClaims:
    """The claims of a genuine, unexpired link; ``AuthenticationFailed`` otherwise."""
    payload, _, signature = token.partition(".")
    try:
        expected = hmac.new(secret, payload.encode(), hashlib.sha256).digest()
        genuine = hmac.compare_digest(expected, _unb64(signature))
        claims = LinkClaims(**json.loads(_unb64(payload))) if genuine else None
    except (ValueError, TypeError):
        claims = None
    if claims is None:
        raise AuthenticationFailed("the approval link is not valid")
    if claims.expires_at < now:
        raise AuthenticationFailed("the approval link has expired")
    return claims
