"""Daemon threads for blocking step code, which the interpreter does not wait for at exit.

``asyncio.to_thread`` runs a call in the event loop's default executor, whose threads are
joined when the process exits: a cancelled or timed-out sync step then keeps ``conveyor run``
(or a stopping worker) alive until the step's function returns, which may be never. A
thread cannot be stopped from outside, but the process need not wait for it: the outcome of
a step whose run was abandoned is decided by the store (the step was cancelled, or timed
out), not by the thread.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """An executor whose threads are daemons: started on demand, reused, never joined.

    Like ``ThreadPoolExecutor`` it starts a thread only when no thread is idle; unlike it,
    it has no upper bound (an abandoned call keeps its thread busy, and must not hold up the
    steps after it) and ``shutdown`` does not wait.
    """

    def __init__(self, name: str = "conveyor-step") -> None:
        self._name = name
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child has none of the parent's threads

    def _reset(self) -> None:
        self._work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._started = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        self._work.put((future, fn, args, kwargs))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                self._started += 1
                number = self._started
            threading.Thread(target=self._serve, name=f"{self._name}-{number}", daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            # In a function: an idle thread keeps none of the last call's objects.
            _call(*self._work.get(), finished=self._idle.release)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to do: idle threads are daemons blocked on the queue."""


def _call(
    future: Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    finished: Callable[[], object],
) -> None:
    """Run one call; ``finished`` (the thread is idle again) comes before the caller sees the result."""
    if not future.set_running_or_notify_cancel():
        finished()
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as exc:  # handed to whoever awaits the future, as ThreadPoolExecutor does
        finished()
        future.set_exception(exc)
    else:
        finished()
        future.set_result(result)
