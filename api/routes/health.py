"""Operational endpoints: liveness, readiness and Prometheus metrics (no authentication).

They carry no tenant data, and probes and scrapers cannot present credentials.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.bodies import StrictRoute
from api.deps import RuntimeDep
from engine.errors import ConveyorError

router = APIRouter(tags=["operations"], route_class=StrictRoute)


@runtime_checkable
class _Pingable(Protocol):
    def ping(self) -> None: ...


class Health(BaseModel):
    status: str
    checks: dict[str, str] = {}


@router.get("/healthz", response_model=Health, summary="Liveness: the process serves requests")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness: the store, the broker and the rate-limit backend are reachable",
    responses={503: {"model": Health, "description": "A dependency is unreachable"}},
)
async def readyz(rt: RuntimeDep) -> JSONResponse:
    checks: dict[str, str] = {}
    ports: dict[str, Any] = {"store": rt.service.store, "broker": rt.service.dispatcher, "events": rt.service.events}
    for name, port in ports.items():
        if isinstance(port, _Pingable):
            checks[name] = await _ping(port)
    checks["rate_limits"] = "ok" if await rt.limiter.healthy() else "unreachable"
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _ping(port: _Pingable) -> str:
    try:
        await run_in_threadpool(port.ping)
    except ConveyorError as exc:
        return f"unreachable: {exc.message}"
    except Exception as exc:  # a vendor error that escaped its adapter still means "not ready"
        return f"unreachable: {type(exc).__name__}"
    return "ok"


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}},
)
def metrics(rt: RuntimeDep) -> Response:
    return Response(rt.metrics.render(), media_type=CONTENT_TYPE_LATEST)
