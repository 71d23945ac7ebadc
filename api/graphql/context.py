"""The per-request GraphQL context: runtime, principal and DataLoaders.

HTTP requests authenticate from the ``Authorization`` header when the context is built (a
failure is a 401 problem, like REST). WebSocket connections authenticate from the
``connection_init`` payload instead (see :mod:`api.graphql.schema`), so the token never
appears in a URL.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from strawberry.fastapi import BaseContext

from api.auth import bearer_token
from api.deps import runtime
from api.graphql.loaders import Loaders, current_loaders
from api.runtime import Runtime
from api.visibility import note_caller
from engine.auth import Principal
from engine.errors import AuthenticationFailed


class Context(BaseContext):
    """What every resolver may use."""

    def __init__(self, rt: Runtime, principal: Principal | None) -> None:
        super().__init__()
        self.runtime = rt
        self._principal = principal

    @property
    def principal(self) -> Principal:
        if self._principal is None:
            raise AuthenticationFailed("the connection is not authenticated")
        return self._principal

    @property
    def authenticated(self) -> bool:
        return self._principal is not None

    def authenticate(self, principal: Principal) -> None:
        self._principal = principal
        note_caller(principal)

    def loader(self) -> Loaders:
        """The operation's DataLoaders (scoped to the principal's tenant)."""
        return current_loaders(self.runtime, self.principal.tenant)


async def get_context(connection: HTTPConnection) -> Context:
    """Build the context; HTTP requests are authenticated and rate limited here."""
    rt = runtime(connection)
    # WebSockets authenticate at connection_init. A GET only renders GraphiQL (queries over GET
    # are refused): a browser opening /graphql gets the IDE, where the key goes in Headers.
    if connection.scope["type"] == "websocket" or connection.scope.get("method") == "GET":
        return Context(rt, None)
    principal = await rt.auth.authenticate(bearer_token(connection.headers.get("authorization")))
    await rt.limiter.hit(principal)
    note_caller(principal)
    return Context(rt, principal)
