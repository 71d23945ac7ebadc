"""What a worker pool process does once at start, checked in a process of its own."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_pool_process_builds_its_runner_then_leaves_startup_objects_out_of_collection(tmp_path: Path) -> None:
    # In a subprocess: freezing would otherwise change this test session's own collector.
    script = textwrap.dedent(
        """
        import gc
        import tasks.app as worker

        assert gc.get_freeze_count() == 0
        worker._build_runner_in_child()
        frozen = gc.get_freeze_count()
        assert worker._runner is not None
        # The runner and its store client are among the frozen: a later collection skips them.
        assert frozen > 10_000, frozen
        gc.collect()
        assert gc.get_freeze_count() == frozen
        print("ok", frozen)
        """
    )
    env = {"CONVEYOR_SQLITE_PATH": str(tmp_path / "store.db"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok ")
