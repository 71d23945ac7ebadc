"""The per-request GraphQL context: runtime, principal and DataLoaders.

HTTP requests authenticate from the ``Authorization`` header when the context is built (a
failure is a 401 problem, like REST). WebSocket connections authenticate from the
``connection_init`` payload instead (see :mod:`api.graphql.schema`), so the token never
appears in a URL; the connection keeps the credential and checks it again before every
operation it starts.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from strawberry.fastapi import BaseContext

from api.auth import Credential, bearer_token
from api.deps import runtime
from api.graphql.loaders import Loaders, current_loaders
from api.runtime import Runtime
from api.visibility import note_caller
from engine.auth import Principal
from engine.errors import AuthenticationFailed


class Context(BaseContext):
    """What every resolver may use."""

    def __init__(self, rt: Runtime, credential: Credential | None) -> None:
        super().__init__()
        self.runtime = rt
        self._credential = credential

    @property
    def credential(self) -> Credential:
        """What authenticated the request or connection (streams check it again while open)."""
        if self._credential is None:
            raise AuthenticationFailed("the connection is not authenticated")
        return self._credential

    @property
    def principal(self) -> Principal:
        return self.credential.principal

    @property
    def authenticated(self) -> bool:
        return self._credential is not None

    def authenticate(self, credential: Credential) -> None:
        self._credential = credential
        note_caller(credential.principal)

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
    credential = await rt.auth.login(bearer_token(connection.headers.get("authorization")))
    await rt.limiter.hit(credential.principal)
    note_caller(credential.principal)
    return Context(rt, credential)
