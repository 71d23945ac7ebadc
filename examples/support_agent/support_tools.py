"""Tools of the support agent example: an order lookup and a refund (which needs approval).

They stand in for real services; a real refund would pass ``ctx.idempotency_key`` (the step
plus the model's tool call id) to the payment provider so a retried call refunds once.
"""

from __future__ import annotations

from typing import Any

from conveyor import step

ORDERS = {
    "A-1001": {"status": "delivered", "amount": 42, "item": "kettle", "damaged": True},
    "A-1002": {"status": "in transit", "amount": 19, "item": "mug", "damaged": False},
}


@step
def lookup_order(order_id: str) -> dict[str, Any]:
    """Look an order up by its id: status, amount, item and whether it arrived damaged."""
    return {"order_id": order_id, **ORDERS.get(order_id, {"status": "unknown"})}


@step
def refund(ctx: Any, order_id: str, amount: int) -> dict[str, Any]:
    """Refund an amount of an order to the customer. Irreversible."""
    return {"order_id": order_id, "refunded": amount, "reference": f"rf-{ctx.idempotency_key}"}
