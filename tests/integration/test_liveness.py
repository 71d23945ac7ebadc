"""The chart's heartbeat-file liveness probe against real processes: a prefork Celery worker and
``conveyor beat``. The probe command is taken from the rendered chart, run as the kubelet would
(``sh -c``), and must answer in milliseconds and fail once the process's loop stops."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.chaos.conftest import WorkerProcess, worker_command, worker_env
from tests.chart.helm import render
from tests.services import wait_for

pytestmark = pytest.mark.backend

MAX_AGE = 3


def probe_command(file: Path, component: str) -> list[str]:
    liveness = {"file": str(file), "maxAgeSeconds": MAX_AGE}
    docs = render({"worker": {"liveness": liveness}, "beat": {"liveness": liveness}}).docs
    deployment = next(
        d
        for d in docs
        if d["kind"] == "Deployment" and d["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CONVEYOR_LIVENESS_FILE"] == str(file)
    command: list[str] = container["livenessProbe"]["exec"]["command"]
    return command


def probe(command: list[str]) -> tuple[bool, float]:
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, check=False)
    return result.returncode == 0, time.perf_counter() - started




def test_worker_liveness_probe(tmp_path: Path, redis_server_url: str) -> None:
    file = tmp_path / "liveness"
    command = probe_command(file, "worker")
    queue = f"liveness-{uuid.uuid4().hex[:8]}"
    env = worker_env(
        {"broker_url": redis_server_url, "state_dir": tmp_path / "state", "liveness_file": file},
        redis_server_url,
        queue,
    )
    worker = WorkerProcess(worker_command(queue, f"{queue}@%h", concurrency=1), env, tmp_path / "worker.log")
    worker.start()
    try:
        worker.wait_ready()
        wait_for(file.exists, 30, "the worker writes its heartbeat file")
        timings = []
        for _ in range(5):
            alive, seconds = probe(command)
            assert alive
            timings.append(seconds)
        assert statistics.median(timings) < 0.1, f"probe took {timings}"

        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGSTOP)  # the worker's main loop (and so its heartbeat) stops
        try:
            wait_for(lambda: not probe(command)[0], MAX_AGE + 10, "the probe fails once the heartbeat stops")
        finally:
            os.kill(worker.proc.pid, signal.SIGCONT)
        wait_for(lambda: probe(command)[0], 15, "the probe passes again once the worker runs")
    finally:
        worker.stop()
    assert not file.exists(), "a worker that shut down cleanly removes its heartbeat file"


def test_beat_liveness_probe(tmp_path: Path) -> None:
    file = tmp_path / "liveness"
    command = probe_command(file, "beat")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env.update(CONVEYOR_STATE_DIR=str(tmp_path / "state"), CONVEYOR_LIVENESS_FILE=str(file), PYTHONUNBUFFERED="1")
    log = (tmp_path / "beat.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor", "beat"], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: probe(command)[0], 60, "beat writes its heartbeat file")
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            wait_for(lambda: not probe(command)[0], MAX_AGE + 10, "the probe fails once beat stops ticking")
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        wait_for(lambda: probe(command)[0], 15, "the probe passes again once beat ticks")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
