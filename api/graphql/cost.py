"""The cost of a GraphQL operation: how many records it may make the API read.

A field that takes a ``limit`` argument returns up to ``limit`` items, each time its parent
is resolved: ``executions(limit: 200) { items { history(limit: 500) { id } } }`` costs
200 + 200 * 500 = 100,200. Every other field costs 1 per time it is resolved. Aliases count
separately (each one is resolved), fragments count where they are spread.

The walk runs on a validated document, so fields, fragments and types are known to exist and
fragments do not form cycles.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    value_from_ast,
)
from graphql.type import GraphQLInterfaceType, GraphQLObjectType

LIMIT_ARGUMENT = "limit"


class _Walk:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDefinitionNode],
        variables: dict[str, Any],
        budget: int,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.budget = budget

    def selection_set(self, selections: SelectionSetNode | None, parent: GraphQLNamedType | None, times: int) -> int:
        if selections is None or parent is None:
            return 0
        total = 0
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, times)
            elif isinstance(selection, InlineFragmentNode):
                target = self._type(selection.type_condition.name.value) if selection.type_condition else parent
                total += self.selection_set(selection.selection_set, target, times)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments[selection.name.value]
                total += self.selection_set(
                    fragment.selection_set, self._type(fragment.type_condition.name.value), times
                )
            if total > self.budget:  # no need to walk the rest of an operation already refused
                return total
        return total

    def field(self, node: FieldNode, parent: GraphQLNamedType, times: int) -> int:
        if not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return times
        definition = parent.fields.get(node.name.value)
        if definition is None:  # __typename and other meta fields
            return times
        items = times * self._limit(node, definition.args.get(LIMIT_ARGUMENT))
        return items + self.selection_set(node.selection_set, get_named_type(definition.type), items)

    def _limit(self, node: FieldNode, argument: Any) -> int:
        if argument is None:
            return 1
        for given in node.arguments or ():
            if given.name.value == LIMIT_ARGUMENT:
                value = value_from_ast(given.value, argument.type, self.variables)
                return max(1, int(value)) if isinstance(value, int) else 1
        default = argument.default_value
        return max(1, int(default)) if isinstance(default, int) else 1

    def _type(self, name: str) -> GraphQLNamedType | None:
        return self.schema.get_type(name)


def operation_cost(
    schema: GraphQLSchema,
    operation: OperationDefinitionNode,
    fragments: dict[str, FragmentDefinitionNode],
    variables: dict[str, Any] | None,
    budget: int,
) -> int:
    """The cost of ``operation``; the walk stops early once it passes ``budget``."""
    root = schema.get_root_type(operation.operation)
    return _Walk(schema, fragments, variables or {}, budget).selection_set(operation.selection_set, root, 1)
