"""A userError's `field` is the path into the mutation's `input` as the client wrote it.

The domain names what is at fault in its own words: snake_case attribute paths relative to
the command it was given (`pickup_point`, `packaging.printed_name`, `lines.0.quantity`).
Only the GraphQL edge knows how the client wrote that: which input field carried it (an id,
`pickupPointId`; a reason asked for under another name, `note`), how it is spelt (camelCase)
and where a nested object sits. So the translation happens once, where a `DomainError`
becomes a `UserError` (`api.schema.common.run_mutation`), and not in the domain:

* each segment of the domain path goes through strawberry's own name converter, the one
  that named the input fields in the schema, so `printed_name` becomes `printedName` exactly
  as the schema spells it (and would stay right if the naming config changed);
* an input type that names something differently from the domain declares it, once, on
  the input class: `domain_paths = {"pickup_point": "pickup_point_id"}` (a `ClassVar`, so not
  a GraphQL field), mapping the longest leading part of the domain path onto the input's
  own (Python) path, which is then converted like the rest (`lines` → `items` also maps
  `lines.0.quantity` to `items.0.quantity`). The declaration sits next to the fields it
  speaks of, and every mutation taking that input shares it;
* the message speaks the same language: where it writes the domain path, or a snake_case
  part of it, the client's spelling replaces it (`packaging.printed_name must be…` reads
  `packaging.printedName must be…`). Plain words are left alone ("choose a pickup point").

What the domain knows outside a command's arguments has a path of its own: the reason
staff give is the command's metadata, `meta.reason`, read from the input's `reason` unless
its `domain_paths` say otherwise (`note`, `on_behalf_reason`), so it never mixes with a
field the command itself calls `reason` (a case's or a cancellation's).

Paths use dots and list indexes: `items.0.quantity`, `packaging.printedName`, `shipment`
(the whole object missing). `input_path_exists` walks the schema's input types to tell
whether a path names something the client can write; the tests hold every userError the
suite produces to it (tests/user_errors.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from graphql import (
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLSchema,
    get_nullable_type,
)
from strawberry.utils.str_converters import to_camel_case

# Where the edge reads what the domain names outside a command's arguments: the reason
# staff give is the command's metadata (`meta.reason`), read from the input's `reason`
# unless its `domain_paths` say otherwise.
DEFAULT_PATHS = {"meta.reason": "reason"}

# A path segment that is a list index (every other segment is a field name).
_INDEX = re.compile(r"^\d+$")


def _converter(convert: Callable[[str], str] | None) -> Callable[[str], str]:
    """The converter given, else strawberry's default (`auto_camel_case`), for the edges
    without a schema at hand (a query's or subscription's `ApiError`)."""
    return convert if convert is not None else to_camel_case


def to_input_path(
    domain_path: str,
    renames: Mapping[str, str] | None = None,
    convert: Callable[[str], str] | None = None,
) -> str:
    """The input path a domain field path stands for.

    `renames` maps a leading part of the domain path (dotted, snake_case, as the domain
    raises it) to the input's Python path for it; the longest match wins. Every segment
    then goes through `convert`, the schema's name converter
    (`NameConverter.apply_naming_config`; by default strawberry's camel case).
    """
    convert = _converter(convert)
    renames = {**DEFAULT_PATHS, **(renames or {})}
    segments = domain_path.split(".")
    for cut in range(len(segments), 0, -1):
        renamed = renames.get(".".join(segments[:cut]))
        if renamed is not None:
            segments = renamed.split(".") + segments[cut:]
            break
    return ".".join(part if _INDEX.match(part) else convert(part) for part in segments)


def to_client_message(
    message: str,
    domain_path: str | None,
    renames: Mapping[str, str] | None = None,
    convert: Callable[[str], str] | None = None,
) -> str:
    """`message` with the domain's names for the field at fault in the client's spelling.

    Replaced are the domain path and its leading parts (`packaging.printed_name`) and its
    snake_case segments (`product_id` in "needs a product_id"): only identifiers, i.e.
    with a dot or an underscore, as whole words and not inside quotes (an echoed value).
    """
    if not domain_path:
        return message
    convert = _converter(convert)
    segments = domain_path.split(".")
    names: dict[str, str] = {}
    for cut in range(1, len(segments) + 1):
        prefix = ".".join(segments[:cut])
        names[prefix] = to_input_path(prefix, renames, convert)
        if "_" in segments[cut - 1]:
            names.setdefault(segments[cut - 1], convert(segments[cut - 1]))
    names = {old: new for old, new in names.items()
             if ("_" in old or "." in old) and old != new}
    if not names:
        return message
    pattern = re.compile(r"(?<![\w'\"])(" + "|".join(
        re.escape(old) for old in sorted(names, key=len, reverse=True)) + r")(?![\w'\"])")
    return pattern.sub(lambda match: names[match.group(1)], message)


def input_path_exists(schema: GraphQLSchema, mutation: str, path: str) -> bool:
    """Whether `path` (dots and list indexes) names a field of `mutation`'s `input`.

    `items.0.quantity` exists when `input` has a list field `items` whose items have a
    `quantity`; an index is accepted only on a list, a name only on an input object.
    """
    if schema.mutation_type is None:
        return False
    field = schema.mutation_type.fields.get(mutation)
    if field is None or "input" not in field.args:
        return False
    current = get_nullable_type(field.args["input"].type)
    for part in path.split("."):
        if _INDEX.match(part):
            if not isinstance(current, GraphQLList):
                return False
            current = get_nullable_type(current.of_type)
            continue
        if not isinstance(current, GraphQLInputObjectType) or part not in current.fields:
            return False
        current = get_nullable_type(current.fields[part].type)
    return True
