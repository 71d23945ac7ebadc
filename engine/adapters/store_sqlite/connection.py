"""Connections to the database file and the transactions run on them.

One connection per thread (never used across a fork); every write transaction starts with
``BEGIN IMMEDIATE`` and a read one with a deferred ``BEGIN``; a transaction the database was
too busy for is retried with backoff, and ``sqlite3`` errors become Conveyor's errors here.

Connections commit with ``synchronous = NORMAL``: a commit writes the write-ahead log but does
not wait for the disk, so the write lock is held for the write alone and other writers are not
kept waiting through an fsync. :func:`sync_to_disk` then waits for the disk outside the lock,
for the commits that must survive a power loss (see ``SqliteStore.atomic``).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from engine.errors import AlreadyExists, ConveyorError, StoreUnavailable

T = TypeVar("T")

_BUSY_TIMEOUT_SECONDS = 30.0
_ATTEMPTS = 8
_BACKOFF_SECONDS = 0.01


class Connections:
    """One connection per thread (and per process: connections never cross a fork)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._owned: list[tuple[threading.Thread, sqlite3.Connection]] = []
        # Connections opened by a parent process before fork(). SQLite forbids using them in the
        # child, and closing them there could disturb the parent's locks, so they are kept
        # referenced (never garbage-collected, hence never closed) and never used.
        self._inherited: list[sqlite3.Connection] = []
        self._closed = False

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._pid == os.getpid() and not self._closed:
            return conn
        if self._pid != os.getpid():
            self._after_fork()
        with self._lock:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            self._close_orphans()
            conn = _connect(self._path)
            self._owned.append((threading.current_thread(), conn))
        self._local.conn = conn
        return conn

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _, conn in self._owned:
                conn.close()
            self._owned = []

    def _after_fork(self) -> None:
        # Only the forking thread exists in a fresh child, so the lock may be replaced
        # (a copy of it could be held forever by a thread that did not survive the fork).
        self._lock = threading.Lock()
        self._inherited.extend(conn for _, conn in self._owned)
        self._owned = []
        self._pid = os.getpid()

    def _close_orphans(self) -> None:
        """Close the connections of threads that have ended, so short-lived threads do not leak."""
        alive = []
        for thread, conn in self._owned:
            if thread.is_alive():
                alive.append((thread, conn))
            else:
                conn.close()
        self._owned = alive


def _connect(path: str) -> sqlite3.Connection:
    try:
        # isolation_level=None: this module issues BEGIN/COMMIT itself. check_same_thread=False
        # only so close() can close every thread's connection; each is used by one thread.
        conn = sqlite3.connect(path, timeout=_BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL: a commit survives a crash of the process at once, and a power loss once
        # sync_to_disk has run (outside the write lock, unlike FULL's fsync at each commit).
        conn.execute("PRAGMA synchronous = NORMAL")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite store {path!r}: {exc}") from exc
    return conn


def sync_to_disk(path: str) -> None:
    """Make every transaction committed to the database at ``path`` survive a power loss.

    It syncs what ``synchronous = FULL`` syncs at each commit: the write-ahead log, ``-wal``
    beside the database file (SQLite's documented name for it). Commits a checkpoint already
    copied into the database file were synced there by that checkpoint before the log could
    be reused or removed, so a missing log means there is nothing left to sync.
    """
    try:
        fd = os.open(path + "-wal", os.O_RDONLY)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreUnavailable(f"cannot open the write-ahead log of SQLite store {path!r}: {exc}") from exc
    try:
        _sync_data(fd)
    except OSError as exc:
        # The commit may be lost: the caller must not report it as done.
        raise StoreUnavailable(f"cannot sync SQLite store {path!r} to disk: {exc}") from exc
    finally:
        os.close(fd)


#: fdatasync where the platform has it (it skips metadata a recovery does not need), else fsync.
_sync_data: Callable[[int], None] = getattr(os, "fdatasync", os.fsync)


def run_transaction(conn: sqlite3.Connection, begin: str, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in a transaction opened by ``begin``, retrying when the database is busy."""
    for attempt in range(_ATTEMPTS):
        try:
            return _once(conn, begin, work)
        except sqlite3.OperationalError as exc:
            if not _is_contention(exc) or attempt == _ATTEMPTS - 1:
                raise translate(exc) from exc
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        # busy_timeout already waited; this covers the busy cases SQLite reports without waiting.
        time.sleep(_BACKOFF_SECONDS * 2**attempt * random.uniform(0.5, 1.5))  # noqa: S311 - jitter only
    raise AssertionError("unreachable")


def _once(conn: sqlite3.Connection, begin: str, work: Callable[[sqlite3.Connection], T]) -> T:
    conn.execute(begin)
    try:
        result = work(conn)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def _is_contention(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        # Extended codes (SQLITE_BUSY_SNAPSHOT, ...) keep the primary code in the low byte.
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    return "locked" in str(exc) or "busy" in str(exc)


def translate(exc: sqlite3.Error) -> ConveyorError:
    if isinstance(exc, sqlite3.IntegrityError):
        if "UNIQUE" in str(exc):
            return AlreadyExists(f"a record with that identity already exists ({exc})")
        return ConveyorError(f"the store rejected a write: {exc}")
    return StoreUnavailable(f"SQLite store error: {exc}")
