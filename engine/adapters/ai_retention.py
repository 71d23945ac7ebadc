"""Deleting what AI steps kept of an execution: the :class:`~engine.ports.AgentData` adapters.

Agent checkpoints are deleted by thread (``delete_thread`` of the same savers the steps use)
and memory notes by their writing execution (:func:`~engine.adapters.ai_memory.forget_notes`).
LangGraph is imported on first use only: the reconciler that deletes executions without AI
steps never loads it.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.ai import agent_thread_id
from engine.errors import StoreUnavailable

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore


class SqliteAgentData:
    """Checkpoints in the embedded checkpoint file, memory in the ``-memory.db`` file beside it.

    A file that does not exist holds nothing to delete and is not created.
    """

    def __init__(self, checkpoint_path: Path, memory_path: Path) -> None:
        self._checkpoints = checkpoint_path
        self._memory_path = memory_path
        self._memory_store: BaseStore | None = None
        self._lock = threading.Lock()  # the reconciler deletes several executions at once

    @property
    def _memory(self) -> BaseStore:
        from engine.adapters.ai_memory import sqlite_memory

        with self._lock:
            if self._memory_store is None:
                self._memory_store = sqlite_memory(str(self._memory_path))
            return self._memory_store

    def forget_execution(self, tenant: str, execution_id: str, agent_step_keys: Sequence[str]) -> None:
        from engine.adapters.ai_memory import forget_notes

        try:
            if self._checkpoints.exists():
                self._delete_threads([agent_thread_id(tenant, execution_id, key) for key in agent_step_keys])
            if self._memory_path.exists():
                forget_notes(self._memory, tenant, execution_id)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"deleting agent data failed: {exc}") from exc

    def _delete_threads(self, thread_ids: Sequence[str]) -> None:
        from langgraph.checkpoint.sqlite import SqliteSaver

        conn = sqlite3.connect(str(self._checkpoints), timeout=30.0, check_same_thread=False)
        try:
            saver = SqliteSaver(conn)
            for thread_id in thread_ids:
                saver.delete_thread(thread_id)
        finally:
            conn.close()


class FirestoreAgentData:
    """Threads under ``agent_threads`` and notes in ``agent_memory``, on the store's client."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def forget_execution(self, tenant: str, execution_id: str, agent_step_keys: Sequence[str]) -> None:
        from engine.adapters.ai_memory import forget_notes
        from engine.adapters.checkpoint_firestore import FirestoreSaver
        from engine.adapters.memory_firestore import FirestoreMemoryStore
        from engine.adapters.store_firestore.errors import translated_errors

        saver = FirestoreSaver(self._client)
        with translated_errors():
            for key in agent_step_keys:
                saver.delete_thread(agent_thread_id(tenant, execution_id, key))
            forget_notes(FirestoreMemoryStore(self._client), tenant, execution_id)
