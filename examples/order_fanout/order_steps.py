"""Step functions of the order fan-out example (``examples/order_fanout/workflow.yaml``).

They stand in for calls to an order service and a warehouse API; the short sleeps make the
parallel reservations visible in ``conveyor run``'s live table.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from conveyor import StepFailure, step

WAREHOUSES = ("ams-1", "fra-2", "lis-1")
#: Simulated latency of one warehouse call, in seconds.
WAREHOUSE_LATENCY = 0.3


@step
def load_order(order_id: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Normalise the order: one entry per line with its SKU and quantity."""
    if not lines:
        raise StepFailure(f"order {order_id} has no lines", retryable=False, error_type="EmptyOrder")
    return {"order_id": order_id, "lines": [{"sku": line["sku"], "qty": int(line["qty"])} for line in lines]}


@step
def reserve_stock(order_id: str, line: dict[str, Any], position: int) -> dict[str, Any]:
    """Reserve one order line in the warehouse that stocks its SKU."""
    time.sleep(WAREHOUSE_LATENCY)
    warehouse = _warehouse_for(line["sku"])
    return {
        "position": position,
        "sku": line["sku"],
        "qty": line["qty"],
        "warehouse": warehouse,
        "reservation": f"{warehouse}/{order_id}/{position}",
    }


@step
def pack_shipment(order_id: str, reservations: list[dict[str, Any]]) -> dict[str, Any]:
    """Join the reservations into one shipment (the fan-in step)."""
    warehouses = sorted({reservation["warehouse"] for reservation in reservations})
    return {
        "shipment_id": f"shp-{order_id}",
        "warehouses": warehouses,
        "units": sum(reservation["qty"] for reservation in reservations),
        "reservations": [reservation["reservation"] for reservation in reservations],
    }


def _warehouse_for(sku: str) -> str:
    # A stable choice per SKU (not Python's salted hash) so runs are reproducible.
    digest = hashlib.sha256(sku.encode()).digest()
    return WAREHOUSES[digest[0] % len(WAREHOUSES)]
