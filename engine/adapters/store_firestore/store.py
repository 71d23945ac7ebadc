"""Firestore adapter of the :class:`~engine.ports.Store` port (production backend).

The layout is in :mod:`.layout`, the record encoding in :mod:`.codec`, the transaction
runner in :mod:`.transaction` and every private name of google-cloud-firestore in
:mod:`.wire`. Every composite index the queries here need is declared in
``firestore.indexes.json`` (``tests/contract/test_firestore_indexes.py`` checks the queries
actually issued).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar, cast

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from engine.adapters.store_firestore import purge, search
from engine.adapters.store_firestore.codec import (
    BLOB_CACHE_BYTES,
    BlobCache,
    BlobResolver,
    ClaimCheck,
    Reader,
    decode_cursor,
    encode_cursor,
    encode_record,
)
from engine.adapters.store_firestore.errors import translated_errors
from engine.adapters.store_firestore.layout import Paths
from engine.adapters.store_firestore.transaction import MAX_ATTEMPTS, FirestoreTransaction, run_atomic
from engine.adapters.store_firestore.wire import RawRpc, RawWire, Wire, WireMode, make_client, select_wire
from engine.errors import ConveyorError, InvalidRequest, NotFound
from engine.ports import DUE_FIELD, Reads, Transaction
from engine.records import (
    SCHEMA_VERSION,
    ApiKeyRecord,
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    Page,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.search import ExecutionFilter
from engine.states import EXECUTION_ACTIVE, EXECUTION_TERMINAL, STEP_ACTIVE, ExecutionStatus, StepStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from google.cloud.firestore_v1.aggregation import AggregationQuery
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.collection import CollectionReference
    from google.cloud.firestore_v1.document import DocumentReference
    from google.cloud.firestore_v1.query import CollectionGroup, Query

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
#: Timeout of the health check, so ``ping`` answers promptly when Firestore is away.
PING_TIMEOUT = 5.0
#: Per-execution step queries ``list_steps_many`` runs at once.
_STEPS_MANY_CONCURRENCY = 16

ASC = firestore.Query.ASCENDING
DESC = firestore.Query.DESCENDING
DOC_ID = FieldPath.document_id()


class FirestoreStore:
    """The :class:`~engine.ports.Store` port on Google Cloud Firestore (native mode)."""

    def __init__(
        self,
        project: str,
        *,
        database: str = "(default)",
        client: firestore.Client | None = None,
        inline_payload_bytes: int = 256 * 1024,
        wire: WireMode = "auto",
    ) -> None:
        """``wire`` picks how transactions reach Firestore (see :mod:`.wire`): ``raw``, the
        ``public`` client API only, or ``auto`` (raw when this google-cloud-firestore has what
        it needs)."""
        self._client = client if client is not None else make_client(project, database, wire)
        self._wire = select_wire(self._client, wire)
        self._paths = Paths(self._client)
        self._claim = ClaimCheck(inline_payload_bytes)
        self._blobs = BlobResolver(self._paths.blob_parts, BlobCache(BLOB_CACHE_BYTES))
        self._stamp_schema()

    def _stamp_schema(self) -> None:
        """Record the current schema version on a database that has none yet.

        Like SQLite creating its tables: every process stamps before it writes, so a
        database without ``meta/schema`` is one no version of Conveyor has used.
        """
        with translated_errors(), contextlib.suppress(gexc.AlreadyExists):
            self._paths.schema().create({"version": SCHEMA_VERSION})

    # ---------------------------------------------------------------- plumbing

    @property
    def client(self) -> firestore.Client:
        """The one Firestore client this store uses (tests inspect raw documents with it)."""
        return self._client

    @property
    def paths(self) -> Paths:
        return self._paths

    @property
    def wire(self) -> Wire:
        """How transactions reach Firestore: the raw path or the public client API."""
        return self._wire

    @property
    def rpc(self) -> RawRpc:
        """The raw calls of the raw path's transactions (tests record them)."""
        if not isinstance(self._wire, RawWire):
            raise ConveyorError("this Firestore store uses the public client API: it makes no raw calls")
        return self._wire.rpc

    @property
    def claim_check(self) -> ClaimCheck:
        return self._claim

    @property
    def blobs(self) -> BlobResolver:
        """Resolves the out-of-line payloads of stored documents (this process's blob cache)."""
        return self._blobs

    def query(
        self,
        source: CollectionReference | CollectionGroup,
        *,
        where: Sequence[tuple[str, str, Any]] = (),
        order: Sequence[tuple[str, str]] = (),
        start_after: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> Query:
        """Every query of the adapter is built here, so its index needs stay in one view."""
        built: Query | CollectionReference = source
        for field, op, value in where:
            built = built.where(filter=FieldFilter(field, op, value))
        for field, direction in order:
            built = built.order_by(field, direction=direction)
        if start_after is not None:
            built = built.start_after(dict(start_after))
        if limit is not None:
            built = built.limit(limit)
        if not isinstance(built, firestore.Query):
            raise TypeError("a query needs at least one filter, order or limit")
        return built

    def _snapshot_reader(self, snaps: Sequence[DocumentSnapshot[DocumentReference]]) -> Reader:
        """Read blobs as of the documents' read time, so a concurrent rewrite that replaced
        (and garbage-collected) a payload cannot leave us holding a dangling reference."""
        read_time = snaps[0].read_time if snaps else None

        def read(refs: list[DocumentReference]) -> dict[str, dict[str, Any] | None]:
            snaps = self._client.get_all(refs, read_time=read_time)
            return {snap.reference.path: snapshot_fields(snap) if snap.exists else None for snap in snaps}

        return read

    def _get(self, cls: type[R], ref: DocumentReference) -> R | None:
        with translated_errors():
            snap = ref.get()
            if not snap.exists:
                return None
            return self._blobs.load(cls, [snapshot_fields(snap)], self._snapshot_reader([snap]))[0]

    def _run_query(self, cls: type[R], query: Query) -> list[R]:
        with translated_errors():
            return self.records_of(cls, list(query.stream()))

    def records_of(self, cls: type[R], snaps: Sequence[DocumentSnapshot[DocumentReference]]) -> list[R]:
        """Records of the documents ``snaps`` read (their payloads as of the same read time)."""
        with translated_errors():
            return self._blobs.load(cls, [snapshot_fields(s) for s in snaps], self._snapshot_reader(snaps))

    def _page(
        self,
        cls: type[R],
        query: Query,
        limit: int,
        sort_key: Callable[[R], list[Any]],
    ) -> Page:
        """One page of ``query`` (built without limit): read one more to know if it is last."""
        _check_limit(limit)
        items = self._run_query(cls, query.limit(limit + 1))
        if len(items) <= limit:
            return Page(items=list(items))
        items = items[:limit]
        return Page(items=list(items), next_cursor=encode_cursor(sort_key(items[-1])))

    # ---------------------------------------------------------------- transactions

    def atomic(self, fn: Callable[[Transaction], T], *, durable: bool = True) -> T:
        """Run ``fn`` in a Firestore transaction, retried (with backoff) when Firestore aborts it.

        Firestore acknowledges a commit once it is durable, so ``durable`` changes nothing.

        On the raw path the transaction begins with its first read (no BeginTransaction round
        trip), and one that reads nothing commits as a single atomic batch (see
        :class:`~.wire.RawAttempt`); the public path begins each attempt with BeginTransaction.

        Events are created without a prior existence read (one round trip less per
        transition). If the commit then fails because an event already exists, the
        transaction is run again in a careful mode that reads the events first and skips
        those present; any other ``AlreadyExists`` is the caller's.
        """
        return self._atomic(fn)

    def sync(self) -> None:
        """Nothing to do: every commit Firestore acknowledged is durable."""

    def read(self, fn: Callable[[Reads], T]) -> T:
        """Run ``fn`` with plain (non-transactional) reads: no locks, no commit.

        Each batched read is one consistent snapshot; that is all a peek needs.
        """
        attempt = self._wire.attempt(None, transactional=False)
        reads = FirestoreTransaction(self, attempt, careful_events=False)
        with translated_errors():
            return fn(reads)

    def _atomic(self, fn: Callable[[FirestoreTransaction], T]) -> T:
        return run_atomic(self, fn)

    # ---------------------------------------------------------------- workflows

    def get_workflow_version(
        self, tenant: str, name: str, version: int | None = None
    ) -> WorkflowVersionRecord | None:
        """A given version, or the latest one (kept on the workflow's summary document)."""
        if version is not None:
            return self._get(WorkflowVersionRecord, self._paths.version(tenant, name, version))
        with translated_errors():
            snap = self._paths.workflow(tenant, name).get()
            if not snap.exists:
                return None
            return self._blobs.load(WorkflowVersionRecord, [snap.get("record")], self._snapshot_reader([snap]))[0]

    def list_workflows(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        """Latest version of each workflow, ordered by name (one summary document each)."""
        after = {"name": decode_cursor(cursor, [str])[0]} if cursor else None
        _check_limit(limit)
        query = self.query(
            self._paths.workflows(tenant), order=[("name", ASC)], start_after=after, limit=limit + 1
        )
        with translated_errors():
            snaps = list(query.stream())
            records = self._blobs.load(
                WorkflowVersionRecord, [s.get("record") for s in snaps], self._snapshot_reader(snaps)
            )
        if len(records) <= limit:
            return Page(items=list(records))
        records = records[:limit]
        return Page(items=list(records), next_cursor=encode_cursor([records[-1].name]))

    def list_workflow_versions(
        self, tenant: str, name: str, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Versions of one workflow, newest first."""
        after = {"version": decode_cursor(cursor, [int])[0]} if cursor else None
        query = self.query(self._paths.versions(tenant, name), order=[("version", DESC)], start_after=after)
        return self._page(WorkflowVersionRecord, query, limit, lambda r: [r.version])

    def set_workflow_archived(self, tenant: str, name: str, archived: bool) -> None:
        """Flag every version and the summary in one transaction; ``NotFound`` if none."""
        versions = self.query(self._paths.versions(tenant, name), order=[(DOC_ID, ASC)])
        summary = self._paths.workflow(tenant, name)

        @firestore.transactional
        def body(txn: firestore.Transaction) -> None:
            refs = [snap.reference for snap in txn.get(versions)]
            if not refs:
                raise NotFound(f"workflow {name!r} has no versions")
            for ref in refs:
                txn.update(ref, {"archived": archived})
            txn.update(summary, {"record.archived": archived})

        with translated_errors():
            body(self._client.transaction(max_attempts=MAX_ATTEMPTS))

    # ---------------------------------------------------------------- executions

    def get_execution(self, tenant: str, execution_id: str) -> ExecutionRecord | None:
        return self._get(ExecutionRecord, self._paths.execution(tenant, execution_id))

    def mark_once(self, tenant: str, execution_id: str, name: str) -> bool:
        with translated_errors():
            try:
                self._paths.marker(tenant, execution_id, name).create({"tenant": tenant, "name": name})
            except gexc.AlreadyExists:
                return False
        return True

    def list_executions(
        self, tenant: str, where: ExecutionFilter | None = None, *, cursor: str | None = None, limit: int = 50
    ) -> Page:
        """Executions newest first (ties by id), filtered; see :mod:`.search` and ``firestore.indexes.json``."""
        _check_limit(limit)
        return search.list_executions(self, tenant, where or ExecutionFilter(), cursor, limit)

    def count_executions(self, tenant: str, where: ExecutionFilter | None = None) -> dict[ExecutionStatus, int]:
        """Count aggregations per status (documents are read only for two or more labels)."""
        return search.count_executions(self, tenant, where or ExecutionFilter())

    def backfill_search_fields(self) -> int:
        """Write ``label_pairs`` on execution documents written before it existed."""
        return search.backfill(self)

    def count_active_executions(self, tenant: str) -> int:
        """Server-side count aggregation: no documents are transferred."""
        active = sorted(s.value for s in EXECUTION_ACTIVE)
        query = self.query(self._paths.executions(tenant), where=[("status", "in", active)])
        return self.count_query(query)

    def count_query(self, query: Query) -> int:
        """Documents matching ``query``, counted server-side."""
        with translated_errors():
            # The client's annotations of count() are wrong; the result is [[AggregationResult]].
            result: Any = cast("AggregationQuery", query.count()).get()
            return int(result[0][0].value)

    def count_active_items(self, tenant: str, execution_id: str, step_id: str) -> int:
        """Active foreach items of ``step_id``: one count aggregation, no documents transferred.

        The foreach parent shares the items' ``step_id`` and is itself active, so it is left
        out by its document name. Equalities (``step_id``, ``status in``) plus a filter on
        the document name need no composite index: the single-field indexes merge, and every
        index ends in the document name. (``index != null`` would be an inequality on a
        second field, which needs a composite index.)
        """
        parent = self._paths.step(tenant, execution_id, step_id)
        query = self.query(
            self._paths.steps(tenant, execution_id),
            where=[
                ("step_id", "==", step_id),
                ("status", "in", sorted(s.value for s in STEP_ACTIVE)),
                (DOC_ID, "!=", parent),
            ],
        )
        return self.count_query(query)

    def list_steps(self, tenant: str, execution_id: str) -> list[StepRecord]:
        query = self.query(self._paths.steps(tenant, execution_id), order=[(DOC_ID, ASC)])
        return _sorted_steps(self._run_query(StepRecord, query))

    def list_steps_many(self, tenant: str, execution_ids: Sequence[str]) -> dict[str, list[StepRecord]]:
        """The same per-execution query as :meth:`list_steps`, run concurrently (no new index needed)."""
        ids = list(dict.fromkeys(execution_ids))
        if not ids:
            return {}
        with ThreadPoolExecutor(max_workers=min(len(ids), _STEPS_MANY_CONCURRENCY)) as pool:
            steps = pool.map(lambda execution_id: self.list_steps(tenant, execution_id), ids)
            return dict(zip(ids, steps, strict=True))

    def list_events(
        self, tenant: str, execution_id: str, *, after: str | None = None, limit: int = 500
    ) -> Page:
        """History in order of event id; ``next_cursor`` is the last id, to pass as ``after``."""
        _check_limit(limit)
        where = [("id", ">", after)] if after is not None else []
        query = self.query(
            self._paths.events(tenant, execution_id), where=where, order=[("id", ASC)], limit=limit + 1
        )
        events = self._run_query(EventRecord, query)
        if len(events) <= limit:
            return Page(items=list(events))
        events = events[:limit]
        return Page(items=list(events), next_cursor=events[-1].id)

    # ---------------------------------------------------------------- reconciler scans

    def due_steps(
        self, status: StepStatus, before: float, limit: int = 200, after: StepRecord | None = None
    ) -> list[StepRecord]:
        """Collection-group scan of every tenant's steps in ``status`` due by ``before``.

        Ordered by the due field, then by document path (which Firestore appends to every
        index); ``after`` resumes after that record.
        """
        status = StepStatus(status)
        field = DUE_FIELD.get(status)
        if field is None:
            return []  # nothing is ever due in a status without a timer
        cursor = None
        if after is not None:
            ref = self._paths.step(after.tenant, after.execution_id, after.key)
            cursor = {field: getattr(after, field), DOC_ID: ref}
        query = self.query(
            self._client.collection_group("steps"),
            where=[("status", "==", status.value), (field, "<=", before)],
            order=[(field, ASC), (DOC_ID, ASC)],
            start_after=cursor,
            limit=limit,
        )
        return self._run_query(StepRecord, query)

    def overdue_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        """Active executions of every tenant whose deadline is not after ``before``."""
        active = sorted(s.value for s in EXECUTION_ACTIVE)
        query = self.query(
            self._client.collection_group("executions"),
            where=[("status", "in", active), ("deadline_at", "<=", before)],
            order=[("deadline_at", ASC)],
            limit=limit,
        )
        return self._run_query(ExecutionRecord, query)

    # ---------------------------------------------------------------- retention (see .purge)

    def expired_executions(self, before: float, limit: int = 200) -> list[ExecutionRecord]:
        """Terminal executions of every tenant whose ``expires_at`` is not after ``before``."""
        terminal = sorted(s.value for s in EXECUTION_TERMINAL)
        query = self.query(
            self._client.collection_group("executions"),
            where=[("status", "in", terminal), ("expires_at", "<=", before)],
            order=[("expires_at", ASC)],
            limit=limit,
        )
        return self._run_query(ExecutionRecord, query)

    def purge_execution(self, tenant: str, execution_id: str, limit: int = 200) -> bool:
        return purge.purge_batch(self, tenant, execution_id, limit)

    def backfill_expiry(self, retention: Callable[[ExecutionRecord], float | None]) -> int:
        return purge.backfill_expiry(self, retention)

    # ---------------------------------------------------------------- triggers

    def put_trigger(self, record: TriggerRecord) -> None:
        """Create or replace, reading the old version so its out-of-line payloads are freed."""
        ref = self._paths.trigger(record.tenant, record.id)
        self._atomic(lambda tx: tx.replace(ref, record))

    def get_trigger(self, tenant: str, trigger_id: str) -> TriggerRecord | None:
        return self._get(TriggerRecord, self._paths.trigger(tenant, trigger_id))

    def list_triggers(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        """Triggers ordered by id."""
        after = {"id": decode_cursor(cursor, [str])[0]} if cursor else None
        query = self.query(self._paths.triggers(tenant), order=[("id", ASC)], start_after=after)
        return self._page(TriggerRecord, query, limit, lambda r: [r.id])

    def delete_trigger(self, tenant: str, trigger_id: str) -> bool:
        """Delete a trigger and its out-of-line payloads; False if there was none."""
        ref = self._paths.trigger(tenant, trigger_id)
        return self._atomic(lambda tx: tx.delete(ref))

    def due_triggers(self, before: float, limit: int = 200) -> list[TriggerRecord]:
        """Enabled triggers of every tenant whose ``next_fire_at`` is not after ``before``."""
        query = self.query(
            self._client.collection_group("triggers"),
            where=[("enabled", "==", True), ("next_fire_at", "<=", before)],
            order=[("next_fire_at", ASC)],
            limit=limit,
        )
        return self._run_query(TriggerRecord, query)

    # ---------------------------------------------------------------- external event log

    def list_inbound_events(
        self, tenant: str, route: str, *, since: float, limit: int = 100
    ) -> list[InboundEventRecord]:
        """One equality on ``route`` (automatic index); the few events of a route are sorted here."""
        query = self.query(self._paths.inbound_events(tenant), where=[("route", "==", route)])
        events = [e for e in self._run_query(InboundEventRecord, query) if e.accepted_at >= since]
        return sorted(events, key=lambda e: (e.accepted_at, e.id))[:limit]

    def list_waiters(self, tenant: str, route: str, limit: int = 500) -> list[WaiterRecord]:
        query = self.query(self._paths.waiters(tenant), where=[("route", "==", route)], limit=limit)
        return self._run_query(WaiterRecord, query)

    def due_inbound_events(self, before: float, limit: int = 200) -> list[InboundEventRecord]:
        """Collection-group scan of every tenant's events still to be routed."""
        query = self.query(
            self._client.collection_group("inbound_events"),
            where=[("routed", "==", False), ("accepted_at", "<=", before)],
            order=[("accepted_at", ASC)],
            limit=limit,
        )
        return self._run_query(InboundEventRecord, query)

    def trim_inbound_events(self, before: float, limit: int = 200) -> int:
        """Collection-group scan of routed events, deleted (with their out-of-line data) in one transaction."""
        query = self.query(
            self._client.collection_group("inbound_events"),
            where=[("routed", "==", True), ("accepted_at", "<", before)],
            order=[("accepted_at", ASC)],
            limit=limit,
        )
        with translated_errors():
            refs = [snap.reference for snap in query.get()]
        if not refs:
            return 0

        def delete(tx: FirestoreTransaction) -> int:
            tx.read_documents(refs)  # one round trip: each delete below frees what it finds
            return sum(tx.delete(ref) for ref in refs)

        return self._atomic(delete)

    # ---------------------------------------------------------------- API keys

    def put_api_key(self, record: ApiKeyRecord) -> None:
        with translated_errors():
            self._paths.api_key(record.key_hash).set(encode_record(record))

    def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        return self._get(ApiKeyRecord, self._paths.api_key(key_hash))

    def list_api_keys(self, tenant: str) -> list[ApiKeyRecord]:
        """Keys of one tenant, oldest first (sorted here: the set is small)."""
        query = self.query(self._paths.api_keys(), where=[("tenant", "==", tenant)])
        return sorted(self._run_query(ApiKeyRecord, query), key=lambda r: (r.created_at, r.id))

    # ---------------------------------------------------------------- operations

    def ping(self) -> None:
        """One short read without retries; ``StoreUnavailable`` when Firestore does not answer."""
        with translated_errors():
            self._paths.schema().get(retry=None, timeout=PING_TIMEOUT)

    def schema_version(self) -> int:
        """The schema version recorded by migrations (stamped when the store is opened)."""
        with translated_errors():
            snap = self._paths.schema().get()
        return int(snap.get("version")) if snap.exists else 0

    def set_schema_version(self, version: int) -> None:
        with translated_errors():
            self._paths.schema().set({"version": version})

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]


def snapshot_fields(snap: DocumentSnapshot[DocumentReference]) -> dict[str, Any]:
    return snap.to_dict() or {}


def _sorted_steps(records: list[StepRecord]) -> list[StepRecord]:
    """Steps by key (the contract's order); sorted here because encoded ids sort differently."""
    return sorted(records, key=lambda r: r.key)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}")
