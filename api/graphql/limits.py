"""Query hardening: depth, alias and token limits, introspection switch, error masking.

All of these act while the document is parsed or validated, so an abusive query is
refused before any resolver runs.
"""

from __future__ import annotations

from collections.abc import Callable

from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)

from engine.errors import ConveyorError
from engine.settings import Settings


def _should_mask(error: GraphQLError) -> bool:
    # Our own errors and GraphQL's validation errors are meant for the client; anything
    # else is an internal failure whose message could leak details.
    original = error.original_error
    return original is not None and not isinstance(original, ConveyorError | GraphQLError)


def extensions(settings: Settings) -> list[Callable[[], SchemaExtension] | type[SchemaExtension]]:
    """Extension factories (Strawberry builds fresh instances per request)."""
    found: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
        lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
        lambda: MaskErrors(should_mask_error=_should_mask, error_message="an unexpected error occurred"),
    ]
    if not settings.introspection_enabled():
        found.append(DisableIntrospection)
    return found
