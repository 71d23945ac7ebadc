"""Step functions and workflow definitions for the integration tests (imported by workers too)."""

from __future__ import annotations

import threading
import time
from typing import Any

from conveyor import step

F = __name__

#: Set by a test to let :func:`gated` finish (in-process workers share this module).
GATE = threading.Event()


@step
def fetch(n: int) -> dict[str, Any]:
    items = list(range(1, n + 1))
    return {"items": items, "total": sum(items)}


@step
def flaky(ctx: Any, fail_times: int) -> dict[str, int]:
    """Fails its first ``fail_times`` attempts (decided by the stored attempt, so duplicates agree)."""
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
    return {"attempt": ctx.attempt}


@step
def square(x: int) -> int:
    return x * x


@step
def whoami(ctx: Any, label: str) -> dict[str, Any]:
    return {"label": label, "attempt": ctx.attempt}


@step
def gated(ctx: Any) -> dict[str, Any]:
    """Waits for :data:`GATE` (at most 20s), then reports who finished."""
    GATE.wait(20)
    return {"by": "second worker", "attempt": ctx.attempt}


#: When :func:`long_running` began, per execution (in-process workers share this module).
STARTED: dict[str, float] = {}


@step
def long_running(ctx: Any, seconds: float) -> dict[str, Any]:
    """Records when it began, then runs for ``seconds``."""
    STARTED[ctx.execution_id] = time.time()
    time.sleep(seconds)
    return {"slept": seconds}


def task(step_id: str, function: str, needs: tuple[str, ...] = (), **extra: Any) -> dict[str, Any]:
    args = extra.pop("args", {})
    return {
        "id": step_id,
        "type": "task",
        "needs": list(needs),
        "with": {"function": f"{F}.{function}", "args": args},
        **extra,
    }


#: Linear steps, a flaky step that succeeds on its third attempt, a switch, a foreach and
#: two conditional branches (one taken, one skipped).
PIPELINE: dict[str, Any] = {
    "name": "it-pipeline",
    "inputs": {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}},
    "steps": [
        task("fetch", "fetch", args={"n": "${input.n}"}),
        task(
            "flaky",
            "flaky",
            ("fetch",),
            args={"fail_times": 2},
            retry={"max_attempts": 3, "backoff": "fixed", "initial": "100ms", "jitter": False},
        ),
        {
            "id": "route",
            "type": "switch",
            "needs": ["flaky"],
            "with": {"cases": [{"when": "steps.fetch.output.total > 10", "value": "big"}], "default": "small"},
        },
        task("squares", "square", ("route",), args={"x": "${item}"}, foreach="steps.fetch.output.items", concurrency=2),
        {
            "id": "big",
            "type": "transform",
            "needs": ["route", "squares"],
            "when": 'steps.route.output.value == "big"',
            "with": {"value": {"sum": "${steps.fetch.output.total}", "squares": "${steps.squares.output}"}},
        },
        {
            "id": "small",
            "type": "transform",
            "needs": ["route"],
            "when": 'steps.route.output.value == "small"',
            "with": {"value": "tiny"},
        },
    ],
    "outputs": {
        "route": "steps.route.output.value",
        "flaky_attempt": "steps.flaky.output.attempt",
        "big": "steps.big.output",
    },
}

PIPELINE_OUTPUT = {"route": "big", "flaky_attempt": 3, "big": {"sum": 15, "squares": [1, 4, 9, 16, 25]}}
