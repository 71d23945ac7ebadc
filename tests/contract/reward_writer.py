"""A process that counts rewards until it is killed (for the crash test of DecisionStats).

``python -m tests.contract.reward_writer sqlite <path>`` or ``... firestore <project>``:
rewards executions ``ex-0`` .. ``ex-<n-1>`` of bandit ``crash/route`` once each, printing the
number of each after it is counted, so the parent can kill it mid-way.
"""

from __future__ import annotations

import sys

from engine.bootstrap import build_decision_stats
from engine.ports import ArmOutcome, Store

REWARDS = 200


def outcome(n: int) -> ArmOutcome:
    return ArmOutcome(
        "tenant-a", f"ex-{n}", "reward:route", "crash/route", "fast", 1.0, 0.0, 1_700_000_000.0 + n, 3600.0
    )


def main(backend: str, where: str) -> None:
    store: Store
    if backend == "sqlite":
        from engine.adapters.store_sqlite import SqliteStore

        store = SqliteStore(where)
    else:
        from engine.adapters.store_firestore import FirestoreStore

        store = FirestoreStore(project=where)
    stats = build_decision_stats(store)
    for n in range(REWARDS):
        stats.record_outcome(outcome(n))
        print(n, flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
