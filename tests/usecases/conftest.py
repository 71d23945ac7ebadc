"""Fixtures of the use-case tests: harnesses over each real store."""

from __future__ import annotations

import pytest

from tests.harness import Harness
from tests.unit.fixtures import corefns


@pytest.fixture(params=["sqlite", "firestore"])
def make_harness(request, tmp_path):
    """Builds harnesses on the parametrized store; extra settings pass through."""
    corefns.calls.clear()
    corefns.flaky_failures.clear()
    project = None
    if request.param == "firestore":
        request.getfixturevalue("firestore_emulator")
        project = request.getfixturevalue("unique_project")
    created = []

    def make(**settings):
        created.append(Harness(tmp_path, firestore_project=project, **settings))
        return created[-1]

    yield make
    for harness in created:
        harness.store.close()


@pytest.fixture
def h(make_harness):
    return make_harness()
