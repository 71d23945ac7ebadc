"""engine.threads: sync step code runs in daemon threads that are reused and never joined."""

from __future__ import annotations

import threading

import pytest

from engine.threads import DaemonThreadPool


def test_calls_run_in_reused_daemon_threads():
    pool = DaemonThreadPool(name="unit-pool")
    first = pool.submit(lambda: threading.current_thread())
    thread = first.result(timeout=5)
    assert thread.daemon and thread.name == "unit-pool-1"
    assert pool.submit(lambda: threading.current_thread()).result(timeout=5) is thread  # idle: reused


def test_a_busy_thread_gets_a_sibling_and_errors_reach_the_caller():
    pool = DaemonThreadPool(name="unit-busy")
    release = threading.Event()
    blocked = pool.submit(release.wait, 5)
    other = pool.submit(lambda: threading.current_thread().name)
    assert other.result(timeout=5) in {"unit-busy-1", "unit-busy-2"}  # not queued behind the blocked call
    assert not blocked.done()
    release.set()
    assert blocked.result(timeout=5) is True
    with pytest.raises(ZeroDivisionError):
        pool.submit(lambda: 1 / 0).result(timeout=5)
