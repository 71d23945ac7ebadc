"""How fast the console's first page loads with 10,000 executions in the store, in Chromium.

Not a test. For each store (SQLite, and Firestore on its emulator) in one run:

1. writes ``--executions`` execution headers for one tenant straight into the store (batched
   transactions; statuses, labels and start times spread out), and 10 for a baseline tenant;
2. starts ``conveyor api`` on ``--port`` over that store;
3. loads ``/ui/#/executions`` ``--loads`` times per tenant in headless Chromium (Debian's
   chromium + chromedriver) with the browser cache disabled (every load is a cold first
   load), signed in with an API key already in the tab's ``sessionStorage``.

Per load it reads the browser's navigation timing (``domContentLoadedEventEnd``,
``loadEventEnd``) and the console's own marks: when the executions table (the newest 50) first
rendered and when the counts per status did, all in ms from navigation start. Prints the
medians per store and tenant, the ratio of the full store to the baseline tenant measured in
the same run, and one JSON line with every figure.

    FIRESTORE_EMULATOR_HOST=127.0.0.1:8686 .venv/bin/python bench/console_load.py --loads 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
NAME = "bench-console"
WORKFLOW: dict[str, Any] = {"name": NAME, "steps": [{"id": "a", "type": "transform", "with": {"value": 1}}]}
STATUSES = ["SUCCEEDED"] * 6 + ["FAILED", "RUNNING", "CANCELLED", "PAUSED"]
BATCH = 400
TIMING = """
const n = performance.getEntriesByType('navigation')[0];
const mark = (name) => { const m = performance.getEntriesByName(name)[0]; return m ? m.startTime : null; };
return {dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd,
        table: mark('conveyor:executions-rendered'), counts: mark('conveyor:counts-rendered')};
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--stores", default="sqlite,firestore")
    parser.add_argument("--port", type=int, default=9410)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()
    results: dict[str, Any] = {"executions": args.executions, "loads": args.loads}
    for store in args.stores.split(","):
        results[store] = run_store(store, args)
    print(json.dumps(results))


def run_store(store: str, args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix=f"console-bench-{store}-"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")},
        "CONVEYOR_STORE": store,
        "CONVEYOR_STATE_DIR": str(state),
        "CONVEYOR_REDIS_URL": args.redis_url,
        "CONVEYOR_BROKER_URL": args.redis_url,
        "CONVEYOR_RATE_LIMIT": "100000000/minute",
        "CONVEYOR_TENANT_RATE_LIMIT": "100000000/minute",
        "CONVEYOR_LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    if store == "firestore":
        if not os.environ.get("FIRESTORE_EMULATOR_HOST"):
            raise SystemExit("set FIRESTORE_EMULATOR_HOST to a running Firestore emulator")
        env["CONVEYOR_FIRESTORE_PROJECT"] = f"console-bench-{uuid.uuid4().hex[:8]}"
    os.environ.update({k: v for k, v in env.items() if k.startswith("CONVEYOR_")})
    from engine.bootstrap import build_service
    from engine.keys import ApiKeys
    from engine.service import SystemClock
    from engine.settings import Settings

    service = build_service(Settings())
    keys = ApiKeys(service.store, SystemClock())
    tenants = {"full": ("bench-full", args.executions), "baseline": ("bench-base", 10)}
    tokens = {}
    for name, (tenant, count) in tenants.items():
        began = time.perf_counter()
        seed(service, tenant, count)
        print(f"{store}: {count} executions written for {tenant} in {time.perf_counter() - began:.1f} s", flush=True)
        tokens[name] = keys.create(tenant, _viewer(), "bench").token
    url = f"http://127.0.0.1:{args.port}"
    argv = [sys.executable, "-m", "conveyor", "api", "--port", str(args.port)]
    figures: dict[str, Any] = {}
    with _process(argv, env, state / "api.log"), _browser() as driver:
        _wait_ready(url)
        for name in ("baseline", "full"):
            figures[f"{name}_api"] = api_times(url, tokens[name], args.loads)
            print(
                f"{store} {name:8} API alone, median of {args.loads}: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in figures[f"{name}_api"].items()),
                flush=True,
            )
            loads = [load(driver, url, tokens[name], i) for i in range(args.loads + 1)][1:]  # first: warm-up
            figures[name] = {k: statistics.median(x[k] for x in loads) for k in loads[0]}
            print(
                f"{store} {name:8} median of {args.loads}: "
                + ", ".join(f"{k} {v:.0f} ms" for k, v in figures[name].items()),
                flush=True,
            )
    service.store.close()
    ratio = figures["full"]["table"] / figures["baseline"]["table"]
    print(f"{store}: table rendered with {args.executions} executions / with 10: {ratio:.2f}x", flush=True)
    shutil.rmtree(state, ignore_errors=True)
    return {**figures, "table_ratio": round(ratio, 2)}


def seed(service: Any, tenant: str, count: int) -> None:
    """``count`` execution headers written straight into the store, newest last."""
    from engine.records import ExecutionRecord
    from engine.states import ExecutionStatus

    version = service.apply_workflow(tenant, dict(WORKFLOW)).version.version
    now = time.time()
    for start in range(0, count, BATCH):
        records = []
        for i in range(start, min(count, start + BATCH)):
            status = ExecutionStatus(STATUSES[i % len(STATUSES)])
            created = now - (count - i) * 5.0
            records.append(
                ExecutionRecord(
                    id=uuid.uuid4().hex,
                    tenant=tenant,
                    workflow=NAME,
                    version=version,
                    status=status,
                    created_at=created,
                    updated_at=created + 1,
                    input={"order": f"A-{i}"},
                    finished_at=None if status in (ExecutionStatus.RUNNING, ExecutionStatus.PAUSED) else created + 1,
                    labels={"team": f"t{i % 5}", "region": ["eu", "us"][i % 2]},
                )
            )

        def write(tx: Any, records: list[Any] = records) -> None:
            for record in records:
                tx.put_execution(record)

        service.store.atomic(write)


def api_times(url: str, token: str, loads: int) -> dict[str, float]:
    """What the page asks for, one request at a time (not in the browser): ms per request."""
    paths = {"whoami": "/v1/whoami", "list": "/v1/executions?limit=50", "counts": "/v1/executions/counts"}
    times: dict[str, list[float]] = {name: [] for name in paths}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        for _ in range(loads + 1):
            for name, path in paths.items():
                began = time.perf_counter()
                client.get(path).raise_for_status()
                times[name].append((time.perf_counter() - began) * 1000)
    return {name: statistics.median(values[1:]) for name, values in times.items()}


def load(driver: Any, url: str, token: str, i: int) -> dict[str, float]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # The key goes into the tab's sessionStorage from a page of the same origin that runs no
    # console (the stylesheet), so no earlier page's requests are still running on the server.
    driver.get(f"{url}/ui/style.css?load={i}")
    driver.execute_script("sessionStorage.setItem('conveyor.key', arguments[0])", token)
    driver.get(f"{url}/ui/?load={i}x#/executions")  # a new navigation (the query differs), cold cache
    WebDriverWait(driver, 60, poll_frequency=0.05).until(
        lambda d: (
            d.find_elements(By.CSS_SELECTOR, "#executions tbody tr")
            and d.execute_script(
                "return performance.getEntriesByName('conveyor:counts-rendered').length > 0"
                " || document.querySelector('#counts .notice') !== null"
            )
        )
    )
    figures = driver.execute_script(TIMING)
    if figures["counts"] is None:
        raise SystemExit("the counts did not load: " + driver.find_element(By.ID, "counts").text)
    return {k: float(v) for k, v in figures.items()}


@contextlib.contextmanager
def _browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as ChromeService

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(executable_path=shutil.which("chromedriver")), options=options)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
    try:
        yield driver
    finally:
        driver.quit()


@contextlib.contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _wait_ready(url: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise SystemExit(f"conveyor api did not answer {url}/readyz")


def _viewer() -> Any:
    from engine.auth import Role

    return Role.VIEWER


if __name__ == "__main__":
    main()
