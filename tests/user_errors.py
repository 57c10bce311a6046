"""Every userError the suite provokes names a field of that mutation's `input`, as written.

The `client` fixture (tests/conftest.py) passes each GraphQL answer here. For every
mutation field of the request carrying `userErrors`, each error's `field` is recorded with
the mutation's name and checked against the schema's input types
(`api.schema.input_paths.input_path_exists`). A bad one fails the test that provoked it, at
once, so the check does not depend on which tests run or in what order (or in which xdist
worker); the session's observations are also kept in `OBSERVED` and counted in the terminal
summary. tests/test_user_error_fields.py provokes a representative set on its own.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any

import httpx
from graphql import FieldNode, GraphQLSchema, OperationDefinitionNode, OperationType, parse

from api.schema import build_schema
from api.schema.input_paths import input_path_exists

# (mutation, field) pairs seen this session, and where each was first seen.
OBSERVED: dict[tuple[str, str | None], str] = {}


@functools.cache
def graphql_schema() -> GraphQLSchema:
    return build_schema()._schema


def mutation_fields(query: str, operation_name: str | None = None) -> dict[str, str]:
    """Response key → mutation field name for the request's mutation (aliases resolved)."""
    try:
        document = parse(query)
    except Exception:
        return {}
    keys: dict[str, str] = {}
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if definition.operation is not OperationType.MUTATION:
            continue
        if operation_name and definition.name and definition.name.value != operation_name:
            continue
        for selection in definition.selection_set.selections:
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                keys[key] = selection.name.value
    return keys


def bad_fields(query: str, body: Any, operation_name: str | None = None,
               where: str = "") -> list[str]:
    """Record the userErrors of one answer; describe each whose field is no input path."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        return []
    problems = []
    for key, mutation in mutation_fields(query, operation_name).items():
        payload = body["data"].get(key)
        if not isinstance(payload, dict):
            continue
        for error in payload.get("userErrors") or []:
            field = error.get("field")
            OBSERVED.setdefault((mutation, field), where)
            if field is not None and not input_path_exists(graphql_schema(), mutation, field):
                problems.append(f"{mutation}: userError field {field!r} is not a path in its "
                                f"input ({error.get('code')}: {error.get('message')!r})")
    return problems


async def check_response(response: httpx.Response) -> None:
    """httpx response hook: check the userErrors of a GraphQL POST."""
    request = response.request
    if request.method != "POST" or not request.url.path.endswith("/graphql"):
        return
    try:
        sent = json.loads(request.content)
        await response.aread()
        body = response.json()
    except Exception:
        return
    requests = sent if isinstance(sent, list) else [sent]
    bodies = body if isinstance(body, list) else [body]
    problems = []
    for one, answer in zip(requests, bodies, strict=False):
        if isinstance(one, dict) and isinstance(one.get("query"), str):
            problems += bad_fields(one["query"], answer, one.get("operationName"),
                                   where=os.environ.get("PYTEST_CURRENT_TEST", ""))
    assert not problems, "\n".join(problems)
