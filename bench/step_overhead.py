"""Conveyor's per-step overhead against raw Celery, on one Redis, with real worker processes.

    python bench/step_overhead.py [--store sqlite|firestore|both] [--broker redis://...]
                                  [--repeat N] [--concurrency N] [--emulator HOST:PORT]
                                  [--profile]

Not a test: it prints a table and, as its last line, one JSON object with every figure.

For each store (SQLite file, Firestore emulator) it times, beside the raw Celery equivalent
doing the same no-op work on the same broker with the same worker concurrency:

(a) a 20-step linear workflow                 vs  a chain of 20 tasks
(b) a foreach of 100 items plus a join step   vs  a chord of 100 tasks plus a callback
(c) 500 one-step workflows started at once    vs  500 independent tasks (throughput); both sent
                                                  by the same 8 client threads
(d) a foreach of 10,000 items plus a join      vs  a chord of 10,000 tasks plus a callback
    (``foreach10k``: no warm-up rounds, ``--repeat-10k`` rounds; the client polls the
    execution's header every half second, as its live stream would carry 30,000 events)

Times run from just before the client call until the worker recorded the end (the
execution's ``finished_at``; the raw baseline's last task returns ``time.time()``), so
waiting latency is not measured. The client waits on the execution's live event stream (a
blocking Redis read, as ``result.get()`` waits on Redis), so waiting loads neither store.
Each figure is the median of ``--repeat`` runs (9 by default) after ``--warmup`` unmeasured
ones, the two sides' rounds interleaved; the quartiles of the rounds' own ratios are printed too,
since one round's ratio moves by a third or more with the machine. The raw baseline uses
Conveyor's own Celery settings (JSON, late acks, prefetch 1) plus a Redis result backend, which
chords need. Run it with nothing else on the machine, against a fresh emulator (leave
``FIRESTORE_EMULATOR_HOST`` unset): a long-running one slows down with what it holds.

It starts what it needs: a Firestore emulator (unless ``--emulator`` or
``FIRESTORE_EMULATOR_HOST`` names one), one raw Celery worker and one Conveyor worker per
store (``celery -A tasks.app worker --pool prefork``), each on a queue of its own.

Flower sees a step run inline (after the first of a chain, from the same message) through the
task events the worker sends for it (``CONVEYOR_FLOWER_INLINE_EVENTS``, on by default, so the
linear case above includes their cost; a message's inline steps' events are published together
when it ends). The run also times those events alone, in this process on the same broker
(messages of 19 inline steps each), and prints their cost per inline step beside the linear
per-step figure (``inline_events_ms_per_step`` in the JSON line).

``--profile`` also runs the step hot path in this process (same store, real Redis event
stream, real Celery publisher) and prints where the time of one step goes: claim
transaction, complete transaction, event publish, dispatch, the rest of the runner; the
difference to the per-step time measured through real workers is Celery's share.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

import _logs_case  # noqa: E402
import _support  # noqa: E402
from _support import NOOP, RAW_DONE, RAW_NOOP, Worker, conveyor_config, median  # noqa: E402

from engine.states import EXECUTION_ACTIVE  # noqa: E402

LINEAR_STEPS = 20
FAN_ITEMS = 100
BIG_FAN_ITEMS = 10_000
MANY = 500
#: Client threads that send the 500 starts (or the 500 raw tasks) "at once".
STARTERS = 8
TARGETS = {
    "linear": {"sqlite": 3.0, "firestore": 4.0},  # conveyor / raw, at most
    "foreach": {"sqlite": 3.0, "firestore": 3.0},  # conveyor / raw, at most
    "many": {"sqlite": 0.2, "firestore": 0.2},  # throughput conveyor / raw, at least
}
#: Cases measured without warm-up rounds: one round is long enough to warm itself.
UNWARMED = {"foreach10k"}


def linear_workflow() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "s1", "type": "task", "with": {"function": NOOP, "args": {"x": 0}}}]
    for i in range(2, LINEAR_STEPS + 1):
        steps.append(
            {
                "id": f"s{i}",
                "type": "task",
                "needs": [f"s{i - 1}"],
                "with": {"function": NOOP, "args": {"x": f"${{steps.s{i - 1}.output}}"}},
            }
        )
    return {"name": "bench-linear", "steps": steps}


def foreach_workflow() -> dict[str, Any]:
    return {
        "name": "bench-foreach",
        "steps": [
            {
                "id": "each",
                "type": "task",
                "foreach": "input.items",
                "concurrency": FAN_ITEMS,
                "with": {"function": NOOP, "args": {"x": "${item}"}},
            },
            {
                "id": "join",
                "type": "task",
                "needs": ["each"],
                "with": {"function": NOOP, "args": {"x": "${size(steps.each.output)}"}},
            },
        ],
    }


def big_foreach_workflow() -> dict[str, Any]:
    """A foreach of ``BIG_FAN_ITEMS`` items at the default concurrency (100), then a join."""
    definition = foreach_workflow()
    definition["name"] = "bench-foreach-10k"
    del definition["steps"][0]["concurrency"]
    return definition


def single_workflow() -> dict[str, Any]:
    return {
        "name": "bench-single",
        "steps": [{"id": "only", "type": "task", "with": {"function": NOOP, "args": {"x": "${input.x}"}}}],
    }


# --- raw Celery -------------------------------------------------------------------------------


class Raw:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.noop = app.tasks[RAW_NOOP]
        self.done = app.tasks[RAW_DONE]

    def linear(self) -> float:
        from celery import chain

        t0 = time.time()
        result = chain(self.noop.s(0), *[self.noop.s() for _ in range(LINEAR_STEPS - 2)], self.done.s()).apply_async()
        return float(result.get(timeout=120)) - t0

    def foreach(self) -> float:
        from celery import chord

        t0 = time.time()
        result = chord([self.noop.s(i) for i in range(FAN_ITEMS)])(self.done.s())
        return float(result.get(timeout=120)) - t0

    def foreach10k(self) -> float:
        from celery import chord

        t0 = time.time()
        result = chord([self.noop.s(i) for i in range(BIG_FAN_ITEMS)])(self.done.s())
        # Polled: ``get`` waits on a Redis pub/sub message, which a chord this large sometimes
        # never delivers (the callback's result is stored, the waiter hangs).
        deadline = time.monotonic() + 1800
        while not result.ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the chord of {BIG_FAN_ITEMS} tasks did not finish within 1800s")
            time.sleep(0.2)
        return float(result.get(timeout=60)) - t0

    def many(self) -> float:
        t0 = time.time()
        with ThreadPoolExecutor(STARTERS) as pool:
            results = list(pool.map(lambda i: self.done.apply_async((i,)), range(MANY)))
        return max(float(r.get(timeout=300)) for r in results) - t0


# --- Conveyor -----------------------------------------------------------------------------------


class Conveyor:
    def __init__(self, service: Any, tenant: str) -> None:
        self.service = service
        self.tenant = tenant
        for definition in (linear_workflow(), foreach_workflow(), big_foreach_workflow(), single_workflow()):
            service.apply_workflow(tenant, definition)

    def _wait(self, execution_id: str, timeout: float = 300) -> Any:
        """The execution once it ended, waited for on its live event stream.

        Blocking reads of the Redis stream, as the raw side's ``result.get()`` waits on Redis:
        polling the store instead would load the very store being measured.
        """
        deadline = time.monotonic() + timeout
        cursor = None
        while time.monotonic() < deadline:
            for live in self.service.events.read(self.tenant, execution_id, after=cursor, block_ms=500):
                cursor = live.stream_id
                if live.event.type.startswith("execution.") and live.event.status not in EXECUTION_ACTIVE:
                    return self._ended(execution_id)
        raise RuntimeError(f"execution {execution_id} did not finish within {timeout}s")

    def _ended(self, execution_id: str) -> Any:
        execution = self.service.get_execution(self.tenant, execution_id)
        if str(execution.status) != "SUCCEEDED":
            raise RuntimeError(f"execution {execution_id} ended {execution.status}: {execution.error}")
        return execution

    def _one(self, workflow: str, payload: Any) -> float:
        t0 = time.time()
        execution_id = self.service.start(self.tenant, workflow, payload).execution.id
        return float(self._wait(execution_id).finished_at) - t0

    def linear(self) -> float:
        return self._one("bench-linear", {})

    def foreach(self) -> float:
        return self._one("bench-foreach", {"items": list(range(FAN_ITEMS))})

    def foreach10k(self) -> float:
        t0 = time.time()
        execution_id = self.service.start(self.tenant, "bench-foreach-10k", {"items": list(range(BIG_FAN_ITEMS))})
        execution_id = execution_id.execution.id
        deadline = time.monotonic() + 1800
        while self.service.get_execution(self.tenant, execution_id).finished_at is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the foreach of {BIG_FAN_ITEMS} items did not finish within 1800s")
            time.sleep(0.5)
        return float(self._ended(execution_id).finished_at) - t0

    def many(self) -> float:
        t0 = time.time()
        with ThreadPoolExecutor(STARTERS) as pool:
            ids = list(
                pool.map(lambda i: self.service.start(self.tenant, "bench-single", {"x": i}).execution.id, range(MANY))
            )
        # Each waited for on its own live stream, as the raw side waits on each result (an
        # execution that already ended is one short read); no polling of the measured store.
        return max(float(self._wait(e).finished_at) for e in ids) - t0


# --- in-process profile of the hot path -------------------------------------------------------


class PhaseTimer:
    """Accumulates wall time per phase of the step hot path."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)
        self.stack: list[str] = []

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self.stack.append(name)
        try:
            yield
        finally:
            self.stack.pop()
            self.totals[name] += time.perf_counter() - t0
            self.counts[name] += 1

    def wrap(self, obj: Any, attribute: str, name: Callable[[], str] | str) -> None:
        original = getattr(obj, attribute)

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            label = name() if callable(name) else name
            with self.phase(label):
                return original(*args, **kwargs)

        setattr(obj, attribute, wrapped)


def profile_hot_path(settings_options: dict[str, Any], store: str, steps: int = 200) -> dict[str, Any]:
    """Run ``steps`` no-op steps of the linear workflow in process; time each phase."""
    from engine.adapters.dispatcher_celery import CeleryDispatcher
    from engine.bootstrap import build_service
    from engine.ports import Dispatch
    from engine.runner import StepRunner
    from engine.settings import Settings

    sink_queue = f"{settings_options['default_queue']}-profile-sink"
    settings = Settings(**{**settings_options, "default_queue": sink_queue})
    service = build_service(settings)
    tenant = f"profile-{uuid.uuid4().hex[:6]}"
    service.apply_workflow(tenant, linear_workflow())
    sent: list[Dispatch] = []
    real = CeleryDispatcher.from_settings(settings)

    class Tee:
        def dispatch(self, dispatches: Any) -> None:
            real.dispatch(dispatches)  # really published (to a queue nobody consumes)
            sent.extend(dispatches)

    service.dispatcher = Tee()
    runner = StepRunner(service)
    timer = PhaseTimer()

    def txn_label() -> str:
        outer = timer.stack[-1] if timer.stack else "other"
        return f"{outer}: store txn"

    timer.wrap(service.store, "atomic", txn_label)
    timer.wrap(service.events, "publish", lambda: f"{timer.stack[-1] if timer.stack else 'other'}: events publish")
    timer.wrap(real, "dispatch", lambda: f"{timer.stack[-1] if timer.stack else 'other'}: dispatch")
    timer.wrap(service, "peek", "peek")
    timer.wrap(service, "claim", "claim")
    timer.wrap(service, "complete", "complete")

    def drain() -> int:
        """Run every message; returns the steps completed (one message may run a chain of steps)."""
        before = timer.counts["complete"]
        while sent:
            d = sent.pop(0)
            with timer.phase("step total"):
                runner.run(d.tenant, d.execution_id, d.step_key, first_delivery=True)  # as a worker does
        return timer.counts["complete"] - before

    service.start(tenant, "bench-linear", {})  # warm-up: caches, connections
    drain()
    timer.totals.clear()
    ran = 0
    while ran < steps:  # timed without a profiler: cProfile would double every figure
        service.start(tenant, "bench-linear", {})
        ran += drain()
    per_step_totals = dict(timer.totals)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(max(1, steps // LINEAR_STEPS // 2)):
        service.start(tenant, "bench-linear", {})
        drain()
    profiler.disable()
    per_step = {name: total / ran * 1000 for name, total in per_step_totals.items()}
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(30)
    with contextlib.suppress(Exception):
        import redis

        redis.Redis.from_url(settings.broker_url).delete(sink_queue)
    service.store.close()
    return {"store": store, "steps": ran, "ms_per_step": per_step, "cprofile": out.getvalue()}


# --- the run ---------------------------------------------------------------------------------


def warm_up(conveyor: Conveyor, seconds: float) -> int:
    """Run the linear and foreach workloads through Conveyor for ``seconds``; the rounds run.

    A fresh emulator's JVM compiles the code paths a workload uses only after many runs: a
    foreach of 100 items takes about 2.2s at first and keeps getting faster for over a minute
    of such traffic, ending near 0.8s. Production Firestore has no such phase, so Conveyor is
    measured against a warm emulator. (Raw Celery does not touch the emulator.)
    """
    deadline = time.monotonic() + seconds
    rounds = 0
    while time.monotonic() < deadline:
        conveyor.foreach()
        conveyor.linear()
        rounds += 1
    return rounds


def measure(
    raw: Callable[[], float], conveyor: Callable[[], float], repeat: int, warmup: int
) -> tuple[list[float], list[float]]:
    """``warmup`` unmeasured rounds each, then ``repeat`` rounds of raw-then-Conveyor,
    interleaved so that load from elsewhere on the machine drifts into both sides alike.

    The Firestore emulator is warmed before (see :func:`warm_up`); these rounds warm the rest:
    worker processes, connections, caches."""
    for _ in range(warmup):
        raw()
        conveyor()
    raw_values: list[float] = []
    conveyor_values: list[float] = []
    for _ in range(repeat):
        raw_values.append(raw())
        conveyor_values.append(conveyor())
    return raw_values, conveyor_values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "firestore", "both"], default="both")
    parser.add_argument("--broker", default=os.environ.get("CONVEYOR_BENCH_BROKER", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--repeat", type=int, default=9, help="measured rounds per case and side")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured rounds per case and side first")
    parser.add_argument(
        "--emulator-warmup",
        type=float,
        default=90.0,
        help="seconds of Conveyor traffic to bring the Firestore emulator's JVM to steady state (0: none)",
    )
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--emulator", default=os.environ.get("FIRESTORE_EMULATOR_HOST"))
    parser.add_argument("--profile", action="store_true", help="also profile the step hot path in process")
    parser.add_argument("--cases", default="linear,foreach,many,foreach10k,logs", help="comma-separated subset to run")
    parser.add_argument("--repeat-10k", type=int, default=1, help="measured rounds of the foreach10k case")
    args = parser.parse_args()
    stores = ["sqlite", "firestore"] if args.store == "both" else [args.store]
    cases = [c for c in args.cases.split(",") if c]

    import redis

    redis.Redis.from_url(args.broker, socket_connect_timeout=3).ping()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-{run_id}-"))
    raw_queue = f"bench-raw-{run_id}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    base_env.update(
        PYTHONPATH=os.pathsep.join([str(BENCH_DIR), str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")]),
        BENCH_BROKER_URL=args.broker,
        BENCH_RAW_QUEUE=raw_queue,
    )
    os.environ.update(BENCH_BROKER_URL=args.broker, BENCH_RAW_QUEUE=raw_queue)
    results: dict[str, Any] = {
        "concurrency": args.concurrency,
        "repeat": args.repeat,
        "warmup": args.warmup,
        "broker": args.broker,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    profiles: list[dict[str, Any]] = []
    workers: list[Worker] = []
    print(f"conveyor bench {run_id}: logs and data in {workdir}", file=sys.stderr)

    emulator_cm = _support.firestore_emulator(args.emulator) if "firestore" in stores else contextlib.nullcontext(None)
    try:
        with emulator_cm as emulator:
            raw_worker = Worker("_support:raw_app", raw_queue, base_env, workdir / "raw-worker.log", args.concurrency)
            raw_worker.start()
            workers.append(raw_worker)
            raw = Raw(_support.raw_app)
            for store in stores:
                queue = f"bench-{store}-{run_id}"
                project = f"conveyor-bench-{run_id}"
                options, env = conveyor_config(store, args.broker, queue, workdir, project, emulator, base_env)
                worker = Worker("tasks.app", queue, env, workdir / f"worker-{store}.log", args.concurrency)
                worker.start()
                workers.append(worker)

                from engine.bootstrap import build_service
                from engine.settings import Settings

                service = build_service(Settings(**options))
                conveyor = Conveyor(service, tenant=f"bench-{run_id}")
                if store == "firestore" and args.emulator_warmup > 0:
                    print(f"[firestore] warming up the emulator's JVM ({args.emulator_warmup:g}s) ...", file=sys.stderr)
                    results["emulator_warmup_rounds"] = warm_up(conveyor, args.emulator_warmup)
                figures: dict[str, Any] = {}
                for case in [c for c in cases if c != "logs"]:
                    print(f"[{store}] {case} ...", file=sys.stderr, flush=True)
                    unwarmed = case in UNWARMED
                    raw_values, conv_values = measure(
                        getattr(raw, case),
                        getattr(conveyor, case),
                        args.repeat_10k if unwarmed else args.repeat,
                        0 if unwarmed else args.warmup,
                    )
                    raw_median, conv_median = median(raw_values), median(conv_values)
                    figures[case] = {
                        "conveyor_s": conv_median,
                        "raw_s": raw_median,
                        "conveyor_runs_s": conv_values,
                        "raw_runs_s": raw_values,
                    }
                    print(
                        f"[{store}] {case}: conveyor {conv_median:.3f}s raw {raw_median:.3f}s",
                        file=sys.stderr,
                        flush=True,
                    )
                results[store] = summarize(figures, store)
                worker.stop()
                if "logs" in cases:  # step logs on vs off (see bench/_logs_case.py)
                    settings_for = functools.partial(
                        conveyor_config, store, args.broker, workdir=workdir, project=project, emulator=emulator,
                        base_env=base_env,
                    )  # fmt: skip
                    results[store]["step_logs"] = _logs_case.measure_step_logs(
                        store, config=settings_for, driver=Conveyor, queue=f"bench-logs-{store}-{run_id}",
                        workdir=workdir, concurrency=args.concurrency, repeat=10 * args.repeat, warmup=2 * args.warmup,
                    )  # fmt: skip
                if args.profile:
                    print(f"[{store}] profiling the hot path in process ...", file=sys.stderr, flush=True)
                    profiles.append(profile_hot_path(options, store))
                service.store.close()
    finally:
        for worker in workers:
            worker.stop()
        with contextlib.suppress(Exception):
            client = redis.Redis.from_url(args.broker)
            for key in client.scan_iter(f"*{run_id}*"):
                client.delete(key)

    results["inline_events_ms_per_step"] = round(inline_events_cost(args.broker), 3)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(results, stores)
    print(
        f"Flower task events of an inline step: {results['inline_events_ms_per_step']:.3f} ms each "
        "(included in the linear case's per-step time; CONVEYOR_FLOWER_INLINE_EVENTS=false drops them)"
    )
    for profile in profiles:
        print_profile(profile, results[profile["store"]])
        results[profile["store"]]["profile_ms_per_step"] = {k: round(v, 3) for k, v in profile["ms_per_step"].items()}
    print(json.dumps(results, sort_keys=True))
    return 0


def inline_events_cost(broker: str, steps: int = 500) -> float:
    """Milliseconds the Flower task event of one inline step costs, on ``broker``: messages that
    each run the linear workflow's inline steps (all but the first), then publish their events."""
    from unittest import mock

    from engine.adapters.celery_config import make_celery
    from engine.ports import StepAttempt
    from engine.settings import Settings
    from engine.telemetry import NoTelemetry
    from tasks.flower_events import InlineStepEvents

    app = make_celery(Settings(broker_url=broker), "bench-events")
    events = InlineStepEvents(NoTelemetry(), app)
    attempt = StepAttempt("bench", "task", "succeeded", 0.001, 0.0, 1, "t", "e", "s", time.time(), followed=True)
    request = mock.Mock(id="bench-parent", hostname="bench@host")
    with mock.patch("tasks.flower_events.current_task", mock.Mock(request=request)):
        events.step_attempt(attempt)  # connect once, as a worker's pooled connection is
        events.flush()
        inline = LINEAR_STEPS - 1
        messages = max(1, steps // inline)
        started = time.perf_counter()
        for _ in range(messages):
            for _ in range(inline):
                events.step_attempt(attempt)
            events.flush()  # the message ends (task_postrun)
        return (time.perf_counter() - started) * 1000 / (messages * inline)


def _env_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, list) else str(value)


def summarize(figures: dict[str, Any], store: str) -> dict[str, Any]:
    """Medians, per-step figures and ratios of the cases that ran (rounded for the JSON line)."""
    out: dict[str, Any] = {"targets_met": {}, "runs": {}, "round_ratio_quartiles": {}}
    for case, f in figures.items():
        out["runs"][case] = {
            "conveyor_s": [round(v, 4) for v in f["conveyor_runs_s"]],
            "raw_s": [round(v, 4) for v in f["raw_runs_s"]],
        }
        out["round_ratio_quartiles"][case] = round_ratio_quartiles(f["conveyor_runs_s"], f["raw_runs_s"], case)
    if "linear" in figures:
        linear = figures["linear"]
        out["linear20_conveyor_s"] = round(linear["conveyor_s"], 4)
        out["linear20_raw_s"] = round(linear["raw_s"], 4)
        out["linear20_per_step_conveyor_ms"] = round(linear["conveyor_s"] / LINEAR_STEPS * 1000, 2)
        out["linear20_per_step_raw_ms"] = round(linear["raw_s"] / LINEAR_STEPS * 1000, 2)
        out["linear20_ratio"] = round(linear["conveyor_s"] / linear["raw_s"], 2)
        out["targets_met"]["linear20"] = out["linear20_ratio"] <= TARGETS["linear"][store]
    if "foreach" in figures:
        foreach = figures["foreach"]
        out["foreach100_conveyor_s"] = round(foreach["conveyor_s"], 4)
        out["foreach100_raw_s"] = round(foreach["raw_s"], 4)
        out["foreach100_ratio"] = round(foreach["conveyor_s"] / foreach["raw_s"], 2)
        out["targets_met"]["foreach100"] = out["foreach100_ratio"] <= TARGETS["foreach"][store]
    if "foreach10k" in figures:
        big = figures["foreach10k"]
        out["foreach_10k_conveyor_s"] = round(big["conveyor_s"], 3)
        out["foreach_10k_raw_s"] = round(big["raw_s"], 3)
        out["foreach_10k_per_item_conveyor_ms"] = round(big["conveyor_s"] / BIG_FAN_ITEMS * 1000, 3)
        out["foreach_10k_ratio"] = round(big["conveyor_s"] / big["raw_s"], 2)
    if "many" in figures:
        many = figures["many"]
        out["many500_conveyor_s"] = round(many["conveyor_s"], 4)
        out["many500_raw_s"] = round(many["raw_s"], 4)
        out["many500_conveyor_per_s"] = round(MANY / many["conveyor_s"], 1)
        out["many500_raw_per_s"] = round(MANY / many["raw_s"], 1)
        out["many500_throughput_ratio"] = round(many["raw_s"] / many["conveyor_s"], 3)
        out["targets_met"]["many500"] = out["many500_throughput_ratio"] >= TARGETS["many"][store]
    return out


def round_ratio_quartiles(conveyor: list[float], raw: list[float], case: str) -> list[float]:
    """First quartile, median and third quartile of the ratios of the rounds, each round's
    Conveyor run against the raw run just before it (throughput, raw/Conveyor, for ``many``).

    How much one round's ratio moves with the machine: read a ratio's change between two
    runs of this benchmark against this spread before calling it a change of Conveyor.
    """
    pairs = zip(conveyor, raw, strict=True)
    ratios = sorted(r / c if case == "many" else c / r for c, r in pairs)
    if len(ratios) < 2:
        return [round(ratios[0], 2)] * 3
    first, middle, third = statistics.quantiles(ratios, n=4, method="inclusive")
    return [round(first, 2), round(middle, 2), round(third, 2)]


def print_table(results: dict[str, Any], stores: list[str]) -> None:
    header = f"{'case':<32}{'store':<11}{'conveyor':>11}{'raw celery':>12}{'ratio':>9}{'target':>9}  met"
    print(header)
    print("-" * len(header))
    for store in stores:
        r = results[store]
        met = r["targets_met"]
        rows: list[tuple[str, str, str, str, str, Any]] = []
        if "linear20" in met:
            rows += [
                ("(a) linear 20 steps", f"{r['linear20_conveyor_s']:.3f}s", f"{r['linear20_raw_s']:.3f}s",
                 f"{r['linear20_ratio']:.2f}x", f"<={TARGETS['linear'][store]:g}x", met["linear20"]),
                ("    per step", f"{r['linear20_per_step_conveyor_ms']:.1f}ms",
                 f"{r['linear20_per_step_raw_ms']:.1f}ms", "", "", None),
            ]  # fmt: skip
        if "foreach100" in met:
            rows.append(
                ("(b) foreach 100 + join", f"{r['foreach100_conveyor_s']:.3f}s", f"{r['foreach100_raw_s']:.3f}s",
                 f"{r['foreach100_ratio']:.2f}x", f"<={TARGETS['foreach'][store]:g}x", met["foreach100"])
            )  # fmt: skip
        if "foreach_10k_ratio" in r:
            rows.append(
                ("(d) foreach 10,000 + join", f"{r['foreach_10k_conveyor_s']:.2f}s", f"{r['foreach_10k_raw_s']:.2f}s",
                 f"{r['foreach_10k_ratio']:.2f}x", "", None)
            )  # fmt: skip
        if "many500" in met:
            rows += [
                ("(c) 500 one-step: time", f"{r['many500_conveyor_s']:.3f}s", f"{r['many500_raw_s']:.3f}s",
                 "", "", None),
                ("    throughput/s (conv/raw)", f"{r['many500_conveyor_per_s']:.0f}", f"{r['many500_raw_per_s']:.0f}",
                 f"{r['many500_throughput_ratio']:.3f}x", f">={TARGETS['many'][store]:g}x", met["many500"]),
            ]  # fmt: skip
        for name, conv, raw, ratio, target, ok in rows:
            flag = "" if ok is None else ("yes" if ok else "NO")
            print(f"{name:<32}{store:<11}{conv:>11}{raw:>12}{ratio:>9}{target:>9}  {flag}")
    print()
    print("per-round ratios (each Conveyor round against the raw round before it): quartiles")
    for store in stores:
        for case, (first, middle, third) in results[store]["round_ratio_quartiles"].items():
            print(f"    {case:<12}{store:<11}{first:.2f} / {middle:.2f} / {third:.2f}")
    print()


def print_profile(profile: dict[str, Any], result: dict[str, Any]) -> None:
    per_step = profile["ms_per_step"]
    measured = result.get("linear20_per_step_conveyor_ms", float("nan"))
    total = per_step.get("step total", 0.0)
    print(f"hot path of one step, in process, {profile['store']} ({profile['steps']} steps of the linear workflow):")
    for name in sorted(per_step, key=lambda n: -per_step[n]):
        print(f"  {name:<36}{per_step[name]:8.2f} ms")
    print(f"  {'per step through real workers (a)':<36}{measured:8.2f} ms")
    print(f"  {'raw Celery task in a chain (a)':<36}{result.get('linear20_per_step_raw_ms', float('nan')):8.2f} ms")
    print(f"  {'=> Celery + process share (a - in)':<36}{measured - total:8.2f} ms")
    if os.environ.get("BENCH_CPROFILE"):
        print(profile["cprofile"])
    print()


if __name__ == "__main__":
    sys.exit(main())
