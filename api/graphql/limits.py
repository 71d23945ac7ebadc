"""Query hardening: size, token, depth, alias and cost limits, rate limits per WebSocket
operation, one operation per request, introspection switch, error masking.

All of these act while the document is parsed or validated, so an abusive query is refused
before any resolver runs (and before any store call):

- the raw document's size is checked before it is parsed, and the parser stops at
  ``graphql_max_tokens`` tokens, so a huge document costs neither a full parse nor a
  validation;
- after the standard validation (depth and alias rules included), a document holding several
  operations needs an ``operationName``, the operation's cost (:mod:`api.graphql.cost`) must
  stay within ``graphql_max_cost``, and every operation sent over a WebSocket counts against
  the caller's rate limits (an HTTP request is counted when it is authenticated);
- in production (introspection off) validation messages do not suggest field names.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Iterator

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    OperationDefinitionNode,
    parse,
    validate,
)
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from api.graphql.cost import operation_cost
from api.graphql.loaders import operation_loaders
from engine.errors import ConveyorError, RateLimited
from engine.settings import Settings

#: Stands in for a document refused before parsing (validation is then skipped).
_REFUSED_DOCUMENT = parse("{ __typename }")
_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def _should_mask(error: GraphQLError) -> bool:
    # Our own errors and GraphQL's validation errors are meant for the client; anything
    # else is an internal failure whose message could leak details.
    original = error.original_error
    return original is not None and not isinstance(original, ConveyorError | GraphQLError)


def _error(message: str, code: str, **extensions: object) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extensions})


class OperationGuard(SchemaExtension):
    """The checks of the module docstring that the stock extensions do not make."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query or ""
        limit = self.settings.graphql_max_document_bytes
        # len() of a str is O(1); a document over the limit in characters is over it in bytes.
        if len(query) > limit or len(query.encode()) > limit:
            context.graphql_document = _REFUSED_DOCUMENT
            context.pre_execution_errors = [
                _error(f"the document exceeds {limit} bytes", "document-too-large", limit=limit)
            ]
        yield

    async def on_validate(self) -> AsyncIterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.pre_execution_errors is None and document is not None:
            # Run the validation here (Strawberry skips its own when errors are set), so the
            # checks below only see valid documents and can add their own errors.
            errors = list(validate(context.schema._schema, document, context.validation_rules))
            if not errors:
                errors = await self._check(document)
            if not self.settings.introspection_enabled():
                errors = [_without_suggestions(e) for e in errors]
            context.pre_execution_errors = errors
        yield

    async def _check(self, document: DocumentNode) -> list[GraphQLError]:
        context = self.execution_context
        operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        # ``operation_name`` falls back to the first operation's name: look at what was sent.
        name = context._provided_operation_name
        if len(operations) > 1 and not name:
            return [_error("the document holds several operations: send operationName", "operation-name-required")]
        operation = next((o for o in operations if not name or (o.name and o.name.value == name)), None)
        if operation is None:
            return [_error(f"no operation named {name!r}", "unknown-operation")]
        fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        budget = self.settings.graphql_max_cost
        cost = operation_cost(context.schema._schema, operation, fragments, context.variables, budget)
        if cost > budget:
            return [
                _error(
                    f"the operation may read more than the {budget} records allowed: lower `limit`s or split it",
                    "query-too-costly",
                    limit=budget,
                )
            ]
        return await self._count_websocket_operation()

    async def _count_websocket_operation(self) -> list[GraphQLError]:
        graphql_context = self.execution_context.context
        request = getattr(graphql_context, "request", None)
        if request is None or request.scope.get("type") != "websocket" or not graphql_context.authenticated:
            return []  # HTTP requests were counted when their context was built
        try:
            await graphql_context.runtime.limiter.hit(graphql_context.principal)
        except RateLimited as exc:
            return [_error(exc.message, exc.code, retryAfter=exc.retry_after)]
        return []

    def on_execute(self) -> Iterator[None]:
        # DataLoader caches live for one operation, not for a whole WebSocket connection.
        graphql_context = self.execution_context.context
        if getattr(graphql_context, "authenticated", False):
            with operation_loaders(graphql_context.runtime, graphql_context.principal.tenant):
                yield
        else:
            yield


def _without_suggestions(error: GraphQLError) -> GraphQLError:
    message = _SUGGESTION.sub("", error.message)
    if message == error.message:
        return error
    return GraphQLError(message, error.nodes, error.source, error.positions, error.path, None, error.extensions)


def extensions(settings: Settings) -> list[Callable[[], SchemaExtension] | type[SchemaExtension]]:
    """Extension factories (Strawberry builds fresh instances per request)."""
    found: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
        lambda: OperationGuard(settings),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="an unexpected error occurred"),
    ]
    if not settings.introspection_enabled():
        found.append(DisableIntrospection)
    return found
