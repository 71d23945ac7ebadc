"""An ``ai.agent`` step in a real worker beside the same LangGraph graph invoked directly.

    python bench/ai_agent.py [--broker redis://...] [--repeat N] [--warmup N]

Not a test: it prints a table and, as its last line, one JSON object with every figure.

The agent has a scripted model (``fake:``) and two no-op tools: tool, tool, answer (three
model turns, two tool calls). Both sides checkpoint with ``AsyncSqliteSaver`` and
``durability="sync"``:

* **direct**: ``create_agent`` + ``ainvoke`` in this process, a new thread per run;
* **conveyor**: a one-step workflow run by a Conveyor worker process (``celery -A tasks.app
  worker --pool prefork``, SQLite store, Redis broker), timed from ``Service.start`` until the
  execution's ``finished_at``.

The two sides run interleaved (one of each per round), so both see the same load on a shared
machine. Overhead = median conveyor / median direct. The target is at most 2x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(1, str(BENCH_DIR.parent))

from _support import Worker, median  # noqa: E402

SCRIPT: list[dict[str, Any]] = [
    {"tool_calls": [{"name": "first_tool", "args": {"value": 1}}]},
    {"tool_calls": [{"name": "second_tool", "args": {"value": 2}}]},
    {"content": "done"},
]
WORKFLOW: dict[str, Any] = {
    "name": "bench-ai-agent",
    "models": {"bench": {"script": SCRIPT}},
    "steps": [
        {
            "id": "agent",
            "type": "ai.agent",
            "with": {
                "model": "fake:bench",
                "prompt": "Run both tools.",
                "tools": ["_ai_tools.first_tool", "_ai_tools.second_tool"],
            },
        }
    ],
}


async def direct_run(path: Path) -> float:
    """The same graph in this process: scripted model, two tools, AsyncSqliteSaver, durability=sync."""
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    from engine.adapters.ai_models import ModelRegistry
    from engine.ai import ModelSettings, ScriptedModel

    @tool
    def first_tool(value: int) -> int:
        """A tool that does nothing but return its argument."""
        return value

    @tool
    def second_tool(value: int) -> int:
        """Another tool that does nothing but return its argument."""
        return value

    scripted = {"bench": ScriptedModel.model_validate({"script": SCRIPT})}
    started = time.perf_counter()
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        model = ModelRegistry().chat_model("fake:bench", ModelSettings(), scripted)
        graph = create_agent(model, [first_tool, second_tool], checkpointer=saver)
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        result = await graph.ainvoke({"messages": [("user", "Run both tools.")]}, config, durability="sync")
    assert result["messages"][-1].content == "done"
    return time.perf_counter() - started


def conveyor_run(service: Any) -> float:
    """One execution of the workflow, from the start call to the recorded end."""
    started = time.time()
    execution_id = service.start("bench", "bench-ai-agent", None).execution.id
    deadline = time.monotonic() + 120
    while True:
        execution = service.get_execution("bench", execution_id)
        if execution.finished_at is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"execution {execution_id} did not finish")
        time.sleep(0.005)
    if execution.status != "SUCCEEDED":
        raise RuntimeError(f"execution {execution_id} ended {execution.status}: {execution.error}")
    return float(execution.finished_at) - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--broker", default=os.environ.get("CONVEYOR_BENCH_BROKER", "redis://127.0.0.1:6379/15"))
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    from engine.bootstrap import build_service
    from engine.settings import Settings

    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"conveyor-bench-ai-{run_id}-"))
    queue = f"bench-ai-{run_id}"
    options: dict[str, Any] = {
        "store": "sqlite",
        "sqlite_path": str(workdir / "bench.db"),
        "broker_url": args.broker,
        "redis_url": args.broker,
        "default_queue": queue,
        "imports": ["_ai_tools"],
        "log_level": "WARNING",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVEYOR_")}
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH_DIR), str(BENCH_DIR.parent), os.environ.get("PYTHONPATH", "")])
    env.update({f"CONVEYOR_{k.upper()}": json.dumps(v) if isinstance(v, list) else str(v) for k, v in options.items()})
    print(f"conveyor ai bench {run_id}: logs and data in {workdir}", file=sys.stderr)

    worker = Worker("tasks.app", queue, env, workdir / "worker.log", concurrency=1)
    worker.start()
    service = build_service(Settings(**options))
    loop = asyncio.new_event_loop()
    direct: list[float] = []
    conveyor: list[float] = []
    try:
        service.apply_workflow("bench", WORKFLOW)
        # Interleaved, so both sides see the same load on a shared machine.
        for _ in range(args.warmup + args.repeat):
            direct.append(loop.run_until_complete(direct_run(workdir / "direct-checkpoints.db")))
            conveyor.append(conveyor_run(service))
        direct, conveyor = direct[args.warmup :], conveyor[args.warmup :]
    finally:
        loop.close()
        worker.stop()
        service.store.close()
    figures = {
        "repeat": args.repeat,
        "direct_ms": round(median(direct) * 1000, 1),
        "conveyor_ms": round(median(conveyor) * 1000, 1),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }
    figures["overhead"] = round(figures["conveyor_ms"] / figures["direct_ms"], 2)
    print(f"{'':<34}{'median per agent step':>24}")
    print(f"{'direct (create_agent + ainvoke)':<34}{figures['direct_ms']:>21.1f} ms")
    print(f"{'conveyor (ai.agent, real worker)':<34}{figures['conveyor_ms']:>21.1f} ms")
    print(f"{'overhead (target <= 2x)':<34}{figures['overhead']:>23.2f}x")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
