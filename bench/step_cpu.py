"""CPU, store statements and round trips per step of the hot path, in this process.

    python bench/step_cpu.py [--store sqlite|firestore] [--case linear|foreach|single] [--executions N]
                             [--count-statements] [--count-rpcs] [--cprofile tottime|cumulative]
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/step_cpu.py --executions 2
    valgrind --tool=callgrind --callgrind-out-file=/dev/null python bench/step_cpu.py --executions 12

Not a test: it prints one line per figure. It runs executions of ``bench/step_overhead.py``'s
workflows through a :class:`~engine.runner.StepRunner` built as a worker builds it (Prometheus
and Flower inline-step telemetry, the real Redis event stream and Celery publisher; published
messages go to a queue nobody consumes and are run here instead), so no broker round trip or
Celery consumer is in the figures. On a shared machine the CPU time moves with the load; the
instruction count does not: run the same command under callgrind with two ``--executions``
values and divide the difference of the two totals by the difference of the steps run (the
start-up cost cancels out). Needs Redis (``--broker``) and, for Firestore, an emulator named by
``FIRESTORE_EMULATOR_HOST``.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

import step_overhead  # noqa: E402

#: Workflow, input and steps of one execution of each case.
CASES: dict[str, tuple[str, Callable[[], Any], int]] = {
    "linear": ("bench-linear", dict, step_overhead.LINEAR_STEPS),
    "foreach": ("bench-foreach", lambda: {"items": list(range(step_overhead.FAN_ITEMS))}, step_overhead.FAN_ITEMS + 1),
    "single": ("bench-single", lambda: {"x": 1}, 1),
}
FIRESTORE_RPCS = ("begin_transaction", "batch_get_documents", "commit", "rollback", "run_query")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "firestore"], default="sqlite")
    parser.add_argument("--case", choices=sorted(CASES), default="linear")
    parser.add_argument("--executions", type=int, default=20, help="measured executions (after 3 warm-up ones)")
    parser.add_argument("--broker", default=os.environ.get("CONVEYOR_BENCH_BROKER", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--count-statements", action="store_true", help="SQLite statements per step, by verb")
    parser.add_argument("--count-rpcs", action="store_true", help="Firestore RPCs per step, by method")
    parser.add_argument("--cprofile", choices=["tottime", "cumulative"], help="also print a CPU-time cProfile")
    args = parser.parse_args()

    from engine.adapters.celery_config import make_celery
    from engine.bootstrap import build_service, build_step_ports, build_telemetry
    from engine.ports import Dispatch
    from engine.runner import StepRunner
    from engine.settings import Settings
    from tasks.flower_events import InlineStepEvents

    options: dict[str, Any] = {
        "store": args.store,
        "broker_url": args.broker,
        "redis_url": args.broker,
        "default_queue": f"bench-cpu-sink-{uuid.uuid4().hex[:8]}",
        "imports": ["_support"],
        "log_level": "WARNING",
    }
    if args.store == "sqlite":
        options["sqlite_path"] = str(Path(tempfile.mkdtemp(prefix="conveyor-step-cpu-")) / "bench.db")
    else:
        options["firestore_project"] = f"bench-cpu-{uuid.uuid4().hex[:8]}"
    settings = Settings(**options)
    telemetry = InlineStepEvents(build_telemetry(settings), make_celery(settings, "bench-cpu"))
    service = build_service(settings, telemetry=telemetry)
    runner = StepRunner(service, ports=build_step_ports(settings, service.store))
    sent: list[Dispatch] = []
    publisher = service.dispatcher

    class Tee:
        def dispatch(self, dispatches: Any) -> None:
            publisher.dispatch(dispatches)  # really published, to a queue nobody consumes
            sent.extend(dispatches)

    service.dispatcher = Tee()
    tenant = "bench-cpu"
    for definition in (
        step_overhead.linear_workflow(),
        step_overhead.foreach_workflow(),
        step_overhead.single_workflow(),
    ):
        service.apply_workflow(tenant, definition)
    statements, rpcs = Counter[str](), Counter[str]()
    if args.count_statements:
        sqlite: Any = service.store  # a SqliteStore: its connection of this thread
        connection = sqlite.run_read(lambda conn: conn)
        connection.set_trace_callback(lambda sql: statements.update([sql.split()[0].upper()]))
    if args.count_rpcs:
        _count_rpcs(service.store, rpcs)
    workflow, make_input, steps_each = CASES[args.case]

    def execution() -> None:
        service.start(tenant, workflow, make_input())
        while sent:  # as a worker runs each message, then publishes its inline steps' Flower events
            d = sent.pop(0)
            runner.run(d.tenant, d.execution_id, d.step_key, first_delivery=True, epoch=d.epoch)
            telemetry.flush()

    # Flower events name the message that ran the inline steps: a stand-in for Celery's request.
    request = mock.Mock(request=mock.Mock(id="bench-cpu", hostname="bench-cpu@host"))
    with mock.patch("tasks.flower_events.current_task", request):
        for _ in range(3):
            execution()
        statements.clear()
        rpcs.clear()
        profiler = cProfile.Profile(time.process_time) if args.cprofile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for _ in range(args.executions):
            execution()
        if profiler is not None:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    steps = args.executions * steps_each
    print(f"{args.store} {args.case}: {steps} steps")
    print(f"cpu {cpu / steps * 1000:.3f} ms/step, wall {wall / steps * 1000:.3f} ms/step")
    if args.count_statements:
        print("SQLite statements per step:", {verb: round(n / steps, 2) for verb, n in sorted(statements.items())})
    if args.count_rpcs:
        print("Firestore RPCs per step:", {method: round(n / steps, 2) for method, n in sorted(rpcs.items())})
    if profiler is not None:
        pstats.Stats(profiler).sort_stats(args.cprofile).print_stats(40)
    import redis

    redis.Redis.from_url(args.broker).delete(settings.default_queue)
    service.store.close()
    return 0


def _count_rpcs(store: Any, counts: Counter[str]) -> None:
    """Count the transaction RPCs of a Firestore store (generated client and raw calls)."""
    for target in (store.client._firestore_api, store.rpc):
        for name in FIRESTORE_RPCS:
            if hasattr(target, name):
                setattr(target, name, _counted(getattr(target, name), name, counts))


def _counted(call: Callable[..., Any], name: str, counts: Counter[str]) -> Callable[..., Any]:
    def counting(*args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return call(*args, **kwargs)

    return counting


if __name__ == "__main__":
    sys.exit(main())
