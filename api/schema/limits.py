"""What a GraphQL document may ask for: depth, aliases and cost, checked in linear time.

strawberry's QueryDepthLimiter and MaxAliasesLimiter walk every fragment expansion, so ten
fragments each spreading the previous one ten times cost 10^10 steps: one 720-character
anonymous request froze the server. Here each fragment definition is analysed once and its
result memoised, so the work is linear in the document however often fragments are spread.

The same walk prices the query the way GitHub and Shopify do: every object the query may
return costs 1, and a field that returns many multiplies the cost of what is under it by how
many it may return: a connection by its `first` argument (from the literal or the request's
variables, else the default page size; at most the maximum page size), a plain list by
`LIST_ESTIMATE`. A connection's own
`edges`, `node` and `pageInfo` are the same rows and add nothing. Scalars and introspection
cost nothing. A request above the maximum is refused before execution with QUERY_TOO_COSTLY
and its cost; an accepted one reports `extensions.cost`.

These checks run before graphql-core's own validation rules, so a hostile document is refused
before any rule walks it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    is_composite_type,
    is_leaf_type,
)
from graphql.type.definition import GraphQLInterfaceType, GraphQLObjectType
from strawberry.extensions import SchemaExtension, ValidationCache
from strawberry.types.graphql import OperationType

# How many items a plain list field (not a connection) is assumed to return.
LIST_ESTIMATE = 10


@dataclass(frozen=True)
class Limits:
    max_depth: int
    max_aliases: int
    max_cost: int
    default_page_size: int
    max_page_size: int


@dataclass
class Measure:
    """Depth, aliases and cost of one selection set with its fragments expanded."""

    depth: int = 0
    aliases: int = 0
    cost: int = 0


@dataclass
class _Walk:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    variable_defaults: Mapping[str, Any]
    default_page_size: int
    max_page_size: int
    memo: dict[str, Measure] = field(default_factory=dict)
    visiting: set[str] = field(default_factory=set)

    def selection_set(self, selections: SelectionSetNode | None, parent: Any) -> Measure:
        total = Measure()
        if selections is None:
            return total
        for selection in selections.selections:
            if isinstance(selection, FieldNode):
                part = self.field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.schema.get_type(condition.name.value) if condition else parent
                part = self.selection_set(selection.selection_set, on)
            elif isinstance(selection, FragmentSpreadNode):
                part = self.fragment(selection.name.value)
            else:  # pragma: no cover - graphql-core has no other selection kinds
                continue
            total.depth = max(total.depth, part.depth)
            total.aliases += part.aliases
            total.cost += part.cost
        return total

    def fragment(self, name: str) -> Measure:
        """Each fragment is measured once; a cycle or an unknown fragment measures nothing
        here (graphql-core's NoFragmentCycles and KnownFragmentNames report them)."""
        if name in self.memo:
            return self.memo[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.visiting:
            return Measure()
        self.visiting.add(name)
        on = self.schema.get_type(definition.type_condition.name.value)
        measure = self.selection_set(definition.selection_set, on)
        self.visiting.discard(name)
        self.memo[name] = measure
        return measure

    def field(self, node: FieldNode, parent: Any) -> Measure:
        aliases = 1 if node.alias else 0
        name = node.name.value
        if name.startswith("__"):
            # Introspection is bounded by the schema; strawberry's limiter ignored it too.
            return Measure(aliases=aliases)
        definition = None
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            definition = parent.fields.get(name)
        if definition is None:
            # An unknown field: graphql-core's rules report it; still count what is below.
            inner = self.selection_set(node.selection_set, None)
            return Measure(inner.depth + (1 if node.selection_set else 0),
                           aliases + inner.aliases, inner.cost)
        named = get_named_type(definition.type)
        if is_leaf_type(named) or not node.selection_set:
            return Measure(aliases=aliases)
        inner = self.selection_set(node.selection_set, named)
        depth = 1 + inner.depth
        aliases += inner.aliases
        if _is_connection_part(parent):
            # edges, node, pageInfo: the connection's rows themselves, already counted.
            return Measure(depth, aliases, inner.cost)
        items = self.items(node, definition)
        return Measure(depth, aliases, items * (1 + inner.cost) if is_composite_type(named)
                       else 0)

    def items(self, node: FieldNode, definition: Any) -> int:
        """How many objects the field may return."""
        if "first" in definition.args:
            return self.first(node, definition)
        field_type = definition.type
        if isinstance(field_type, GraphQLNonNull):
            field_type = field_type.of_type
        return LIST_ESTIMATE if isinstance(field_type, GraphQLList) else 1

    def first(self, node: FieldNode, definition: Any) -> int:
        value: Any = None
        for argument in node.arguments or ():
            if argument.name.value != "first":
                continue
            literal = argument.value
            if isinstance(literal, IntValueNode):
                value = int(literal.value)
            elif isinstance(literal, VariableNode):
                variable = literal.name.value
                value = self.variables.get(variable, self.variable_defaults.get(variable))
        if value is None:
            value = definition.args["first"].default_value
        if isinstance(value, bool) or not isinstance(value, int):
            # Absent, null or not a number (coercion reports that): the default page size.
            return self.default_page_size
        # No connection returns more than a page (a larger `first` is a VALIDATION error of
        # the field itself, which the client should see rather than a cost refusal).
        return min(max(value, 0), self.max_page_size)


def _is_connection_part(parent: Any) -> bool:
    name = getattr(parent, "name", "")
    return isinstance(name, str) and (name.endswith("Connection") or name.endswith("Edge"))


def measure(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None,
    variables: Mapping[str, Any] | None,
    default_page_size: int,
    max_page_size: int,
) -> Measure:
    """The operation's depth, aliases and cost (the maximum over the operations that could
    run when the name does not pick one: validation then refuses the document anyway)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    result = Measure()
    walk = _Walk(schema, fragments, variables if isinstance(variables, Mapping) else {}, {},
                 default_page_size, max_page_size)
    for operation in operations:
        walk.variable_defaults = {
            d.variable.name.value: _int_literal(d.default_value)
            for d in operation.variable_definitions or ()
        }
        root = schema.get_root_type(operation.operation)
        part = walk.selection_set(operation.selection_set, root)
        result.depth = max(result.depth, part.depth)
        result.aliases = max(result.aliases, part.aliases)
        result.cost = max(result.cost, part.cost)
    return result


def _int_literal(node: Any) -> int | None:
    return int(node.value) if isinstance(node, IntValueNode) else None


def _error(message: str, code: str, **extensions: Any) -> GraphQLError:
    return GraphQLError(message, extensions={"code": code, **extensions})


class QueryLimits(SchemaExtension):
    """Refuses documents that are too deep, too aliased or too costly, before validation."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.cost: int | None = None

    def on_validate(self) -> Iterator[None]:
        execution = self.execution_context
        document = execution.graphql_document
        if document is not None and execution.pre_execution_errors is None:
            errors = self.check(document)
            if errors:
                execution.pre_execution_errors = errors
        yield

    def check(self, document: DocumentNode) -> list[GraphQLError]:
        execution = self.execution_context
        if _subscription_over_http(execution):
            return [_error("subscriptions are served over a websocket at /graphql "
                           "(graphql-transport-ws), not over HTTP", "BAD_REQUEST")]
        limits = self.limits
        found = measure(execution.schema._schema, document, execution.operation_name,
                        execution.variables, limits.default_page_size, limits.max_page_size)
        errors = []
        if found.depth > limits.max_depth:
            errors.append(_error(f"the query's depth is {found.depth}; the maximum "
                                 f"depth is {limits.max_depth}", "QUERY_TOO_DEEP",
                                 depth=found.depth, maximumDepth=limits.max_depth))
        if found.aliases > limits.max_aliases:
            errors.append(_error(f"the query uses {found.aliases} aliases; at most "
                                 f"{limits.max_aliases} are allowed", "TOO_MANY_ALIASES",
                                 aliases=found.aliases, maximumAliases=limits.max_aliases))
        if found.cost > limits.max_cost:
            errors.append(_error(f"the query costs {found.cost}; at most {limits.max_cost} "
                                 "is allowed per request: ask for fewer items (first) or "
                                 "fewer nested lists", "QUERY_TOO_COSTLY",
                                 cost=found.cost, maximumCost=limits.max_cost))
        if not errors:
            self.cost = found.cost
        return errors

    def get_results(self) -> dict[str, Any]:
        if self.cost is None:
            return {}
        return {"cost": {"requested": self.cost, "maximum": self.limits.max_cost}}


def _subscription_over_http(execution: Any) -> bool:
    """A subscription POSTed as a plain request would run its generator as a query."""
    try:
        operation_type = execution.operation_type
    except RuntimeError:
        return False
    if operation_type is not OperationType.SUBSCRIPTION:
        return False
    context = execution.context
    request = context.get("request") if isinstance(context, dict) else None
    return getattr(request, "scope", {}).get("type") == "http"


class ValidationAfterLimits(ValidationCache):
    """graphql-core's rules (cached), skipped when QueryLimits has already refused."""

    def on_validate(self) -> Iterator[None]:
        if self.execution_context.pre_execution_errors:
            yield
            return
        yield from super().on_validate()
