"""DataLoaders: one batched store read per kind of record per operation, whatever the query shape."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from starlette.concurrency import run_in_threadpool
from strawberry.dataloader import DataLoader

from api.runtime import Runtime
from engine.errors import NotFound
from engine.records import StepRecord, WorkflowVersionRecord


class Loaders:
    """The loaders of one operation (caches must not outlive it: data changes between operations)."""

    def __init__(self, rt: Runtime, tenant: str) -> None:
        self.rt = rt
        self.tenant = tenant
        self.steps: DataLoader[str, list[StepRecord]] = DataLoader(self._load_steps)
        self.workflow_versions: DataLoader[tuple[str, int], WorkflowVersionRecord | None] = DataLoader(
            self._load_workflow_versions
        )

    async def _load_steps(self, execution_ids: list[str]) -> list[list[StepRecord]]:
        # One store call for every execution in the response (the port's batched read).
        found = await run_in_threadpool(self.rt.service.store.list_steps_many, self.tenant, execution_ids)
        return [found.get(execution_id, []) for execution_id in execution_ids]

    async def _load_workflow_versions(self, keys: list[tuple[str, int]]) -> list[WorkflowVersionRecord | None]:
        # Versions are immutable and few per page (deduplicated by the loader): one read each.
        def load() -> list[WorkflowVersionRecord | None]:
            results: list[WorkflowVersionRecord | None] = []
            for name, version in keys:
                try:
                    results.append(self.rt.service.get_workflow(self.tenant, name, version))
                except NotFound:
                    results.append(None)
            return results

        return await run_in_threadpool(load)


_current: ContextVar[Loaders | None] = ContextVar("conveyor_graphql_loaders", default=None)


@contextmanager
def operation_loaders(rt: Runtime, tenant: str) -> Iterator[Loaders]:
    """Fresh loaders for the operation executing in this context (see ``current_loaders``)."""
    loaders = Loaders(rt, tenant)
    token = _current.set(loaders)
    try:
        yield loaders
    finally:
        _current.reset(token)


def current_loaders(rt: Runtime, tenant: str) -> Loaders:
    """The executing operation's loaders.

    One WebSocket connection runs many operations with one context: caching on the context
    would show a later query the records an earlier one read. A subscription's events are
    resolved outside its execution hook, so they get loaders of their own per access.
    """
    loaders = _current.get()
    if loaders is None or loaders.tenant != tenant:
        return Loaders(rt, tenant)
    return loaders
