"""Records the RPCs a Firestore store sends, through the generated client and the raw calls.

The emulator still serves every call: what tests assert is what Firestore really accepted.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from engine.adapters.store_firestore import FirestoreStore


@dataclass
class Call:
    """One RPC as sent, and how it ended."""

    method: str
    request: Any
    error: BaseException | None = None
    began: bytes | None = None  # the transaction id a beginning read returned

    def sent(self, name: str) -> Any:
        """A field of the request (a dict or a message) as sent; None when unset."""
        if isinstance(self.request, dict):
            return self.request.get(name)
        # A message reads unset fields as empty, and an empty message set (such as the bare
        # ``read_write`` of ``new_transaction``) is falsy: ask for presence. The raw calls
        # send protobuf messages, the generated client proto-plus ones.
        if hasattr(self.request, "ListFields"):
            present = name in {field.name for field, _ in self.request.ListFields()}
        else:
            present = name in self.request
        return getattr(self.request, name) if present else None


class RpcRecorder:
    """Wraps the transaction RPCs of a store (generated client and raw calls) and keeps every call, in order."""

    METHODS = ("begin_transaction", "batch_get_documents", "commit", "rollback", "run_query")

    def __init__(self, store: FirestoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        for target in (store.client._firestore_api, store.rpc):
            for name in self.METHODS:
                if hasattr(target, name):
                    monkeypatch.setattr(target, name, self._wrap(name, getattr(target, name)))

    def _wrap(self, name: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def recording(*args: Any, request: Any, **kwargs: Any) -> Any:
            entry = Call(name, request)
            with self._lock:
                self.calls.append(entry)
            try:
                result = call(*args, request=request, **kwargs)
            except BaseException as exc:
                entry.error = exc
                raise
            return self._responses(entry, result) if name == "batch_get_documents" else result

        return recording

    @staticmethod
    def _responses(entry: Call, responses: Any) -> Iterator[Any]:
        for response in responses:
            if response.transaction:
                entry.began = response.transaction
            yield response

    def take(self) -> list[Call]:
        with self._lock:
            calls, self.calls = self.calls, []
        return calls


def methods(calls: list[Call]) -> list[str]:
    return [call.method for call in calls]


class RpcCounter:
    """How many of each RPC a block of code sent (see :class:`RpcRecorder`)."""

    def __init__(self, store: FirestoreStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self._recorder = RpcRecorder(store, monkeypatch)

    def take(self) -> dict[str, int]:
        return dict(Counter(methods(self._recorder.take())))
