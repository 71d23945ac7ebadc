"""Support for ``bench/step_overhead.py``: the no-op step, the raw Celery baseline app, processes.

This module is imported three ways, always as the top-level module ``_support`` (``bench/``
is put on ``sys.path`` / ``PYTHONPATH``):

* by the benchmark script itself;
* by the Conveyor worker, through ``CONVEYOR_IMPORTS=["_support"]``, to register ``noop``;
* by the raw Celery worker, as ``-A _support:raw_app``.

The raw app is built lazily (module ``__getattr__``), so importing this module in a Conveyor
worker never creates a second Celery app there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from conveyor import step

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent

#: Registered name of the no-op step (``<module>.<function>``; the module is ``_support``).
NOOP = f"{__name__}.noop"
MAKE_ITEMS = f"{__name__}.make_items"
RAW_NOOP = "bench.raw.noop"
RAW_DONE = "bench.raw.done"


@step
def noop(x: Any = None) -> Any:
    """The step every benchmark workflow runs: no work at all."""
    return x


@step
def make_items(count: int, item_bytes: int) -> list[dict[str, Any]]:
    """A list of ``count`` objects of about ``item_bytes`` bytes of JSON each (foreach sources)."""
    return items(count, item_bytes)


def items(count: int, item_bytes: int) -> list[dict[str, Any]]:
    pad = "x" * max(0, item_bytes - len('{"i":00000,"pad":""}'))
    return [{"i": i, "pad": pad} for i in range(count)]


# --- the raw Celery baseline ------------------------------------------------------------------


def _make_raw_app() -> Any:
    """Celery with Conveyor's own delivery settings (late acks, prefetch 1, JSON), plus a Redis
    result backend (chords need one); the broker and queue come from the environment."""
    from celery import Celery

    from engine.adapters.celery_config import celery_config
    from engine.settings import Settings

    broker = os.environ["BENCH_BROKER_URL"]
    queue = os.environ["BENCH_RAW_QUEUE"]
    config = celery_config(Settings(broker_url=broker, default_queue=queue))
    config.update(
        result_backend=broker,
        task_ignore_result=False,
        result_expires=600,
        # the chord counter lives in Redis (``INCR``), like Celery's production setups
        result_chord_join_timeout=60,
    )
    app = Celery("bench-raw", set_as_current=False)
    app.conf.update(config)

    @app.task(name=RAW_NOOP)
    def raw_noop(x: Any = None) -> Any:
        return x

    @app.task(name=RAW_DONE)
    def raw_done(x: Any = None) -> float:
        """The last task of a chain / a chord's callback: when the work ended (worker clock)."""
        return time.time()

    return app


_raw_app: Any = None


def __getattr__(name: str) -> Any:
    global _raw_app
    if name == "raw_app":
        if _raw_app is None:
            _raw_app = _make_raw_app()
        return _raw_app
    raise AttributeError(name)


# --- Conveyor workers and processes ---------------------------------------------------------------


def conveyor_config(
    store: str, broker: str, queue: str, workdir: Path, project: str, emulator: str | None, base_env: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, str]]:
    """Settings of a Conveyor worker (and of the bench's own service) on ``store``, and the
    worker's environment that carries them (``CONVEYOR_*``)."""
    options: dict[str, Any] = {
        "store": store,
        "broker_url": broker,
        "redis_url": broker,
        "default_queue": queue,
        "imports": ["_support"],
        "log_level": "WARNING",
    }
    env = dict(base_env)
    if store == "sqlite":
        options["sqlite_path"] = str(workdir / "bench.db")
    else:
        assert emulator is not None
        options["firestore_project"] = project
        env["FIRESTORE_EMULATOR_HOST"] = emulator
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator
    env.update({f"CONVEYOR_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v) for k, v in options.items()})
    return options, env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


@contextlib.contextmanager
def firestore_emulator(existing: str | None) -> Iterator[str]:
    """``host:port`` of a Firestore emulator: ``existing``, or one started for this run."""
    if existing:
        yield existing
        return
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise SystemExit("google-cloud-cli (gcloud) is needed to start the Firestore emulator")
    port = free_port()
    address = f"127.0.0.1:{port}"
    proc = subprocess.Popen(
        [gcloud, "emulators", "firestore", "start", f"--host-port={address}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the Firestore emulator did not start")
            time.sleep(0.25)
        yield address
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)


class Worker:
    """A Celery prefork worker in its own process group, logging to a file."""

    def __init__(self, app: str, queue: str, env: Mapping[str, str], log_path: Path, concurrency: int) -> None:
        self.command = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "--pool", "prefork", "--concurrency", str(concurrency), "-Q", queue,
            "-n", f"{queue}@%h", "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def child_pids(self) -> list[int]:
        if self.proc is None:
            return []
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True, check=False)
        return [int(pid) for pid in out.stdout.split()]

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
