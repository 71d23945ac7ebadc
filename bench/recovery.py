"""Recovery latency under a backlog, in the production topology.

    python bench/recovery.py [--broker redis://...] [--backlog 200 500 1000] [--overload SECONDS]

Not a test: it prints a table and, as its last line, one JSON object with every figure.

For each backlog size it runs the overload scenario of ``tests/chaos/overload.py``: two
prefork workers (concurrency 2) and ``conveyor beat`` over a SQLite file and the Redis
broker, with at least that many step messages waiting in the queue for ``--overload``
seconds (the workers run ~15 short steps a second on a quiet 2-core machine). During the
overload it measures

* **lost start**: from the commit of a start whose message was lost until its step starts
  (bound: ``redispatch_after`` + 5 s = 11 s);
* **killed worker**: from the SIGKILL of the worker running a step until the store shows that
  step re-queued (bound: ``lease`` + reconcile interval + 5 s = 10 s);
* **re-sent**: how many steps the reconciler sent again (the backlog must not be).

A figure that did not happen within its bound plus 60 s is printed as ``>bound+60``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.chaos.overload import GRACE, run_overload  # noqa: E402


def _seconds(value: float | None, bound: float) -> str:
    return f">{bound + GRACE:.0f}" if value is None else f"{value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--backlog", type=int, nargs="+", default=[200, 500])
    parser.add_argument("--overload", type=float, default=90.0, help="seconds of overload per backlog size")
    args = parser.parse_args()
    results = []
    print(f"{'backlog':>8} {'min waiting':>12} {'lost start s':>13} {'killed worker s':>16} {'re-sent':>8}")
    for backlog in args.backlog:
        with tempfile.TemporaryDirectory(prefix="conveyor-recovery-") as tmp:
            report = run_overload(Path(tmp), args.broker, backlog=backlog, overload_seconds=args.overload)
        results.append({"backlog": backlog, **dataclasses.asdict(report)})
        print(
            f"{backlog:>8} {report.min_backlog!s:>12} {_seconds(report.lost_start_run, report.lost_start_bound):>13}"
            f" {_seconds(report.killed_step_requeued, report.requeue_bound):>16} {report.redispatched:>8}",
            flush=True,
        )
    print(json.dumps({"recovery": results}))


if __name__ == "__main__":
    main()
