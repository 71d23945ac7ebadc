"""Load benchmark of the API's start endpoint, against ``conveyor api`` and a real worker.

Not a test. Needs Redis (``--redis-url``, default ``redis://127.0.0.1:6379``; database
``--redis-db``, default 14). In one run:

1. starts ``conveyor worker`` (Celery on Redis) and ``conveyor api`` as subprocesses sharing a
   fresh SQLite store, and applies a one-step workflow;
2. **API**: ``--concurrency`` clients send ``POST /v1/executions`` for ``--seconds``;
3. **direct**: the same number of threads call ``Service.start`` (the use case the API calls,
   with the same quota check) for ``--seconds``, in this process, on the same store and broker;
4. waits for the worker to finish every execution both phases started.

Prints starts/s, p50 and p99 latency of both, and the API's overhead; the last line is one
JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
TENANT = "bench"
WORKFLOW = {
    "name": "bench-one",
    "inputs": {"type": "object", "properties": {"n": {"type": "integer"}}},
    "steps": [{"id": "one", "type": "transform", "with": {"value": "${input.n}"}}],
}


@dataclass
class Phase:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        return {
            "starts": len(ordered),
            "errors": self.errors,
            "starts_per_s": round(len(ordered) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(_quantile(ordered, 0.50) * 1000, 2),
            "p99_ms": round(_quantile(ordered, 0.99) * 1000, 2),
            "mean_ms": round(statistics.fmean(ordered) * 1000, 2) if ordered else 0.0,
        }


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}; see its log")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit("the API did not become ready")


async def _api_phase(url: str, token: str, concurrency: int, seconds: float) -> Phase:
    phase = Phase("api")
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:
        stop = time.perf_counter() + seconds

        async def user(n: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                started = time.perf_counter()
                response = await client.post("/v1/executions", json={"workflow": WORKFLOW["name"], "input": {"n": i}})
                if response.status_code == 201:
                    phase.latencies.append(time.perf_counter() - started)
                else:
                    phase.errors += 1
                i += 1

        began = time.perf_counter()
        await asyncio.gather(*(user(n) for n in range(concurrency)))
        phase.seconds = time.perf_counter() - began
    return phase


def _direct_phase(service: Any, concurrency: int, seconds: float) -> Phase:
    phase = Phase("direct")
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def user(n: int) -> None:
        i = 0
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                service.start(TENANT, WORKFLOW["name"], {"n": i}, enforce_quota=True)
            except Exception:  # counted, like a non-201 answer in the API phase
                with lock:
                    phase.errors += 1
            else:
                elapsed = time.perf_counter() - started
                with lock:
                    phase.latencies.append(elapsed)
            i += 1

    began = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(user, range(concurrency)))
    phase.seconds = time.perf_counter() - began
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("CONVEYOR_BENCH_REDIS_URL", "redis://127.0.0.1:6379"))
    parser.add_argument(
        "--redis-db",
        type=int,
        default=int(os.environ.get("CONVEYOR_BENCH_REDIS_DB", "14")),
        help="Redis database for the broker, live events and rate limits (default 14)",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="conveyor-bench-api-"))
    port = _free_port()
    redis_url = args.redis_url.rstrip("/")
    env = {
        **os.environ,
        "CONVEYOR_STATE_DIR": str(state),
        "CONVEYOR_BROKER_URL": f"{redis_url}/{args.redis_db}",
        "CONVEYOR_REDIS_URL": f"{redis_url}/{args.redis_db}",
        "CONVEYOR_DEFAULT_QUEUE": f"bench-api-{uuid.uuid4().hex[:8]}",
        "CONVEYOR_RATE_LIMIT": "100000000/minute",
        "CONVEYOR_TENANT_RATE_LIMIT": "100000000/minute",
        "CONVEYOR_MAX_CONCURRENT_EXECUTIONS": str(10**9),
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("CONVEYOR_")})
    from engine.bootstrap import build_service
    from engine.keys import ApiKeys
    from engine.settings import Settings

    settings = Settings()
    service = build_service(settings)
    token = ApiKeys(service.store, service.clock).create(TENANT, _admin(), "bench").token
    python = sys.executable
    url = f"http://127.0.0.1:{port}"
    worker_argv = [python, "-m", "conveyor", "worker", "--concurrency", str(args.worker_concurrency)]
    api_argv = [python, "-m", "conveyor", "api", "--port", str(port), "--workers", str(args.api_workers)]
    with (
        _process(worker_argv, env, state / "worker.log"),
        _process(api_argv, env, state / "api.log") as api,
    ):
        _wait_ready(url, api)
        applied = httpx.put(
            f"{url}/v1/workflows/{WORKFLOW['name']}",
            json=WORKFLOW,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        applied.raise_for_status()
        asyncio.run(_api_phase(url, token, args.concurrency, 1.0))  # warm-up: connections, caches
        api_phase = asyncio.run(_api_phase(url, token, args.concurrency, args.seconds))
        direct_phase = _direct_phase(service, args.concurrency, args.seconds)
        drained = _drain(service, timeout=120)
    _report(args, api_phase, direct_phase, drained)


def _admin() -> Any:
    from engine.auth import Role

    return Role.ADMIN


def _drain(service: Any, timeout: float) -> dict[str, Any]:
    """Wait until the worker has finished every execution; returns what was left, if anything."""
    began = time.perf_counter()
    active = service.store.count_active_executions(TENANT)
    while active and time.perf_counter() - began < timeout:
        time.sleep(0.5)
        active = service.store.count_active_executions(TENANT)
    return {"active_left": active, "drain_seconds": round(time.perf_counter() - began, 1)}


def _report(args: argparse.Namespace, api: Phase, direct: Phase, drained: dict[str, Any]) -> None:
    a, d = api.summary(), direct.summary()
    result = {
        "seconds": args.seconds,
        "concurrency": args.concurrency,
        "api_workers": args.api_workers,
        "api": a,
        "direct": d,
        "api_vs_direct_throughput": round(a["starts_per_s"] / d["starts_per_s"], 3) if d["starts_per_s"] else None,
        "api_overhead_p50_ms": round(a["p50_ms"] - d["p50_ms"], 2),
        "api_overhead_p99_ms": round(a["p99_ms"] - d["p99_ms"], 2),
        **drained,
    }
    print(f"{'':8} {'starts/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'errors':>7}")
    for name, row in (("api", a), ("direct", d)):
        print(f"{name:8} {row['starts_per_s']:>10} {row['p50_ms']:>9} {row['p99_ms']:>9} {row['errors']:>7}")
    print(
        f"API throughput is {result['api_vs_direct_throughput']}x of direct Service.start; "
        f"overhead p50 {result['api_overhead_p50_ms']} ms, p99 {result['api_overhead_p99_ms']} ms; "
        f"worker drained in {drained['drain_seconds']}s, {drained['active_left']} left"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
