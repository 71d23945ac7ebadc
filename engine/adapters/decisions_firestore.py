"""Bandit counts in Firestore (the ``DecisionStats`` port).

Each arm's counts are spread over ``ARM_SHARDS`` documents under
``tenants/{t}/bandits/{bandit}/shards`` (server-side increments, so concurrent rewards of one
arm rarely write the same document); decayed accumulators (see :mod:`engine.bandit`) are a
map ``decayed`` in the same documents, keyed by half-life and epoch. A reward commits its
marker (``create``, which fails if it exists) and its increments in one atomic batch: both
or neither.
"""

from __future__ import annotations

import random
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from engine.adapters.store_firestore import FirestoreStore, encode_id
from engine.adapters.store_firestore.errors import translated_errors
from engine.bandit import decay_epochs, decay_scale, decayed
from engine.ports import ArmOutcome

#: Shards per bandit arm: concurrent rewards of one arm write different documents.
ARM_SHARDS = 8


def _decay_key(half_life: float, epoch: int) -> str:
    """A map key free of dots: the half-life in milliseconds and the epoch."""
    return f"h{round(half_life * 1000)}e{epoch}"


class FirestoreDecisionStats:
    def __init__(self, store: FirestoreStore) -> None:
        self._client = store.client
        self._paths = store.paths

    def record_outcome(self, outcome: ArmOutcome) -> bool:
        o = outcome
        shard = f"{encode_id(o.arm)}.{random.randrange(ARM_SHARDS)}"  # noqa: S311  (spreading load, not security)
        fields: dict[str, Any] = {
            "arm": o.arm,
            "successes": firestore.Increment(o.successes),
            "failures": firestore.Increment(o.failures),
        }
        if o.half_life is not None:
            epoch, scale = decay_scale(o.at, o.half_life)
            fields["decayed"] = {
                _decay_key(o.half_life, epoch): {
                    "s": firestore.Increment(o.successes * scale),
                    "f": firestore.Increment(o.failures * scale),
                }
            }
        batch = self._client.batch()
        batch.create(self._paths.marker(o.tenant, o.execution_id, o.marker), {"tenant": o.tenant, "name": o.marker})
        batch.set(self._paths.arm_shards(o.tenant, o.bandit).document(shard), fields, merge=True)
        with translated_errors():
            try:
                batch.commit()
            except gexc.AlreadyExists:
                return False
        return True

    def arm_counts(
        self, tenant: str, bandit: str, *, half_life: float | None = None, now: float = 0.0
    ) -> dict[str, tuple[float, float]]:
        epochs = decay_epochs(now, half_life) if half_life is not None else ()
        totals: dict[str, tuple[float, float]] = {}
        accumulators: dict[str, dict[int, tuple[float, float]]] = {}
        with translated_errors():
            shards = [snapshot.to_dict() or {} for snapshot in self._paths.arm_shards(tenant, bandit).stream()]
        for data in shards:
            arm = data["arm"]
            if half_life is None:
                successes, failures = totals.get(arm, (0.0, 0.0))
                totals[arm] = (successes + data.get("successes", 0), failures + data.get("failures", 0))
                continue
            for epoch in epochs:
                found = (data.get("decayed") or {}).get(_decay_key(half_life, epoch))
                if found is not None:
                    successes, failures = accumulators.setdefault(arm, {}).get(epoch, (0.0, 0.0))
                    accumulators[arm][epoch] = (successes + found.get("s", 0), failures + found.get("f", 0))
        if half_life is not None:
            totals = {arm: decayed(by_epoch, half_life, now) for arm, by_epoch in accumulators.items()}
        return dict(sorted(totals.items()))
