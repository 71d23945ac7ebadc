"""The document layout of the Firestore store: collection and document paths, document ids.

One subtree per tenant, so no read names a document of another tenant::

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
"""

from __future__ import annotations

import functools
import hashlib
import re
from typing import TYPE_CHECKING

from google.cloud import firestore

if TYPE_CHECKING:
    from engine.adapters.store_firestore.codec import BlobRef

if TYPE_CHECKING:
    from google.cloud.firestore_v1.collection import CollectionReference
    from google.cloud.firestore_v1.document import DocumentReference

#: Document references a store keeps for reuse (:class:`Paths`); a few MB at most.
_REF_CACHE_SIZE = 4096

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
