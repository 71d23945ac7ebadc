"""Long-term memory for agents: a LangGraph ``BaseStore`` scoped by tenant, and the agent's tools.

:class:`TenantStore` wraps any store and puts every namespace under ``("tenant", <tenant>)``:
reads, writes, searches and namespace listings of one tenant never reach another's items,
whatever namespace a step asks for. The embedded backend is LangGraph's own ``SqliteStore``
(a file beside the checkpoints); on Firestore, :class:`FirestoreMemoryStore` (one collection,
``agent_memory``, a document per item).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from typing import Any

from langchain_core.tools import BaseTool, StructuredTool
from langgraph.store.base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

_ROOT = "tenant"
#: The value field naming the execution that wrote a note: deleting the execution deletes the
#: notes it wrote last (:func:`forget_notes`).
WRITER = "execution_id"
#: Notes deleted per search when forgetting an execution's notes.
_FORGET_PAGE = 100


def tenant_label(tenant: str) -> str:
    """The tenant as a namespace label (labels may not hold ``.``)."""
    return tenant.replace("%", "%25").replace(".", "%2E")


class TenantStore(BaseStore):
    """Every namespace of ``inner`` prefixed by the tenant's, and the prefix hidden again."""

    def __init__(self, inner: BaseStore, tenant: str) -> None:
        self.inner = inner
        self.prefix: tuple[str, ...] = (_ROOT, tenant_label(tenant))
        self.supports_ttl = inner.supports_ttl

    def _in(self, namespace: tuple[str, ...]) -> tuple[str, ...]:
        return self.prefix + tuple(namespace)

    def _out(self, namespace: Iterable[str]) -> tuple[str, ...]:
        found = tuple(namespace)
        assert found[: len(self.prefix)] == self.prefix, "an item of another tenant"
        return found[len(self.prefix) :]

    def _scoped(self, op: Op) -> Op:
        if isinstance(op, GetOp):
            return GetOp(self._in(op.namespace), op.key, op.refresh_ttl)
        if isinstance(op, PutOp):
            return PutOp(self._in(op.namespace), op.key, op.value, op.index, op.ttl)
        if isinstance(op, SearchOp):
            return SearchOp(self._in(op.namespace_prefix), op.filter, op.limit, op.offset, op.query, op.refresh_ttl)
        if isinstance(op, ListNamespacesOp):
            conditions = [MatchCondition("prefix", self.prefix)]
            for condition in op.match_conditions or ():
                path = tuple(condition.path)
                conditions.append(
                    MatchCondition("prefix", self._in(path)) if condition.match_type == "prefix" else condition
                )
            depth = None if op.max_depth is None else op.max_depth + len(self.prefix)
            return ListNamespacesOp(tuple(conditions), depth, op.limit, op.offset)
        raise TypeError(f"unknown store operation {type(op).__name__}")

    def _unscoped(self, result: Any) -> Any:
        if isinstance(result, SearchItem):
            return SearchItem(
                self._out(result.namespace),
                result.key,
                result.value,
                result.created_at,
                result.updated_at,
                result.score,
            )
        if isinstance(result, Item):
            return Item(
                namespace=self._out(result.namespace),
                key=result.key,
                value=result.value,
                created_at=result.created_at,
                updated_at=result.updated_at,
            )
        if isinstance(result, list):
            return [self._unscoped(item) for item in result]
        if isinstance(result, tuple):
            return self._out(result)
        return result

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return [self._unscoped(result) for result in self.inner.batch([self._scoped(op) for op in ops])]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))


def sweep_expired(store: BaseStore) -> int:
    """Delete the items whose time to live has passed (every tenant's); how many."""
    sweep = getattr(store, "sweep_ttl", None)
    return int(sweep()) if callable(sweep) else 0


def forget_notes(store: BaseStore, tenant: str, execution_id: str) -> int:
    """Delete the tenant's notes last written by ``execution_id`` (any namespace); how many.

    A note another execution replaced since belongs to that one and stays. Idempotent.
    """
    scoped, deleted = TenantStore(store, tenant), 0
    while found := scoped.search((), filter={WRITER: execution_id}, limit=_FORGET_PAGE):
        for item in found:
            scoped.delete(item.namespace, item.key)
        deleted += len(found)
    return deleted


def memory_tools(
    store: BaseStore, namespace: tuple[str, ...], ttl: float | None = None, *, execution_id: str
) -> list[BaseTool]:
    """``remember`` (save a note under a key; the same key replaces it; kept ``ttl`` seconds when
    given) and ``recall`` (the notes saved so far, newest first) over ``namespace`` of a
    tenant-scoped store. Each note records ``execution_id`` as its writer (:data:`WRITER`)."""

    async def remember(key: str, note: str) -> str:
        value = {"note": note, WRITER: execution_id}
        await store.aput(namespace, key, value, ttl=None if ttl is None else ttl / 60)
        return f"remembered {key!r}"

    async def recall(limit: int = 20) -> str:
        found = await store.asearch(namespace, limit=max(1, min(limit, 100)))
        found.sort(key=lambda item: item.updated_at, reverse=True)
        return json.dumps({item.key: item.value.get("note") for item in found})

    return [
        StructuredTool.from_function(
            coroutine=remember, name="remember", description="Save a note for later conversations under a short key."
        ),
        StructuredTool.from_function(
            coroutine=recall, name="recall", description="Read the notes saved in earlier conversations."
        ),
    ]



def sqlite_memory(path: str) -> BaseStore:
    """LangGraph's ``SqliteStore`` on its own file (WAL), shared by the threads of a process.

    It reads expired items until they are swept, so every batch that reads sweeps first (one
    indexed delete): an expired note is never recalled, even one that expired during a run.
    """
    import sqlite3

    from langgraph.store.sqlite import SqliteStore

    class SweptSqliteStore(SqliteStore):
        def batch(self, ops: Iterable[Op]) -> list[Result]:
            ops = list(ops)
            if any(isinstance(op, GetOp | SearchOp | ListNamespacesOp) for op in ops):
                self.sweep_ttl()
            return super().batch(ops)

    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode = WAL")
    store = SweptSqliteStore(conn, ttl={"refresh_on_read": False})
    store.setup()
    return store
