"""Where a step's time goes in a real worker: each suspect part switched off in turn, one run.

    python bench/step_profile.py [--store sqlite|firestore] [--cases linear,foreach]
                                 [--rounds N] [--variants base,-ledger,...] [--cprofile cpu|wall]

Not a test: it prints a table and, as its last line, one JSON object.

It starts one Conveyor worker per variant (``celery -A _profile_app worker --pool prefork
--concurrency 2``, each on a queue of its own, all at once) and runs the cases round-robin
over the variants, so load from elsewhere on the machine drifts into every variant alike. A
variant is ``base`` (the worker as shipped) or ``-PART`` (``-ledger``, ``-telemetry``,
``-contextvars``, ``-flower``, ``-all``): the same worker without that part (see
``bench/_profile_app.py``). For each variant and case it prints, per step:

* **cpu**: the CPU time (user + system, from ``/proc``) of the worker's processes (the
  consumer and its pool processes) over the measured rounds, divided by the steps run. CPU
  time is much steadier than elapsed time on a loaded machine; it leaves out the time spent in
  Redis and in the Firestore emulator, which the elapsed time includes.
* **wall**: the median elapsed time of one execution (start call to ``finished_at``) divided
  by its steps.

The difference to ``base`` is the part's cost. ``--cprofile`` also runs one more ``base``
worker under cProfile (left out of the table: the profiler slows it several times) and prints
the functions with the most cumulative time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

from _support import Worker, conveyor_config, median  # noqa: E402
from step_overhead import FAN_ITEMS, LINEAR_STEPS, Conveyor  # noqa: E402

#: Steps one execution of each case runs (the foreach: its items and the join).
STEPS = {"linear": LINEAR_STEPS, "foreach": FAN_ITEMS + 1}
PARTS = ["ledger", "telemetry", "contextvars", "flower"]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (processes that are gone count 0)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def variant_env(variant: str, env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    off = PARTS if variant == "-all" else [variant[1:]] if variant.startswith("-") else []
    unknown = set(off) - set(PARTS)
    if unknown or (variant not in ("base", "profiled") and not off):
        raise SystemExit(f"unknown variant {variant!r}: base, -all or -PART with PART in {PARTS}")
    if "flower" in off:
        env["CONVEYOR_FLOWER_INLINE_EVENTS"] = "false"
    env["BENCH_OFF"] = ",".join(p for p in off if p != "flower")
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "firestore"], default="sqlite")
    parser.add_argument("--broker", default=os.environ.get("CONVEYOR_BENCH_BROKER", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--emulator", default=os.environ.get("FIRESTORE_EMULATOR_HOST"))
    parser.add_argument("--cases", default="linear,foreach")
    parser.add_argument("--variants", default="base,-ledger,-telemetry,-contextvars,-flower,-all")
    parser.add_argument("--rounds", type=int, default=10, help="measured executions per case and variant")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured executions per case and variant first")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--cprofile", choices=["cpu", "wall"], help="also profile the base worker's processes")
    args = parser.parse_args()
    cases = [c for c in args.cases.split(",") if c]
    variants = [v for v in args.variants.split(",") if v]
    if args.cprofile:
        variants.append("profiled")  # the base worker under cProfile: run, never compared

    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"conveyor-profile-{run_id}-"))
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "BENCH_"))}
    base_env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")])
    print(f"conveyor step profile {run_id}: logs and data in {workdir}", file=sys.stderr)
    emulator = args.emulator
    if args.store == "firestore" and not emulator:
        raise SystemExit("--emulator HOST:PORT (or FIRESTORE_EMULATOR_HOST) names the Firestore emulator to use")

    from engine.bootstrap import build_service
    from engine.settings import Settings

    workers: dict[str, Worker] = {}
    drivers: dict[str, Conveyor] = {}
    profile_dir = workdir / "cprofile"
    try:
        for variant in variants:
            queue = f"profile-{run_id}-{variant.strip('-')}"
            options, env = conveyor_config(
                args.store, args.broker, queue, workdir, f"conveyor-profile-{run_id}", emulator, base_env
            )
            env = variant_env(variant, env)
            if variant == "profiled":
                profile_dir.mkdir()
                env.update(BENCH_PROFILE_DIR=str(profile_dir), BENCH_PROFILE_TIMER=args.cprofile)
            worker = Worker("_profile_app", queue, env, workdir / f"worker{variant}.log", args.concurrency)
            worker.start()
            workers[variant] = worker
            drivers[variant] = Conveyor(build_service(Settings(**options)), tenant=f"profile-{run_id}")
        for case in cases:  # warm-up: worker processes, connections, caches, the emulator
            for _ in range(args.warmup):
                for variant in variants:
                    getattr(drivers[variant], case)()
        cpu: dict[tuple[str, str], float] = {}
        walls: dict[tuple[str, str], list[float]] = {}
        for case in cases:
            for _ in range(args.rounds):
                for variant in variants:
                    pids = [workers[variant].proc.pid, *workers[variant].child_pids()]  # type: ignore[union-attr]
                    before = cpu_seconds(pids)
                    wall = getattr(drivers[variant], case)()
                    time.sleep(0.05)  # let the worker finish acknowledging
                    cpu[case, variant] = cpu.get((case, variant), 0.0) + cpu_seconds(pids) - before
                    walls.setdefault((case, variant), []).append(wall)
    finally:
        for worker in workers.values():
            if worker.proc is not None:  # the main process first: a warm shutdown lets pool processes write profiles
                with_main_only(worker)
            worker.stop()
        for driver in drivers.values():
            driver.service.store.close()
        import redis

        client = redis.Redis.from_url(args.broker)
        for key in client.scan_iter(f"*{run_id}*"):
            client.delete(key)

    results: dict[str, Any] = {"store": args.store, "rounds": args.rounds, "loadavg": os.getloadavg()}
    print(f"store {args.store}, {args.rounds} rounds, load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':8} {'variant':14} {'cpu ms/step':>12} {'vs base':>8} {'wall ms/step':>13} {'vs base':>8}")
    for case in cases:
        steps = STEPS[case] * args.rounds
        for variant in variants:
            if variant == "profiled":
                continue
            cpu_ms = cpu[case, variant] / steps * 1000
            wall_ms = median(walls[case, variant]) / STEPS[case] * 1000
            base_cpu = cpu[case, "base"] / steps * 1000 if "base" in variants else cpu_ms
            base_wall = median(walls[case, "base"]) / STEPS[case] * 1000 if "base" in variants else wall_ms
            results[f"{case}{variant}"] = {"cpu_ms_per_step": round(cpu_ms, 3), "wall_ms_per_step": round(wall_ms, 3)}
            print(
                f"{case:8} {variant:14} {cpu_ms:12.3f} {cpu_ms - base_cpu:+8.3f} "
                f"{wall_ms:13.3f} {wall_ms - base_wall:+8.3f}"
            )
    if args.cprofile:
        print_cprofile(profile_dir, sum(STEPS[c] * (args.rounds + args.warmup) for c in cases))
    print(json.dumps(results, sort_keys=True))
    return 0


def with_main_only(worker: Worker) -> None:
    """SIGTERM the worker's main process alone and wait: its pool processes exit through it."""
    import signal

    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGTERM)
    try:
        worker.proc.wait(timeout=20)
    except Exception:  # stop() kills the group next
        return


def print_cprofile(profile_dir: Path, steps: int) -> None:
    files = sorted(profile_dir.glob("*.prof"))
    if not files:
        print("no cProfile output (the pool processes did not exit cleanly)")
        return
    stats = pstats.Stats(*(str(f) for f in files), stream=(out := io.StringIO()))
    print(f"cProfile of the base worker's processes ({len(files)} files, {steps} steps incl. warm-up):")
    stats.sort_stats("cumulative").print_stats(60)
    print(out.getvalue())


if __name__ == "__main__":
    sys.exit(main())
