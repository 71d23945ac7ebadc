"""How a foreach's cost per item grows with the length of its list, through real workers.

    python bench/foreach_scale.py [--store sqlite|firestore|both] [--sizes 1000,10000]
                                  [--source input|step] [--concurrency N] [--broker redis://...]
                                  [--emulator HOST:PORT]

Not a test: it prints a table and, as its last line, one JSON object with every figure.

For each store and each size N it starts a fresh Conveyor worker (``celery -A tasks.app worker
--pool prefork``, ``--concurrency`` processes, as ``step_overhead.py`` does), warms it with a
foreach of 200 items, then runs one foreach of N no-op items (foreach concurrency 100) followed
by a join step that reads every output. The time runs from just before the start call until
the worker recorded the execution's end (``finished_at``); per-item ms is that time over N.
Peak memory is the largest peak resident set (``VmHWM``) among the worker's processes, read
before the worker stops.

Each element of the list is an object of about ``--item-bytes`` (default 100) bytes of JSON.
``--source input`` (the default) takes the list from the execution input; ``--source step``
from the output of a task step before the foreach that makes it (the input stays small).
The figure to watch is ``ratio``: per-item cost at the largest size over the cost at the
smallest (it should stay near 1).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

import _support  # noqa: E402
from _support import MAKE_ITEMS, NOOP, Worker, conveyor_config, items  # noqa: E402

FOREACH_CONCURRENCY = 100
WARMUP_ITEMS = 200


def workflow(source: str) -> dict[str, Any]:
    """A foreach of no-op items over ``input.items`` or over a step's output, then a join."""
    each: dict[str, Any] = {
        "id": "each",
        "type": "task",
        "concurrency": FOREACH_CONCURRENCY,
        "with": {"function": NOOP, "args": {"x": "${item}"}},
    }
    join = {
        "id": "join",
        "type": "task",
        "needs": ["each"],
        "with": {"function": NOOP, "args": {"x": "${size(steps.each.output)}"}},
    }
    if source == "input":
        return {"name": "bench-foreach-scale-input", "steps": [{**each, "foreach": "input.items"}, join]}
    make = {
        "id": "make",
        "type": "task",
        "with": {"function": MAKE_ITEMS, "args": {"count": "${input.count}", "item_bytes": "${input.item_bytes}"}},
    }
    each = {**each, "needs": ["make"], "foreach": "steps.make.output"}
    return {"name": "bench-foreach-scale-step", "steps": [make, each, join]}


def run_foreach(service: Any, tenant: str, args: argparse.Namespace, name: str, size: int) -> float:
    """Seconds from the start call to the execution's ``finished_at``; checks the join saw every output."""
    if args.source == "input":
        payload: dict[str, Any] = {"items": items(size, args.item_bytes)}
    else:
        payload = {"count": size, "item_bytes": args.item_bytes}
    timeout = args.timeout
    t0 = time.time()
    execution_id = service.start(tenant, name, payload).execution.id
    deadline = time.monotonic() + timeout
    while True:
        execution = service.get_execution(tenant, execution_id)
        if execution.finished_at is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the foreach of {size} items did not finish within {timeout:g}s")
        time.sleep(0.5)
    if str(execution.status) != "SUCCEEDED":
        raise RuntimeError(f"execution {execution_id} ended {execution.status}: {execution.error}")
    join = {step.key: step for step in service.list_steps(tenant, execution_id)}["join"]
    if join.output != size:
        raise RuntimeError(f"the join saw {join.output} outputs, expected {size}")
    return float(execution.finished_at) - t0


def peak_rss_mb(worker: Worker) -> float:
    """The largest peak resident set among the worker's main process and its pool processes."""
    peaks = []
    pids = ([worker.proc.pid] if worker.proc is not None else []) + worker.child_pids()
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    return round(max(peaks, default=0.0), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "firestore", "both"], default="both")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated list lengths")
    parser.add_argument("--source", choices=["input", "step"], default="input")
    parser.add_argument("--item-bytes", type=int, default=100, help="JSON size of one list element")
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--broker", default=os.environ.get("CONVEYOR_BENCH_BROKER", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--emulator", default=os.environ.get("FIRESTORE_EMULATOR_HOST"))
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one foreach may take")
    args = parser.parse_args()
    stores = ["sqlite", "firestore"] if args.store == "both" else [args.store]
    sizes = [int(size) for size in args.sizes.split(",") if size]

    import redis

    redis.Redis.from_url(args.broker, socket_connect_timeout=3).ping()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"conveyor-foreach-scale-{run_id}-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    base_env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")])
    results: dict[str, Any] = {
        "source": args.source,
        "item_bytes": args.item_bytes,
        "worker_processes": args.concurrency,
        "foreach_concurrency": FOREACH_CONCURRENCY,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"foreach scale {run_id}: logs and data in {workdir}", file=sys.stderr)
    definition = workflow(args.source)
    emulator_cm = _support.firestore_emulator(args.emulator) if "firestore" in stores else contextlib.nullcontext(None)
    try:
        with emulator_cm as emulator:
            for store in stores:
                results[store] = run_store(store, sizes, args, run_id, workdir, base_env, emulator, definition)
    finally:
        with contextlib.suppress(Exception):
            client = redis.Redis.from_url(args.broker)
            for key in client.scan_iter(f"*{run_id}*"):
                client.delete(key)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(results, stores, sizes)
    print(json.dumps(results, sort_keys=True))
    return 0


def run_store(
    store: str,
    sizes: list[int],
    args: argparse.Namespace,
    run_id: str,
    workdir: Path,
    base_env: dict[str, str],
    emulator: str | None,
    definition: dict[str, Any],
) -> dict[str, Any]:
    from engine.bootstrap import build_service
    from engine.settings import Settings

    queue = f"bench-scale-{store}-{run_id}"
    project = f"conveyor-scale-{run_id}"
    options, env = conveyor_config(store, args.broker, queue, workdir, project, emulator, base_env)
    service = build_service(Settings(**options))
    tenant = f"scale-{run_id}"
    service.apply_workflow(tenant, definition)
    figures: dict[str, Any] = {}
    try:
        for size in sizes:
            worker = Worker("tasks.app", queue, env, workdir / f"worker-{store}-{size}.log", args.concurrency)
            worker.start()
            try:
                run_foreach(service, tenant, args, definition["name"], WARMUP_ITEMS)
                print(f"[{store}] foreach of {size} ...", file=sys.stderr, flush=True)
                seconds = run_foreach(service, tenant, args, definition["name"], size)
                figures[str(size)] = {
                    "seconds": round(seconds, 3),
                    "per_item_ms": round(seconds / size * 1000, 3),
                    "peak_worker_rss_mb": peak_rss_mb(worker),
                }
                print(f"[{store}] {size}: {figures[str(size)]}", file=sys.stderr, flush=True)
            finally:
                worker.stop()
    finally:
        service.store.close()
    first, last = figures[str(sizes[0])], figures[str(sizes[-1])]
    return {"sizes": figures, "ratio": round(last["per_item_ms"] / first["per_item_ms"], 2)}


def print_table(results: dict[str, Any], stores: list[str], sizes: list[int]) -> None:
    header = f"{'store':<11}{'items':>8}{'seconds':>10}{'ms/item':>10}{'peak worker RSS':>18}"
    print(header)
    print("-" * len(header))
    for store in stores:
        for size in sizes:
            f = results[store]["sizes"][str(size)]
            rss = f"{f['peak_worker_rss_mb']:.1f} MB"
            print(f"{store:<11}{size:>8}{f['seconds']:>10.2f}{f['per_item_ms']:>10.2f}{rss:>18}")
        print(f"{store:<11}{'ratio of ms/item, largest to smallest size:':>44} {results[store]['ratio']:.2f}x")
    print()


if __name__ == "__main__":
    sys.exit(main())
