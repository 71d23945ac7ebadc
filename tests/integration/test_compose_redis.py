"""Redis as docker-compose.yml runs it keeps queued steps across a crash and a restart.

A real ``redis-server`` is started with the compose service's own flags (append-only file,
``noeviction``) in a temporary data directory; Conveyor's dispatcher queues step messages; Redis
is SIGKILLed after the append-only file's one-second fsync window and started again on the same
directory; every message is still queued.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis
import yaml

from engine.adapters.celery_config import queue_keys
from engine.adapters.dispatcher_celery import CeleryDispatcher
from engine.ports import Dispatch
from engine.settings import Settings
from tests.services import free_port, port_open

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "conveyor-compose-redis"
MESSAGES = 200

pytestmark = pytest.mark.backend


def compose_redis_flags() -> list[str]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command: list[str] = compose["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    return command[1:]


def start_redis(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.fail("redis-server is needed (apt-get install redis-server)", pytrace=False)
    proc = subprocess.Popen(
        [server, *compose_redis_flags(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        assert proc.poll() is None and time.monotonic() < deadline, "redis-server did not start"
        time.sleep(0.05)
    client = redis.Redis(port=port)
    while True:  # loading the append-only file answers LOADING until done
        try:
            client.ping()
            return proc
        except redis.BusyLoadingError:
            time.sleep(0.05)


def test_queued_steps_survive_a_redis_crash(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = start_redis(tmp_path, port)
    try:
        dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=url, default_queue=QUEUE))
        dispatcher.dispatch([Dispatch("acme", f"exec-{i}", "step") for i in range(MESSAGES)])
        client = redis.Redis.from_url(url)
        normal = queue_keys(QUEUE)[-1]  # step messages wait on the normal-priority list
        assert client.llen(normal) == MESSAGES
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        time.sleep(2)  # appendfsync everysec: what was acknowledged a second ago is on disk
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc = start_redis(tmp_path, port)
        client = redis.Redis.from_url(url)
        messages = [json.loads(raw) for raw in client.lrange(normal, 0, -1)]
        assert len(messages) == MESSAGES
        assert {m["headers"]["task"] for m in messages} == {"conveyor.run_step"}
        assert sorted(m["headers"]["argsrepr"] for m in messages) == sorted(
            repr(["acme", f"exec-{i}", "step"]) for i in range(MESSAGES)
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
