"""Step functions of the payment retry example (``examples/payment_retry/workflow.yaml``).

``charge_card`` talks to a simulated gateway that misbehaves on purpose: for each payment
attempt sequence it hangs on the first call and refuses the next ones, up to
``failing_calls``. The gateway counts calls per ``ctx.idempotency_key`` in a small file, as
a real gateway keys requests by an idempotency key: the count survives worker processes
and restarts, so every execution fails the same way and then succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from conveyor import StepFailure, step
from engine.steptypes.base import StepContext

#: Where the simulated gateway remembers how often it was called for each idempotency key.
GATEWAY_STATE = Path(tempfile.gettempdir()) / "conveyor-example-gateway"
#: Long enough that the step's 500ms timeout always fires first.
HANG_SECONDS = 30.0


class GatewayUnavailable(ConnectionError):
    """The gateway refused the call; retrying later may work."""


@step
async def charge_card(
    ctx: StepContext, payment_id: str, amount_cents: int, currency: str, failing_calls: int = 0
) -> dict[str, Any]:
    """Charge the card; the first ``failing_calls`` gateway calls for this step fail."""
    calls = _count_call(ctx.idempotency_key)
    if calls <= failing_calls:
        if calls == 1:
            await asyncio.sleep(HANG_SECONDS)  # a hung connection: the step's timeout cuts it short
        raise GatewayUnavailable(f"gateway refused call {calls} for {payment_id}")
    if amount_cents > 1_000_000:
        # A business refusal: listed in retry.non_retryable, so it is never retried.
        raise StepFailure(f"card declined for {amount_cents} {currency}", retryable=True, error_type="CardDeclined")
    return {
        "charge_id": f"ch_{hashlib.sha256(ctx.idempotency_key.encode()).hexdigest()[:12]}",
        "amount_cents": amount_cents,
        "currency": currency,
        "gateway_calls": calls,
    }


@step
def send_receipt(email: str, charge: dict[str, Any]) -> dict[str, str]:
    """Email the receipt (simulated) once the charge has settled."""
    amount = f"{charge['amount_cents'] / 100:.2f} {charge['currency']}"
    return {"receipt_id": f"rcpt_{charge['charge_id'][3:]}", "to": email, "text": f"We charged {amount}."}


def _count_call(idempotency_key: str) -> int:
    """Record one gateway call for ``idempotency_key`` and return how many there were."""
    GATEWAY_STATE.mkdir(parents=True, exist_ok=True)
    counter = GATEWAY_STATE / hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    calls = int(counter.read_text() or 0) + 1 if counter.exists() else 1
    counter.write_text(str(calls))
    return calls
