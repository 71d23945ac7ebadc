"""FastAPI dependencies: the app's runtime objects, the caller's principal and role guards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Header, Query, Request
from starlette.requests import HTTPConnection

from api.auth import bearer_token
from api.runtime import Runtime
from api.visibility import note_caller
from engine.auth import Principal, Role

MAX_PAGE_SIZE = 200


def runtime(conn: HTTPConnection) -> Runtime:
    """The runtime objects built by the app's lifespan."""
    found: Runtime = conn.app.state.runtime
    return found


async def current_principal(
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Principal:
    """Authenticate the request, then count it against the caller's rate limits."""
    rt = runtime(request)
    principal = await rt.auth.authenticate(bearer_token(authorization))
    await rt.limiter.hit(principal)
    request.state.principal = principal
    note_caller(principal)
    return principal


async def _runtime_dependency(conn: HTTPConnection) -> Runtime:
    # async on purpose: FastAPI runs sync dependencies in the thread pool, a hop per request.
    return runtime(conn)


RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]
PrincipalDep = Annotated[Principal, Depends(current_principal)]


def _role_check(role: Role) -> Callable[[Principal], Awaitable[None]]:
    async def check(principal: PrincipalDep) -> None:
        principal.require(role)

    check.__name__ = f"require_{role}"
    return check


def guard(role: Role, openapi_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Route keyword arguments that require ``role`` and document it as ``x-required-role``.

    Every route under ``/v1`` is declared with one, which is what lets tests walk the route
    table and check each role against each route.
    """
    return {
        "dependencies": [Depends(_role_check(role))],
        "openapi_extra": {"x-required-role": str(role), **(openapi_extra or {})},
    }


class PageParams:
    """``cursor`` and ``limit`` query parameters of every listing."""

    def __init__(
        self,
        cursor: Annotated[
            str | None,
            Query(
                max_length=512,
                pattern=r"^[A-Za-z0-9_-]+={0,2}$",
                description="Opaque cursor from a previous page's `next_cursor` of the same listing; "
                "one the server did not issue is refused with 422",
            ),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size")] = 50,
    ) -> None:
        self.cursor = cursor
        self.limit = limit


PageDep = Annotated[PageParams, Depends()]
