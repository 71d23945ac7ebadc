"""The Firestore store's wire: the private names of google-cloud-firestore it relies on, and its
fallback on the public client API when they are missing (``engine/adapters/store_firestore/wire.py``).

The first tests pin what the raw wire assumes of the installed library: when one fails after an
upgrade of google-cloud-firestore, the raw path must be adapted (or ``firestore_wire=public``
set) before the upper bound in ``pyproject.toml`` is raised. The others check that the wire is
chosen as documented when names are missing, and that the fallback really serves transactions.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import grpc
import pytest
from google.api_core import exceptions as gexc
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from engine.adapters.store_firestore import FirestoreStore, wire
from engine.errors import ConveyorError
from engine.ports import Transaction
from engine.records import ExecutionRecord
from engine.states import ExecutionStatus

VERSION = getattr(firestore, "__version__", "?")
A = "tenant-a"
T0 = 1_700_000_000.0


def name_of(owner: Any, name: str) -> str:
    return f"{getattr(owner, '__name__', owner)}.{name}"


@pytest.fixture
def raw_store(firestore_emulator: str, unique_project: str) -> Iterator[FirestoreStore]:
    store = FirestoreStore(project=unique_project, wire="raw")
    yield store
    store.close()


# ------------------------------------------------------------------ pins


def test_every_private_name_the_raw_wire_uses_is_present(raw_store: FirestoreStore) -> None:
    missing = wire.missing_private_names(raw_store.client)
    assert missing == [], (
        f"google-cloud-firestore {VERSION} no longer has {missing}, which the raw Firestore wire uses. "
        "Adapt engine/adapters/store_firestore/wire.py (or run with CONVEYOR_FIRESTORE_WIRE=public) "
        "before raising the bound on google-cloud-firestore in pyproject.toml."
    )


def test_the_private_names_still_mean_what_the_raw_wire_assumes(raw_store: FirestoreStore, unique_project: str) -> None:
    client: Any = raw_store.client
    changed = f"google-cloud-firestore {VERSION} changed a private name the raw Firestore wire relies on"
    database = f"projects/{unique_project}/databases/(default)"
    assert client._database_string == database, changed + ": Client._database_string"
    ref = client.document("tenants", "a", "executions", "e")
    assert ref._document_path == f"{database}/documents/tenants/a/executions/e", changed + ": _document_path"
    metadata = list(client._rpc_metadata)
    assert metadata and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata), (
        changed + ": Client._rpc_metadata is no longer (key, value) string pairs"
    )
    # The library must read the generated client from the attribute our _Client fills.
    api = client._firestore_api
    assert isinstance(client, wire._Client) and client._firestore_api_internal is api, changed + ": _firestore_api"
    assert isinstance(api.transport.grpc_channel, grpc.Channel), changed + ": the generated client's channel"
    value = wire._HELPERS.encode_value([1, "x"])
    assert wire._HELPERS.decode_value(value, client) == [1, "x"], changed + ": _helpers.encode_value/decode_value"
    for options in (wire._BASE_CLIENT._DEFAULT_CHANNEL_OPTIONS, wire._BASE_CLIENT._GRPC_MSG_SIZE_OPTIONS):
        assert all(isinstance(option, tuple) and len(option) == 2 for option in options), (
            changed + ": the channel options of base_client"
        )


def test_the_production_channel_is_built_without_the_emulator(monkeypatch: pytest.MonkeyPatch) -> None:
    """The TLS branch of ``_Client`` (no emulator): building it makes no call, so it runs offline."""
    monkeypatch.delenv("FIRESTORE_EMULATOR_HOST", raising=False)
    client: Any = wire._Client(project="conveyor-prod-check", credentials=AnonymousCredentials())
    assert client._emulator_host is None
    channel = client._firestore_api.transport.grpc_channel
    assert isinstance(channel, grpc.Channel)
    assert client._target == "firestore.googleapis.com"
    rpc = wire.RawRpc(client)  # the raw calls bind to the client's production channel
    assert rpc.commit is not None and rpc.batch_get_documents is not None
    client.close()


# ------------------------------------------------------------------ selection


def defining(owner: Any, name: str) -> Any:
    """The module, or the class of ``owner``'s MRO, that defines ``name`` (what to delete it from)."""
    if isinstance(owner, types.ModuleType):
        return owner
    return next(cls for cls in owner.__mro__ if name in vars(cls))


@pytest.mark.parametrize("index", range(len(wire.PRIVATE_NAMES)), ids=[n for _, n in wire.PRIVATE_NAMES])
def test_auto_takes_the_public_path_when_a_private_name_is_missing(
    index: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    owner, name = wire.PRIVATE_NAMES[index]
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")  # never contacted: nothing is called
    monkeypatch.delattr(defining(owner, name), name)
    assert wire.missing_private_names() == [name_of(owner, name)]
    client = wire.make_client("conveyor-selection", "(default)", "auto")
    assert type(client) is firestore.Client, "a client whose channel the library builds, untouched"
    with caplog.at_level(logging.WARNING, logger=wire.__name__):
        chosen = wire.select_wire(client, "auto")
    assert isinstance(chosen, wire.PublicWire)
    assert name in caplog.text and "public client API" in caplog.text
    with pytest.raises(ConveyorError, match=rf"firestore_wire=raw.*{name}"):
        wire.select_wire(client, "raw")


def test_a_missing_client_attribute_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", "127.0.0.1:1")
    client = firestore.Client(project="conveyor-selection", credentials=AnonymousCredentials())
    assert wire.missing_private_names(client) == []
    del client._client_options
    assert wire.missing_private_names(client) == ["Client()._client_options"]
    assert isinstance(wire.select_wire(client, "auto"), wire.PublicWire)


def test_auto_takes_the_raw_path_when_every_name_is_present(raw_store: FirestoreStore) -> None:
    assert isinstance(wire.select_wire(raw_store.client, "auto"), wire.RawWire)
    assert raw_store.wire.name == "raw"


def test_public_never_builds_the_raw_client(firestore_emulator: str, unique_project: str) -> None:
    store = FirestoreStore(project=unique_project, wire="public")
    try:
        assert type(store.client) is firestore.Client and store.wire.name == "public"
        with pytest.raises(ConveyorError, match="public client API"):
            store.rpc  # noqa: B018 - the property refuses
    finally:
        store.close()


def test_the_fallback_serves_transactions_end_to_end(
    firestore_emulator: str, unique_project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library without a name the raw wire needs (simulated): ``auto`` still works, publicly."""
    renamed = (firestore.Client, "_renamed_in_a_future_release")
    monkeypatch.setattr(wire, "PRIVATE_NAMES", (*wire.PRIVATE_NAMES, renamed))
    store = FirestoreStore(project=unique_project)
    try:
        assert store.wire.name == "public"
        record = ExecutionRecord(
            id="ex-1",
            tenant=A,
            workflow="orders",
            version=1,
            status=ExecutionStatus.RUNNING,
            created_at=T0,
            updated_at=T0,
            input={"order": 1},
            output={"n": 1},
        )
        store.atomic(lambda tx: tx.put_execution(record))

        def bump(tx: Transaction) -> None:
            current = tx.get_execution(A, "ex-1")
            assert current is not None
            tx.put_execution(replace(current, output={"n": current.output["n"] + 1}, updated_at=T0 + 1))

        store.atomic(bump)
        stored = store.get_execution(A, "ex-1")
        assert stored is not None and stored.output == {"n": 2} and stored.input == {"order": 1}
    finally:
        store.close()


def test_a_failed_begin_on_the_public_path_is_reported_as_itself(firestore_emulator: str) -> None:
    """The emulator refuses BeginTransaction on a malformed database name; the library then fails
    to roll back a transaction it never began, and that ValueError must not hide the refusal."""
    client = firestore.Client(project="conveyor-test-begin", database="bad db!", credentials=AnonymousCredentials())
    with pytest.raises(gexc.GoogleAPICallError) as refused:
        wire.PublicAttempt(client).execute(lambda: None)
    assert not isinstance(refused.value, ValueError)
