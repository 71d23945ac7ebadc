"""Agents' long-term memory on Firestore: a LangGraph ``BaseStore`` (wrapped by
:class:`~engine.adapters.ai_memory.TenantStore`, which scopes it by tenant).

One collection, ``agent_memory``; a document per item, its id the encoded namespace and key.
``ns_path`` (the namespace's labels joined by U+001F, with a trailing one) serves prefix
searches as a range query. Values are stored as JSON text; a note's writing execution
(:data:`~engine.adapters.ai_memory.WRITER`) is also a field of its own, ``writer``, so the
notes of a deleted execution are found by a query (an index in ``firestore.indexes.json``).
Semantic search (``query``) is not offered: a search with one is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from langgraph.store.base import BaseStore, GetOp, Item, ListNamespacesOp, Op, PutOp, Result, SearchItem, SearchOp

from engine.adapters.ai_memory import WRITER
from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.layout import encode_id

COLLECTION = "agent_memory"
_SEP = "\x1f"


def _path(namespace: Iterable[str]) -> str:
    return "".join(f"{label}{_SEP}" for label in namespace)


def _when(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _matches(value: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    return all(value.get(key) == expected for key, expected in (wanted or {}).items())


class FirestoreMemoryStore(BaseStore):
    """``ttl`` (minutes, as LangGraph counts it) sets ``expires_at``; expired items are not read
    and :meth:`sweep_ttl` deletes them."""

    supports_ttl = True

    def __init__(self, client: firestore.Client, clock: Callable[[], float] = time.time) -> None:
        self._items = client.collection(COLLECTION)
        self._clock = clock

    def _live(self, data: Mapping[str, Any]) -> bool:
        expires = data.get("expires_at")
        return expires is None or expires > self._clock()

    def sweep_ttl(self) -> int:
        """Delete every expired item; how many."""
        query = self._items.where(filter=FieldFilter("expires_at", "<=", self._clock()))
        with translated_errors():
            expired = [snapshot.reference for snapshot in query.stream()]
            for ref in expired:
                ref.delete()
        return len(expired)

    def _ref(self, namespace: tuple[str, ...], key: str) -> Any:
        return self._items.document(encode_id(json.dumps([*namespace, key])))

    def _in(self, prefix: tuple[str, ...], writer: Any = None) -> list[dict[str, Any]]:
        start = _path(prefix)
        query = self._items.where(filter=FieldFilter("ns_path", ">=", start)).where(
            filter=FieldFilter("ns_path", "<", start + "\uffff")
        )
        if writer is not None:
            query = query.where(filter=FieldFilter("writer", "==", writer))
        return [data for snapshot in query.stream() if self._live(data := snapshot.to_dict() or {})]

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        with translated_errors():
            return [self._one(op) for op in ops]

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    def _one(self, op: Op) -> Result:
        if isinstance(op, GetOp):
            snapshot = self._ref(op.namespace, op.key).get()
            data = snapshot.to_dict() if snapshot.exists else None
            return _item(data) if data is not None and self._live(data) else None
        if isinstance(op, PutOp):
            self._put(op)
            return None
        if isinstance(op, SearchOp):
            if op.query:
                raise ValueError("semantic search is not offered by the Firestore memory store")
            writer = (op.filter or {}).get(WRITER)
            found = [
                data for data in self._in(op.namespace_prefix, writer) if _matches(json.loads(data["value"]), op.filter)
            ]
            found.sort(key=lambda data: (-data["updated_at"], data["ns_path"], data["key"]))
            return [_search_item(data) for data in found[op.offset : op.offset + op.limit]]
        if isinstance(op, ListNamespacesOp):
            return self._namespaces(op)
        raise TypeError(f"unknown store operation {type(op).__name__}")

    def _put(self, op: PutOp) -> None:
        ref = self._ref(op.namespace, op.key)
        if op.value is None:
            ref.delete()
            return
        now = self._clock()
        snapshot = ref.get()
        created = (snapshot.to_dict() or {}).get("created_at", now) if snapshot.exists else now
        ref.set(
            {
                "ns": list(op.namespace),
                "ns_path": _path(op.namespace),
                "key": op.key,
                "value": json.dumps(dict(op.value)),
                "writer": op.value.get(WRITER),
                "created_at": created,
                "updated_at": now,
                "expires_at": None if op.ttl is None else now + op.ttl * 60,
            }
        )

    def _namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        prefixes = [tuple(c.path) for c in op.match_conditions or () if c.match_type == "prefix"]
        suffixes = [tuple(c.path) for c in op.match_conditions or () if c.match_type == "suffix"]
        longest = max(prefixes, key=len, default=())
        found: set[tuple[str, ...]] = set()
        for data in self._in(longest):
            namespace = tuple(data["ns"])
            if not all(namespace[: len(p)] == p for p in prefixes):
                continue
            if not all(len(namespace) >= len(s) and namespace[len(namespace) - len(s) :] == s for s in suffixes):
                continue
            found.add(namespace[: op.max_depth] if op.max_depth is not None else namespace)
        return sorted(found)[op.offset : op.offset + op.limit]


def _item(data: Mapping[str, Any] | None) -> Item:
    assert data is not None
    return Item(
        namespace=tuple(data["ns"]),
        key=data["key"],
        value=json.loads(data["value"]),
        created_at=_when(data["created_at"]),
        updated_at=_when(data["updated_at"]),
    )


def _search_item(data: Mapping[str, Any]) -> SearchItem:
    item = _item(data)
    return SearchItem(item.namespace, item.key, item.value, item.created_at, item.updated_at)
