"""The Conveyor worker app of ``bench/step_profile.py``: ``tasks.app`` with parts switched off.

``BENCH_OFF`` (comma-separated) names what the worker runs without, to measure each part's
cost by difference: ``ledger`` (the Redis message ledger: the consumer's ``taken`` call and the
ledger's script that pushes each message, kombu's plain ``LPUSH`` instead), ``telemetry`` (Prometheus per-attempt metrics), ``contextvars`` (the
structlog context bound around each message and attempt). Flower's inline events are switched
off with ``CONVEYOR_FLOWER_INLINE_EVENTS=false`` (a setting). ``BENCH_PROFILE_DIR`` makes
every pool process run under cProfile (``BENCH_PROFILE_TIMER=cpu``: process CPU time, steady
under load; ``wall``: elapsed time) and write ``<pid>.prof`` there when it exits.

Used as ``celery -A _profile_app worker``; never imported by Conveyor itself.
"""

from __future__ import annotations

import contextlib
import cProfile
import os
import time
from typing import Any

from celery import signals

OFF = {part for part in os.environ.get("BENCH_OFF", "").split(",") if part}
UNKNOWN = OFF - {"ledger", "telemetry", "contextvars"}
if UNKNOWN:
    raise SystemExit(f"BENCH_OFF names unknown parts: {sorted(UNKNOWN)}")

import engine.bootstrap  # noqa: E402

if "ledger" in OFF:
    import engine.adapters.celery_config

    engine.bootstrap.build_ledger = lambda settings: None  # type: ignore[assignment]
    engine.adapters.celery_config.REDIS_TRANSPORT = "redis"  # kombu's own Redis transport

import tasks.app as conveyor_app  # noqa: E402
import tasks.steps  # noqa: E402

if "ledger" in OFF:
    conveyor_app.build_ledger = lambda settings: None  # type: ignore[assignment]
    conveyor_app._ledgers.clear()
if "telemetry" in OFF:
    from engine.telemetry import NoTelemetry

    conveyor_app.build_telemetry = lambda settings: NoTelemetry()  # type: ignore[assignment]
if "contextvars" in OFF:
    import engine.runner

    def _unbound(**_: Any) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    engine.runner.bound_contextvars = _unbound  # type: ignore[assignment]
    tasks.steps.bound_contextvars = _unbound  # type: ignore[assignment]

app = conveyor_app.app

PROFILE_DIR = os.environ.get("BENCH_PROFILE_DIR")
_profiler: cProfile.Profile | None = None


def _start_profile(**_: Any) -> None:
    global _profiler
    timer = time.process_time if os.environ.get("BENCH_PROFILE_TIMER", "cpu") == "cpu" else time.perf_counter
    _profiler = cProfile.Profile(timer)
    _profiler.enable()


def _dump_profile(**_: Any) -> None:
    if _profiler is not None and PROFILE_DIR:
        _profiler.disable()
        _profiler.dump_stats(os.path.join(PROFILE_DIR, f"{os.getpid()}.prof"))


if PROFILE_DIR:
    # Connected after tasks.app's own handlers: the runner is built before profiling starts.
    signals.worker_process_init.connect(_start_profile, weak=False)
    signals.worker_process_shutdown.connect(_dump_profile, weak=False)
    # The main process (the consumer: receives messages, ledger ``taken``) too.
    signals.worker_ready.connect(_start_profile, weak=False)
    signals.worker_shutdown.connect(_dump_profile, weak=False)
