"""Triggers in the production topology: Redis, the Firestore emulator, a worker and ``conveyor beat``.

    python bench/triggers.py [--case schedule|events|all] [--broker redis://...] [--emulator HOST:PORT]
                             [--triggers N] [--seconds S] [--events N] [--flow N]

Not a test: it prints a table and, as its last line, one JSON object with every figure.

Cases (``--case``, default ``all``; each is one function in :data:`CASES`):

``schedule``
    ``--triggers`` schedule triggers (default 10), each firing every second (``catchup: all``,
    so a late fire is measured rather than skipped), fire from a real
    ``conveyor beat`` process for ``--seconds`` (default 30); a real worker
    (``celery -A tasks.app worker --pool prefork``) runs each execution's one no-op task
    step. For every fire it reports the latency from the fire time (read from the
    execution's idempotency key ``trigger_id:<UTC fire time>``) to the execution being
    RUNNING (its header's ``created_at``: an execution is created RUNNING in the fire's
    transaction) and to its step having finished on the worker. Target: p99 to RUNNING
    ≤ 1.5 s. Fires in the first 3 s (beat and worker warming up) are left out.

``events``
    ``--events`` messages (default 1000) are published to a Pub/Sub emulator topic before
    a real ``conveyor bridge`` process starts on its subscription; an event trigger turns each
    into an execution (store: the Firestore emulator). Beside it, in the same run, a raw
    subscriber (streaming pull, same flow control, its callback only acks) drains the same
    number from a topic of its own. Each rate is measured from the first to the last message
    handled (execution ``created_at``; raw ack time), so process start-up is left out.
    Target: events turned into started executions per second at least 0.3 times the raw ack rate.
    Needs ``PUBSUB_EMULATOR_HOST`` (project ``PUBSUB_PROJECT_ID``, default conveyor-test).

It starts what it needs: a Firestore emulator (unless ``--emulator`` or
``FIRESTORE_EMULATOR_HOST`` names one), the worker and beat, each with a queue and lease of
their own, and removes its Redis keys when done. Logs stay in the directory printed at start.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

import _support  # noqa: E402
from _support import NOOP, ROOT, Worker  # noqa: E402

#: Fires this close to the start are left out: beat and the worker are still warming up.
WARMUP_SECONDS = 3.0
#: Every fire starts, however late: a late fire is measured, not dropped as missed.
SPEC = {"every": "1s", "overlap": "allow_all", "catchup": "all"}
#: The issue's target for the fire time to RUNNING latency, p99.
TARGET_P99_RUNNING = 1.5


@dataclass
class Context:
    """What every case gets: parsed arguments, the run's id, a work directory and the environment."""

    args: argparse.Namespace
    run_id: str
    workdir: Path
    base_env: dict[str, str]
    emulator: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def options(self, name: str) -> dict[str, Any]:
        """Conveyor settings of a case: Firestore emulator, Redis broker and events, its own queue."""
        return {
            "store": "firestore",
            "firestore_project": f"conveyor-bench-{name}-{self.run_id}",
            "broker_url": self.args.broker,
            "redis_url": self.args.broker,
            "default_queue": f"bench-{name}-{self.run_id}",
            "imports": ["_support"],
            "log_level": "WARNING",
        }

    def env(self, options: dict[str, Any]) -> dict[str, str]:
        env = dict(self.base_env)
        env["FIRESTORE_EMULATOR_HOST"] = self.emulator
        env.update(
            {f"CONVEYOR_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v) for k, v in options.items()}
        )
        return env


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(fraction * len(ordered) + 0.5)))
    return ordered[rank - 1]


def fire_time(key: str) -> float:
    return datetime.fromisoformat(key.split(":", 1)[1].replace("Z", "+00:00")).timestamp()


def run_schedule(ctx: Context) -> dict[str, Any]:
    """Schedule latency: fire time to execution RUNNING, and to its step finished on the worker."""
    from engine.bootstrap import build_service
    from engine.settings import Settings
    from engine.trigger_admin import Triggers

    options = ctx.options("schedule")
    env = ctx.env(options)
    os.environ["FIRESTORE_EMULATOR_HOST"] = ctx.emulator
    service = build_service(Settings(**options))
    tenant = f"bench-{ctx.run_id}"
    workflow = {"name": "tick", "steps": [{"id": "work", "type": "task", "with": {"function": NOOP}}]}
    service.apply_workflow(tenant, workflow)

    worker = Worker("tasks.app", options["default_queue"], env, ctx.workdir / "worker.log", ctx.args.concurrency)
    worker.start()
    ctx.cleanup.append(worker.stop)
    beat_log = ctx.workdir / "beat.log"
    with beat_log.open("wb") as log:
        beat = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "beat", "--send", "--loglevel", "INFO"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    ctx.cleanup.append(lambda: _stop(beat))
    import redis

    lease = redis.Redis.from_url(ctx.args.broker)
    deadline = time.monotonic() + 60
    while not lease.exists(f"conveyor:beat:lease:{options['default_queue']}"):
        if beat.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"beat did not take its lease; see {beat_log}")
        time.sleep(0.2)

    triggers = Triggers(service.store, service.clock)
    created = [
        triggers.create(tenant, workflow="tick", kind="schedule", spec=SPEC)
        for _ in range(ctx.args.triggers)
    ]
    started = time.time()
    print(f"[schedule] {len(created)} triggers firing every second for {ctx.args.seconds:g}s ...", file=sys.stderr)
    time.sleep(ctx.args.seconds)
    for trigger in created:
        triggers.set_enabled(tenant, trigger.id, False)
    stopped = time.time()
    time.sleep(5)  # the last fires' steps finish on the worker

    executions = _all_executions(service, tenant)
    steps = service.store.list_steps_many(tenant, [e.id for e in executions])
    running, finished = [], []
    for execution in executions:
        moment = fire_time(str(execution.idempotency_key))
        if moment < started + WARMUP_SECONDS:
            continue
        running.append(execution.created_at - moment)
        done = [s.finished_at for s in steps[execution.id] if s.finished_at is not None]
        if done:
            finished.append(max(done) - moment)
    final = [triggers.get(tenant, t.id) for t in created]
    fired, missed = sum(t.fired for t in final), sum(t.missed for t in final)
    service.store.close()
    expected = len(created) * int(stopped - started - WARMUP_SECONDS)
    return {
        "triggers": len(created),
        "seconds": ctx.args.seconds,
        "fired": fired,
        "missed": missed,
        "measured_fires": len(running),
        "expected_fires_approx": expected,
        "steps_finished": len(finished),
        "running_p50_s": round(percentile(running, 0.50), 3),
        "running_p99_s": round(percentile(running, 0.99), 3),
        "running_max_s": round(max(running), 3),
        "step_done_p50_s": round(percentile(finished, 0.50), 3),
        "step_done_p99_s": round(percentile(finished, 0.99), 3),
        "target_p99_running_s": TARGET_P99_RUNNING,
        "met": percentile(running, 0.99) <= TARGET_P99_RUNNING,
    }


def print_schedule(result: dict[str, Any]) -> None:
    print(
        f"\nschedule: {result['triggers']} triggers every 1 s for {result['seconds']:g} s, "
        f"{result['measured_fires']} fires measured (of {result['fired']} fired, {result['missed']} missed)\n"
    )
    print("| latency from fire time | p50 | p99 | target | met |")
    print("|---|---|---|---|---|")
    met = "yes" if result["met"] else "NO"
    print(
        f"| execution RUNNING | {result['running_p50_s']:.3f} s | {result['running_p99_s']:.3f} s "
        f"| p99 ≤ {result['target_p99_running_s']:g} s | {met} |"
    )
    step_done = f"{result['step_done_p50_s']:.3f} s | {result['step_done_p99_s']:.3f} s"
    print(f"| its step finished on the worker | {step_done} | | |")


def _all_executions(service: Any, tenant: str) -> list[Any]:
    executions, cursor = [], None
    while True:
        page = service.list_executions(tenant, cursor=cursor, limit=200)
        executions += page.items
        if page.next_cursor is None:
            return executions
        cursor = page.next_cursor


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


#: The issue's target for events turned into started executions, as a fraction of raw acks.
TARGET_EVENTS_RATIO = 0.3


def run_events(ctx: Context) -> dict[str, Any]:
    """Events per second turned into started executions by ``conveyor bridge``, beside a raw subscriber."""
    import threading

    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient
    from google.cloud.pubsub_v1.types import FlowControl

    from engine.bootstrap import build_service
    from engine.settings import Settings
    from engine.trigger_admin import Triggers

    emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
    if not emulator:
        raise SystemExit("the events case needs PUBSUB_EMULATOR_HOST (a running Pub/Sub emulator)")
    project = os.environ.get("PUBSUB_PROJECT_ID", "conveyor-test")
    count = ctx.args.events
    publisher, subscriber = PublisherClient(), SubscriberClient()

    def topic_with_subscription(name: str) -> tuple[str, str]:
        topic = publisher.topic_path(project, f"bench-{name}-{ctx.run_id}")
        sub = subscriber.subscription_path(project, f"bench-{name}-{ctx.run_id}")
        publisher.create_topic(name=topic)
        subscriber.create_subscription(request={"name": sub, "topic": topic, "ack_deadline_seconds": 60})
        ctx.cleanup.append(lambda: subscriber.delete_subscription(request={"subscription": sub}))
        ctx.cleanup.append(lambda: publisher.delete_topic(request={"topic": topic}))
        return topic, sub

    def publish_all(topic: str) -> None:
        futures = [
            publisher.publish(topic, json.dumps({"n": n}).encode(), type="bench.event", event_id=f"e-{n}")
            for n in range(count)
        ]
        for future in futures:
            future.result(timeout=120)

    # the raw baseline: streaming pull with the bridge's flow control, the callback only acks
    raw_topic, raw_sub = topic_with_subscription("raw")
    publish_all(raw_topic)
    acked: list[float] = []
    lock, all_acked = threading.Lock(), threading.Event()

    def ack(message: Any) -> None:
        message.ack()
        with lock:
            acked.append(time.time())
            if len(acked) >= count:
                all_acked.set()

    stream = subscriber.subscribe(raw_sub, callback=ack, flow_control=FlowControl(max_messages=ctx.args.flow))
    all_acked.wait(timeout=600)
    stream.cancel()
    raw_rate = (len(acked) - 1) / max(1e-9, max(acked) - min(acked))

    # the bridge: the same number of messages, each made an execution by an event trigger
    options = {**ctx.options("events"), "pubsub_project": project, "bridge_max_messages": ctx.args.flow}
    os.environ["FIRESTORE_EMULATOR_HOST"] = ctx.emulator
    service = build_service(Settings(**options))
    tenant = f"bench-{ctx.run_id}"
    service.apply_workflow(
        tenant, {"name": "on-event", "steps": [{"id": "work", "type": "task", "with": {"function": NOOP}}]}
    )
    Triggers(service.store, service.clock).create(
        tenant, workflow="on-event", kind="event", spec={"type": "bench.event"}, input={"n": "${event.data.n}"}
    )
    bridge_topic, bridge_sub = topic_with_subscription("bridge")
    dead_topic, _ = topic_with_subscription("dead")
    publish_all(bridge_topic)
    env = ctx.env(options)
    env["PUBSUB_EMULATOR_HOST"] = emulator
    env["CONVEYOR_BRIDGE_SUBSCRIPTIONS"] = json.dumps([{"subscription": bridge_sub, "tenant": tenant}])
    env["CONVEYOR_BRIDGE_DEAD_LETTER_TOPIC"] = dead_topic
    bridge_log = ctx.workdir / "bridge.log"
    with bridge_log.open("wb") as log:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "bridge"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    ctx.cleanup.append(lambda: _stop(bridge))
    print(f"[events] {count} messages: raw subscriber done, bridge started ...", file=sys.stderr)
    deadline = time.monotonic() + 900
    while service.store.count_active_executions(tenant) < count:
        if bridge.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the bridge stopped or took too long; see {bridge_log}")
        time.sleep(1)
    created = [e.created_at for e in _all_executions(service, tenant)]
    service.store.close()
    bridge_rate = (len(created) - 1) / max(1e-9, max(created) - min(created))
    ratio = bridge_rate / raw_rate
    return {
        "messages": count,
        "flow_control_max_messages": ctx.args.flow,
        "executions_started": len(created),
        "raw_acks_per_s": round(raw_rate, 1),
        "bridge_executions_per_s": round(bridge_rate, 1),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_EVENTS_RATIO,
        "met": ratio >= TARGET_EVENTS_RATIO,
    }


def print_events(result: dict[str, Any]) -> None:
    print(f"\nevents: {result['messages']} Pub/Sub messages, flow control {result['flow_control_max_messages']}\n")
    print("| consumer | messages/s | ratio to raw | target | met |")
    print("|---|---|---|---|---|")
    print(f"| raw subscriber (ack only) | {result['raw_acks_per_s']:.1f} | 1.00 | | |")
    met = "yes" if result["met"] else "NO"
    print(
        f"| conveyor bridge → started executions | {result['bridge_executions_per_s']:.1f} "
        f"| {result['ratio']:.2f} | ≥ {result['target_ratio']:g} | {met} |"
    )


#: Every case: its runner and its table printer.
CASES: dict[str, tuple[Callable[[Context], dict[str, Any]], Callable[[dict[str, Any]], None]]] = {
    "schedule": (run_schedule, print_schedule),
    "events": (run_events, print_events),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--broker", default=os.environ.get("CONVEYOR_BENCH_BROKER", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--emulator", default=os.environ.get("FIRESTORE_EMULATOR_HOST"))
    parser.add_argument("--concurrency", type=int, default=2, help="worker processes")
    parser.add_argument("--triggers", type=int, default=10, help="schedule: triggers firing every second")
    parser.add_argument("--seconds", type=float, default=30.0, help="schedule: how long they fire")
    parser.add_argument("--events", type=int, default=1000, help="events: messages published")
    parser.add_argument("--flow", type=int, default=100, help="events: flow control, messages in flight")
    args = parser.parse_args()
    cases = list(CASES) if args.case == "all" else [args.case]

    import redis

    redis.Redis.from_url(args.broker, socket_connect_timeout=3).ping()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-triggers-{run_id}-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    base_env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(ROOT), os.environ.get("PYTHONPATH", "")])
    results: dict[str, Any] = {"broker": args.broker, "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"conveyor trigger bench {run_id}: logs in {workdir}", file=sys.stderr)
    with _support.firestore_emulator(args.emulator) as emulator:
        for case in cases:
            ctx = Context(args, run_id, workdir, base_env, emulator)
            try:
                results[case] = CASES[case][0](ctx)
            finally:
                for stop in reversed(ctx.cleanup):
                    stop()
    with contextlib.suppress(Exception):
        client = redis.Redis.from_url(args.broker)
        for key in client.scan_iter(f"*{run_id}*"):
            client.delete(key)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    for case in cases:
        CASES[case][1](results[case])
    print(json.dumps(results, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
