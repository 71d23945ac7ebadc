"""A LangGraph checkpoint saver on Firestore, fenced by the step's lease epoch.

Layout: one subtree per thread, ``agent_threads/{thread}`` with the thread id escaped by
:func:`encode_id` (so ``/`` and any other text is a valid, distinct document id):

* ``agent_checkpoints/{ns}~{checkpoint id}``: the checkpoint without its channel values,
  its metadata and parent id;
* ``agent_blobs/{ns}~{channel}~{version}``: each channel value, stored once per version;
* ``agent_writes/{ns}~{checkpoint id}~{task id}~{index}``: pending writes of tasks.

A serialized value larger than :data:`PART_BYTES` is split into ``parts/{n}`` documents
below its own, so no document nears Firestore's 1 MiB limit. Deleting a thread deletes
its subtree recursively and nothing else (``t1`` never touches ``t1_x``).

**Fencing**: built with a :class:`LeaseFence`, every write commits in a transaction that
first reads the step's record and refuses (``LeaseLost``) unless the step is still RUNNING
with the lease epoch the worker holds: a worker that lost its lease cannot write
checkpoints. Reads are plain reads. Ordering uses the ``checkpoint_id`` field (the emulator
refuses descending scans by document id).
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from google.cloud import firestore
from google.cloud.firestore_v1 import DocumentReference
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from engine.adapters.store_firestore.layout import Paths, encode_id
from engine.errors import LeaseLost

P = ParamSpec("P")
T = TypeVar("T")


def _in_thread(
    method: Callable[Concatenate[FirestoreSaver, P], T],
) -> Callable[Concatenate[FirestoreSaver, P], Coroutine[Any, Any, T]]:
    """The async twin of a sync method: the same call, run in a worker thread."""

    async def run(self: FirestoreSaver, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(method, self, *args, **kwargs)

    return run


def _listed_in_thread(
    method: Callable[Concatenate[FirestoreSaver, P], Iterator[T]],
) -> Callable[Concatenate[FirestoreSaver, P], AsyncIterator[T]]:
    """The async twin of a sync generator: all its items collected in a worker thread."""

    async def run(self: FirestoreSaver, /, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[T]:
        items = await asyncio.to_thread(lambda: builtins.list(method(self, *args, **kwargs)))
        for item in items:
            yield item

    return run


#: Largest serialized value kept in its own document; larger ones are split into parts.
PART_BYTES = 512 * 1024
#: Documents per commit (Firestore allows 500 writes per commit).
_BATCH = 400


@dataclass(frozen=True)
class LeaseFence:
    """The step whose lease must still be held, with the epoch of that lease."""

    tenant: str
    execution_id: str
    step_key: str
    epoch: int


class FirestoreSaver(BaseCheckpointSaver[str]):
    """Checkpoints of LangGraph threads in Firestore; see the module docstring."""

    def __init__(
        self, client: firestore.Client, *, fence: LeaseFence | None = None, serde: SerializerProtocol | None = None
    ) -> None:
        super().__init__(serde=serde)
        self.client = client
        self.fence = fence
        self._paths = Paths(client)

    # ------------------------------------------------------------------ layout

    def _thread(self, thread_id: str) -> DocumentReference:
        ref: DocumentReference = self.client.collection("agent_threads").document(encode_id(thread_id))
        return ref

    def _checkpoint(self, thread_id: str, ns: str, checkpoint_id: str) -> DocumentReference:
        ref: DocumentReference = (
            self._thread(thread_id).collection("agent_checkpoints").document(f"{encode_id(ns)}~{checkpoint_id}")
        )
        return ref

    def _blob(self, thread_id: str, ns: str, channel: str, version: str | int | float) -> DocumentReference:
        name = f"{encode_id(ns)}~{encode_id(channel)}~{encode_id(str(version))}"
        ref: DocumentReference = self._thread(thread_id).collection("agent_blobs").document(name)
        return ref

    def _write_doc(self, thread_id: str, ns: str, checkpoint_id: str, task_id: str, idx: int) -> DocumentReference:
        name = f"{encode_id(ns)}~{checkpoint_id}~{encode_id(task_id)}~{idx}"
        ref: DocumentReference = self._thread(thread_id).collection("agent_writes").document(name)
        return ref

    # ------------------------------------------------------------------ values

    def _packed(self, ref: DocumentReference, fields: dict[str, Any], typed: tuple[str, bytes]) -> list[Any]:
        """(ref, fields) writes storing ``typed`` in ``fields`` or, when large, in parts below ``ref``."""
        kind, data = typed
        if len(data) <= PART_BYTES:
            return [(ref, {**fields, "type": kind, "data": data, "parts": 0})]
        chunks = [data[i : i + PART_BYTES] for i in range(0, len(data), PART_BYTES)]
        writes: list[Any] = [(ref, {**fields, "type": kind, "data": None, "parts": len(chunks)})]
        writes += [(ref.collection("parts").document(f"{n:06d}"), {"data": chunk}) for n, chunk in enumerate(chunks)]
        return writes

    def _unpacked(self, ref: DocumentReference, fields: dict[str, Any]) -> Any:
        if not fields.get("parts"):
            return self.serde.loads_typed((fields["type"], fields["data"]))
        parts = ref.collection("parts").order_by("__name__").stream()
        data = b"".join(part.to_dict()["data"] for part in parts)
        return self.serde.loads_typed((fields["type"], data))

    def _commit(self, writes: list[Any]) -> None:
        """Write everything, fenced: the first commit checks the lease in a transaction."""
        fence = self.fence
        if fence is None:
            for start in range(0, len(writes), _BATCH):
                batch = self.client.batch()
                for ref, fields in writes[start : start + _BATCH]:
                    batch.set(ref, fields)
                batch.commit()
            return
        step_ref = self._paths.step(fence.tenant, fence.execution_id, fence.step_key)
        for start in range(0, len(writes), _BATCH):
            chunk = writes[start : start + _BATCH]

            @firestore.transactional
            def fenced(transaction: firestore.Transaction, chunk: list[Any] = chunk) -> None:
                step = step_ref.get(transaction=transaction).to_dict() or {}
                if step.get("status") != "RUNNING" or step.get("lease_epoch") != fence.epoch:
                    raise LeaseLost(
                        f"step {fence.step_key!r} is no longer leased with epoch {fence.epoch}: checkpoint refused"
                    )
                for ref, fields in chunk:
                    transaction.set(ref, fields)

            fenced(self.client.transaction())

    # ------------------------------------------------------------------ reads

    def _tuple(self, thread_id: str, snapshot: Any) -> CheckpointTuple:
        fields = snapshot.to_dict()
        ns, checkpoint_id, parent_id = fields["ns"], fields["checkpoint_id"], fields.get("parent_id")
        checkpoint: Checkpoint = self.serde.loads_typed((fields["type"], fields["data"]))
        values: dict[str, Any] = {}
        refs = [self._blob(thread_id, ns, channel, v) for channel, v in checkpoint["channel_versions"].items()]
        for blob in self.client.get_all(refs) if refs else ():
            data: dict[str, Any] = blob.to_dict() or {}
            if data and data["type"] != "empty":
                values[data["channel"]] = self._unpacked(blob.reference, data)
        writes_query = (
            self._thread(thread_id)
            .collection("agent_writes")
            .where(filter=firestore.FieldFilter("ns", "==", ns))
            .where(filter=firestore.FieldFilter("checkpoint_id", "==", checkpoint_id))
        )
        pending = sorted(
            (w.to_dict() | {"_ref": w.reference} for w in writes_query.stream()),
            key=lambda w: (w["task_id"], w["idx"]),
        )
        config: RunnableConfig = {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint_id}
        }
        parent: RunnableConfig | None = (
            {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": parent_id}}
            if parent_id
            else None
        )
        return CheckpointTuple(
            config=config,
            checkpoint={**checkpoint, "channel_values": values},
            metadata=self.serde.loads_typed((fields["metadata_type"], fields["metadata"])),
            parent_config=parent,
            pending_writes=[(w["task_id"], w["channel"], self._unpacked(w["_ref"], w)) for w in pending],
        )

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        if checkpoint_id := get_checkpoint_id(config):
            snapshot = self._checkpoint(thread_id, ns, checkpoint_id).get()
            return self._tuple(thread_id, snapshot) if snapshot.exists else None
        query = (
            self._thread(thread_id)
            .collection("agent_checkpoints")
            .where(filter=firestore.FieldFilter("ns", "==", ns))
            .order_by("checkpoint_id", direction=firestore.Query.DESCENDING)
            .limit(1)
        )
        latest = next(iter(query.stream()), None)
        return self._tuple(thread_id, latest) if latest is not None else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        if config is not None:
            query: Any = self._thread(config["configurable"]["thread_id"]).collection("agent_checkpoints")
            ns = config["configurable"].get("checkpoint_ns")
            if ns is not None:
                query = query.where(filter=firestore.FieldFilter("ns", "==", ns))
        else:
            query = self.client.collection_group("agent_checkpoints")
        wanted_id = get_checkpoint_id(config) if config else None
        before_id = get_checkpoint_id(before) if before else None
        snapshots = sorted(query.stream(), key=lambda s: s.get("checkpoint_id"), reverse=True)
        for snapshot in snapshots:
            fields = snapshot.to_dict()
            if wanted_id and fields["checkpoint_id"] != wanted_id:
                continue
            if before_id and fields["checkpoint_id"] >= before_id:
                continue
            if filter:
                metadata = self.serde.loads_typed((fields["metadata_type"], fields["metadata"]))
                if not all(metadata.get(key) == value for key, value in filter.items()):
                    continue
            if limit is not None:
                if limit <= 0:
                    return
                limit -= 1
            yield self._tuple(fields["thread_id"], snapshot)

    # ------------------------------------------------------------------ writes

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        stored = checkpoint.copy()
        values: dict[str, Any] = stored.pop("channel_values")  # type: ignore[misc]
        writes: list[Any] = [(self._thread(thread_id), {"thread_id": thread_id})]
        for channel, version in new_versions.items():
            typed = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", b"")
            fields = {"channel": channel, "ns": ns, "version": str(version)}
            writes += self._packed(self._blob(thread_id, ns, channel, version), fields, typed)
        kind, data = self.serde.dumps_typed(stored)
        metadata_kind, metadata_data = self.serde.dumps_typed(get_checkpoint_metadata(config, metadata))
        writes.append(
            (
                self._checkpoint(thread_id, ns, checkpoint["id"]),
                {
                    "thread_id": thread_id,
                    "ns": ns,
                    "checkpoint_id": checkpoint["id"],
                    "parent_id": config["configurable"].get("checkpoint_id"),
                    "type": kind,
                    "data": data,
                    "metadata_type": metadata_kind,
                    "metadata": metadata_data,
                },
            )
        )
        self._commit(writes)
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns, "checkpoint_id": checkpoint["id"]}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        thread_id = config["configurable"]["thread_id"]
        ns = config["configurable"].get("checkpoint_ns", "")
        checkpoint_id = config["configurable"]["checkpoint_id"]
        planned: builtins.list[Any] = []
        refs = []
        for position, (channel, value) in enumerate(writes):
            idx = WRITES_IDX_MAP.get(channel, position)
            ref = self._write_doc(thread_id, ns, checkpoint_id, task_id, idx)
            fields = {
                "ns": ns,
                "checkpoint_id": checkpoint_id,
                "task_id": task_id,
                "task_path": task_path,
                "idx": idx,
                "channel": channel,
            }
            refs.append((ref, idx))
            planned.append((ref, idx, fields, self.serde.dumps_typed(value)))
        # Special writes (negative index: errors, interrupts) replace; regular ones are kept once.
        existing = {s.reference.path for s in self.client.get_all([r for r, idx in refs if idx >= 0]) if s.exists}
        docs: builtins.list[Any] = []
        for ref, idx, fields, typed in planned:
            if idx >= 0 and ref.path in existing:
                continue
            docs += self._packed(ref, fields, typed)
        if docs:
            self._commit(docs)

    def delete_thread(self, thread_id: str) -> None:
        self.client.recursive_delete(self._thread(thread_id))

    # ------------------------------------------------------------------ async (in threads)

    # LangGraph's async methods: the sync ones, run in a thread (same signatures, not restated).
    aget_tuple = _in_thread(get_tuple)
    alist = _listed_in_thread(list)
    aput = _in_thread(put)
    aput_writes = _in_thread(put_writes)
    adelete_thread = _in_thread(delete_thread)

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as LangGraph's own savers make them: a counter plus a random tail."""
        import random

        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():016}"  # noqa: S311
