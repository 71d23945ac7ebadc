"""Compiled workflow versions, cached in process, and the version each execution runs.

Versions are immutable and an execution is pinned to one for its whole life, so both caches
are always correct; they are bounded only to cap memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from engine.compile import CompiledWorkflow, compile_workflow
from engine.records import ExecutionRecord

K = TypeVar("K")
V = TypeVar("V")

#: Reads the definition document of ``(tenant, workflow, version)``.
DefinitionSource = Callable[[str, str, int], Mapping[str, Any]]


class _Lru(Generic[K, V]):
    """A small thread-safe least-recently-used map."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            if len(self._items) > self._size:
                self._items.popitem(last=False)


class Workflows:
    """Resolves workflow versions to compiled definitions, and executions to their version."""

    def __init__(self, source: DefinitionSource, *, versions: int = 512, executions: int = 50_000) -> None:
        self._source = source
        self._compiled: _Lru[tuple[str, str, int], CompiledWorkflow] = _Lru(versions)
        self._pinned: _Lru[tuple[str, str], tuple[str, int]] = _Lru(executions)

    def get(self, tenant: str, name: str, version: int) -> CompiledWorkflow:
        """The compiled definition of an immutable version (read and compiled once per process)."""
        key = (tenant, name, version)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = compile_workflow(dict(self._source(tenant, name, version)))
            self._compiled.put(key, compiled)
        return compiled

    def of(self, execution: ExecutionRecord) -> CompiledWorkflow:
        """The definition ``execution`` runs; remembers the pin for :meth:`pinned`."""
        self._pinned.put((execution.tenant, execution.id), (execution.workflow, execution.version))
        return self.get(execution.tenant, execution.workflow, execution.version)

    def pinned(self, tenant: str, execution_id: str) -> CompiledWorkflow | None:
        """The definition of an execution seen before in this process, without reading its header.

        Lets a use case read the header and the steps it needs in one round trip.
        """
        found = self._pinned.get((tenant, execution_id))
        return None if found is None else self.get(tenant, *found)
