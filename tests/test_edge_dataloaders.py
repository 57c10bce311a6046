"""Nested lists resolve through DataLoaders: an accepted query costs a bounded number of SQL
statements, whatever the number of rows (issue 14, item 3).

Statements are counted with a SQLAlchemy listener on the engine the API reads with; the same
query is counted over a few rows and over more, and the counts must not grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from api.runtime import Runtime
from domain.clock import AdjustableClock
from domain.metadata import Role
from tests.graphql import data, gql, token_for
from tests.test_after_sales_api import delivered, opened
from tests.test_orders_api import shopper

# A subject with no writes of its own: its queries never wait for the read models, so the
# statements counted are the query's only.
READER = token_for(Role.ADMIN, "admin-reader")

CASES = """
{ caseQueue(first: 100) { totalCount edges { node {
    id member { id name } order { id state } } } } }
"""
MEMBERS = """
{ members(first: 20) { totalCount edges { node { id
    orders(first: 10) { totalCount edges { node { id
      shipments { id timeline { status } } } } } } } } }
"""


@contextmanager
def counted(runtime: Runtime) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(*args: Any) -> None:
        statements.append(args[2])

    engine = runtime.async_engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


async def settled(client: httpx.AsyncClient, query: str, total: int,
                  path: tuple[str, ...]) -> dict[str, Any]:
    """The query's answer once the read models show `total` rows (projections are async)."""
    for _ in range(200):
        body = data(await gql(client, query, token=READER))
        found: Any = body
        for key in path:
            found = found[key]
        if found == total:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"the read models never showed {total} rows: {body}")


async def statements_for(client: httpx.AsyncClient, runtime: Runtime, query: str) -> int:
    with counted(runtime) as statements:
        data(await gql(client, query, token=READER))
    return len(statements)


async def test_nested_lists_cost_a_bounded_number_of_statements(
    client: httpx.AsyncClient, runtime: Runtime, clock: AdjustableClock
) -> None:
    async def add(n: int) -> None:
        for i in range(n):
            who = await shopper(client, f"Member {i}")
            await opened(client, who, await delivered(client, who, clock))

    await add(2)
    few = await settled(client, CASES, 2, ("caseQueue", "totalCount"))
    assert all(e["node"]["member"] and e["node"]["order"] for e in few["caseQueue"]["edges"])
    await settled(client, MEMBERS, 2, ("members", "totalCount"))
    cases_few = await statements_for(client, runtime, CASES)
    members_few = await statements_for(client, runtime, MEMBERS)

    await add(4)
    many = await settled(client, CASES, 6, ("caseQueue", "totalCount"))
    assert all(e["node"]["member"] and e["node"]["order"] for e in many["caseQueue"]["edges"])
    rows = await settled(client, MEMBERS, 6, ("members", "totalCount"))
    shipments = [s for m in rows["members"]["edges"] for o in m["node"]["orders"]["edges"]
                 for s in o["node"]["shipments"]]
    assert len(shipments) == 6 and all(s["timeline"] for s in shipments)
    cases_many = await statements_for(client, runtime, CASES)
    members_many = await statements_for(client, runtime, MEMBERS)

    print(f"statements: caseQueue {cases_few} (2 cases) {cases_many} (6 cases); "
          f"members {members_few} (2 members) {members_many} (6 members)")
    # The page and its count, then one statement per nested field, not per row.
    assert cases_many == cases_few <= 4
    assert members_many == members_few <= 5
