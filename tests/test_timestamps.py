"""Every instant a read model stores comes back aware and in UTC, on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import httpx
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from api.runtime import Runtime
from domain.metadata import Role
from projections.tables import metadata
from projections.timestamps import UtcDateTime
from tests.graphql import gql, register, token_for


def test_every_timestamp_column_of_every_read_model_uses_the_utc_type() -> None:
    from sqlalchemy import DateTime

    plain = [f"{table.name}.{column.name}" for table in metadata.tables.values()
             for column in table.columns
             if isinstance(column.type, DateTime) and not isinstance(column.type, UtcDateTime)]
    assert plain == []


def test_instants_come_back_aware_in_utc_whatever_zone_they_were_written_in(
    runtime: Runtime,
) -> None:
    table = Table("instants_under_test", MetaData(), Column("id", Integer, primary_key=True),
                  Column("at", UtcDateTime()))
    shanghai = timezone(timedelta(hours=8))
    written = datetime(2026, 12, 4, 20, 30, tzinfo=shanghai)
    with runtime.sync_engine.begin() as conn:
        table.create(conn)
        conn.execute(insert(table), [{"id": 1, "at": written}, {"id": 2, "at": None},
                                     {"id": 3, "at": datetime(2026, 1, 1, 12, 0)}])
        rows = dict(conn.execute(select(table.c.id, table.c.at)).all())
        table.drop(conn)
    assert rows[1] == written and rows[1].tzinfo == UTC
    assert rows[2] is None
    assert rows[3] == datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # naive is taken as UTC


async def test_a_members_registration_time_has_a_zone_over_the_api(
    client: httpx.AsyncClient,
) -> None:
    await register(client, name="Zoe Tan", email="zoe.tan@example.com")
    body = await gql(client, "{ members(first: 5) { edges { node { registeredAt } } } }",
                     token=token_for(Role.ADMIN, "admin-1"))
    (edge,) = body["data"]["members"]["edges"]
    assert datetime.fromisoformat(edge["node"]["registeredAt"]).utcoffset() == timedelta(0)
