"""The Firestore checkpoint saver on the emulator: LangGraph's conformance suite, escaped
thread ids, values over the document limit, and fencing by the step's lease epoch."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate

from engine.adapters.checkpoint_firestore import PART_BYTES, FirestoreSaver, LeaseFence
from engine.adapters.store_firestore import FirestoreStore
from engine.errors import LeaseLost
from engine.records import ExecutionRecord, StepRecord
from engine.states import ExecutionStatus, StepStatus

pytestmark = pytest.mark.backend


@pytest.fixture
def store(firestore_emulator: str, unique_project: str) -> Iterator[FirestoreStore]:
    firestore_store = FirestoreStore(project=unique_project)
    yield firestore_store
    firestore_store.close()


async def test_the_saver_passes_langgraphs_checkpointer_conformance_suite(store: FirestoreStore) -> None:
    @checkpointer_test(name=f"FirestoreSaver-{uuid.uuid4().hex[:6]}")
    async def saver() -> AsyncIterator[FirestoreSaver]:
        yield FirestoreSaver(store.client)

    report = await validate(saver)
    failures = {name: result.failures for name, result in report.results.items() if result.failures}
    assert report.passed_all_base(), failures
    assert all(report.results[name].tests_passed > 0 for name in ("put", "put_writes", "get_tuple", "list"))


def put(saver: FirestoreSaver, thread_id: str, values: dict[str, Any]) -> dict[str, Any]:
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = values
    checkpoint["channel_versions"] = {channel: saver.get_next_version(None, None) for channel in values}
    config = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    return saver.put(config, checkpoint, {"source": "input", "step": -1}, checkpoint["channel_versions"])  # type: ignore[arg-type]


def test_thread_ids_with_slashes_are_kept_apart_and_deleted_alone(store: FirestoreStore) -> None:
    saver = FirestoreSaver(store.client)
    put(saver, "t1/e1/agent", {"messages": "one"})
    put(saver, "t1/e1/agent_x", {"messages": "two"})
    put(saver, "t1", {"messages": "three"})
    tuple_ = saver.get_tuple({"configurable": {"thread_id": "t1/e1/agent"}})
    assert tuple_ is not None and tuple_.checkpoint["channel_values"] == {"messages": "one"}
    saver.delete_thread("t1/e1/agent")
    assert saver.get_tuple({"configurable": {"thread_id": "t1/e1/agent"}}) is None
    for other, value in (("t1/e1/agent_x", "two"), ("t1", "three")):
        kept = saver.get_tuple({"configurable": {"thread_id": other}})
        assert kept is not None and kept.checkpoint["channel_values"] == {"messages": value}


def test_a_3_mb_value_is_split_under_the_document_limit_and_read_back(store: FirestoreStore) -> None:
    saver = FirestoreSaver(store.client)
    big = "x" * (3 * 1024 * 1024)
    put(saver, "big", {"messages": big, "small": 1})
    tuple_ = saver.get_tuple({"configurable": {"thread_id": "big"}})
    assert tuple_ is not None
    assert tuple_.checkpoint["channel_values"] == {"messages": big, "small": 1}
    blobs = list(saver._thread("big").collection("agent_blobs").stream())
    parts = [part for blob in blobs for part in blob.reference.collection("parts").stream()]
    assert len(parts) >= 6 and all(len(part.to_dict()["data"]) <= PART_BYTES for part in parts)


def test_a_worker_whose_lease_epoch_moved_cannot_write_checkpoints(store: FirestoreStore) -> None:
    execution = ExecutionRecord(
        id="e1",
        tenant="t1",
        workflow="wf",
        version=1,
        status=ExecutionStatus.RUNNING,
        input=None,
        created_at=1.0,
        updated_at=1.0,
    )
    step = StepRecord(
        execution_id="e1", tenant="t1", key="agent", step_id="agent", status=StepStatus.RUNNING, lease_epoch=3
    )

    def write(records: list[Any]) -> None:
        def body(tx: Any) -> None:
            for record in records:
                (tx.put_execution if isinstance(record, ExecutionRecord) else tx.put_step)(record)

        store.atomic(body)

    write([execution, step])
    holder = FirestoreSaver(store.client, fence=LeaseFence("t1", "e1", "agent", epoch=3))
    put(holder, "t1/e1/agent", {"messages": "first"})
    write([replace(step, lease_epoch=4)])  # the lease expired and another worker took the step
    with pytest.raises(LeaseLost, match="epoch 3"):
        put(holder, "t1/e1/agent", {"messages": "late"})
    with pytest.raises(LeaseLost):
        holder.put_writes(
            {"configurable": {"thread_id": "t1/e1/agent", "checkpoint_ns": "", "checkpoint_id": "c1"}},
            [("messages", "late")],
            task_id="task-1",
        )
    latest = holder.get_tuple({"configurable": {"thread_id": "t1/e1/agent"}})
    assert latest is not None and latest.checkpoint["channel_values"] == {"messages": "first"}
    successor = FirestoreSaver(store.client, fence=LeaseFence("t1", "e1", "agent", epoch=4))
    put(successor, "t1/e1/agent", {"messages": "second"})
