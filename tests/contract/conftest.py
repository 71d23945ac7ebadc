"""The store contract suite runs unchanged against every backend listed here."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.ports import Store


@pytest.fixture(params=["sqlite", "firestore"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        from engine.adapters.store_sqlite import SqliteStore

        backend: Store = SqliteStore(tmp_path / "conveyor.db")
    else:
        request.getfixturevalue("firestore_emulator")
        from engine.adapters.store_firestore import FirestoreStore

        backend = FirestoreStore(project=request.getfixturevalue("unique_project"))
    yield backend
    backend.close()
