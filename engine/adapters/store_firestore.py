"""Firestore adapter of the :class:`~engine.ports.Store` port (production backend).

Layout: one subtree per tenant, so no read names a document of another tenant::

    tenants/{tenant}/workflows/{name}                      summary: latest version (a copy)
    tenants/{tenant}/workflows/{name}/versions/{v:010d}    one immutable version
    tenants/{tenant}/executions/{id}                       small execution header
    tenants/{tenant}/executions/{id}/steps/{step_key}      one document per step
    tenants/{tenant}/executions/{id}/events/{event_id}     history
    tenants/{tenant}/executions/{id}/item_chunks/{step_id}-{n}  a slice of a foreach's list
    tenants/{tenant}/idempotency/{sha256(key)}             idempotency key -> execution id
    tenants/{tenant}/triggers/{id}
    tenants/{tenant}/blobs/{blob_id}                       out-of-line payload, first chunk
    tenants/{tenant}/blobs/{blob_id}/chunks/{n:04d}        further chunks
    api_keys/{key_hash}                                    global: the key decides the tenant
    meta/schema

Names taken from records (tenant, workflow name, ids, step keys such as ``ship[3]``) are
percent-encoded into document ids (:func:`encode_id`). Every document also stores its
tenant and natural keys as fields, so the reconciler's collection-group queries return
whole records and listings sort by the real values rather than by encoded ids.

Payload fields (anything free-form JSON: inputs, outputs, errors, step items, definitions,
event data, trigger specs) are stored as compact UTF-8 JSON bytes. Payloads larger than
``inline_payload_bytes`` are moved out of line (claim-check) into blob documents of at most
:data:`CHUNK_BYTES`, written in the same transaction, and the record keeps a small
reference; reads resolve references transparently. No document exceeds Firestore's 1 MiB.

Every composite index the queries here need is declared in ``firestore.indexes.json``
(``tests/contract/test_firestore_indexes.py`` checks the queries actually issued).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import json
import os
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import google.auth.exceptions
import grpc
from google.api_core import exceptions as gexc
from google.api_core import gapic_v1
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1 import _helpers as firestore_helpers
from google.cloud.firestore_v1 import types as firestore_types
from google.cloud.firestore_v1.base_client import _DEFAULT_CHANNEL_OPTIONS, _GRPC_MSG_SIZE_OPTIONS
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath
from google.cloud.firestore_v1.services.firestore.client import FirestoreClient
from google.cloud.firestore_v1.services.firestore.transports.grpc import FirestoreGrpcTransport

from engine.adapters.payloads import record_from_dict, record_to_dict, to_json
from engine.errors import AlreadyExists, Conflict, ConveyorError, InvalidRequest, NotFound, StoreUnavailable
from engine.ports import DUE_FIELD, Reads, Transaction
from engine.records import (
    SCHEMA_VERSION,
    ApiKeyRecord,
    Deferred,
    EventRecord,
    ExecutionRecord,
    InboundEventRecord,
    ItemChunkRecord,
    Page,
    SignalRecord,
    StepRecord,
    TriggerRecord,
    WaiterRecord,
    WorkflowVersionRecord,
)
from engine.states import EXECUTION_ACTIVE, STEP_ACTIVE, ExecutionStatus, StepStatus

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from google.cloud.firestore_v1.aggregation import AggregationQuery
    from google.cloud.firestore_v1.base_document import DocumentSnapshot
    from google.cloud.firestore_v1.collection import CollectionReference
    from google.cloud.firestore_v1.document import DocumentReference
    from google.cloud.firestore_v1.query import CollectionGroup, Query

T = TypeVar("T")
R = TypeVar("R", bound="DataclassInstance")
#: Reads documents in one round trip: ``{ref.path: fields, or None if it does not exist}``.
Reader = Callable[[list["DocumentReference"]], dict[str, "dict[str, Any] | None"]]

#: Largest slice of a payload kept in one document (bytes field); well under 1 MiB.
CHUNK_BYTES = 500 * 1024
#: Inline payload bytes one document may hold in total; the rest of a record is small.
DOC_INLINE_BUDGET = 768 * 1024
#: Attempts of one transaction under contention (Firestore aborts the losers).
MAX_ATTEMPTS = 10
#: Jittered exponential backoff between attempts of an aborted transaction (seconds).
BACKOFF_BASE = 0.02
BACKOFF_CAP = 1.0
#: Timeout of the health check, so ``ping`` answers promptly when Firestore is away.
PING_TIMEOUT = 5.0
#: Bytes of out-of-line payloads each store keeps in memory (see :class:`_BlobCache`).
BLOB_CACHE_BYTES = 64 * 1024 * 1024
#: Deadline, in seconds, of one read or commit of a transaction (see :class:`_Rpc`).
RPC_TIMEOUT = 60.0
#: Timeout of a rollback: on an error path, and its locks expire on their own anyway.
ROLLBACK_TIMEOUT = 5.0
#: Document references a store keeps for reuse (:class:`Paths`); a few MB at most.
_REF_CACHE_SIZE = 4096
#: Shards per bandit arm: concurrent rewards of one arm write different documents.
_ARM_SHARDS = 8
#: Per-execution step queries ``list_steps_many`` runs at once.
_STEPS_MANY_CONCURRENCY = 16

ASC = firestore.Query.ASCENDING
DESC = firestore.Query.DESCENDING
DOC_ID = FieldPath.document_id()

#: Fields of each record kind holding free-form JSON: stored as JSON bytes, claim-checked.
JSON_FIELDS: dict[type[Any], tuple[str, ...]] = {
    WorkflowVersionRecord: ("definition",),
    ExecutionRecord: ("input", "output", "error", "parent", "labels", "usage"),
    StepRecord: ("item", "items", "output", "error", "wait"),
    ItemChunkRecord: ("items",),
    EventRecord: ("data",),
    TriggerRecord: ("spec", "input"),
    ApiKeyRecord: (),
    InboundEventRecord: ("data",),
    WaiterRecord: (),
    SignalRecord: ("payload",),
}

#: JSON fields a read record decodes on first use (see :class:`~engine.records.Deferred`): an
#: execution's input is read by every transaction and looked at by few.
DEFERRED_FIELDS: dict[type[Any], tuple[str, ...]] = {ExecutionRecord: ("input",)}

#: Marker key of a claim-check reference left in place of an out-of-line payload.
BLOB_MARK = "$blob"
#: Types of stored field values that are never a claim-check reference.
_SCALAR_TYPES = frozenset({type(None), bool, int, float, str, bytes})

#: A character :func:`encode_id` percent-encodes: anything but ``[A-Za-z0-9_-]``.
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_MAX_ID_BYTES = 1500
#: Texts up to this length are encoded once and remembered (:func:`_encode_id_cached`).
_CACHED_ID_CHARS = 256
#: Encoded texts remembered: the tenants, executions and step keys a worker is busy with.
_ID_CACHE_SIZE = 4096


def encode_id(text: str) -> str:
    """A valid, injective Firestore document id for ``text``.

    Everything but ``[A-Za-z0-9_-]`` is percent-encoded, so ``/``, ``.``, ``[`` and ``]``
    cannot split paths or form the reserved ids ``.``/``..``; ``__x__`` (reserved) gets its
    first underscore encoded. Ids over Firestore's 1500-byte limit become a hash, marked by
    ``~`` which the encoding never produces otherwise.
    """
    # Every reference a transaction builds encodes its tenant, execution and step key again;
    # short texts (all real ids) come from a cache. A long one would only pin memory there.
    if len(text) <= _CACHED_ID_CHARS:
        return _encode_id_cached(text)
    return _encode_id(text)


def _encode_id(text: str) -> str:
    if not text:
        return "%"  # never produced for a non-empty text: '%' is always followed by hex
    out = _ID_UNSAFE.sub(_percent, text)
    if out.startswith("__") and out.endswith("__"):
        out = "%5F" + out[1:]
    if len(out) > _MAX_ID_BYTES:
        return "~" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return out


_encode_id_cached = functools.lru_cache(maxsize=_ID_CACHE_SIZE)(_encode_id)


def _percent(match: re.Match[str]) -> str:
    """The percent-encoded UTF-8 bytes of one matched character (lone surrogates too)."""
    return "".join(f"%{byte:02X}" for byte in match.group().encode("utf-8", "surrogatepass"))


def idempotency_doc_id(key: str) -> str:
    """Document id of an idempotency key: its SHA-256, so keys of any shape fit."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------- paths


def _execution_path(tenant: str, execution_id: str) -> tuple[str, ...]:
    """Path segments of an execution's header document; its steps, events and markers live below."""
    return ("tenants", encode_id(tenant), "executions", encode_id(execution_id))


class Paths:
    """Builds the document references of the layout; the only place that knows it.

    References are immutable, so each is built once and reused (:meth:`_document`): a
    transaction names its execution header and steps again and again, and building one
    through ``collection().document()`` chains costs several path checks and objects.
    """

    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        # Per instance, so the cache ends with the client. Thread-safe, like the client.
        self._document = functools.lru_cache(maxsize=_REF_CACHE_SIZE)(self._new_document)

    def _new_document(self, *path: str) -> DocumentReference:
        """The reference of the document at ``path`` (collection and document ids, alternating)."""
        ref: DocumentReference = self._client.document(*path)
        return ref

    def _collection(self, *path: str) -> CollectionReference:
        ref: CollectionReference = self._client.collection(*path)
        return ref

    def tenant(self, tenant: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant))

    def workflows(self, tenant: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "workflows")

    def workflow(self, tenant: str, name: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "workflows", encode_id(name))

    def versions(self, tenant: str, name: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "workflows", encode_id(name), "versions")

    def version(self, tenant: str, name: str, version: int) -> DocumentReference:
        return self._document(
            "tenants", encode_id(tenant), "workflows", encode_id(name), "versions", f"{version:010d}"
        )

    def executions(self, tenant: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "executions")

    def execution(self, tenant: str, execution_id: str) -> DocumentReference:
        return self._document(*_execution_path(tenant, execution_id))

    def steps(self, tenant: str, execution_id: str) -> CollectionReference:
        return self._collection(*_execution_path(tenant, execution_id), "steps")

    def step(self, tenant: str, execution_id: str, key: str) -> DocumentReference:
        return self._document(*_execution_path(tenant, execution_id), "steps", encode_id(key))

    def item_chunk(self, tenant: str, execution_id: str, step_id: str, chunk: int) -> DocumentReference:
        # Step ids have no "-", so "<step_id>-<n>" names one chunk of one step.
        return self._document(*_execution_path(tenant, execution_id), "item_chunks", encode_id(f"{step_id}-{chunk}"))

    def marker(self, tenant: str, execution_id: str, name: str) -> DocumentReference:
        return self._document(*_execution_path(tenant, execution_id), "markers", encode_id(name))

    def arm_shards(self, tenant: str, bandit: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "bandits", encode_id(bandit), "shards")

    def events(self, tenant: str, execution_id: str) -> CollectionReference:
        return self._collection(*_execution_path(tenant, execution_id), "events")

    def event(self, tenant: str, execution_id: str, event_id: str) -> DocumentReference:
        return self._document(*_execution_path(tenant, execution_id), "events", encode_id(event_id))

    def idempotency(self, tenant: str, key: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "idempotency", idempotency_doc_id(key))

    def triggers(self, tenant: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "triggers")

    def trigger(self, tenant: str, trigger_id: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "triggers", encode_id(trigger_id))

    def inbound_events(self, tenant: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "inbound_events")

    def inbound_event(self, tenant: str, event_id: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "inbound_events", encode_id(event_id))

    def waiters(self, tenant: str) -> CollectionReference:
        return self._collection("tenants", encode_id(tenant), "waiters")

    def waiter(self, tenant: str, execution_id: str, step_key: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "waiters", encode_id(f"{execution_id}/{step_key}"))

    def signal(self, tenant: str, execution_id: str, step_key: str) -> DocumentReference:
        return self._document(*_execution_path(tenant, execution_id), "signals", encode_id(step_key))

    def blob(self, tenant: str, blob_id: str) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "blobs", blob_id)

    def chunk(self, tenant: str, blob_id: str, index: int) -> DocumentReference:
        return self._document("tenants", encode_id(tenant), "blobs", blob_id, "chunks", f"{index:04d}")

    def blob_parts(self, tenant: str, ref: BlobRef) -> list[DocumentReference]:
        """The documents holding a blob, in order: the blob document, then its chunks."""
        return [self.blob(tenant, ref.blob_id)] + [
            self.chunk(tenant, ref.blob_id, index) for index in range(1, ref.chunks)
        ]

    def api_keys(self) -> CollectionReference:
        return self._collection("api_keys")

    def api_key(self, key_hash: str) -> DocumentReference:
        return self._document("api_keys", encode_id(key_hash))

    def schema(self) -> DocumentReference:
        return self._document("meta", "schema")


# --------------------------------------------------------------------------- codec


@dataclass(frozen=True)
class BlobRef:
    """A claim-check reference: where an out-of-line payload lives and how to verify it."""

    blob_id: str
    chunks: int
    size: int
    sha256: str

    def to_field(self) -> dict[str, Any]:
        return {BLOB_MARK: self.blob_id, "chunks": self.chunks, "size": self.size, "sha256": self.sha256}

    @staticmethod
    def from_field(value: Any) -> BlobRef | None:
        """The reference stored in a field, or None when the field holds an inline value."""
        # Scalars first: every field of every document read comes here, and the ABC check
        # of ``Mapping`` is several times slower than a set lookup of the type.
        if type(value) in _SCALAR_TYPES or not isinstance(value, Mapping) or BLOB_MARK not in value:
            return None
        return BlobRef(str(value[BLOB_MARK]), int(value["chunks"]), int(value["size"]), str(value["sha256"]))


class _BlobCache:
    """Out-of-line payloads already fetched and verified; the least recently used go first.

    A blob is written once and never changed, and a reference carries the payload's
    SHA-256: bytes cached under that checksum are exactly what the reference means, inside
    a transaction or not. A large execution input thus costs its round trip once per
    process, not in every transaction of every step of the execution.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tenant: str, ref: BlobRef) -> bytes | None:
        key = (tenant, ref.blob_id, ref.sha256)
        with self._lock:
            data = self._entries.get(key)
            if data is not None:
                self._entries.move_to_end(key)
            return data

    def put(self, tenant: str, ref: BlobRef, data: bytes) -> None:
        if len(data) > self._max_bytes:
            return
        key = (tenant, ref.blob_id, ref.sha256)
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self._max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)


def encode_record(record: DataclassInstance) -> dict[str, Any]:
    """Document fields of ``record`` with its JSON fields as compact UTF-8 JSON bytes.

    Bytes, not maps: Firestore rejects some JSON (nested arrays, empty keys, huge ints)
    and a bytes field has no UTF-8 validity rule to trip on lone surrogates.
    """
    fields = record_to_dict(record)
    for name in JSON_FIELDS[type(record)]:
        value = fields[name]
        fields[name] = None if value is None else to_json(value).encode("utf-8", "surrogatepass")
    return fields


def decode_record(cls: type[R], fields: Mapping[str, Any], blobs: Mapping[str, bytes]) -> R:
    """Rebuild a record from stored fields, resolving claim-check references from ``blobs``.

    Fields in :data:`DEFERRED_FIELDS` are left to be decoded on first use.
    """
    data = dict(fields)
    deferred = DEFERRED_FIELDS.get(cls, ())
    for name in JSON_FIELDS[cls]:
        value = data.get(name)
        ref = BlobRef.from_field(value)
        if ref is not None:
            value = blobs[ref.blob_id]
        if isinstance(value, bytes):
            data[name] = Deferred(functools.partial(_from_json, value)) if name in deferred else _from_json(value)
    return record_from_dict(cls, data)


def _from_json(value: bytes) -> Any:
    return json.loads(value.decode("utf-8", "surrogatepass"))


def blob_refs(fields: Mapping[str, Any] | None) -> dict[str, BlobRef]:
    """Claim-check references of a stored document, by field name."""
    if not fields:
        return {}
    # The type test first spares a call for each scalar field, most of every document.
    return {
        name: ref
        for name, value in fields.items()
        if type(value) not in _SCALAR_TYPES and (ref := BlobRef.from_field(value)) is not None
    }


class ClaimCheck:
    """Decides which payload fields of a document go out of line and splits them in chunks."""

    def __init__(self, inline_payload_bytes: int) -> None:
        # A threshold above the per-document budget could never be honoured.
        self.threshold = min(inline_payload_bytes, DOC_INLINE_BUDGET)

    def outside(self, fields: Mapping[str, Any]) -> list[str]:
        """Names of the payload fields to store out of line.

        Any field above the threshold, then the largest remaining ones until the inline
        total fits the document budget (several payloads just under the threshold).
        """
        sizes = {name: len(value) for name, value in fields.items() if isinstance(value, bytes)}
        if sum(sizes.values()) <= self.threshold:
            return []  # the common case: small payloads, nothing above the threshold or budget
        out = [name for name, size in sizes.items() if size > self.threshold]
        inline = sorted((size, name) for name, size in sizes.items() if name not in out)
        total = sum(size for size, _ in inline)
        while inline and total > DOC_INLINE_BUDGET:
            size, name = inline.pop()
            out.append(name)
            total -= size
        return out

    @staticmethod
    def chunks(data: bytes) -> list[bytes]:
        return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)] or [b""]


# --------------------------------------------------------------------------- wire codec
#
# Transactions build their writes and parse their reads as raw protobuf messages. The
# client's proto-plus wrappers cost about 0.3 ms per document written and 0.2 ms per document
# read (plus a deep copy), a third of a small transaction's time against the emulator.
# Documents hold nulls, booleans, numbers, strings, bytes and maps of them (records are flat;
# payloads are bytes); anything else goes through the client's own codec.

_WRITE = firestore_types.Write.pb()
_COMMIT_REQUEST = firestore_types.CommitRequest.pb()
_COMMIT_RESPONSE = firestore_types.CommitResponse.pb()
_BATCH_GET_REQUEST = firestore_types.BatchGetDocumentsRequest.pb()
_BATCH_GET_RESPONSE = firestore_types.BatchGetDocumentsResponse.pb()
#: ``Value`` kinds whose raw field is already the Python value (null's is the enum 0).
_SCALAR_KINDS = frozenset(
    {"null_value", "boolean_value", "integer_value", "double_value", "string_value", "bytes_value"}
)


def encode_fields(target: Any, fields: Mapping[str, Any]) -> None:
    """Fill the protobuf map ``target`` (``Document.fields``, ``MapValue.fields``) from ``fields``."""
    for name, value in fields.items():
        _encode_value(target[name], value)


def _encode_value(target: Any, value: Any) -> None:
    """Set the raw ``Value`` message ``target`` to ``value``; bool before int (bool is an int)."""
    if value is None:
        target.null_value = 0
    elif isinstance(value, bool):
        target.boolean_value = value
    elif isinstance(value, int):
        target.integer_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bytes):
        target.bytes_value = value
    elif isinstance(value, Mapping):
        target.map_value.SetInParent()  # an empty map is still a map
        encode_fields(target.map_value.fields, value)
    else:
        target.CopyFrom(firestore_helpers.encode_value(value)._pb)


def decode_fields(fields: Any, client: firestore.Client) -> dict[str, Any]:
    """The Python values of a raw protobuf ``fields`` map."""
    # Keys, then lookups: a good tenth faster than ``items()`` on a upb map.
    return {name: _decode_value(fields[name], client) for name in fields}


def _decode_value(value: Any, client: firestore.Client) -> Any:
    """The Python value of a raw ``Value`` message."""
    kind = value.WhichOneof("value_type")
    if kind == "map_value":
        return decode_fields(value.map_value.fields, client)
    if kind in _SCALAR_KINDS:
        return None if kind == "null_value" else getattr(value, kind)
    return firestore_helpers.decode_value(value, client)  # arrays, timestamps, references...


def _update_write(ref: DocumentReference, fields: Mapping[str, Any]) -> Any:
    """A raw ``Write`` replacing the whole document at ``ref`` with ``fields``."""
    write = _WRITE()
    write.update.name = ref._document_path
    encode_fields(write.update.fields, fields)
    return write


# --------------------------------------------------------------------------- errors


@contextlib.contextmanager
def translated_errors() -> Iterator[None]:
    """Turn Google client exceptions into :mod:`engine.errors` (errors of ours pass through)."""
    try:
        yield
    except ConveyorError:
        raise
    except gexc.AlreadyExists as exc:
        raise AlreadyExists(f"already exists: {exc.message}") from exc
    except gexc.Aborted as exc:
        raise StoreUnavailable(f"Firestore transaction aborted by contention: {exc.message}") from exc
    except gexc.Conflict as exc:
        raise Conflict(f"Firestore conflict: {exc.message}") from exc
    except gexc.InvalidArgument as exc:
        raise ConveyorError(f"Firestore rejected the request: {exc.message}") from exc
    except (gexc.GoogleAPIError, google.auth.exceptions.GoogleAuthError) as exc:
        # Unavailable, deadlines, exhausted retries, missing database or index, credentials:
        # none of them says anything about the record asked for; the backend is not usable.
        raise StoreUnavailable(f"Firestore is unavailable: {exc}") from exc
    except ValueError as exc:
        if isinstance(exc.__cause__, gexc.Aborted):  # the transactional retry loop gave up
            raise StoreUnavailable(f"Firestore transaction kept aborting: {exc}") from exc
        raise


# --------------------------------------------------------------------------- cursors


def encode_cursor(values: Sequence[Any]) -> str:
    """Opaque page cursor: base64 of the last item's sort key."""
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode()


def decode_cursor(cursor: str, types: Sequence[type | tuple[type, ...]]) -> list[Any]:
    """The sort key inside a cursor from :func:`encode_cursor`, checked against ``types``.

    A cursor that is not ours (bad base64 or JSON, wrong length or types) is the client's
    mistake: ``InvalidRequest``, never a query built from garbage.
    """
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"invalid cursor {cursor!r}") from exc
    if not isinstance(values, list) or len(values) != len(types):
        raise InvalidRequest(f"invalid cursor {cursor!r}")
    for value, kind in zip(values, types, strict=True):
        if isinstance(value, bool) or not isinstance(value, kind):
            raise InvalidRequest(f"invalid cursor {cursor!r}")
    return list(values)


# --------------------------------------------------------------------------- store


class FirestoreStore:
    """The :class:`~engine.ports.Store` port on Google Cloud Firestore (native mode)."""

    def __init__(
        self,
        project: str,
        *,
        database: str = "(default)",
        client: firestore.Client | None = None,
        inline_payload_bytes: int = 256 * 1024,
    ) -> None:
        self._client = client if client is not None else _make_client(project, database)
        self._paths = Paths(self._client)
        self._claim = ClaimCheck(inline_payload_bytes)
        self._rpc: _Rpc | None = None
        self._blob_cache = _BlobCache(BLOB_CACHE_BYTES)
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
    def rpc(self) -> _Rpc:
        """The raw calls transactions make (built on first use: the channel opens lazily)."""
        if self._rpc is None:
            self._rpc = _Rpc(self._client)
        return self._rpc

    @property
    def claim_check(self) -> ClaimCheck:
        return self._claim

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

    def _load(
        self,
        cls: type[R],
        docs: Sequence[Mapping[str, Any]],
        read: Reader,
        cache: dict[str, bytes] | None = None,
    ) -> list[R]:
        """Decode stored documents, fetching every blob they reference in one round trip."""
        blobs = cache if cache is not None else {}
        self.resolve_blobs(docs, read, blobs)
        return [decode_record(cls, doc, blobs) for doc in docs]

    def resolve_blobs(
        self,
        docs: Sequence[Mapping[str, Any]],
        read: Reader,
        blobs: dict[str, bytes],
    ) -> None:
        """Add to ``blobs`` every payload ``docs`` reference that it lacks: from this process's
        cache, else fetched in one round trip."""
        wanted: list[tuple[str, BlobRef]] = []
        for doc in docs:
            tenant = str(doc["tenant"])
            for ref in blob_refs(doc).values():
                if ref.blob_id in blobs:
                    continue
                cached = self._blob_cache.get(tenant, ref)
                if cached is None:
                    wanted.append((tenant, ref))
                else:
                    blobs[ref.blob_id] = cached
        if wanted:
            fetched = self._fetch_blobs(wanted, read)
            for tenant, ref in wanted:
                self._blob_cache.put(tenant, ref, fetched[ref.blob_id])
            blobs.update(fetched)

    def _fetch_blobs(
        self,
        wanted: Sequence[tuple[str, BlobRef]],
        read: Reader,
    ) -> dict[str, bytes]:
        """Fetch and check the chunks of every wanted blob in one batched read."""
        layout = {ref.blob_id: (ref, self._paths.blob_parts(tenant, ref)) for tenant, ref in wanted}
        refs = [part for _, parts in layout.values() for part in parts]
        stored = {path: doc["data"] for path, doc in read(refs).items() if doc is not None}
        found: dict[str, bytes] = {}
        for blob_id, (ref, parts) in layout.items():
            # Blobs are written and freed in the transaction that writes their record, so a
            # missing or mismatching chunk means the store is damaged, not that we raced.
            if any(part.path not in stored for part in parts):
                raise ConveyorError(f"payload blob {blob_id} is missing from the store")
            data = b"".join(stored[part.path] for part in parts)
            if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
                raise ConveyorError(f"payload blob {blob_id} does not match its reference")
            found[blob_id] = data
        return found

    def _snapshot_reader(self, snaps: Sequence[DocumentSnapshot[DocumentReference]]) -> Reader:
        """Read blobs as of the documents' read time, so a concurrent rewrite that replaced
        (and garbage-collected) a payload cannot leave us holding a dangling reference."""
        read_time = snaps[0].read_time if snaps else None

        def read(refs: list[DocumentReference]) -> dict[str, dict[str, Any] | None]:
            snaps = self._client.get_all(refs, read_time=read_time)
            return {snap.reference.path: _data(snap) if snap.exists else None for snap in snaps}

        return read

    def _get(self, cls: type[R], ref: DocumentReference) -> R | None:
        with translated_errors():
            snap = ref.get()
            if not snap.exists:
                return None
            return self._load(cls, [_data(snap)], self._snapshot_reader([snap]))[0]

    def _run_query(self, cls: type[R], query: Query) -> list[R]:
        with translated_errors():
            snaps = list(query.stream())
            return self._load(cls, [_data(s) for s in snaps], self._snapshot_reader(snaps))

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

    def atomic(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in a Firestore transaction, retried (with backoff) when Firestore aborts it.

        The transaction begins with its first read (no BeginTransaction round trip), and one
        that reads nothing commits as a single atomic batch (see :class:`_Attempt`).

        Events are created without a prior existence read (one round trip less per
        transition). If the commit then fails because an event already exists, the
        transaction is run again in a careful mode that reads the events first and skips
        those present; any other ``AlreadyExists`` is the caller's.
        """
        return self._atomic(fn)

    def read(self, fn: Callable[[Reads], T]) -> T:
        """Run ``fn`` with plain (non-transactional) reads: no locks, no commit.

        Each batched read is one consistent snapshot; that is all a peek needs.
        """
        attempt = _Attempt(self._client, self.rpc, None, transactional=False)
        reads = FirestoreTransaction(self, attempt, careful_events=False)
        with translated_errors():
            return fn(reads)

    def _atomic(self, fn: Callable[[FirestoreTransaction], T]) -> T:
        with translated_errors():
            try:
                return self._transact(fn, careful=False)
            except _EventCollision:
                return self._transact(fn, careful=True)

    def _transact(self, fn: Callable[[FirestoreTransaction], T], *, careful: bool) -> T:
        """Run attempts until one commits; the last ``Aborted`` escapes after ``MAX_ATTEMPTS``."""
        retry_id: bytes | None = None
        for number in range(MAX_ATTEMPTS):
            if number:
                _back_off(number)
            attempt = _Attempt(self._client, self.rpc, retry_id)
            try:
                return self._run_attempt(fn, attempt, careful=careful)
            except gexc.Aborted:
                if number == MAX_ATTEMPTS - 1:
                    raise
                # Naming the aborted transaction keeps the retry's place in Firestore's lock queue.
                retry_id = attempt.id or retry_id
        raise AssertionError("unreachable")

    def _run_attempt(self, fn: Callable[[FirestoreTransaction], T], attempt: _Attempt, *, careful: bool) -> T:
        """One attempt: run ``fn``, hand its writes over, commit; roll back if anything fails."""
        tx = FirestoreTransaction(self, attempt, careful_events=careful)
        try:
            result = fn(tx)
            tx.flush()
            attempt.commit()
        except gexc.AlreadyExists as exc:
            attempt.rollback()
            if not careful and tx.created_events:
                raise _EventCollision from exc
            raise
        except BaseException:
            # Also on SystemExit/KeyboardInterrupt: the locks of an abandoned transaction would
            # block every writer of the documents it read until they expire (60 s idle).
            attempt.rollback()
            raise
        return result

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
            return self._load(WorkflowVersionRecord, [snap.get("record")], self._snapshot_reader([snap]))[0]

    def list_workflows(self, tenant: str, *, cursor: str | None = None, limit: int = 50) -> Page:
        """Latest version of each workflow, ordered by name (one summary document each)."""
        after = {"name": decode_cursor(cursor, [str])[0]} if cursor else None
        _check_limit(limit)
        query = self.query(
            self._paths.workflows(tenant), order=[("name", ASC)], start_after=after, limit=limit + 1
        )
        with translated_errors():
            snaps = list(query.stream())
            records = self._load(
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

    def add_arm_outcome(self, tenant: str, bandit: str, arm: str, successes: float, failures: float) -> None:
        """A server-side increment of one of the arm's shards, chosen at random (no transaction)."""
        shard = f"{encode_id(arm)}.{random.randrange(_ARM_SHARDS)}"  # noqa: S311  (spreading load, not security)
        fields = {"arm": arm, "successes": firestore.Increment(successes), "failures": firestore.Increment(failures)}
        with translated_errors():
            self._paths.arm_shards(tenant, bandit).document(shard).set(fields, merge=True)

    def arm_counts(self, tenant: str, bandit: str) -> dict[str, tuple[float, float]]:
        totals: dict[str, tuple[float, float]] = {}
        with translated_errors():
            for snapshot in self._paths.arm_shards(tenant, bandit).stream():
                data = snapshot.to_dict() or {}
                successes, failures = totals.get(data["arm"], (0.0, 0.0))
                totals[data["arm"]] = (successes + data.get("successes", 0), failures + data.get("failures", 0))
        return dict(sorted(totals.items()))

    def list_executions(
        self,
        tenant: str,
        *,
        status: ExecutionStatus | None = None,
        workflow: str | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> Page:
        """Executions newest first (ties by id), filtered; see ``firestore.indexes.json``."""
        where: list[tuple[str, str, Any]] = []
        if status is not None:
            where.append(("status", "==", ExecutionStatus(status).value))
        if workflow is not None:
            where.append(("workflow", "==", workflow))
        if created_after is not None:
            where.append(("created_at", ">=", created_after))
        if created_before is not None:
            where.append(("created_at", "<", created_before))
        after = None
        if cursor:
            created_at, doc_id = decode_cursor(cursor, [(int, float), str])
            after = {"created_at": created_at, DOC_ID: doc_id}
        query = self.query(
            self._paths.executions(tenant),
            where=where,
            order=[("created_at", DESC), (DOC_ID, DESC)],
            start_after=after,
        )
        return self._page(ExecutionRecord, query, limit, lambda r: [r.created_at, encode_id(r.id)])

    def count_active_executions(self, tenant: str) -> int:
        """Server-side count aggregation: no documents are transferred."""
        active = sorted(s.value for s in EXECUTION_ACTIVE)
        query = self.query(self._paths.executions(tenant), where=[("status", "in", active)])
        return self._count(query)

    def _count(self, query: Query) -> int:
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
        return self._count(query)

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


# --------------------------------------------------------------------------- transaction


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


class _Rpc:
    """BatchGetDocuments and Commit as plain gRPC calls on raw protobuf messages.

    Every transaction makes these calls, a step at least three of them. The generated
    client would wrap each in a retry and deadline layer, a logging interceptor and
    proto-plus messages, which costs more CPU than the call itself on a busy worker. Errors
    are raised as the ``google.api_core`` exceptions the generated client raises, so the
    rest of the adapter handles both alike; retrying is the transaction loop's and the
    runner's job. The channel is the client's own (TLS and credentials included).
    """

    def __init__(self, client: firestore.Client) -> None:
        channel = client._firestore_api._transport.grpc_channel
        self._batch_get = channel.unary_stream(
            "/google.firestore.v1.Firestore/BatchGetDocuments",
            request_serializer=_BATCH_GET_REQUEST.SerializeToString,
            response_deserializer=_BATCH_GET_RESPONSE.FromString,
        )
        self._commit = channel.unary_unary(
            "/google.firestore.v1.Firestore/Commit",
            request_serializer=_COMMIT_REQUEST.SerializeToString,
            response_deserializer=_COMMIT_RESPONSE.FromString,
        )
        routing = gapic_v1.routing_header.to_grpc_metadata(  # type: ignore[no-untyped-call]
            (("database", client._database_string),)
        )
        self._metadata = (*client._rpc_metadata, routing)

    def batch_get_documents(self, *, request: Any) -> Iterator[Any]:
        """The raw ``BatchGetDocumentsResponse`` messages of one read."""
        try:
            yield from self._batch_get(request, metadata=self._metadata, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise gexc.from_grpc_error(exc) from exc  # type: ignore[no-untyped-call]

    def commit(self, *, request: Any) -> Any:
        """The raw ``CommitResponse`` of one commit."""
        try:
            return self._commit(request, metadata=self._metadata, timeout=RPC_TIMEOUT)
        except grpc.RpcError as exc:
            raise gexc.from_grpc_error(exc) from exc  # type: ignore[no-untyped-call]


class _Attempt:
    """One attempt of a read-write transaction, begun by its first read.

    ``@firestore.transactional`` opens every attempt with a BeginTransaction round trip.
    Firestore can instead start the transaction inside the first BatchGetDocuments
    (``new_transaction``); the first response message carries the new id, which later
    reads and the commit name. An attempt that never reads has nothing to isolate: its
    writes go out as one atomic Commit without a transaction (a batch), so it costs one
    round trip. ``create`` writes keep their must-not-exist precondition either way.
    With ``transactional=False`` it only reads, each read on its own (``Store.read``).

    Requests and documents are built and parsed as raw protobuf messages (see
    :func:`encode_fields`), bypassing the client's slower proto-plus wrappers.
    """

    def __init__(
        self, client: firestore.Client, rpc: _Rpc, retry_id: bytes | None, *, transactional: bool = True
    ) -> None:
        self._client = client
        self._rpc = rpc
        self._retry_id = retry_id
        self._transactional = transactional
        self._writes: list[Any] = []  # raw Write messages, in order
        self._finished = False
        self.id: bytes | None = None

    # the writes FirestoreTransaction hands over in flush()

    def create(self, ref: DocumentReference, fields: Mapping[str, Any]) -> None:
        write = _update_write(ref, fields)
        write.current_document.exists = False
        self._writes.append(write)

    def set(self, ref: DocumentReference, fields: Mapping[str, Any]) -> None:
        self._writes.append(_update_write(ref, fields))

    def delete(self, ref: DocumentReference) -> None:
        self._writes.append(_WRITE(delete=ref._document_path))

    def get_all(self, refs: list[DocumentReference]) -> dict[str, dict[str, Any] | None]:
        """Read documents in this transaction, beginning it if this is its first read.

        A :data:`Reader`: fields by ``ref.path``, None for a document that does not exist.
        """
        if self._writes:
            raise AssertionError("Firestore transactions cannot read after writing")
        by_name = {ref._document_path: ref.path for ref in refs}
        request = _BATCH_GET_REQUEST(database=self._client._database_string, documents=list(by_name))
        if self.id is not None:
            request.transaction = self.id
        elif self._transactional:
            read_write = request.new_transaction.read_write
            read_write.SetInParent()  # an empty ReadWrite still names the mode
            if self._retry_id:
                read_write.retry_transaction = self._retry_id
        found: dict[str, dict[str, Any] | None] = {}
        for raw in self._rpc.batch_get_documents(request=request):
            if raw.transaction:  # only in the first message of a beginning read
                self.id = raw.transaction
            result = raw.WhichOneof("result")
            if result == "found":
                found[by_name[raw.found.name]] = decode_fields(raw.found.fields, self._client)
            elif result == "missing":
                found[by_name[raw.missing]] = None
        return found

    def commit(self) -> None:
        """Commit the transaction, or the writes as a batch when nothing was read.

        A commit that fails otherwise than by ``Aborted`` (a deadline, an unavailable backend)
        leaves the transaction open as far as we know: it stays unfinished, so the caller's
        rollback releases its locks instead of leaving them for Firestore's 60 s expiry.
        """
        if self.id is None and not self._writes:
            self._finished = True
            return  # nothing read, nothing written: no round trip at all
        request = _COMMIT_REQUEST(database=self._client._database_string, writes=self._writes)
        if self.id is not None:
            request.transaction = self.id
        try:
            self._rpc.commit(request=request)
        except gexc.Aborted:
            self._finished = True  # Firestore ended it already
            raise
        self._finished = True

    def rollback(self) -> None:
        """Release the read locks of a transaction that will not commit (best effort).

        Unreleased locks would expire only after 60 s without activity, blocking every writer
        of the documents read meanwhile; a failed rollback changes nothing else, so it is not
        reported over the error that caused it.
        """
        if self.id is None or self._finished:
            return
        self._finished = True
        with contextlib.suppress(gexc.GoogleAPICallError, gexc.RetryError):
            self._client._firestore_api.rollback(
                request={"database": self._client._database_string, "transaction": self.id},
                metadata=self._client._rpc_metadata,
                retry=None,
                timeout=ROLLBACK_TIMEOUT,
            )


class FirestoreTransaction:
    """The :class:`~engine.ports.Transaction` port on one attempt of a Firestore transaction.

    Firestore forbids reads after writes inside a transaction, so writes are buffered here
    (by document path: a later write of the same document replaces the earlier one) and
    handed to Firestore in :meth:`flush`. Reads consult the buffer first (read-your-writes),
    then a cache of documents already read in this transaction, then Firestore.
    """

    def __init__(self, store: FirestoreStore, attempt: _Attempt, *, careful_events: bool) -> None:
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
        return self._store._load(cls, docs, self._attempt.get_all, self._blobs)

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
        self._store.resolve_blobs(stored, self._attempt.get_all, self._blobs)
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
            ref = _reusable(previous.get(name), data) or self._store_blob(write, data)
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


# --------------------------------------------------------------------------- helpers


#: gRPC runs a server-streaming call (BatchGetDocuments, RunQuery) on a thread of its own unless
#: told otherwise; on the caller's thread each read costs about 0.5 ms less CPU. The adapter
#: always consumes those streams synchronously, which is what this option requires.
_SINGLE_THREADED_STREAMS = (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)


class _Client(firestore.Client):
    """The Firestore client, its gRPC channel built with :data:`_SINGLE_THREADED_STREAMS`."""

    @property
    def _firestore_api(self) -> FirestoreClient:
        if self._firestore_api_internal is None:
            if self._emulator_host is not None:
                # As the library does for the emulator: plaintext, the emulator's owner token.
                options = [("Authorization", "Bearer owner"), *_GRPC_MSG_SIZE_OPTIONS, _SINGLE_THREADED_STREAMS]
                channel = grpc.insecure_channel(self._emulator_host, options=options)
            else:
                options = [*_DEFAULT_CHANNEL_OPTIONS, _SINGLE_THREADED_STREAMS]
                channel = FirestoreGrpcTransport.create_channel(
                    self._target, credentials=self._credentials, options=options
                )
            self._transport = FirestoreGrpcTransport(host=self._target, channel=channel)
            self._firestore_api_internal = FirestoreClient(
                transport=self._transport, client_options=self._client_options
            )
        return cast(FirestoreClient, self._firestore_api_internal)


def _make_client(project: str, database: str) -> firestore.Client:
    """A client for ``project``; anonymous credentials when the emulator is configured."""
    credentials = None
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    with translated_errors():
        return _Client(project=project, database=database, credentials=credentials)


def _back_off(attempt: int) -> None:
    """Sleep before retrying an aborted transaction.

    Retried at once, transactions that collided collide again, so spread them out. (The
    emulator breaks a lock cycle only when a waiting commit hits its 2 s lock timeout, and a
    transaction whose client died keeps its read locks until 60 s after its last request:
    ``MAX_ATTEMPTS`` against such a lock give up after about 23 s.)
    """
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)
    time.sleep(random.uniform(0, ceiling))  # noqa: S311 - jitter, not a secret


def _data(snap: DocumentSnapshot[DocumentReference]) -> dict[str, Any]:
    return snap.to_dict() or {}


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


def _reusable(previous: BlobRef | None, data: bytes) -> BlobRef | None:
    """The previous blob of a field when its content is unchanged (no rewrite needed)."""
    if previous is None or previous.size != len(data):
        return None
    return previous if previous.sha256 == hashlib.sha256(data).hexdigest() else None


def _sorted_steps(records: list[StepRecord]) -> list[StepRecord]:
    """Steps by key (the contract's order); sorted here because encoded ids sort differently."""
    return sorted(records, key=lambda r: r.key)


def _check_limit(limit: int) -> None:
    if limit < 1:
        raise InvalidRequest(f"limit must be at least 1, not {limit}")


__all__ = [
    "BLOB_MARK",
    "CHUNK_BYTES",
    "DOC_INLINE_BUDGET",
    "JSON_FIELDS",
    "BlobRef",
    "ClaimCheck",
    "FirestoreStore",
    "FirestoreTransaction",
    "Paths",
    "decode_record",
    "encode_id",
    "encode_record",
]
