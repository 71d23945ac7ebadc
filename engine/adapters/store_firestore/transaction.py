"""The transaction runner of the Firestore store and the :class:`~engine.ports.Transaction` port.

Writes are buffered here and handed to the attempt at once when ``fn`` returns; the attempt
(from :mod:`.wire`, raw or public path) reads, commits, and rolls back on any failure.
Firestore aborts the losers under contention and the runner retries them with jittered
backoff; an event that already exists reruns the transaction in careful mode.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from google.api_core import exceptions as gexc

from engine.adapters.store_firestore.codec import (
    BlobRef,
    ClaimCheck,
    blob_refs,
    decode_record,
    encode_record,
    reusable_blob,
)
from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.wire import Attempt
from engine.errors import AlreadyExists, ConveyorError
from engine.records import (
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    ItemChunkRecord,
    SignalRecord,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)

if TYPE_CHECKING:
    from engine.adapters.store_firestore.store import FirestoreStore

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from google.cloud.firestore_v1.document import DocumentReference

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
#: Attempts of one transaction under contention (Firestore aborts the losers).
MAX_ATTEMPTS = 10
#: Jittered exponential backoff between attempts of an aborted transaction (seconds).
BACKOFF_BASE = 0.02
BACKOFF_CAP = 1.0


class _EventCollision(Exception):
    """A fast-mode commit hit an existing event: rerun the transaction in careful mode."""


@dataclass
class _Write:
    """A buffered write: a whole document (``fields``) or a delete (``fields is None``)."""

    ref: DocumentReference
    tenant: str | None
    fields: dict[str, Any] | None
    create: bool = False


@dataclass
class _Claim:
    """An idempotency key an execution written in this transaction carries anew."""

    ref: DocumentReference
    tenant: str
    key: str
    execution_id: str

    def owner(self, doc: Mapping[str, Any] | None) -> str | None:
        """The execution the stored key document names (None when there is none)."""
        return None if doc is None else str(doc["execution_id"])

    def fields(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "key": self.key, "execution_id": self.execution_id}


def run_atomic(store: FirestoreStore, fn: Callable[[FirestoreTransaction], T]) -> T:
    """Run ``fn`` in a transaction of ``store`` (see :meth:`FirestoreStore.atomic`)."""
    with translated_errors():
        try:
            return _transact(store, fn, careful=False)
        except _EventCollision:
            return _transact(store, fn, careful=True)


def _transact(store: FirestoreStore, fn: Callable[[FirestoreTransaction], T], *, careful: bool) -> T:
    """Run attempts until one commits; the last ``Aborted`` escapes after ``MAX_ATTEMPTS``."""
    retry_id: bytes | None = None
    waited = 0.0
    for number in range(MAX_ATTEMPTS):
        if number:
            _back_off(number, waited)
        attempt = store.wire.attempt(retry_id)
        started = time.monotonic()
        try:
            return _run_attempt(store, fn, attempt, careful=careful)
        except gexc.Aborted:
            if number == MAX_ATTEMPTS - 1:
                raise
            waited = time.monotonic() - started
            # Naming the aborted transaction keeps the retry's place in Firestore's lock queue
            # (raw path only: the public API does not expose the id).
            retry_id = attempt.id or retry_id
    raise AssertionError("unreachable")


def _run_attempt(
    store: FirestoreStore, fn: Callable[[FirestoreTransaction], T], attempt: Attempt, *, careful: bool
) -> T:
    """One attempt: run ``fn``, hand its writes over, commit; the wire rolls back if anything fails."""
    tx = FirestoreTransaction(store, attempt, careful_events=careful)

    def body() -> T:
        result = fn(tx)
        tx.flush()
        return result

    try:
        return attempt.execute(body)
    except gexc.AlreadyExists as exc:
        if not careful and tx.created_events:
            raise _EventCollision from exc
        raise


class FirestoreTransaction:
    """The :class:`~engine.ports.Transaction` port on one attempt of a Firestore transaction.

    Firestore forbids reads after writes inside a transaction, so writes are buffered here
    (by document path: a later write of the same document replaces the earlier one) and
    handed to Firestore in :meth:`flush`. Reads consult the buffer first (read-your-writes),
    then a cache of documents already read in this transaction, then Firestore.
    """

    def __init__(self, store: FirestoreStore, attempt: Attempt, *, careful_events: bool) -> None:
        self._store = store
        self._paths = store.paths
        self._attempt = attempt
        self._careful_events = careful_events
        self._reads: dict[str, dict[str, Any] | None] = {}
        self._blobs: dict[str, bytes] = {}
        self._writes: dict[str, _Write] = {}
        self._executions: dict[str, _Write] = {}
        self._versions: dict[str, _Write] = {}
        self._events: dict[str, _Write] = {}
        self.created_events = False

    # ---------------------------------------------------------------- reads

    def _read(self, refs: Sequence[DocumentReference]) -> None:
        """Fetch the documents not read yet in this transaction, in one round trip."""
        missing = list({ref.path: ref for ref in refs if ref.path not in self._reads}.values())
        if not missing:
            return
        self._reads.update(self._attempt.get_all(missing))

    def _decode(self, cls: type[R], docs: Sequence[Mapping[str, Any]]) -> list[R]:
        return self._store.blobs.load(cls, docs, self._attempt.get_all, self._blobs)

    def _record(self, cls: type[R], ref: DocumentReference) -> R | None:
        written = self._writes.get(ref.path)
        if written is not None:
            return None if written.fields is None else decode_record(cls, written.fields, {})
        self._read([ref])
        doc = self._reads[ref.path]
        return None if doc is None else self._decode(cls, [doc])[0]

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        return self._record(ExecutionRecord, self._paths.execution(tenant, execution_id))

    def find_execution_by_key(self, tenant: str, idempotency_key: str) -> ExecutionRecord | None:
        """The execution carrying a key: one written in this transaction, or the stored owner.

        The owner's header is checked to still carry the key: a key given up (by rewriting
        the header with another key or none) no longer finds it, as with a unique column.
        """
        for write in self._executions.values():
            if write.tenant == tenant and _fields(write).get("idempotency_key") == idempotency_key:
                return decode_record(ExecutionRecord, _fields(write), {})
        ref = self._paths.idempotency(tenant, idempotency_key)
        self._read([ref])
        doc = self._reads[ref.path]
        record = None if doc is None else self.get_execution(tenant, str(doc["execution_id"]))
        return record if record is not None and record.idempotency_key == idempotency_key else None

    def find_executions_by_keys(self, tenant: str, keys: Sequence[str]) -> dict[str, ExecutionRecord]:
        """The key documents in one batched read, then the headers of their owners in one more."""
        refs = [self._paths.idempotency(tenant, key) for key in keys]
        self._read(refs)
        owners = [
            self._paths.execution(tenant, str(doc["execution_id"]))
            for ref in refs
            if (doc := self._reads[ref.path]) is not None
        ]
        self._read([ref for ref in owners if ref.path not in self._writes])
        # Everything is read now: these only decode.
        return {key: record for key in keys if (record := self.find_execution_by_key(tenant, key)) is not None}

    def get_steps(self, tenant: str, execution_id: str, keys: Sequence[str]) -> dict[str, StepRecord]:
        """The existing steps among ``keys``: one batched read for those not known yet."""
        refs = {key: self._paths.step(tenant, execution_id, key) for key in keys}
        self._read([ref for ref in refs.values() if ref.path not in self._writes])
        found: dict[str, StepRecord] = {}
        stored: dict[str, dict[str, Any]] = {}
        for key, ref in refs.items():
            written = self._writes.get(ref.path)
            if written is not None:
                if written.fields is not None:
                    found[key] = decode_record(StepRecord, written.fields, {})
            elif (doc := self._reads[ref.path]) is not None:
                stored[key] = doc
        for key, record in zip(stored, self._decode(StepRecord, list(stored.values())), strict=True):
            found[key] = record
        return found

    def get_execution_and_steps(
        self, tenant: str, execution_id: str, keys: Sequence[str]
    ) -> tuple[ExecutionRecord | None, dict[str, StepRecord]]:
        """The header and the existing steps among ``keys``: one batched read of those not known yet.

        Their out-of-line payloads, if any, come in one more round trip shared by all of them.
        """
        header = self._paths.execution(tenant, execution_id)
        refs = [header, *(self._paths.step(tenant, execution_id, key) for key in keys)]
        self._read([ref for ref in refs if ref.path not in self._writes])
        stored = [doc for ref in refs if ref.path not in self._writes and (doc := self._reads[ref.path])]
        self._store.blobs.resolve(stored, self._attempt.get_all, self._blobs)
        # Everything is read and cached now: these only decode.
        return self.get_execution(tenant, execution_id), self.get_steps(tenant, execution_id, keys)

    def latest_workflow_version(self, tenant: str, name: str) -> WorkflowVersionRecord | None:
        """The summary's copy of the latest version, or a newer one written in this transaction."""
        ref = self._paths.workflow(tenant, name)
        self._read([ref])
        summary = self._reads[ref.path]
        latest = None if summary is None else self._decode(WorkflowVersionRecord, [summary["record"]])[0]
        for write in self._versions.values():
            candidate = decode_record(WorkflowVersionRecord, _fields(write), {})
            same = candidate.tenant == tenant and candidate.name == name
            if same and (latest is None or candidate.version > latest.version):
                latest = candidate
        return latest

    def get_item_chunk(self, tenant: str, execution_id: str, step_id: str, chunk: int) -> ItemChunkRecord | None:
        return self._record(ItemChunkRecord, self._paths.item_chunk(tenant, execution_id, step_id, chunk))

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None:
        return self._record(TriggerRecord, self._paths.trigger(tenant, trigger_id))

    # ---------------------------------------------------------------- writes (buffered)

    def put_workflow_version(self, record: WorkflowVersionRecord) -> None:
        """Buffered ``create``: committing fails with ``AlreadyExists`` if the number is taken."""
        ref = self._paths.version(record.tenant, record.name, record.version)
        write = _Write(ref, record.tenant, encode_record(record), create=True)
        self._versions[ref.path] = write
        self._writes[ref.path] = write

    def put_execution(self, record: ExecutionRecord) -> None:
        """Buffer the header; its idempotency key is claimed (or given up) at commit."""
        ref = self._paths.execution(record.tenant, record.id)
        write = _Write(ref, record.tenant, encode_record(record))
        self._executions[ref.path] = write
        self._writes[ref.path] = write

    def put_step(self, record: StepRecord) -> None:
        ref = self._paths.step(record.tenant, record.execution_id, record.key)
        self._writes[ref.path] = _Write(ref, record.tenant, encode_record(record))

    def put_item_chunk(self, record: ItemChunkRecord) -> None:
        ref = self._paths.item_chunk(record.tenant, record.execution_id, record.step_id, record.chunk)
        self._writes[ref.path] = _Write(ref, record.tenant, encode_record(record))

    def put_trigger(self, record: TriggerRecord) -> None:
        self.replace(self._paths.trigger(record.tenant, record.id), record)

    def add_event(self, event: EventRecord) -> None:
        """Buffer an event once per id; an id already stored is skipped at commit."""
        ref = self._paths.event(event.tenant, event.execution_id, event.id)
        if ref.path in self._events or self._reads.get(ref.path) is not None:
            return
        self._events[ref.path] = _Write(ref, event.tenant, encode_record(event), create=True)

    def get_inbound_event(self, tenant: str, event_id: str) -> InboundEventRecord | None:
        return self._record(InboundEventRecord, self._paths.inbound_event(tenant, event_id))

    def get_inbound_events(self, tenant: str, event_ids: Sequence[str]) -> dict[str, InboundEventRecord]:
        """One batched read for the events not known in this transaction yet."""
        refs = {event_id: self._paths.inbound_event(tenant, event_id) for event_id in event_ids}
        self._read([ref for ref in refs.values() if ref.path not in self._writes])
        return {
            event_id: record
            for event_id, ref in refs.items()
            if (record := self._record(InboundEventRecord, ref)) is not None
        }

    def put_inbound_event(self, record: InboundEventRecord) -> None:
        self._put(self._paths.inbound_event(record.tenant, record.id), record)

    def put_waiter(self, record: WaiterRecord) -> None:
        self._put(self._paths.waiter(record.tenant, record.execution_id, record.step_key), record)

    def delete_waiter(self, tenant: str, execution_id: str, step_key: str) -> None:
        ref = self._paths.waiter(tenant, execution_id, step_key)
        self._writes[ref.path] = _Write(ref, tenant, None)

    def get_signal(self, tenant: str, execution_id: str, step_key: str) -> SignalRecord | None:
        return self._record(SignalRecord, self._paths.signal(tenant, execution_id, step_key))

    def put_signal(self, record: SignalRecord) -> None:
        self._put(self._paths.signal(record.tenant, record.execution_id, record.step_key), record)

    def delete_signal(self, tenant: str, execution_id: str, step_key: str) -> None:
        ref = self._paths.signal(tenant, execution_id, step_key)
        self._writes[ref.path] = _Write(ref, tenant, None)

    def _put(self, ref: DocumentReference, record: Any) -> None:
        """Buffer a create-or-replace without a read (as ``put_step``)."""
        self._writes[ref.path] = _Write(ref, record.tenant, encode_record(record))

    # ---------------------------------------------------------------- adapter-internal

    def read_documents(self, refs: Sequence[DocumentReference]) -> None:
        """Read documents into this transaction in one round trip (later reads of them are free)."""
        self._read(refs)

    def replace(self, ref: DocumentReference, record: DataclassInstance) -> None:
        """Create or replace a document, reading it first so replaced blobs are freed."""
        self._read([ref])
        self._writes[ref.path] = _Write(ref, getattr(record, "tenant", None), encode_record(record))

    def delete(self, ref: DocumentReference) -> bool:
        """Delete a document and its blobs; whether it existed."""
        self._read([ref])
        previous = self._reads[ref.path]
        tenant = None if previous is None else previous.get("tenant")
        self._writes[ref.path] = _Write(ref, tenant, None)
        return previous is not None

    # ---------------------------------------------------------------- commit

    def flush(self) -> None:
        """Do the reads commit needs (one round trip), then hand every write to Firestore."""
        claims, releases = self._claims()
        self._read(self._commit_reads(claims))
        self._check_claims(claims)
        for write in self._writes.values():
            if write.ref.path not in self._versions:
                self._apply(write)
        for write in self._versions.values():
            self._set_summary(write, self._write_document(write, _fields(write)))
        for claim in claims:
            if self._reads[claim.ref.path] is None:
                self._attempt.create(claim.ref, claim.fields())
            elif claim.owner(self._reads[claim.ref.path]) != claim.execution_id:
                self._attempt.set(claim.ref, claim.fields())  # taken over from a former owner
        for ref in releases:
            self._attempt.delete(ref)
        for path, write in self._events.items():
            if self._careful_events and self._reads.get(path) is not None:
                continue  # stored by an earlier commit: an event is never written twice
            self.created_events = True
            self._apply(write)

    def _claims(self) -> tuple[list[_Claim], list[DocumentReference]]:
        """Keys the buffered headers take up, and key documents of keys they gave up.

        A header known (read in this transaction) to carry its key already claims nothing,
        which keeps the idempotency read out of every later update of an execution.
        """
        claims: dict[str, _Claim] = {}
        releases: dict[str, DocumentReference] = {}
        for path, write in self._executions.items():
            tenant, fields = _tenant_of(write), _fields(write)
            key, previous = fields.get("idempotency_key"), self._reads.get(path)
            old_key = None if previous is None else previous.get("idempotency_key")
            if old_key is not None and old_key != key:
                old = self._paths.idempotency(tenant, old_key)
                releases[old.path] = old
            if key is None or (previous is not None and old_key == key):
                continue
            ref = self._paths.idempotency(tenant, key)
            if ref.path in claims:
                raise AlreadyExists(f"two executions of one transaction carry idempotency key {key!r}")
            claims[ref.path] = _Claim(ref, tenant, key, str(fields["id"]))
        for path in claims:
            releases.pop(path, None)  # given up by one header, taken by another
        return list(claims.values()), list(releases.values())

    def _commit_reads(self, claims: Sequence[_Claim]) -> list[DocumentReference]:
        """Documents commit decisions depend on that this transaction has not read yet."""
        refs = [claim.ref for claim in claims]
        refs += [self._paths.workflow(_tenant_of(w), _field(w, "name")) for w in self._versions.values()]
        if self._careful_events:
            refs += [write.ref for write in self._events.values()]
        # An overwrite that goes out of line reads the old version to reuse or free its blobs;
        # small records skip that read (a rare orphan blob is cheaper than a read per step).
        refs += [
            write.ref
            for write in self._writes.values()
            if write.fields is not None and not write.create and self._store.claim_check.outside(write.fields)
        ]
        return [ref for ref in refs if ref.path not in self._reads]

    def _check_claims(self, claims: Sequence[_Claim]) -> None:
        """Refuse a key whose owner still carries it; a key its owner gave up may be taken."""
        owners = {
            claim.key: self._paths.execution(claim.tenant, owner)
            for claim in claims
            if (owner := claim.owner(self._reads[claim.ref.path])) not in (None, claim.execution_id)
        }
        # Only a contested key costs this second read: the former owner's current header.
        self._read([ref for ref in owners.values() if ref.path not in self._executions])
        for key, ref in owners.items():
            written = self._executions.get(ref.path)
            current = _fields(written) if written is not None else self._reads[ref.path]
            if current is not None and current.get("idempotency_key") == key:
                raise AlreadyExists(
                    f"idempotency key {key!r} already belongs to execution {current.get('id')}"
                )

    def _apply(self, write: _Write) -> None:
        """Hand one buffered write (or delete) to Firestore."""
        if write.fields is None:
            self._attempt.delete(write.ref)
            for ref in blob_refs(self._reads.get(write.ref.path)).values():
                self._free(write, ref)
        else:
            self._write_document(write, write.fields)

    def _write_document(self, write: _Write, fields: dict[str, Any]) -> dict[str, Any]:
        """Write a document, its payloads out of line as needed; returns what was stored.

        An unchanged payload keeps its blob and a replaced one is freed, both only when the
        old version was read in this transaction (use cases read before they write).
        """
        previous = blob_refs(self._reads.get(write.ref.path))
        doc = dict(fields)
        kept: set[str] = set()
        for name in self._store.claim_check.outside(doc):
            data: bytes = doc[name]
            ref = reusable_blob(previous.get(name), data) or self._store_blob(write, data)
            kept.add(ref.blob_id)
            doc[name] = ref.to_field()
        for ref in previous.values():
            if ref.blob_id not in kept:
                self._free(write, ref)
        if write.create:
            self._attempt.create(write.ref, doc)
        else:
            self._attempt.set(write.ref, doc)
        return doc

    def _store_blob(self, write: _Write, data: bytes) -> BlobRef:
        """Write a payload out of line: the blob document holds the first chunk."""
        tenant = _tenant_of(write)
        chunks = ClaimCheck.chunks(data)
        ref = BlobRef(uuid.uuid4().hex, len(chunks), len(data), hashlib.sha256(data).hexdigest())
        header = {"tenant": tenant, "size": ref.size, "chunks": ref.chunks, "sha256": ref.sha256}
        self._attempt.set(self._paths.blob(tenant, ref.blob_id), {**header, "data": chunks[0]})
        for index, chunk in enumerate(chunks[1:], start=1):
            self._attempt.set(self._paths.chunk(tenant, ref.blob_id, index), {"data": chunk})
        return ref

    def _free(self, write: _Write, ref: BlobRef) -> None:
        """Delete a blob its record no longer references (same transaction, so never dangling)."""
        for part in self._paths.blob_parts(_tenant_of(write), ref):
            self._attempt.delete(part)

    def _set_summary(self, write: _Write, doc: dict[str, Any]) -> None:
        """Point the workflow summary at this version when it is the newest one.

        The summary holds a copy of the version document (blob references included; version
        blobs are never freed), so the latest version and the list of workflows are read
        without a query per workflow.
        """
        tenant, name = _tenant_of(write), _field(write, "name")
        summary_ref = self._paths.workflow(tenant, name)
        summary = self._reads.get(summary_ref.path)
        if summary is not None and int(summary["latest"]) >= int(doc["version"]):
            return
        fields = {"tenant": tenant, "name": name, "latest": doc["version"], "record": doc}
        self._attempt.set(summary_ref, fields)
        self._reads[summary_ref.path] = fields  # a second version in this commit compares to it


def _back_off(attempt: int, waited: float) -> None:
    """Sleep before retrying an aborted transaction; ``waited``: how long the aborted attempt took.

    Retried at once, transactions that collided collide again, so spread them out. (The
    emulator breaks a lock cycle only when a waiting commit hits its 2 s lock timeout, and a
    transaction whose client died keeps its read locks until 60 s after its last request:
    ``MAX_ATTEMPTS`` against such a lock give up after about 23 s.) An attempt aborted only
    after such a wait met contenders that are all retrying now; spread over the usual tens of
    milliseconds they read together again and deadlock again, round after round (six
    publishers of one event id under load: up to 37 aborts and 16 s), so the spread is at
    least as long as that wait (up to ``BACKOFF_CAP``). Real Firestore aborts at once (its
    wound-wait), so there the usual exponential spread applies.
    """
    ceiling = min(BACKOFF_CAP, max(BACKOFF_BASE * 2**attempt, waited))
    time.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


def _fields(write: _Write) -> dict[str, Any]:
    """The document fields of a buffered write that is not a delete."""
    if write.fields is None:
        raise AssertionError(f"{write.ref.path} is buffered as a delete")
    return write.fields


def _field(write: _Write, name: str) -> str:
    return str(_fields(write)[name])


def _tenant_of(write: _Write) -> str:
    if write.tenant is None:
        raise ConveyorError(f"{write.ref.path} has payloads but no tenant to keep them under")
    return write.tenant
