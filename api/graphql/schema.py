"""The GraphQL schema and its router at ``/graphql``."""

from __future__ import annotations

from typing import Any

import strawberry
import structlog
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from graphql import GraphQLError
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.http import GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_transport_ws.types import SubscribeMessage
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext
from strawberry.types.unset import UnsetType
from strawberry.utils.logging import StrawberryLogger

from api.auth import bearer_token
from api.bodies import BodyRefused, decode_json, unsupported_media_type
from api.graphql.ai import AiMutation, AiQuery
from api.graphql.context import Context, get_context
from api.graphql.control import ControlMutation
from api.graphql.deadletters import DeadLetterQuery
from api.graphql.limits import extensions
from api.graphql.mutations import Mutation
from api.graphql.queries import Query
from api.graphql.subscriptions import Subscription
from engine.errors import AuthenticationFailed, ConveyorError
from engine.settings import Settings

log = structlog.get_logger("conveyor.api")


class ConveyorSchema(strawberry.Schema):
    """Strawberry's schema, logging a refused request as the client's mistake, not a server error.

    A document that does not parse or validate, or that a limit refuses, is a
    ``GraphQLError`` with no original error, and so is a Conveyor error a resolver raised:
    both go to the client and are logged at INFO. Strawberry logs every error at ERROR,
    which error trackers (Sentry's logging integration) report as events. Any other
    exception a resolver raised is still logged as an error.
    """

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        for error in errors:
            if error.original_error is None or isinstance(error.original_error, ConveyorError):
                log.info("graphql request refused", error=error.message)
            else:
                StrawberryLogger.error(error, execution_context)


def build_schema(settings: Settings) -> strawberry.Schema:
    query = merge_types("Query", (Query, DeadLetterQuery, AiQuery))
    mutation = merge_types("Mutation", (Mutation, ControlMutation, AiMutation))
    return ConveyorSchema(query=query, mutation=mutation, subscription=Subscription, extensions=extensions(settings))


def connection_token(params: Any) -> str | None:
    """The token in a ``connection_init`` payload: ``{"authorization": "Bearer …"}`` or ``{"token": "…"}``."""
    if not isinstance(params, dict):
        return None
    token = params.get("token")
    if isinstance(token, str) and token:
        return token
    header = params.get("authorization") or params.get("Authorization")
    return bearer_token(header) if isinstance(header, str) else None


#: What GraphiQL's Headers tab shows until the user types their own.
KEY_HINT = '{"Authorization": "Bearer <your API key: conveyor keys create>"}'


#: Close codes: graphql-transport-ws's for an unauthorized subscribe, and RFC 6455's "try again later".
CLOSE_UNAUTHORIZED = 4401
CLOSE_TRY_AGAIN = 1013
#: A close frame's reason is limited to 123 bytes.
_MAX_REASON = 100


class CredentialCheckingHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws, checking the connection's credential again before every operation.

    A connection authenticates once, at ``connection_init``; without this, it could start
    queries, mutations and subscriptions long after its token expired or its API key was
    revoked. Each ``subscribe`` message is refused instead, by closing the socket with 4401
    (the protocol's code for an unauthorized ``subscribe``); the client reconnects with a
    fresh token. A revoked key is noticed within ``api.auth.KEY_CACHE_SECONDS``.
    """

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        if self.connection_acknowledged:  # before that, Strawberry itself closes with 4401
            try:
                await self.context.runtime.auth.recheck(self.context.credential)
            except AuthenticationFailed as exc:
                await self.websocket.close(code=CLOSE_UNAUTHORIZED, reason=f"Unauthorized: {exc.message}")
                return
            except ConveyorError as exc:  # the key could not be looked up: no operation runs unchecked
                await self.websocket.close(code=CLOSE_TRY_AGAIN, reason=exc.message[:_MAX_REASON])
                return
        await super().handle_subscribe(message)


class ConveyorGraphQLRouter(GraphQLRouter[Context, None]):
    """Strawberry's router, authenticating WebSocket connections at ``connection_init`` (and
    again before each operation they start) and decoding bodies and messages like REST does
    (strict JSON, nesting-limited)."""

    graphql_transport_ws_handler_class = CredentialCheckingHandler

    def __init__(self, schema: strawberry.Schema, settings: Settings, **options: Any) -> None:
        super().__init__(schema, **options)
        self.max_json_depth = settings.max_json_depth

    @property
    def graphql_ide_html(self) -> str:
        """GraphiQL, its Headers tab pre-filled with where the API key goes."""
        html = super().graphql_ide_html
        return html.replace("React.useState(parameters.headers)", f"React.useState(parameters.headers || {KEY_HINT!r})")

    def decode_json(self, data: str | bytes) -> object:
        try:
            return decode_json(data, self.max_json_depth)
        except BodyRefused as exc:
            raise HTTPException(exc.status_code, exc.detail) from None

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData | list[GraphQLRequestData]:
        # Strawberry answers any body but JSON with a 400; it is a 415, as on REST.
        media_type = (request.content_type or "").split(";", 1)[0].strip().lower()
        if request.method != "GET" and media_type != "application/json":
            refused = unsupported_media_type(media_type)
            raise HTTPException(refused.status_code, refused.detail)
        return await super().parse_http_body(request)

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        rt = context.runtime
        try:
            credential = await rt.auth.login(connection_token(context.connection_params))
            await rt.limiter.hit(credential.principal)
        except ConveyorError:
            raise ConnectionRejectionError({"message": "authentication failed"}) from None
        context.authenticate(credential)
        return await super().on_ws_connect(context)


def graphql_router(settings: Settings) -> GraphQLRouter[Context, None]:
    """``/graphql``: HTTP POST for queries and mutations, graphql-transport-ws only for subscriptions."""
    introspection = settings.introspection_enabled()
    return ConveyorGraphQLRouter(
        build_schema(settings),
        settings,
        path="/graphql",
        context_getter=get_context,
        graphql_ide="graphiql" if introspection else None,
        allow_queries_via_get=False,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        allowed_origins=settings.allowed_origins,
        include_in_schema=False,
    )
