"""The store contract suite runs unchanged against every backend listed here.

Firestore runs twice: over the raw wire (plain gRPC calls, private names of
google-cloud-firestore) and over the public client API (the fallback when those names
change); see ``engine/adapters/store_firestore/wire.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ports import Store


@pytest.fixture(params=["sqlite", "firestore-raw", "firestore-public"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        from engine.adapters.store_sqlite import SqliteStore

        backend: Store = SqliteStore(tmp_path / "conveyor.db")
    else:
        request.getfixturevalue("firestore_emulator")
        from engine.adapters.store_firestore import FirestoreStore

        wire = request.param.removeprefix("firestore-")
        backend = FirestoreStore(project=request.getfixturevalue("unique_project"), wire=wire)
        assert backend.wire.name == wire, f"asked for the {wire} wire, got {backend.wire.name}"
    yield backend
    backend.close()
