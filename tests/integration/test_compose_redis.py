"""Redis as docker-compose.yml runs it keeps queued steps across a restart and a crash.

A real ``redis-server`` is started with the compose service's own flags (append-only file,
``noeviction``) in a temporary data directory, and Conveyor's dispatcher queues step messages.
Redis is restarted (SIGTERM, as ``docker compose restart`` does) on the same directory: every
message is still queued. More are queued, Redis reports its append-only file fsynced, and it is
SIGKILLed and started again: every message is still queued.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from engine.adapters.dispatcher_celery import CeleryDispatcher
from engine.ports import Dispatch
from engine.settings import Settings
from tests.services import free_port, port_open, wait_for

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


def fsynced(client: redis.Redis) -> bool:
    """Everything written so far is on disk (nothing buffered, no fsync pending)."""
    info = client.info("persistence")
    return bool(
        info["aof_enabled"]
        and not info["aof_rewrite_in_progress"]
        and info.get("aof_buffer_length", 0) == 0
        and info.get("aof_pending_bio_fsync", 0) == 0
    )


def queued(client: redis.Redis) -> list[dict[str, Any]]:
    """The messages of every priority list of the queue (kombu keeps one list per priority step)."""
    lists = [key for key in client.scan_iter(match=f"{QUEUE}*") if client.type(key) == b"list"]
    return [json.loads(raw) for key in lists for raw in client.lrange(key, 0, -1)]


def test_queued_steps_survive_a_redis_restart_and_a_crash(tmp_path: Path) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    proc = start_redis(tmp_path, port)
    try:
        dispatcher = CeleryDispatcher.from_settings(Settings(broker_url=url, default_queue=QUEUE))
        dispatcher.dispatch([Dispatch("acme", f"exec-{i}", "step") for i in range(MESSAGES)])
        client = redis.Redis.from_url(url)
        assert len(queued(client)) == MESSAGES
        assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"

        proc.send_signal(signal.SIGTERM)  # a restart: Redis writes out its append-only file and exits
        proc.wait(timeout=30)
        proc = start_redis(tmp_path, port)
        client = redis.Redis.from_url(url)
        assert len(queued(client)) == MESSAGES

        dispatcher.dispatch([Dispatch("acme", f"exec-{i}", "step") for i in range(MESSAGES, 2 * MESSAGES)])
        wait_for(lambda: fsynced(client), 30, "Redis fsyncs its append-only file (every second)")
        proc.send_signal(signal.SIGKILL)  # a crash
        proc.wait(timeout=10)
        proc = start_redis(tmp_path, port)
        messages = queued(redis.Redis.from_url(url))
        assert len(messages) == 2 * MESSAGES
        assert {m["headers"]["task"] for m in messages} == {"conveyor.run_step"}
        assert sorted(m["headers"]["argsrepr"] for m in messages) == sorted(
            repr(["acme", f"exec-{i}", "step"]) for i in range(2 * MESSAGES)
        )
    finally:
        proc.kill()
        proc.wait(timeout=10)
