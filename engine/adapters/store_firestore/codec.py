"""Records <-> Firestore document fields, claim-checked payloads, page cursors.

Payload fields (anything free-form JSON: inputs, outputs, errors, step items, definitions,
event data, trigger specs) are stored as compact UTF-8 JSON bytes. Payloads larger than
``inline_payload_bytes`` are moved out of line (claim-check) into blob documents of at most
:data:`CHUNK_BYTES`, written in the same transaction, and the record keeps a small
reference; reads resolve references transparently. No document exceeds Firestore's 1 MiB.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from engine.adapters.payloads import record_from_dict, record_to_dict, to_json
from engine.errors import ConveyorError, InvalidRequest
from engine.records import (
    ApiKeyRecord,
    Deferred,
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
from engine.search import label_token

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from google.cloud.firestore_v1.document import DocumentReference

R = TypeVar("R", bound="DataclassInstance")
#: Reads documents in one round trip: ``{ref.path: fields, or None if it does not exist}``.
Reader = Callable[[list["DocumentReference"]], dict[str, "dict[str, Any] | None"]]
#: Largest slice of a payload kept in one document (bytes field); well under 1 MiB.
CHUNK_BYTES = 500 * 1024
#: Inline payload bytes one document may hold in total; the rest of a record is small.
DOC_INLINE_BUDGET = 768 * 1024
#: Bytes of out-of-line payloads each store keeps in memory (see :class:`BlobCache`).
BLOB_CACHE_BYTES = 64 * 1024 * 1024

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

#: A derived field of execution documents, written beside the record's own and read only by
#: queries: each label as ``key=value`` (labels themselves are JSON bytes, not indexed).
LABEL_PAIRS = "label_pairs"

#: Marker key of a claim-check reference left in place of an out-of-line payload.
BLOB_MARK = "$blob"
#: Types of stored field values that are never a claim-check reference.
_SCALAR_TYPES = frozenset({type(None), bool, int, float, str, bytes})


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


class BlobCache:
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


#: The chunk documents of an out-of-line payload: ``(tenant, ref) -> refs`` (``Paths.blob_parts``).
PartsOf = Callable[[str, "BlobRef"], list["DocumentReference"]]


class BlobResolver:
    """Out-of-line payloads of stored documents: from the process's :class:`BlobCache`, else
    fetched, all of them in one round trip, and checked against their references."""

    def __init__(self, parts_of: PartsOf, cache: BlobCache) -> None:
        self._parts_of = parts_of
        self._cache = cache

    def load(
        self,
        cls: type[R],
        docs: Sequence[Mapping[str, Any]],
        read: Reader,
        cache: dict[str, bytes] | None = None,
    ) -> list[R]:
        """Decode stored documents, fetching every blob they reference in one round trip."""
        blobs = cache if cache is not None else {}
        self.resolve(docs, read, blobs)
        return [decode_record(cls, doc, blobs) for doc in docs]

    def resolve(
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
                cached = self._cache.get(tenant, ref)
                if cached is None:
                    wanted.append((tenant, ref))
                else:
                    blobs[ref.blob_id] = cached
        if wanted:
            fetched = self._fetch(wanted, read)
            for tenant, ref in wanted:
                self._cache.put(tenant, ref, fetched[ref.blob_id])
            blobs.update(fetched)

    def _fetch(
        self,
        wanted: Sequence[tuple[str, BlobRef]],
        read: Reader,
    ) -> dict[str, bytes]:
        """Fetch and check the chunks of every wanted blob in one batched read."""
        layout = {ref.blob_id: (ref, self._parts_of(tenant, ref)) for tenant, ref in wanted}
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


def encode_record(record: DataclassInstance) -> dict[str, Any]:
    """Document fields of ``record`` with its JSON fields as compact UTF-8 JSON bytes.

    Bytes, not maps: Firestore rejects some JSON (nested arrays, empty keys, huge ints)
    and a bytes field has no UTF-8 validity rule to trip on lone surrogates.
    """
    fields = record_to_dict(record)
    for name in JSON_FIELDS[type(record)]:
        value = fields[name]
        fields[name] = None if value is None else to_json(value).encode("utf-8", "surrogatepass")
    if isinstance(record, ExecutionRecord):
        fields[LABEL_PAIRS] = label_pairs(record.labels)
    return fields


def label_pairs(labels: Mapping[str, str]) -> list[str]:
    """The :data:`LABEL_PAIRS` value of an execution with ``labels``."""
    return sorted(label_token(key, value) for key, value in labels.items())


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


def reusable_blob(previous: BlobRef | None, data: bytes) -> BlobRef | None:
    """The previous blob of a field when its content is unchanged (no rewrite needed)."""
    if previous is None or previous.size != len(data):
        return None
    return previous if previous.sha256 == hashlib.sha256(data).hexdigest() else None


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
        if isinstance(value, float) and not math.isfinite(value):  # JSON's ``NaN``, ``1e999``: no sort key we hand out
            raise InvalidRequest(f"invalid cursor {cursor!r}")
    return list(values)
