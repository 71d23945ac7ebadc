"""Firestore adapter of the :class:`~engine.ports.Store` port (production backend), by responsibility:

* :mod:`.layout`: collection and document paths, document ids (the only place that knows the layout);
* :mod:`.codec`: records <-> document fields, claim-checked payloads, page cursors;
* :mod:`.wire`: the gRPC calls and raw protobuf codec, the only module that touches private
  names of google-cloud-firestore;
* :mod:`.transaction`: the transaction runner and the :class:`~engine.ports.Transaction` port;
* :mod:`.store`: :class:`FirestoreStore`, the :class:`~engine.ports.Store` port;
* :mod:`.search`: execution search (filtered listings, counts per status, the label backfill).
"""

from engine.adapters.store_firestore.codec import (
    BLOB_MARK,
    CHUNK_BYTES,
    DOC_INLINE_BUDGET,
    JSON_FIELDS,
    BlobCache,
    BlobRef,
    ClaimCheck,
    decode_record,
    encode_record,
)
from engine.adapters.store_firestore.layout import Paths, encode_id
from engine.adapters.store_firestore.store import FirestoreStore
from engine.adapters.store_firestore.transaction import FirestoreTransaction

__all__ = [
    "BLOB_MARK",
    "CHUNK_BYTES",
    "DOC_INLINE_BUDGET",
    "JSON_FIELDS",
    "BlobCache",
    "BlobRef",
    "ClaimCheck",
    "FirestoreStore",
    "FirestoreTransaction",
    "Paths",
    "decode_record",
    "encode_id",
    "encode_record",
]
