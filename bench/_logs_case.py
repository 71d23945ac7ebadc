"""The ``logs`` case of ``bench/step_overhead.py``: step logs on vs off, in the same run.

Two Conveyor prefork workers on the same store and broker, one with step logs captured
(``CONVEYOR_STEP_LOGS_ENABLED=true``, the default) and one without, each on a queue of its
own. Each round runs a 20-step linear workflow whose every step logs two lines and prints one
(``chatty``) on one side, then on the other, interleaved so load from elsewhere drifts into both
sides alike; the figure is the ratio of the medians (on / off), with the CPU time the workers'
processes spent per step on each side beside it (read from /proc around each round: less
sensitive to other load on the machine than wall time). A round takes about a tenth of
a second, so the case runs ten times ``--repeat`` rounds (and twice ``--warmup``) to get medians
that the machine's noise does not decide. The workers print at WARNING,
as in the other cases: with logs off the step's INFO lines cost nothing (the logger drops them),
with logs on they are captured, shipped live and stored.

Imported by the benchmark, and by its workers through ``CONVEYOR_IMPORTS`` (``chatty``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _support import Worker, median

from conveyor import step

CHATTY = f"{__name__}.chatty"
STEPS = 20
log = logging.getLogger("bench.chatty")


@step
def chatty(x: Any = None) -> Any:
    """A step that logs a few lines per run."""
    log.info("step got %r", x)
    log.info("working on it")
    print("done")
    return x


def workflow() -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"id": "s1", "type": "task", "with": {"function": CHATTY, "args": {"x": 0}}}]
    for i in range(2, STEPS + 1):
        args = {"x": f"${{steps.s{i - 1}.output}}"}
        steps.append(
            {"id": f"s{i}", "type": "task", "needs": [f"s{i - 1}"], "with": {"function": CHATTY, "args": args}}
        )
    return {"name": "bench-logs", "steps": steps}


def cpu_seconds(worker: Worker) -> float:
    """User and system CPU seconds of a worker's main process and pool processes so far (Linux /proc)."""
    total = 0.0
    pids = [worker.proc.pid] if worker.proc is not None else []
    for pid in pids + worker.child_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # a pool process replaced meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def measure_step_logs(
    store: str,
    *,
    config: Callable[[str], tuple[dict[str, Any], dict[str, str]]],
    driver: Callable[[Any, str], Any],
    queue: str,
    workdir: Path,
    concurrency: int,
    repeat: int,
    warmup: int,
) -> dict[str, Any]:
    """Median seconds of the workflow with step logs on and off, and their ratio.

    ``config(queue)`` gives the settings and worker environment of a Conveyor worker (as the
    other cases use), ``driver(service, tenant)`` what runs a workflow and waits for it
    (``_one``), as the other cases do.
    """
    from engine.bootstrap import build_service
    from engine.settings import Settings

    sides: dict[str, Any] = {}
    workers = []
    try:
        for side, enabled in (("on", True), ("off", False)):
            options, env = config(f"{queue}-{side}")
            extra = {"imports": ["_support", __name__], "step_logs_enabled": enabled}
            options.update(extra)
            env.update({f"CONVEYOR_{k.upper()}": json.dumps(v) for k, v in extra.items()})
            workers.append(
                Worker("tasks.app", f"{queue}-{side}", env, workdir / f"worker-logs-{side}.log", concurrency)
            )
            workers[-1].start()
            service = build_service(Settings(**options))
            service.apply_workflow(f"logs-{side}", workflow())
            sides[side] = driver(service, f"logs-{side}")
        times: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, float] = {"on": 0.0, "off": 0.0}
        pools = dict(zip(("on", "off"), workers, strict=True))
        for round_ in range(warmup + repeat):
            for side in ("on", "off") if round_ % 2 == 0 else ("off", "on"):
                before = cpu_seconds(pools[side])
                seconds = sides[side]._one("bench-logs", {})
                if round_ >= warmup:
                    times[side].append(seconds)
                    cpu[side] += cpu_seconds(pools[side]) - before
        on, off = median(times["on"]), median(times["off"])
        cpu_on, cpu_off = (cpu[side] * 1000 / (repeat * STEPS) for side in ("on", "off"))
        print(f"[{store}] step logs on vs off (20-step linear, 3 lines per step): {on:.3f}s vs {off:.3f}s, "
              f"ratio {on / off:.3f} (target < 1.10); worker CPU per step {cpu_on:.2f} vs {cpu_off:.2f} ms, "
              f"ratio {cpu_on / cpu_off:.3f}", flush=True)  # fmt: skip
        return {
            "on_s": round(on, 4),
            "off_s": round(off, 4),
            "ratio": round(on / off, 3),
            "ms_per_step_added": round((on - off) * 1000 / STEPS, 3),
            "worker_cpu_ms_per_step": {"on": round(cpu_on, 3), "off": round(cpu_off, 3)},
            "cpu_ratio": round(cpu_on / cpu_off, 3),
            "runs": {side: [round(v, 4) for v in values] for side, values in times.items()},
        }
    finally:
        for started in workers:
            started.stop()
        for driven in sides.values():
            driven.service.store.close()
