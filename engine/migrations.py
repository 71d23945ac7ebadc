"""Ordered, idempotent schema migrations over the Store port.

The store records the schema version it was last migrated to; every record also carries
the ``schema_version`` it was written with (:data:`engine.records.SCHEMA_VERSION`).
A migration moves the store from ``version - 1`` to ``version``. It must be idempotent: a
crash between applying it and recording the new version runs it again, and two
``conveyor migrate`` started at once may both run it.

To change the shape of stored records: bump ``SCHEMA_VERSION``, teach
``record_from_dict`` to read both shapes, and append a migration that rewrites old
records (or does nothing when reading both shapes is enough).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import Conflict, NotFound
from engine.orchestration.workflows import Workflows
from engine.ports import Store
from engine.records import ExecutionRecord
from engine.retention import RetentionPolicy
from engine.settings import Settings


@dataclass(frozen=True)
class Migration:
    """One step of the schema: ``apply`` brings a store at ``version - 1`` to ``version``."""

    version: int
    description: str
    apply: Callable[[Store], None]


def _baseline(store: Store) -> None:
    """Version 1 is the schema the stores create; there is nothing to rewrite."""


def _search_fields(store: Store) -> None:
    """Index executions written before execution search for it (labels, on Firestore also the rest).

    Executions written since carry these fields already; the backfill skips them.
    """
    store.backfill_search_fields()


def _expiry(store: Store) -> None:
    """Executions that ended before execution retention existed get their ``expires_at`` too, by
    today's policy (``CONVEYOR_EXECUTION_RETENTION_DAYS`` of the environment ``conveyor migrate``
    runs in, or their workflow's ``retention:``), counted from when they ended **or from the
    upgrade, whichever is later**: an upgrade never deletes history at once, so an operator has
    one whole retention period to notice the new default and keep what they need. Run with
    ``CONVEYOR_EXECUTION_RETENTION_DAYS=0`` to keep them for good (a workflow's own
    ``retention:`` still applies)."""
    workflows = Workflows(lambda tenant, name, version: _definition(store, tenant, name, version))
    policy = RetentionPolicy(workflows, Settings().execution_retention_days)
    migrated_at = time.time()

    def from_upgrade(execution: ExecutionRecord) -> float | None:
        kept = policy(execution)
        if kept is None or execution.finished_at is None:
            return kept
        return kept + max(0.0, migrated_at - execution.finished_at)

    store.backfill_expiry(from_upgrade)


def _definition(store: Store, tenant: str, name: str, version: int) -> dict[str, Any]:
    found = store.get_workflow_version(tenant, name, version)
    if found is None:
        raise NotFound(f"version {version} of workflow {name!r} not found")
    return found.definition


#: Every migration, oldest first; the last one's version is ``engine.records.SCHEMA_VERSION``.
MIGRATIONS: list[Migration] = [
    Migration(1, "baseline: the schema as the stores create it", _baseline),
    Migration(2, "execution search: index the labels of existing executions", _search_fields),
    Migration(3, "execution retention: the expiry of executions that ended before it", _expiry),
]


def check_order(migrations: Sequence[Migration]) -> None:
    """Versions must be 1, 2, 3, ... with no gap: a gap would silently skip a change."""
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migration versions must be 1..n in order, got {versions}")


def pending(store: Store, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The migrations ``store`` has not recorded yet, in order.

    Raises ``Conflict`` when the store is newer than this code: an older Conveyor must not
    write records it does not understand.
    """
    check_order(migrations)
    current = store.schema_version()
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise Conflict(f"the store is at schema version {current}, newer than this Conveyor ({latest}): upgrade it")
    return [m for m in migrations if m.version > current]


def migrate(store: Store, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """Apply every pending migration in order, recording each version as it completes."""
    applied = []
    for migration in pending(store, migrations):
        migration.apply(store)
        store.set_schema_version(migration.version)
        applied.append(migration)
    return applied
