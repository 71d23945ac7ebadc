"""DataLoaders: one batched store read per kind of record per request, whatever the query shape."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from strawberry.dataloader import DataLoader

from api.runtime import Runtime
from engine.errors import NotFound
from engine.records import StepRecord, WorkflowVersionRecord


class Loaders:
    """The loaders of one request (caches must not outlive it: data changes between requests)."""

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
