"""How fast the reconciler deletes expired executions (engine/retention.py), per store.

```sh
python bench/retention.py                          # SQLite; 200 executions of 10 steps
python bench/retention.py --store firestore        # needs FIRESTORE_EMULATOR_HOST
python bench/retention.py --executions 500 --steps 20
```

Writes the executions straight through the Store port (a header, ``--steps`` steps and two
history events per step, one step output out of line), all expired, then runs reconciler
passes until none is left. Prints the time and process CPU of writing them and of deleting
them, executions and records deleted per second, and the ratio delete/write (how much a
deletion costs beside the writes that made the execution). Not a test: figures only.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from engine.adapters.events_memory import MemoryEventLog
from engine.bootstrap import build_store
from engine.ports import Dispatch, Store, Transaction
from engine.records import EventRecord, ExecutionRecord, StepRecord
from engine.service import Service
from engine.settings import Settings
from engine.states import ExecutionStatus, StepStatus

TENANT = "bench"
WORKFLOW = {"name": "kept", "steps": [{"id": "s", "type": "transform", "with": {"value": 1}}]}


class NoDispatch:
    def dispatch(self, dispatches: list[Dispatch]) -> None:
        return None


def _write(store: Store, executions: int, steps: int, now: float) -> None:
    big = "x" * (300 * 1024)

    def one(tx: Transaction, execution_id: str) -> None:
        tx.put_execution(
            ExecutionRecord(
                execution_id, TENANT, "kept", 1, ExecutionStatus.SUCCEEDED, now, now, input={}, output={"n": 1},
                finished_at=now, expires_at=now - 1, labels={"team": "bench"},
            )
        )  # fmt: skip
        for n in range(steps):
            output = {"blob": big} if n == 0 else {"n": n}
            tx.put_step(StepRecord(execution_id, TENANT, f"s{n}", "s", StepStatus.SUCCEEDED, output=output))
            for kind in ("step.running", "step.succeeded"):
                tx.add_event(EventRecord(f"{n:04d}-{kind}", execution_id, TENANT, kind, now))

    for _ in range(executions):
        execution_id = uuid.uuid4().hex
        store.atomic(lambda tx, execution_id=execution_id: one(tx, execution_id))


def run(store_kind: str, executions: int, steps: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="conveyor-retention-"))
    options: dict[str, Any] = {"store": store_kind, "sqlite_path": directory / "bench.db"}
    if store_kind == "firestore":
        options["firestore_project"] = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(**options)
    store = build_store(settings)
    service = Service(store, NoDispatch(), MemoryEventLog(), settings)
    service.apply_workflow(TENANT, WORKFLOW)
    now = time.time()
    wall, cpu = time.perf_counter(), time.process_time()
    _write(store, executions, steps, now)
    write_wall, write_cpu = time.perf_counter() - wall, time.process_time() - cpu
    wall, cpu, purged, passes = time.perf_counter(), time.process_time(), 0, 0
    while purged < executions:
        purged += service.reconcile().purged_executions
        passes += 1
    purge_wall, purge_cpu = time.perf_counter() - wall, time.process_time() - cpu
    records = executions * (1 + 3 * steps)
    store.close()
    return {
        "store": store_kind,
        "executions": executions,
        "records": records,
        "passes": passes,
        "write_s": round(write_wall, 2),
        "write_cpu_s": round(write_cpu, 2),
        "purge_s": round(purge_wall, 2),
        "purge_cpu_s": round(purge_cpu, 2),
        "executions_per_s": round(executions / purge_wall, 1),
        "records_per_s": round(records / purge_wall),
        "purge_over_write": round(purge_wall / write_wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "firestore"], default="sqlite")
    parser.add_argument("--executions", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(run(args.store, args.executions, args.steps))


if __name__ == "__main__":
    main()
