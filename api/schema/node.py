"""`node(id:)`: any object by its Relay global id, with typed errors for bad ids.

strawberry's own node field lets a well-formed id of an unknown type ("Nope:1") escape as
an internal error, and a malformed one as an error without a code; a client's wrong id is
neither a bug nor anonymous.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

import strawberry
from strawberry import relay
from strawberry.types.cast import cast as strawberry_cast

from api.schema.common import ApiError


async def resolve_node(
    info: strawberry.Info,
    id: Annotated[strawberry.ID, strawberry.argument(description="The ID of the object.")],
) -> relay.Node | None:
    try:
        global_id = relay.GlobalID.from_id(str(id))
    except Exception:
        raise ApiError("id is not a global id", "VALIDATION", field="id") from None
    try:
        node_type = global_id.resolve_type(info)
    except relay.GlobalIDValueError:
        raise ApiError("no object has this id: its type is unknown", "NOT_FOUND",
                       field="id") from None
    found: Any = node_type.resolve_node(global_id.node_id, info=info, required=False)
    if inspect.isawaitable(found):
        found = await found
    return None if found is None else strawberry_cast(node_type, found)


@strawberry.type
class NodeQueries:
    node: relay.Node | None = strawberry.field(
        resolver=resolve_node, description="Any object by its global id.")
