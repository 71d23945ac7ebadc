"""Real backend services for tests: reuse a running one, or start it; never skip.

``FIRESTORE_EMULATOR_HOST`` / ``PUBSUB_EMULATOR_HOST`` / ``CONVEYOR_TEST_REDIS_URL`` point at
running services (``.ci/run`` starts them). When unset, the emulator is started from
google-cloud-cli for the test session. A service that cannot be reached fails the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(host: str, port: int, seconds: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.25)
    pytest.fail(f"{what} did not start on {host}:{port}", pytrace=False)


@contextlib.contextmanager
def emulator(kind: str, env_var: str, extra_args: list[str]) -> Iterator[str]:
    """Yield ``host:port`` of a running emulator, starting one when ``env_var`` is unset."""
    existing = os.environ.get(env_var)
    if existing:
        host, _, port = existing.rpartition(":")
        if not port_open(host, int(port), timeout=2):
            pytest.fail(f"{env_var}={existing} is set but nothing listens there", pytrace=False)
        yield existing
        return
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.fail(f"google-cloud-cli is needed to start the {kind} emulator", pytrace=False)
    port = free_port()
    address = f"127.0.0.1:{port}"
    command = [gcloud, *kind.split(), "start", f"--host-port={address}", *extra_args]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for("127.0.0.1", port, 90, f"{kind} emulator", proc)
        os.environ[env_var] = address
        yield address
    finally:
        os.environ.pop(env_var, None)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def redis_url() -> str:
    """The Redis used by tests; fails (never skips) when it is not reachable."""
    url = os.environ.get("CONVEYOR_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {url} is not reachable: {exc}", pytrace=False)
    return url


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.2) -> T | None:
    """Poll ``predicate`` until it returns something truthy (returned), or None after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll ``predicate`` until it returns something truthy (returned), failing after ``timeout`` s."""
    value = poll(predicate, timeout, interval)
    if value is None:
        raise AssertionError(f"not within {timeout}s: {what}")
    return value


@contextlib.contextmanager
def conveyor_api(options: dict[str, str], log_path: Path) -> Iterator[str]:
    """A real ``conveyor api`` process configured by ``CONVEYOR_<OPTION>`` variables only.

    Yields its base URL once ``/healthz`` answers; stopped (SIGTERM, then SIGKILL) on exit.
    ``options`` should include ``api_port``; the process's output goes to ``log_path``.
    """
    import httpx

    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update({f"CONVEYOR_{k.upper()}": v for k, v in options.items()})
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor", "api"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{options['api_port']}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, f"the API exited: {log_path.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"the API did not start: {log_path.read_text(errors='replace')}"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
