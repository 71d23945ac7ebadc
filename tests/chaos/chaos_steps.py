"""Step functions for the crash test. They run inside real worker processes that get SIGKILLed.

Every run leaves real side effects in Redis under ``$CONVEYOR_CHAOS_PREFIX``:

* ``<prefix>:runs:<execution_id>/<step_key>`` -- INCR when an attempt *starts*: how many times
  the body ran (a crash mid-step makes it exceed 1);
* ``<prefix>:produced:<execution_id>/<step_key>`` -- RPUSH of every output an attempt *finished*
  with (a unique nonce each), so the test can check the recorded output came from an attempt
  that really produced it;
* ``<prefix>:inflight`` -- a set of attempts currently inside the body, so the killer can
  strike while a step is running.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import uuid
from typing import Any

import redis

from conveyor import step

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None or _client.connection_pool.pid != os.getpid():
        _client = redis.Redis.from_url(os.environ["CONVEYOR_CHAOS_REDIS"])
    return _client


def prefix() -> str:
    return os.environ["CONVEYOR_CHAOS_PREFIX"]


def runs_key(prefix: str, execution_id: str, step_key: str) -> str:
    return f"{prefix}:runs:{execution_id}/{step_key}"


def produced_key(prefix: str, execution_id: str, step_key: str) -> str:
    return f"{prefix}:produced:{execution_id}/{step_key}"


def inflight_key(prefix: str) -> str:
    return f"{prefix}:inflight"


@step
def work(ctx: Any, label: str, min_seconds: float = 0.1, max_seconds: float = 0.6, value: Any = None) -> dict[str, Any]:
    """Count the run, sleep a random while (the window for the killer), return a unique output."""
    client, run_prefix = _redis(), prefix()
    marker = f"{ctx.execution_id}/{ctx.step_key}#{ctx.attempt}"
    client.incr(runs_key(run_prefix, ctx.execution_id, ctx.step_key))
    client.sadd(inflight_key(run_prefix), marker)
    time.sleep(random.uniform(min_seconds, max_seconds))
    output = {"label": label, "attempt": ctx.attempt, "nonce": uuid.uuid4().hex, "value": value}
    client.rpush(produced_key(run_prefix, ctx.execution_id, ctx.step_key), json.dumps(output, sort_keys=True))
    client.srem(inflight_key(run_prefix), marker)
    return output


@step
def kill_worker(ctx: Any) -> None:
    """Count the run, then SIGKILL the process running it: a step that kills every worker."""
    _redis().incr(runs_key(prefix(), ctx.execution_id, ctx.step_key))
    os.kill(os.getpid(), signal.SIGKILL)


def hang_key(prefix: str) -> str:
    return f"{prefix}:hang"


@step
def hang(ctx: Any, seconds: float = 300.0) -> dict[str, Any]:
    """First attempt: note this worker's process group, then block (the killer's target).

    A later attempt (after the worker was killed and the step re-queued) returns at once.
    """
    if ctx.attempt > 1:
        return {"attempt": ctx.attempt}
    _redis().set(hang_key(prefix()), json.dumps({"pgid": os.getpgid(0), "execution_id": ctx.execution_id}))
    time.sleep(seconds)
    return {"attempt": ctx.attempt}


@step
def fail_first(ctx: Any, label: str) -> dict[str, Any]:
    """Fail the first attempt (a retryable error), succeed after: a retry with its backoff timer."""
    if ctx.attempt == 1:
        raise RuntimeError(f"{label}: first attempt fails on purpose")
    return {"label": label, "attempt": ctx.attempt}
