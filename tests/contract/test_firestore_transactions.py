"""How the Firestore adapter talks to Firestore inside ``Store.atomic``, checked on the wire.

The RPCs are recorded by :class:`tests.contract.firestore_rpcs.RpcRecorder` around the real
calls; the emulator serves every call, so what is asserted is what Firestore really accepted:

- a transaction begins with its first read (``new_transaction``): no BeginTransaction;
- a transaction that reads nothing commits its writes as one batch (no transaction id);
- an aborted attempt is retried with its transaction id, and contending writers serialize;
- a body that raises rolls its transaction back, so its read locks do not linger.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from google.api_core import exceptions as gexc

from engine.adapters.store_firestore import FirestoreStore
from engine.errors import StoreUnavailable
from engine.ports import Transaction
from engine.records import ExecutionRecord, StepRecord
from engine.states import StepStatus
from tests.contract.firestore_rpcs import RpcRecorder, methods
from tests.contract.test_store_contract import A, Boom, event, execution, save, step

#: The emulator makes a writer wait this long for a lock before it aborts one side.
EMULATOR_LOCK_TIMEOUT = 2.0


@pytest.fixture
def firestore_store(firestore_emulator: str, unique_project: str) -> Iterator[FirestoreStore]:
    store = FirestoreStore(project=unique_project, wire="raw")  # these tests record the raw path's calls
    yield store
    store.close()


@pytest.fixture
def rpcs(firestore_store: FirestoreStore, monkeypatch: pytest.MonkeyPatch) -> RpcRecorder:
    return RpcRecorder(firestore_store, monkeypatch)


# ------------------------------------------------------------------ beginning with the first read


def test_the_first_read_begins_the_transaction(firestore_store: FirestoreStore, rpcs: RpcRecorder) -> None:
    save(firestore_store, execution(), step("fetch"))
    rpcs.take()

    def claim(tx: Transaction) -> None:
        current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
        assert tx.get_execution(A, "ex-1") is not None  # a second read joins the transaction
        tx.put_step(replace(current, status=StepStatus.RUNNING, lease_epoch=1))
        tx.add_event(event("e-1"))

    firestore_store.atomic(claim)

    calls = rpcs.take()
    assert methods(calls) == ["batch_get_documents", "batch_get_documents", "commit"]
    first, second, commit = calls
    assert first.sent("new_transaction") is not None and first.sent("transaction") is None
    assert first.began, "the emulator returned no transaction id for new_transaction"
    assert second.sent("transaction") == first.began
    assert commit.sent("transaction") == first.began
    assert firestore_store.list_steps(A, "ex-1")[0].lease_epoch == 1


def test_header_and_steps_are_read_in_one_round_trip(firestore_store: FirestoreStore, rpcs: RpcRecorder) -> None:
    save(firestore_store, execution(), step("fetch"), step("ship[0]", index=0), step("ship[1]", index=1))
    rpcs.take()

    def complete(tx: Transaction) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        known = tx.get_steps(A, "ex-1", ["ship[0]"])
        tx.put_step(replace(known["ship[0]"], status=StepStatus.SUCCEEDED))
        found = tx.get_execution_and_steps(A, "ex-1", ["fetch", "ship[0]", "ship[1]", "ship[2]"])
        tx.add_event(event("e-1"))
        return found

    header, found = firestore_store.atomic(complete)

    calls = rpcs.take()
    assert methods(calls) == ["batch_get_documents", "batch_get_documents", "commit"]
    # Only what the transaction has neither read nor written goes out, header included.
    assert sorted(path.rsplit("/", 1)[-1] for path in calls[1].sent("documents")) == [
        "ex-1",
        "fetch",
        "ship%5B1%5D",
        "ship%5B2%5D",
    ]
    assert header == execution()
    assert found["ship[0]"].status is StepStatus.SUCCEEDED  # its own write
    assert sorted(found) == ["fetch", "ship[0]", "ship[1]"]


def test_payload_blobs_are_read_inside_the_transaction(firestore_store: FirestoreStore, rpcs: RpcRecorder) -> None:
    big = step("fetch", output={"rows": "x" * 300 * 1024})  # above the inline threshold
    save(firestore_store, execution(), big)
    rpcs.take()

    found = firestore_store.atomic(lambda tx: tx.get_execution_and_steps(A, "ex-1", ["fetch"]))

    assert found == (execution(), {"fetch": big})
    calls = rpcs.take()
    assert methods(calls) == ["batch_get_documents", "batch_get_documents", "commit"]
    began = calls[0].began
    assert began and calls[1].sent("transaction") == began  # the blob read joined it
    assert any("/blobs/" in path for path in calls[1].sent("documents"))


# ------------------------------------------------------------------ read-free transactions


def test_a_transaction_that_reads_nothing_commits_as_one_batch(
    firestore_store: FirestoreStore, rpcs: RpcRecorder
) -> None:
    def write(tx: Transaction) -> None:
        tx.put_execution(execution())
        tx.put_step(step("fetch"))
        tx.add_event(event("e-1"))

    firestore_store.atomic(write)

    calls = rpcs.take()
    assert methods(calls) == ["commit"]
    assert not calls[0].sent("transaction")
    assert len(calls[0].sent("writes")) == 3
    assert firestore_store.get_execution(A, "ex-1") == execution()
    assert firestore_store.list_steps(A, "ex-1") == [step("fetch")]
    assert firestore_store.list_events(A, "ex-1").items == [event("e-1")]


def test_a_transaction_that_does_nothing_sends_nothing(firestore_store: FirestoreStore, rpcs: RpcRecorder) -> None:
    assert firestore_store.atomic(lambda tx: "done") == "done"
    assert rpcs.take() == []


def test_a_read_outside_a_transaction_is_one_plain_batch_get(
    firestore_store: FirestoreStore, rpcs: RpcRecorder
) -> None:
    save(firestore_store, execution(), step("fetch"))
    rpcs.take()

    header, steps = firestore_store.read(lambda reads: reads.get_execution_and_steps(A, "ex-1", ["fetch"]))

    assert header == execution() and steps == {"fetch": step("fetch")}
    calls = rpcs.take()
    assert methods(calls) == ["batch_get_documents"], "no transaction to begin, commit or roll back"
    assert calls[0].sent("new_transaction") is None and calls[0].sent("transaction") is None
    assert not calls[0].began


def test_a_read_outside_a_transaction_takes_no_lock(firestore_store: FirestoreStore) -> None:
    save(firestore_store, execution(), step("fetch"))
    done = replace(step("fetch"), status=StepStatus.SUCCEEDED)

    def read_then_write_elsewhere(reads: Any) -> float:
        reads.get_steps(A, "ex-1", ["fetch"])
        started = time.monotonic()
        # Another thread writes the document just read: a read lock would hold it for 2 s.
        writer = threading.Thread(target=lambda: firestore_store.atomic(lambda tx: tx.put_step(done)))
        writer.start()
        writer.join()
        return time.monotonic() - started

    assert firestore_store.read(read_then_write_elsewhere) < EMULATOR_LOCK_TIMEOUT / 2
    assert firestore_store.list_steps(A, "ex-1") == [done]


def test_an_event_collision_in_a_batch_reruns_carefully(firestore_store: FirestoreStore, rpcs: RpcRecorder) -> None:
    original = event("e-1", data={"v": 1})
    save(firestore_store, original)
    rpcs.take()

    def write(tx: Transaction) -> None:
        tx.put_step(step("fetch"))
        tx.add_event(event("e-1", data={"v": 2}))
        tx.add_event(event("e-2"))

    firestore_store.atomic(write)

    calls = rpcs.take()
    assert methods(calls) == ["commit", "batch_get_documents", "commit"]
    assert isinstance(calls[0].error, gexc.AlreadyExists)  # the batch kept create's precondition
    assert calls[2].sent("transaction") == calls[1].began  # careful mode read the events first
    assert firestore_store.list_events(A, "ex-1").items == [original, event("e-2")]
    assert firestore_store.list_steps(A, "ex-1") == [step("fetch")]


# ------------------------------------------------------------------ contention and rollback


def test_an_aborted_attempt_is_retried_and_both_writers_serialize(
    firestore_store: FirestoreStore, rpcs: RpcRecorder
) -> None:
    """Both read the record before either commits: a lock cycle that aborts one of them."""
    save(firestore_store, step(status=StepStatus.RUNNING))
    both_read = threading.Barrier(2)
    errors: list[BaseException] = []

    def increment(tx: Transaction) -> None:
        current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
        if current.attempt == 0:  # only the first attempts meet; a retry sees the winner's write
            both_read.wait(timeout=10)
        tx.put_step(replace(current, attempt=current.attempt + 1))

    def writer() -> None:
        try:
            firestore_store.atomic(increment)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    rpcs.take()
    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert firestore_store.list_steps(A, "ex-1")[0].attempt == 2
    calls = rpcs.take()
    aborted = [call for call in calls if call.method == "commit" and isinstance(call.error, gexc.Aborted)]
    assert aborted, "the lock cycle should have aborted one of the writers"
    retried = {
        call.sent("new_transaction").read_write.retry_transaction
        for call in calls
        if call.method == "batch_get_documents" and call.sent("new_transaction") is not None
    }
    assert {call.sent("transaction") for call in aborted} <= retried, "a retry names the aborted transaction"
    assert "begin_transaction" not in methods(calls)


def test_an_error_in_the_body_rolls_back_and_frees_the_read_locks(
    firestore_store: FirestoreStore, rpcs: RpcRecorder
) -> None:
    save(firestore_store, step())
    rpcs.take()

    def fail(tx: Transaction) -> None:
        tx.get_steps(A, "ex-1", ["fetch"])
        raise Boom("stop")

    with pytest.raises(Boom):
        firestore_store.atomic(fail)

    calls = rpcs.take()
    assert methods(calls) == ["batch_get_documents", "rollback"]
    assert calls[1].sent("transaction") == calls[0].began
    # A lock left behind would make this write wait for the emulator's lock timeout.
    started = time.monotonic()
    save(firestore_store, step(status=StepStatus.RUNNING))
    assert time.monotonic() - started < EMULATOR_LOCK_TIMEOUT / 2


def test_a_commit_that_fails_without_an_abort_is_rolled_back(
    firestore_store: FirestoreStore, rpcs: RpcRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit lost to a deadline leaves the transaction open as far as we know: roll it back,
    or its read locks would stall every writer of those documents for a minute."""
    save(firestore_store, step())
    rpcs.take()
    recording_commit = firestore_store.rpc.commit

    def deadline(*, request: Any) -> Any:
        recording_commit(request=request.__class__(database=request.database))  # recorded, commits nothing
        raise gexc.DeadlineExceeded("commit deadline")

    monkeypatch.setattr(firestore_store.rpc, "commit", deadline)

    def claim(tx: Transaction) -> None:
        current = tx.get_steps(A, "ex-1", ["fetch"])["fetch"]
        tx.put_step(replace(current, status=StepStatus.RUNNING))

    with pytest.raises(StoreUnavailable):
        firestore_store.atomic(claim)
    calls = rpcs.take()
    assert methods(calls) == ["batch_get_documents", "commit", "rollback"]
    assert calls[2].sent("transaction") == calls[0].began
    monkeypatch.setattr(firestore_store.rpc, "commit", recording_commit)
    started = time.monotonic()
    save(firestore_store, step(status=StepStatus.RUNNING))
    assert time.monotonic() - started < EMULATOR_LOCK_TIMEOUT / 2


def test_an_error_before_any_read_sends_nothing(firestore_store: FirestoreStore, rpcs: RpcRecorder) -> None:
    def fail(tx: Transaction) -> None:
        tx.put_step(step())
        raise Boom("stop")

    with pytest.raises(Boom):
        firestore_store.atomic(fail)
    assert rpcs.take() == []
    assert firestore_store.list_steps(A, "ex-1") == []


# ------------------------------------------------------------------ the raw protobuf codec

ODD_VALUES: dict[str, Any] = {
    "none": None,
    "true": True,
    "zero": 0,
    "big": 2**62,
    "negative": -5,
    "float": 1.0,
    "tiny": -2.5e-300,
    "text": "ünï ✓",
    "empty_text": "",
    "bytes": b"\x00\xff",
    "empty_bytes": b"",
    "empty_map": {},
    "map": {"$blob": "b1", "chunks": 2, "nested": {"deep": [1, "two", None]}},
    "list": [1, {"a": True}, []],
}


def test_the_raw_codec_matches_the_client_library() -> None:
    from google.cloud.firestore_v1 import _helpers
    from google.cloud.firestore_v1.types import Document

    from engine.adapters.store_firestore.wire import decode_fields, encode_fields

    ours = Document.pb()()
    encode_fields(ours.fields, ODD_VALUES)
    theirs = Document.pb()()
    for name, value in _helpers.encode_dict(ODD_VALUES).items():
        theirs.fields[name].CopyFrom(value._pb)
    assert ours == theirs

    decoded = decode_fields(theirs.fields, client=None)  # type: ignore[arg-type]  # no references here
    assert decoded == ODD_VALUES
    assert type(decoded["true"]) is bool and type(decoded["float"]) is float
