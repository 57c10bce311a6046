"""The fuzz suite, bounded (issue 14): every query and mutation under every role, on SQLite
and PostgreSQL, through the real ASGI app, one request at a time.

A few hundred requests with a fixed seed (see tests/fuzzing.py for where they come from):
hypothesis-graphql documents, valid-shaped and with one schema violation, and a corpus of
malformed argument values. The run fails on any 5xx, any INTERNAL error, any error without
a code, and any event recorded by a request that returned errors. The unbounded run against
a served PostgreSQL is tests/benchmarks/fuzz.py.
"""

from __future__ import annotations

import functools

import httpx

from api.runtime import Runtime
from api.schema import build_schema
from domain.metadata import Role
from tests.fuzzing import ROLES, FuzzRequest, Tally, corpus, generated, root_fields
from tests.graphql import register, token_for

CORPUS_CASES = 150


@functools.cache
def fuzz_requests(max_length: int) -> tuple[FuzzRequest, ...]:
    """Generated once per run (both backends get the same requests)."""
    schema = build_schema()._schema
    return tuple(generated(schema) + corpus(schema, max_length, limit=CORPUS_CASES))


async def run(client: httpx.AsyncClient, runtime: Runtime, requests: list[FuzzRequest],
              tokens: dict[Role, str | None]) -> Tally:
    tally = Tally()
    for request in requests:
        headers = {"content-type": "application/json"}
        token = tokens[request.role]
        if token:
            headers["Authorization"] = f"Bearer {token}"
        before = runtime.app.recorder.max_notification_id() or 0
        response = await client.post("/graphql", content=request.body(), headers=headers)
        after = runtime.app.recorder.max_notification_id() or 0
        tally.add(request, response.status_code, response.text, before, after)
    return tally


async def test_fuzzing_every_operation_under_every_role_finds_no_internal_error(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    member = await register(client, name="Fuzz Member", email="fuzz@example.com")
    tokens = {
        Role.ANONYMOUS: None,
        Role.MEMBER: member["token"],
        Role.AGENT: token_for(Role.AGENT, "agent-fuzz"),
        Role.ADMIN: token_for(Role.ADMIN, "admin-fuzz"),
        Role.AUDITOR: token_for(Role.AUDITOR, "auditor-fuzz", scopes=("pii",)),
    }
    assert set(tokens) == set(ROLES)
    schema = build_schema(live_runtime.settings)._schema
    requests = list(fuzz_requests(live_runtime.settings.max_input_length))
    # Every root field is fuzzed, each under every role.
    fields = {name for _kind, name in root_fields(schema)}
    assert {r.label.split("/")[0] for r in requests if "/" in r.label} == fields
    assert len(requests) >= 5 * len(fields)

    tally = await run(client, live_runtime, requests, tokens)

    assert tally.requests == len(requests)
    assert tally.problems == [], "\n".join(tally.problems[:40])
    # No projection was the first to find bad data: every read model reaches the head.
    await live_runtime.wait_for_read_models(live_runtime.app.recorder.max_notification_id())
    # It did reach resolvers and the hygiene layer both (not only refusals of one kind).
    assert tally.codes.get("VALIDATION", 0) > 0
    assert tally.answered_without_errors > 0
    assert tally.statuses.get(200, 0) > len(requests) // 2
