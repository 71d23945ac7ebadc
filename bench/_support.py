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
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from conveyor import step

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = Path(__file__).resolve().parent

#: Registered name of the no-op step (``<module>.<function>``; the module is ``_support``).
NOOP = f"{__name__}.noop"
RAW_NOOP = "bench.raw.noop"
RAW_DONE = "bench.raw.done"


@step
def noop(x: Any = None) -> Any:
    """The step every benchmark workflow runs: no work at all."""
    return x


# --- experiments: proposed optimizations, patched in to measure them before anyone builds them ---

#: ``(tenant, workflow, version) -> CompiledWorkflow``; set by the benchmark process, found
#: through ``tasks.app`` in a worker.
LOADER: Any = None


def _loader() -> Any:
    if LOADER is not None:
        return LOADER
    from tasks.app import runner

    return runner().service.compiled


def _keyed_load() -> None:
    """``load()`` reads the step documents by key (batched gets) instead of a query.

    The Firestore emulator locks the whole ``steps`` collection group for a query run in a
    transaction, so every complete transaction blocked every step write in the database.
    """
    from engine.errors import NotFound
    from engine.orchestration import control, planner
    from engine.orchestration import steps as step_cases

    def load(tx: Any, tenant: str, execution_id: str) -> tuple[Any, dict[str, Any]]:
        execution = tx.get_execution(tenant, execution_id)
        if execution is None:
            raise NotFound(f"execution {execution_id!r} not found")
        compiled = _loader()(tenant, execution.workflow, execution.version)
        found = tx.get_steps(tenant, execution_id, list(compiled.order))
        items = [
            planner.item_key(record.step_id, index)
            for record in list(found.values())
            if record.index is None and record.items
            for index in range(len(record.items))
        ]
        if items:
            found.update(tx.get_steps(tenant, execution_id, items))
        return execution, found

    step_cases.load = load
    control.load = load  # type: ignore[attr-defined]


def _item_fanin() -> None:
    """A foreach item's completion no longer reads its siblings (implies ``keyed-load``).

    Its transaction reads the header, the top-level steps, itself and its successor only, so
    concurrent item completions stop deadlocking on each other's read locks. After commit,
    an unlocked read tells whether every item has ended; only then one transaction reads all
    items and finishes the parent (the last item to commit always sees the others).
    """
    from engine.errors import NotFound
    from engine.orchestration import planner, progress
    from engine.orchestration import steps as step_cases
    from engine.service import Service
    from engine.states import STEP_ACTIVE, Cause, ExecutionStatus, StepStatus

    _keyed_load()
    original = step_cases.complete
    pending = threading.local()

    def complete(rec: Any, load_workflow: Any, tenant: str, execution_id: str, key: str, epoch: int, out: Any) -> None:
        if "[" not in key:
            original(rec, load_workflow, tenant, execution_id, key, epoch, out)
            return
        tx = rec.tx
        execution = tx.get_execution(tenant, execution_id)
        if execution is None:
            raise NotFound(f"execution {execution_id!r} not found")
        compiled = load_workflow(tenant, execution.workflow, execution.version)
        records = tx.get_steps(tenant, execution_id, [*compiled.order, key])
        step = step_cases._fenced(records, key, epoch)
        step.output = out
        rec.move_step(step, StepStatus.SUCCEEDED, Cause.COMPLETE)
        parent = records[step.step_id]
        successor = step.index + planner.foreach_concurrency(compiled, step.step_id)
        if successor < len(parent.items or []):
            successor_key = planner.item_key(step.step_id, successor)
            if not tx.get_steps(tenant, execution_id, [successor_key]):
                progress.create_item(rec, records, parent, successor)
        pending.check = (tenant, execution_id, step.step_id)

    def finish(rec: Any, load_workflow: Any, tenant: str, execution_id: str, step_id: str) -> None:
        execution, records = step_cases.load(rec.tx, tenant, execution_id)
        parent = records.get(step_id)
        if parent is None or parent.status is not StepStatus.RUNNING:
            return
        if execution.status is not ExecutionStatus.RUNNING:
            return
        items = planner.items_of(records, step_id)
        if len(items) < len(parent.items or []) or any(item.status in STEP_ACTIVE for item in items):
            return
        compiled = load_workflow(tenant, execution.workflow, execution.version)
        progress.item_finished(rec, compiled, execution, records, items[-1])
        progress.advance(rec, compiled, execution, records)

    service_complete = Service.complete

    def service_complete_then_check(self: Any, tenant: str, execution_id: str, key: str, epoch: int, out: Any) -> None:
        pending.check = None
        service_complete(self, tenant, execution_id, key, epoch, out)
        check, pending.check = pending.check, None
        if check is None:
            return
        if _active_in_step(self.store, *check) > 1:  # more than the parent itself: items still run
            return
        # Two last items may both see "all ended"; their finishing transactions would deadlock on
        # the parent (2s lock timeout in the emulator). A Redis SET NX picks one; correctness
        # still comes from the transaction. (Production would add a reconciler sweep for RUNNING
        # foreach parents without active items, in case the chosen one dies here.)
        client = getattr(self.events, "client", None)
        if client is not None and not client.set(f"bench:finish:{check[1]}:{check[2]}", "1", nx=True, ex=30):
            return
        self._run(lambda rec: finish(rec, self.compiled, *check))

    def _active_in_step(store: Any, tenant: str, execution_id: str, step_id: str) -> int:
        """Records of ``step_id`` (parent and items) still active, read outside any transaction.

        An item not created yet has an unfinished predecessor, so "only the parent is active"
        means every item ended.
        """
        active = sorted(str(s) for s in STEP_ACTIVE)
        paths = getattr(store, "_paths", None)
        if paths is None:  # SQLite: read the records
            return sum(
                1 for s in store.list_steps(tenant, execution_id) if s.step_id == step_id and s.status in STEP_ACTIVE
            )
        from google.cloud.firestore_v1.base_query import FieldFilter

        query = (
            paths.steps(tenant, execution_id)
            .where(filter=FieldFilter("step_id", "==", step_id))
            .where(filter=FieldFilter("status", "in", active))
        )
        return int(query.count().get()[0][0].value)

    step_cases.complete = complete
    Service.complete = service_complete_then_check  # type: ignore[method-assign]


#: execution id -> (workflow, version): immutable for an execution's life, safe to cache.
_PINNED: dict[str, tuple[str, int]] = {}


def _batched_reads() -> None:
    """Claim and load read the header and every step they need in ONE round trip (implies
    ``item-fanin``), knowing the pinned workflow version of an execution from a process cache.

    Firestore only: SQLite reads are local. Today a claim does 3 sequential reads (header,
    step, referenced steps) and a complete 2 (header, steps).
    """
    from engine.orchestration import steps as step_cases

    _item_fanin()
    load, claim = step_cases.load, step_cases.claim

    def prefetch(tx: Any, tenant: str, execution_id: str, keys: Any) -> None:
        paths = getattr(tx, "_paths", None)
        if paths is None:
            return
        tx._read([paths.execution(tenant, execution_id), *(paths.step(tenant, execution_id, k) for k in keys)])

    def pinned(tenant: str, execution_id: str) -> Any:
        found = _PINNED.get(execution_id)
        return None if found is None else _loader()(tenant, *found)

    def remember(execution: Any) -> None:
        if len(_PINNED) > 10_000:
            _PINNED.clear()
        _PINNED[execution.id] = (execution.workflow, execution.version)

    def batched_load(tx: Any, tenant: str, execution_id: str) -> tuple[Any, dict[str, Any]]:
        compiled = pinned(tenant, execution_id)
        if compiled is not None:
            prefetch(tx, tenant, execution_id, compiled.order)
        execution, records = load(tx, tenant, execution_id)
        remember(execution)
        return execution, records

    def batched_claim(rec: Any, load_workflow: Any, tenant: str, execution_id: str, key: str, timing: Any) -> Any:
        compiled = pinned(tenant, execution_id)
        if compiled is not None:
            step_id = key.split("[", 1)[0]
            prefetch(rec.tx, tenant, execution_id, [key, *compiled.referenced_steps(step_id)])
        claimed = claim(rec, load_workflow, tenant, execution_id, key, timing)
        if claimed is not None:
            remember(claimed.execution)
        return claimed

    step_cases.load = batched_load
    step_cases.claim = batched_claim
    from engine.orchestration import control

    control.load = batched_load  # type: ignore[attr-defined]


#: Steps one message may run inline before the rest goes back through the broker.
INLINE_LIMIT = 100


def _inline_next() -> None:
    """When a completion makes exactly one step ready, the completing transaction also claims
    it for this worker, which runs it straight away (implies ``batched-reads``).

    Saves per step of a chain: the claim transaction, one dispatch, one broker round trip.
    Fencing is unchanged (the claim sets lease and epoch in the same commit); a crash leaves
    the step RUNNING with a lease, which the reconciler expires as usual.
    """
    from engine.orchestration import steps as step_cases
    from engine.runner import StepRunner
    from engine.service import Service

    _batched_reads()
    pending = threading.local()
    complete = step_cases.complete

    def complete_and_claim_next(
        rec: Any, load_workflow: Any, tenant: str, execution_id: str, key: str, epoch: int, out: Any
    ) -> None:
        pending.next = None
        complete(rec, load_workflow, tenant, execution_id, key, epoch, out)
        timing = getattr(pending, "timing", None)
        dispatches = rec.effects.dispatches
        if timing is None or len(dispatches) != 1 or dispatches[0].countdown or getattr(pending, "depth", 0) <= 0:
            return
        if dispatches[0].execution_id != execution_id:
            return
        claimed = step_cases.claim(rec, load_workflow, tenant, execution_id, dispatches[0].step_key, timing)
        if claimed is not None:
            dispatches.clear()
            pending.next = claimed

    service_complete, service_claim = Service.complete, Service.claim

    def service_complete_inline(self: Any, tenant: str, execution_id: str, key: str, epoch: int, out: Any) -> None:
        pending.timing = self.timing
        try:
            service_complete(self, tenant, execution_id, key, epoch, out)
        finally:
            pending.timing = None

    def service_claim_inline(self: Any, tenant: str, execution_id: str, key: str) -> Any:
        claimed = getattr(pending, "preclaimed", None)
        if claimed is not None and (claimed.step.tenant, claimed.step.execution_id, claimed.step.key) == (
            tenant,
            execution_id,
            key,
        ):
            pending.preclaimed = None
            return claimed
        return service_claim(self, tenant, execution_id, key)

    run = StepRunner.run

    def run_inline(self: Any, tenant: str, execution_id: str, key: str) -> Any:
        pending.depth = INLINE_LIMIT
        pending.next = None
        report = run(self, tenant, execution_id, key)
        while (claimed := pending.next) is not None:
            pending.next, pending.preclaimed = None, claimed
            pending.depth -= 1
            report = run(self, claimed.step.tenant, claimed.step.execution_id, claimed.step.key)
        return report

    step_cases.complete = complete_and_claim_next
    Service.complete = service_complete_inline  # type: ignore[method-assign]
    Service.claim = service_claim_inline  # type: ignore[method-assign]
    StepRunner.run = run_inline  # type: ignore[method-assign]


def _cached_version() -> None:
    """``Service.start`` stops reading the workflow version record on every call: versions are
    immutable, so a short TTL (for "latest" and the archived flag) is enough."""
    from engine.service import Service

    get_workflow = Service.get_workflow
    cache: dict[tuple[str, str, int | None], tuple[float, Any]] = {}
    lock = threading.Lock()

    def cached(self: Any, tenant: str, name: str, version: int | None = None) -> Any:
        key = (tenant, name, version)
        with lock:
            found = cache.get(key)
        if found is not None and time.monotonic() - found[0] < 1.0:
            return found[1]
        record = get_workflow(self, tenant, name, version)
        with lock:
            cache[key] = (time.monotonic(), record)
        return record

    Service.get_workflow = cached  # type: ignore[method-assign]


EXPERIMENTS: dict[str, Any] = {
    "keyed-load": _keyed_load,
    "item-fanin": _item_fanin,
    "batched-reads": _batched_reads,
    "inline-next": _inline_next,
    "cached-version": _cached_version,
}


def apply_experiments(names: str | None = None) -> list[str]:
    """Apply the experiments named in ``names`` (default: ``$BENCH_EXPERIMENTS``, comma-separated)."""
    chosen = [n for n in (names if names is not None else os.environ.get("BENCH_EXPERIMENTS", "")).split(",") if n]
    for name in chosen:
        EXPERIMENTS[name]()
    return chosen


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


# --- processes --------------------------------------------------------------------------------


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


def warm_emulator(address: str, seconds: float = 20.0, threads: int = 4) -> int:
    """Run small transactions against a fresh emulator until its JVM has compiled the hot
    paths; measured against a cold one, the first rounds are up to 2x slower."""
    from concurrent.futures import ThreadPoolExecutor

    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore

    os.environ["FIRESTORE_EMULATOR_HOST"] = address
    client = firestore.Client(project="conveyor-bench-warmup", credentials=AnonymousCredentials())
    deadline = time.monotonic() + seconds

    def loop(n: int) -> int:
        docs = [client.collection("w").document(f"{n}").collection("steps").document(f"{i}") for i in range(5)]
        done = 0

        @firestore.transactional
        def body(tx: Any) -> None:
            list(tx.get_all(docs))
            tx.set(docs[done % 5], {"v": done, "pad": "x" * 200})

        while time.monotonic() < deadline:
            body(client.transaction())
            list(client.collection("w").document(f"{n}").collection("steps").stream())
            done += 1
        return done

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(loop, range(threads)))


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


apply_experiments()
