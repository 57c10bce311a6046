"""The per-batch unit of work read models write through: what it reads, what it writes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert, select

from projections.batch_work import BatchWork
from projections.commerce_tables import loyalty_ledger, loyalty_lots
from projections.database import DatabaseConfig

T = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = DatabaseConfig(database_url).create_sync_engine()
    yield engine
    engine.dispose()


def lot(member: str, lot_id: str, remaining: int = 10, seq: int = 0) -> dict[str, Any]:
    return {
        "member_id": member, "lot_id": lot_id, "source": "order", "ref": lot_id,
        "points": 10, "remaining": remaining, "clawed_back": 0, "status": "available",
        "earned_at": T, "release_at": None, "available_at": T, "expires_at": None, "seq": seq,
    }


def entry(member: str, number: int) -> dict[str, Any]:
    return {
        "member_id": member, "entry": number, "at": T, "kind": "earned", "points": 1,
        "bucket": "available", "cause": "order", "ref": None, "lot_id": None,
        "available_after": number, "pending_after": 0, "debt_after": 0, "actor_id": None,
        "reason": None,
    }


def rows(engine: Engine, table: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(
            select(table).order_by(*table.primary_key.columns)).mappings()]


def test_reads_once_changes_in_memory_and_flushes_in_bulk(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(loyalty_lots), [lot("m1", "a"), lot("m1", "b"), lot("m2", "c")])
        conn.execute(insert(loyalty_ledger), [entry("m1", 1), entry("m1", 2)])

    with engine.begin() as conn:
        work = BatchWork(conn, (loyalty_lots, loyalty_ledger))
        work.prefetch_where(loyalty_lots, "member_id", ["m1", "m2", "m3"])
        work.prefetch_max(loyalty_ledger, "entry", "member_id", ["m1", "m3"])
        assert work.statements == 2  # one SELECT per table for the whole batch
        assert work.count(loyalty_lots, "member_id", "m1") == 2
        assert work.get(loyalty_lots, ("m3", "x")) is None  # known absent: no SELECT

        work.update(loyalty_lots, ("m1", "a"), remaining=3)
        assert work.get(loyalty_lots, ("m1", "a"))["remaining"] == 3  # sees its own write
        work.delete(loyalty_lots, ("m1", "b"))
        work.insert(loyalty_lots, lot("m3", "x", seq=0))
        with pytest.raises(ValueError):
            work.insert(loyalty_lots, lot("m3", "x"))
        assert work.count(loyalty_lots, "member_id", "m1") == 1
        assert [r["lot_id"] for r in work.find(loyalty_lots, "member_id", "m3")] == ["x"]
        assert work.update(loyalty_lots, ("m9", "nothing"), remaining=0) is None

        assert work.next_number(loyalty_ledger, "entry", "member_id", "m1") == 3
        assert work.next_number(loyalty_ledger, "entry", "member_id", "m1") == 4
        assert work.next_number(loyalty_ledger, "entry", "member_id", "m3") == 1
        for number, member in ((3, "m1"), (4, "m1"), (1, "m3")):
            work.append(loyalty_ledger, entry(member, number))
        assert work.statements == 3  # only the m9 look-up, not prefetched, read on its own
        before = work.statements
        work.flush()
        # A delete, an upsert of lots, an insert of ledger entries: three statements.
        assert work.statements - before == 3

    lots = {(r["member_id"], r["lot_id"]): r for r in rows(engine, loyalty_lots)}
    assert set(lots) == {("m1", "a"), ("m2", "c"), ("m3", "x")}
    assert lots[("m1", "a")]["remaining"] == 3 and lots[("m2", "c")]["remaining"] == 10
    assert [(r["member_id"], r["entry"]) for r in rows(engine, loyalty_ledger)] == [
        ("m1", 1), ("m1", 2), ("m1", 3), ("m1", 4), ("m3", 1)
    ]


def test_a_row_deleted_and_written_again_in_one_batch_ends_as_written(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(loyalty_lots), [lot("m1", "a")])
    with engine.begin() as conn:
        work = BatchWork(conn, (loyalty_lots,))
        work.delete(loyalty_lots, ("m1", "a"))
        assert work.get(loyalty_lots, ("m1", "a")) is None
        work.insert(loyalty_lots, lot("m1", "a", remaining=7))
        work.flush()
    assert [r["remaining"] for r in rows(engine, loyalty_lots)] == [7]


def test_nothing_is_written_when_the_transaction_does_not_commit(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        work = BatchWork(conn, (loyalty_lots,))
        work.insert(loyalty_lots, lot("m1", "a"))
        work.flush()
        raise RuntimeError("crash after the flush, before the commit")
    assert rows(engine, loyalty_lots) == []
