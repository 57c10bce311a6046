"""Typed errors only: what a client did wrong keeps its code; anything else is a bug.

Resolvers report expected failures as `ApiError` (or a mutation's `userErrors`). This is
the net under them, so a client's mistake never comes out as INTERNAL because one resolver
forgot to translate it: a `DomainError` raised anywhere becomes its own typed error, a
`ProjectionLagError` becomes PROJECTION_LAG. Everything else is masked as INTERNAL with the
request id and logged at ERROR with its traceback; expected errors are logged at INFO,
without traceback and without their message (which may echo what the client sent, personal
data included): code, field, path and request id say enough.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import strawberry
from graphql import FieldNode, GraphQLError
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.extensions import MaskErrors
from strawberry.relay.types import GlobalIDValueError
from strawberry.types import ExecutionContext

from api.consistency import ProjectionLagError
from api.schema.hygiene import CODE, is_request_error
from api.schema.input_paths import to_client_message, to_input_path
from domain.errors import DomainError

log = logging.getLogger("patron.api")

# A global id that does not parse or names no type (relay's `node(id:)`) is the client's.
EXPECTED = (DomainError, ProjectionLagError, GlobalIDValueError)


def _request_id(execution_context: ExecutionContext | None) -> str | None:
    context = execution_context.context if execution_context else None
    patron = context.get("patron") if isinstance(context, dict) else None
    return patron.request_id if patron else None


def is_unexpected(error: GraphQLError) -> bool:
    """A bug: an exception that is neither a GraphQL error nor an expected failure."""
    original = error.original_error
    return original is not None and not isinstance(original, (GraphQLError, *EXPECTED))


def typed(error: GraphQLError) -> GraphQLError:
    """The typed error an expected failure stands for (others are returned as they are)."""
    original = error.original_error
    if isinstance(original, DomainError):
        extensions: dict[str, Any] = {"code": original.code.value}
        if original.field:
            extensions["field"] = to_input_path(original.field)
        return GraphQLError(to_client_message(original.message, original.field), error.nodes,
                            error.source, error.positions, error.path, extensions=extensions)
    if isinstance(original, GlobalIDValueError):
        return GraphQLError(f"malformed or unknown global id: {original}", error.nodes,
                            error.source, error.positions, error.path,
                            extensions={"code": "VALIDATION", "field": _argument(error)})
    if isinstance(original, ProjectionLagError):
        return GraphQLError(str(original), error.nodes, error.source, error.positions,
                            error.path, extensions={"code": "PROJECTION_LAG",
                                                    "wanted": original.wanted,
                                                    "reached": original.reached})
    return error


def _is_coercion_error(error: GraphQLError) -> bool:
    """Strawberry could not convert a client's argument (a global id that does not parse)."""
    return (not (error.extensions or {}).get("code")
            and isinstance(error.original_error, StrawberryInputCoercionError))


def _argument(error: GraphQLError) -> str | None:
    """The argument at fault when the failing field has exactly one (`node(id:)`)."""
    node = error.nodes[0] if error.nodes else None
    if isinstance(node, FieldNode) and node.arguments and len(node.arguments) == 1:
        return node.arguments[0].name.value
    return None


class MaskUnexpectedErrors(MaskErrors):
    """Expected failures keep their message and code; anything else is logged and masked."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=self._should_replace)

    @staticmethod
    def _should_replace(error: GraphQLError) -> bool:
        original = error.original_error
        return original is not None and not isinstance(original, GraphQLError)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        if not is_unexpected(error):
            return typed(error)
        # Logged (at ERROR, with its traceback) by PatronSchema.process_errors.
        request_id = _request_id(self.execution_context)
        return GraphQLError(
            message=f"Internal error; quote request id {request_id} when reporting it.",
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": "INTERNAL", "requestId": request_id},
        )

    def on_operation(self) -> Iterator[None]:
        yield from super().on_operation()


class PatronSchema(strawberry.Schema):
    """Every error passes here once, before it is answered (and before masking):
    graphql-core's reports about the request get the code VALIDATION; expected errors are
    logged at INFO without traceback; bugs at ERROR with their traceback and request id."""

    def process_errors(self, errors: list[GraphQLError],
                       execution_context: ExecutionContext | None = None) -> None:
        request_id = _request_id(execution_context)
        for error in errors:
            if is_unexpected(error):
                log.error(
                    "unexpected error in %s (request %s)",
                    ".".join(str(p) for p in error.path or []) or "operation",
                    request_id,
                    exc_info=error.original_error,
                )
                continue
            if is_request_error(error) or _is_coercion_error(error):
                extensions = {**(error.extensions or {}), "code": CODE}
                if _is_coercion_error(error):
                    extensions.setdefault("field", _argument(error))
                error.extensions = extensions
            shown = typed(error)
            extensions = shown.extensions or {}
            log.info("client error %s (field %s, path %s, request %s)",
                     extensions.get("code", "VALIDATION"), extensions.get("field"),
                     ".".join(str(p) for p in shown.path or []) or "-", request_id)
