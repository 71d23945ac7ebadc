"""The wire of the Firestore store: how a transaction's reads and commit reach Firestore.

This is the only module that touches private names of google-cloud-firestore (listed in
:data:`PRIVATE_NAMES` and :data:`CLIENT_ATTRIBUTES`). Two paths, chosen per store
(:func:`select_wire`, setting ``firestore_wire``):

* **raw** (:class:`RawWire`): reads and commits are plain gRPC calls with raw protobuf
  messages on the client's own channel; a transaction begins inside its first read and one
  that reads nothing commits as a batch. Fast, and it relies on those private names.
* **public** (:class:`PublicWire`): only the public client API: every attempt is a
  ``firestore.transactional`` call on a ``client.transaction()`` (a BeginTransaction round
  trip, reads through ``Transaction.get_all``, writes through ``Transaction.create/set/delete``).

``auto`` takes the raw path when every private name it needs is present in the installed
google-cloud-firestore, else the public one (with a warning); ``raw`` refuses to start
without them; ``public`` never touches them.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import grpc
from google.api_core import exceptions as gexc
from google.api_core import gapic_v1
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore
from google.cloud.firestore_v1 import types as firestore_types
from google.cloud.firestore_v1.document import DocumentReference
from google.cloud.firestore_v1.services.firestore.client import FirestoreClient
from google.cloud.firestore_v1.services.firestore.transports.grpc import FirestoreGrpcTransport

from engine.adapters.store_firestore.errors import translated_errors
from engine.errors import ConveyorError

if TYPE_CHECKING:
    from google.cloud.firestore_v1.base_document import DocumentSnapshot

T = TypeVar("T")
WireMode = Literal["auto", "raw", "public"]
log = logging.getLogger(__name__)


def _private_module(name: str) -> Any:
    """A private module of google-cloud-firestore, or None when this version has none by that name."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


_HELPERS: Any = _private_module("google.cloud.firestore_v1._helpers")
_BASE_CLIENT: Any = _private_module("google.cloud.firestore_v1.base_client")

#: Private names of google-cloud-firestore the raw path uses, as (owner, name): a module
#: or class, checked with ``hasattr`` (:func:`missing_private_names`).
PRIVATE_NAMES: tuple[tuple[Any, str], ...] = (
    (_HELPERS, "encode_value"),  # Python value -> Value, for kinds the raw codec leaves to the client
    (_HELPERS, "decode_value"),  # Value -> Python value, likewise
    (_BASE_CLIENT, "_DEFAULT_CHANNEL_OPTIONS"),  # the library's channel options (production channel)
    (_BASE_CLIENT, "_GRPC_MSG_SIZE_OPTIONS"),  # the library's message size options (emulator channel)
    (firestore.Client, "_firestore_api"),  # the generated client; :class:`_Client` builds its channel
    (firestore.Client, "_firestore_api_internal"),  # where the client caches it
    (firestore.Client, "_target"),  # the endpoint
    (firestore.Client, "_database_string"),  # ``projects/{p}/databases/{d}``, named by every request
    (firestore.Client, "_rpc_metadata"),  # the request metadata the library sends
    (DocumentReference, "_document_path"),  # a document's full resource name
)
#: Private attributes a client instance sets in its constructor, used by :class:`_Client`.
CLIENT_ATTRIBUTES = ("_emulator_host", "_credentials", "_client_options")


def missing_private_names(client: firestore.Client | None = None) -> list[str]:
    """The private names the raw path needs that this google-cloud-firestore lacks (empty: none).

    With ``client``, its instance attributes (:data:`CLIENT_ATTRIBUTES`) are checked too.
    """
    missing = [
        f"{getattr(owner, '__name__', owner)}.{name}"
        for owner, name in PRIVATE_NAMES
        if owner is None or not hasattr(owner, name)
    ]
    if client is not None:
        missing += [f"Client().{name}" for name in CLIENT_ATTRIBUTES if not hasattr(client, name)]
    return missing


#: Deadline, in seconds, of one read or commit of a transaction (see :class:`RawRpc`).
RPC_TIMEOUT = 60.0
#: Timeout of a rollback: on an error path, and its locks expire on their own anyway.
ROLLBACK_TIMEOUT = 5.0

# Raw codec. Transactions build their writes and parse their reads as raw protobuf messages. The
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
        target.CopyFrom(firestore_types.Value.pb(_HELPERS.encode_value(value)))


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
    return _HELPERS.decode_value(value, client)  # arrays, timestamps, references...


def _update_write(ref: DocumentReference, fields: Mapping[str, Any]) -> Any:
    """A raw ``Write`` replacing the whole document at ``ref`` with ``fields``."""
    write = _WRITE()
    write.update.name = ref._document_path
    encode_fields(write.update.fields, fields)
    return write


class RawRpc:
    """BatchGetDocuments and Commit as plain gRPC calls on raw protobuf messages.

    Every transaction makes these calls, a step at least three of them. The generated
    client would wrap each in a retry and deadline layer, a logging interceptor and
    proto-plus messages, which costs more CPU than the call itself on a busy worker. Errors
    are raised as the ``google.api_core`` exceptions the generated client raises, so the
    rest of the adapter handles both alike; retrying is the transaction loop's and the
    runner's job. The channel is the client's own (TLS and credentials included).
    """

    def __init__(self, client: firestore.Client) -> None:
        channel = client._firestore_api.transport.grpc_channel
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


class RawAttempt:
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
        self, client: firestore.Client, rpc: RawRpc, retry_id: bytes | None, *, transactional: bool = True
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

    def execute(self, body: Callable[[], T]) -> T:
        """Run ``body`` (its reads and writes go through this attempt), then commit.

        Any failure rolls the transaction back, also SystemExit/KeyboardInterrupt: the locks
        of an abandoned transaction would block every writer of the documents it read until
        they expire (60 s idle). Vendor errors (``Aborted``, ``AlreadyExists``) escape as such.
        """
        try:
            result = body()
            self.commit()
        except BaseException:
            self.rollback()
            raise
        return result

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
                size_options = _BASE_CLIENT._GRPC_MSG_SIZE_OPTIONS
                options = [("Authorization", "Bearer owner"), *size_options, _SINGLE_THREADED_STREAMS]
                channel = grpc.insecure_channel(self._emulator_host, options=options)
            else:
                options = [*_BASE_CLIENT._DEFAULT_CHANNEL_OPTIONS, _SINGLE_THREADED_STREAMS]
                channel = FirestoreGrpcTransport.create_channel(
                    self._target, credentials=self._credentials, options=options
                )
            self._transport = FirestoreGrpcTransport(host=self._target, channel=channel)
            self._firestore_api_internal = FirestoreClient(
                transport=self._transport, client_options=self._client_options
            )
        return cast(FirestoreClient, self._firestore_api_internal)


class RawWire:
    """The raw path: :class:`RawAttempt` over :class:`RawRpc` (see the module docstring)."""

    name = "raw"

    def __init__(self, client: firestore.Client) -> None:
        self._client = client
        self._rpc: RawRpc | None = None

    @property
    def rpc(self) -> RawRpc:
        """The raw calls transactions make (built on first use: the channel opens lazily)."""
        if self._rpc is None:
            self._rpc = RawRpc(self._client)
        return self._rpc

    def attempt(self, retry_id: bytes | None, *, transactional: bool = True) -> RawAttempt:
        return RawAttempt(self._client, self.rpc, retry_id, transactional=transactional)


class PublicAttempt:
    """One attempt of a transaction through the public client API only.

    The attempt is one ``firestore.transactional`` call with ``max_attempts=1`` (the store's
    runner does the retrying, with backoff): it begins with a BeginTransaction round trip,
    reads with ``Transaction.get_all``, buffers writes in the ``Transaction`` and commits
    them, rolling back on any failure. An aborted attempt's id is not carried into the next
    (the public API offers no way to), so a retry does not keep its place in the lock queue.
    With ``transactional=False`` it only reads, with ``Client.get_all``.
    """

    #: The public API does not expose an attempt's id for ``retry_transaction``.
    id: bytes | None = None

    def __init__(self, client: firestore.Client, *, transactional: bool = True) -> None:
        self._client = client
        self._transactional = transactional
        self._transaction: firestore.Transaction | None = None

    def get_all(self, refs: list[DocumentReference]) -> dict[str, dict[str, Any] | None]:
        """A :data:`~engine.adapters.store_firestore.codec.Reader`: fields by ``ref.path``."""
        if self._transactional:
            snaps: Iterator[DocumentSnapshot[DocumentReference]] = self._current().get_all(refs)
        else:
            snaps = self._client.get_all(refs)
        return {snap.reference.path: (snap.to_dict() or {}) if snap.exists else None for snap in snaps}

    def create(self, ref: DocumentReference, fields: Mapping[str, Any]) -> None:
        self._current().create(ref, dict(fields))

    def set(self, ref: DocumentReference, fields: Mapping[str, Any]) -> None:
        self._current().set(ref, dict(fields))

    def delete(self, ref: DocumentReference) -> None:
        self._current().delete(ref)

    def _current(self) -> firestore.Transaction:
        if self._transaction is None:
            raise AssertionError("a public-path transaction is used outside PublicAttempt.execute")
        return self._transaction

    def execute(self, body: Callable[[], T]) -> T:
        """Run ``body`` in one attempt of ``firestore.transactional`` and commit.

        ``transactional`` rolls back on any failure and wraps an aborted commit in a
        ``ValueError``; a failing rollback is raised over the error that caused it. What
        escapes here is the error that matters: the body's own, else the ``Aborted`` or
        ``AlreadyExists`` of the commit, else the first Google API error in the chain (a
        failed begin, commit or rollback), else whatever the library raised.
        """
        failure: list[BaseException] = []

        def attempt(transaction: firestore.Transaction) -> T:
            self._transaction = transaction
            try:
                return body()
            except BaseException as exc:
                failure.append(exc)
                raise

        try:
            return cast(T, firestore.transactional(attempt)(self._client.transaction(max_attempts=1)))
        except BaseException as exc:
            if failure and failure[0] is not exc:
                raise failure[0] from None
            # A failed BeginTransaction leaves nothing to roll back, and the library's attempt
            # to raises a ValueError over the error that matters.
            vendor = _chained(exc, (gexc.Aborted, gexc.AlreadyExists)) or _chained(exc, (gexc.GoogleAPIError,))
            if vendor is not None and vendor is not exc:
                raise vendor from exc
            raise
        finally:
            self._transaction = None


def _chained(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` in ``exc``'s chain of causes and contexts."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, kinds):
            return current
        todo += [link for link in (current.__cause__, current.__context__) if link is not None]
    return None


class PublicWire:
    """The public path: :class:`PublicAttempt` (see the module docstring)."""

    name = "public"

    def __init__(self, client: firestore.Client) -> None:
        self._client = client

    def attempt(self, retry_id: bytes | None, *, transactional: bool = True) -> PublicAttempt:
        return PublicAttempt(self._client, transactional=transactional)


Wire = RawWire | PublicWire
Attempt = RawAttempt | PublicAttempt


def select_wire(client: firestore.Client, mode: WireMode) -> Wire:
    """The wire a store on ``client`` uses: see the module docstring for ``mode``."""
    if mode == "public":
        return PublicWire(client)
    missing = missing_private_names(client)
    if not missing:
        return RawWire(client)
    version = getattr(firestore, "__version__", "?")
    if mode == "raw":
        raise ConveyorError(
            f"firestore_wire=raw, but google-cloud-firestore {version} lacks the private names the raw path "
            f"uses: {', '.join(missing)}; set firestore_wire to auto or public"
        )
    log.warning(
        "google-cloud-firestore %s lacks %s: the Firestore store uses the public client API (slower)",
        version,
        ", ".join(missing),
    )
    return PublicWire(client)


def make_client(project: str, database: str, mode: WireMode = "auto") -> firestore.Client:
    """A client for ``project``; anonymous credentials when the emulator is configured.

    The raw path's client builds its own channel (:class:`_Client`) when this version of the
    library has what that needs; the public path's is the library's client, untouched.
    """
    credentials = None
    if os.environ.get("FIRESTORE_EMULATOR_HOST"):
        credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
    with translated_errors():
        if mode != "public" and not missing_private_names():
            client: firestore.Client = _Client(project=project, database=database, credentials=credentials)
            if not missing_private_names(client):
                return client
            # Nothing is opened before first use: the half-usable client is simply dropped.
        return firestore.Client(project=project, database=database, credentials=credentials)
