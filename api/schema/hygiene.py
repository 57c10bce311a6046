"""One input-hygiene layer for every argument, before any resolver runs.

GraphQL coerces every argument value in two places: literals written in the document are
checked by validation (graphql-core's `ValuesOfCorrectTypeRule`), values sent as variables
when the executor is built. This module hooks both, so every string, date, time and integer
of every argument and input field — nested inputs and lists included — passes the same
rules, and a request that breaks one is answered with typed errors before anything runs
(so it records nothing):

- every text (String, ID, and the text of any scalar) may not hold control characters other
  than newline and tab, nor lone surrogates, and is at most `max_length` characters
  (PATRON_MAX_INPUT_LENGTH, 10,000 by default) — `domain.validation.text_problem`;
- a Date or DateTime is within the years 1900-2200, and a DateTime has a zone offset
  (the `Date` and `DateTime` scalars below) — `domain.validation.moment_problem`;
- integers are within their scalar's range (Int: 32 bits, Long: 64), and text is no number.

graphql-core already reports type mistakes, but without a code, and a scalar whose parser
raised a plain exception came out as INTERNAL (the error carried the exception). Here each
becomes `extensions.code = "VALIDATION"` with `extensions.field`, the path as the client
wrote it: the argument (or variable) name, then input fields and list indexes, e.g.
`input.lines.2.name`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import dateutil.parser
import strawberry
from graphql import (
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    is_input_type,
    type_from_ast,
)
from graphql.language import SKIP, ArgumentNode, VariableDefinitionNode
from graphql.pyutils import Undefined
from graphql.utilities.validate_input_value import validate_input_literal, validate_input_value
from graphql.validation import ASTValidationRule, ValuesOfCorrectTypeRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from domain.errors import ErrorCode
from domain.validation import moment_problem, text_problem

DEFAULT_MAX_INPUT_LENGTH = 10_000
# As graphql-core: a request with more mistakes than this is not worth listing in full.
MAX_ERRORS = 50
CODE = ErrorCode.VALIDATION.value

Path = list[str | int]


def field_path(path: Sequence[str | int]) -> str:
    return ".".join(str(part) for part in path)


def input_error(message: str, node: Node | None, path: Sequence[str | int]) -> GraphQLError:
    """A client's mistake in an argument: typed, naming the field, without the exception
    that found it (an error carrying an exception is treated as a bug and masked)."""
    field = field_path(path)
    return GraphQLError(message, node, extensions={"code": CODE, "field": field or None})


# -- the scalars ----------------------------------------------------------------------------


def _date(value: Any) -> dt.date:
    if not isinstance(value, str):
        raise ValueError("expected a date as text (YYYY-MM-DD)")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueError("expected a date (YYYY-MM-DD)") from None
    problem = moment_problem(parsed)
    if problem:
        raise ValueError(f"a date {problem}")
    return parsed


def _datetime(value: Any) -> dt.datetime:
    if not isinstance(value, str):
        raise ValueError("expected a date and time as text (ISO 8601)")
    try:
        parsed = dateutil.parser.isoparse(value)
    except (ValueError, OverflowError):
        raise ValueError("expected a date and time (ISO 8601, with offset)") from None
    problem = moment_problem(parsed)
    if problem:
        raise ValueError(f"a date and time {problem}")
    return parsed


def _iso(value: Any) -> str:
    """As strawberry's own Date and DateTime serialize (a date in a DateTime field too)."""
    return str(value.isoformat())


DATE_SCALAR = strawberry.scalar(
    name="Date",
    serialize=_iso,
    parse_value=_date,
    description="A calendar date, ISO 8601 (YYYY-MM-DD), within the years 1900-2200.",
)
DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    serialize=_iso,
    parse_value=_datetime,
    description="A moment, ISO 8601 with a zone offset (e.g. 2024-05-01T09:00:00+08:00), "
                "within the years 1900-2200.",
)
SCALARS = {dt.date: DATE_SCALAR, dt.datetime: DATETIME_SCALAR}


# -- the text rules, on values and on literals ----------------------------------------------


def _named(type_: GraphQLInputType) -> GraphQLInputType:
    return type_.of_type if isinstance(type_, GraphQLNonNull) else type_


def value_problems(value: Any, type_: GraphQLInputType, max_length: int,
                   path: Path) -> Iterator[tuple[Path, str]]:
    """The texts in `value` (as sent in variables, already of the right shape) that break a
    rule, with their paths. Guided by the type, so it goes no deeper than the schema does."""
    type_ = _named(type_)
    if value is None:
        return
    if isinstance(type_, GraphQLList):
        items = value if isinstance(value, list | tuple) else [value]
        for index, item in enumerate(items):
            yield from value_problems(item, type_.of_type, max_length,
                                      [*path, index] if isinstance(value, list | tuple) else path)
    elif isinstance(type_, GraphQLInputObjectType):
        if isinstance(value, dict):
            for name, field in type_.fields.items():
                if name in value:
                    yield from value_problems(value[name], field.type, max_length,
                                              [*path, name])
    else:
        yield from _leaf_problems(value, max_length, path)


def _leaf_problems(value: Any, max_length: int, path: Path) -> Iterator[tuple[Path, str]]:
    # A scalar's value may be any JSON (none of ours takes more than text, but a future
    # JSON input would): every text in it is checked, iteratively.
    stack: list[tuple[Path, Any]] = [(path, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = text_problem(item, max_length)
            if problem:
                yield where, problem
        elif isinstance(item, dict):
            stack.extend(([*where, key], inner) for key, inner in item.items())
        elif isinstance(item, list):
            stack.extend(([*where, index], inner) for index, inner in enumerate(item))


def literal_problems(node: ValueNode, type_: GraphQLInputType, max_length: int,
                     path: Path) -> Iterator[tuple[Path, ValueNode, str]]:
    """As `value_problems`, for a literal in the document (variables in it are skipped:
    their values are checked when the request runs)."""
    type_ = _named(type_)
    if isinstance(node, VariableNode):
        return
    if isinstance(type_, GraphQLList):
        if isinstance(node, ListValueNode):
            for index, item in enumerate(node.values):
                yield from literal_problems(item, type_.of_type, max_length, [*path, index])
        else:
            yield from literal_problems(node, type_.of_type, max_length, path)
    elif isinstance(type_, GraphQLInputObjectType):
        if isinstance(node, ObjectValueNode):
            for field_node in node.fields:
                field = type_.fields.get(field_node.name.value)
                if field is not None:
                    yield from literal_problems(field_node.value, field.type, max_length,
                                                [*path, field_node.name.value])
    elif isinstance(node, StringValueNode):
        problem = text_problem(node.value, max_length)
        if problem:
            yield path, node, problem
    elif isinstance(node, ListValueNode):
        # Any text inside a scalar's list or object literal (a JSON input).
        for index, child in enumerate(node.values):
            yield from literal_problems(child, type_, max_length, [*path, index])
    elif isinstance(node, ObjectValueNode):
        for field_node in node.fields:
            yield from literal_problems(field_node.value, type_, max_length,
                                        [*path, field_node.name.value])


def _describe(path: Path, problem: str) -> str:
    return f"{field_path(path) or 'value'} {problem}"


# -- literals: a typed ValuesOfCorrectTypeRule ----------------------------------------------


@functools.cache
def typed_values_rule(max_length: int) -> type[ASTValidationRule]:
    """graphql-core's rule for literals, reporting typed errors with the field path, and
    the text rules on literals that have the right type. Built once per limit, so the
    validation cache (keyed by the rules) keeps hitting."""

    class TypedValuesOfCorrectTypeRule(ValuesOfCorrectTypeRule):
        _where: str | None = None

        def enter_argument(self, node: ArgumentNode, *_args: Any) -> None:
            self._where = node.name.value

        def leave_argument(self, *_args: Any) -> None:
            self._where = None

        def enter_variable_definition(self, node: VariableDefinitionNode, *_args: Any) -> None:
            self._where = node.variable.name.value

        def leave_variable_definition(self, *_args: Any) -> None:
            self._where = None

        def is_valid_value_node(self, node: ValueNode,
                                input_type: GraphQLInputType | None) -> Any:
            if not input_type:
                return super().is_valid_value_node(node, input_type)
            root: Path = [self._where] if self._where else []
            mistakes = 0

            def on_error(error: GraphQLError, path: Path) -> None:
                nonlocal mistakes
                mistakes += 1
                self.report_error(input_error(error.message, error.nodes or node,
                                              [*root, *path]))

            validate_input_literal(node, input_type, on_error, None, None,
                                   self.context.hide_suggestions)
            if not mistakes:
                for path, leaf, problem in literal_problems(node, input_type, max_length,
                                                            root):
                    self.report_error(input_error(_describe(path, problem), leaf, path))
            return SKIP  # the value was checked whole

    return TypedValuesOfCorrectTypeRule


# -- variables: checked as the executor is built --------------------------------------------


def variable_errors(schema: GraphQLSchema, operation: OperationDefinitionNode,
                    variables: dict[str, Any], max_length: int) -> list[GraphQLError]:
    """Typed errors for the variables' values (type mistakes and the text rules), in the
    order of the variable definitions. Missing or defaulted variables are left to
    graphql-core, whose messages for them name the variable."""
    errors: list[GraphQLError] = []
    for definition in operation.variable_definitions or ():
        name = definition.variable.name.value
        type_ = type_from_ast(schema, definition.type)
        value = variables.get(name, Undefined)
        if type_ is None or not is_input_type(type_) or value is Undefined:
            continue
        found: list[GraphQLError] = []

        def on_error(error: GraphQLError, path: Path, name: str = name,
                     definition: Node = definition, found: list[GraphQLError] = found) -> None:
            found.append(input_error(f"Variable '${name}': {error.message}", definition,
                                     [name, *path]))

        try:
            validate_input_value(value, type_, on_error)
            if not found:
                found.extend(input_error(_describe(path, problem), definition, path)
                             for path, problem in value_problems(value, type_, max_length,
                                                                 [name]))
        except RecursionError:
            found.append(input_error(f"Variable '${name}' is nested too deeply.", definition,
                                     [name]))
        errors.extend(found)
        if len(errors) >= MAX_ERRORS:
            break
    return errors[:MAX_ERRORS]


def _operation(document: Any, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == operation_name), None)


@functools.cache
def hygienic_executor(max_length: int) -> type[StrawberryGraphQLCoreExecutionContext]:
    """Strawberry's executor, refusing to be built for variables that break a rule: the
    same place graphql-core coerces them, so queries, mutations and subscriptions alike
    are answered with typed errors before any resolver runs."""

    class HygienicExecutionContext(StrawberryGraphQLCoreExecutionContext):
        @classmethod
        def build(cls, schema: GraphQLSchema, document: Any, root_value: Any = None,  # type: ignore[override]
                  context_value: Any = None, raw_variable_values: dict[str, Any] | None = None,
                  operation_name: str | None = None, *args: Any, **kwargs: Any) -> Any:
            operation = _operation(document, operation_name)
            if operation is not None and isinstance(raw_variable_values, dict):
                errors = variable_errors(schema, operation, raw_variable_values, max_length)
                if errors:
                    return errors
            return super().build(schema, document, root_value, context_value,
                                 raw_variable_values, operation_name, *args, **kwargs)

    return HygienicExecutionContext


# -- the extension --------------------------------------------------------------------------


class InputHygiene(SchemaExtension):
    """Puts the typed literal rule in place of graphql-core's (the variables are checked by
    `hygienic_executor`; `api.schema.errors.PatronSchema` types graphql-core's other reports
    about the request)."""

    def __init__(self, max_length: int = DEFAULT_MAX_INPUT_LENGTH) -> None:
        self.rule = typed_values_rule(max_length)

    def on_operation(self) -> Iterator[None]:
        execution = self.execution_context
        execution.validation_rules = tuple(
            self.rule if rule is ValuesOfCorrectTypeRule else rule
            for rule in execution.validation_rules
        )
        yield


def is_request_error(error: GraphQLError) -> bool:
    """graphql-core's own report about the request (syntax, validation, variables): no
    code, no path in the result, no exception behind it (or one graphql-core raised)."""
    if (error.extensions or {}).get("code"):
        return False
    original = error.original_error
    return error.path is None and (original is None or isinstance(original, GraphQLError))
