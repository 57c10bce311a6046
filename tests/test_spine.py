"""The projection spine: one pass for every read model; reads wait only for what they read;
a failing read model stops only itself."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, select
from strawberry.relay import to_base64

from api.app import create_app
from api.cli import main
from api.config import Settings
from api.runtime import Runtime
from domain.metadata import Channel, EventMetadata, Role
from projections.coupons import CouponsProjection
from projections.tables import projection_tracking
from tests.graphql import TEST_SECRET, data, gql, register, token_for


def meta(actor: str = "tester") -> EventMetadata:
    return EventMetadata(actor, Role.MEMBER, Channel.WEB, "corr", None, uuid.uuid4().hex, None)


def register_members(runtime: Runtime, count: int) -> list[uuid.UUID]:
    ids = []
    for _ in range(count):
        index = uuid.uuid4().hex[:8]  # one member per email: every call registers new ones
        result = runtime.members.register(
            {"name": f"Member {index}", "email": f"m{index}@example.com"}, meta())
        runtime.members.update_profile(result.aggregate_id, {"city": f"City {index}"},
                                       meta(str(result.aggregate_id)))
        ids.append(result.aggregate_id)
    return ids


def positions(runtime: Runtime) -> dict[str, int]:
    with runtime.sync_engine.connect() as conn:
        rows = conn.execute(select(projection_tracking.c.name, projection_tracking.c.position))
        return {row.name: row.position for row in rows}


class Counting:
    """Counts the runner's reads of the event store and its decodes."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.selects: list[tuple[int | None, int | None]] = []
        self.decoded: list[int] = []
        recorder, mapper = runtime.app.recorder, runtime.app.mapper
        select_notifications = recorder.select_notifications
        to_domain_event = mapper.to_domain_event

        def counted_select(*args: Any, **kwargs: Any) -> Any:
            result = select_notifications(*args, **kwargs)
            self.selects.append((kwargs.get("start"), kwargs.get("stop")))
            return result

        def counted_decode(notification: Any) -> Any:
            self.decoded.append(notification.id)
            return to_domain_event(notification)

        monkeypatch.setattr(recorder, "select_notifications", counted_select)
        monkeypatch.setattr(mapper, "to_domain_event", counted_decode)


def test_one_pass_reads_each_batch_once_and_decodes_each_event_once(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_members(runtime, 5)
    head = runtime.runner.head()
    counting = Counting(runtime, monkeypatch)

    assert runtime.runner.run_once() == head

    assert positions(runtime) == dict.fromkeys(runtime.runner.projections, head)
    # Every read model started at 0: one shared batch, read once for all fourteen.
    assert counting.selects == [(1, head)]
    assert sorted(counting.decoded) == sorted(set(counting.decoded))  # no event twice
    handled = {n.id for n in runtime.app.recorder.select_notifications(1, 1000)
               if any(p.handles(n.topic) for p in runtime.runner.projections.values())}
    assert set(counting.decoded) == handled


def test_a_rebuilt_read_model_catches_up_on_its_own_cursor_then_joins_the_pass(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    register_members(runtime, 4)
    runtime.runner.run_once()
    middle = runtime.runner.head()
    register_members(runtime, 4)
    # member_profiles is reset to zero; everything else stays at `middle`.
    runtime.runner.applied.clear()
    with runtime.sync_engine.begin() as conn:
        conn.execute(projection_tracking.update()
                     .where(projection_tracking.c.name == "member_profiles").values(position=0))
        conn.execute(runtime.runner.projections["member_profiles"].tables[1].delete())
        conn.execute(runtime.runner.projections["member_profiles"].tables[0].delete())
    counting = Counting(runtime, monkeypatch)
    head = runtime.runner.head()

    runtime.runner.run_once()

    assert positions(runtime) == dict.fromkeys(runtime.runner.projections, head)
    # The laggard alone up to the others' position; then one shared batch for all.
    assert counting.selects == [(1, middle), (middle + 1, head)]
    counting.selects.clear()
    runtime.members.register({"name": "Late", "email": "late@example.com"}, meta())
    runtime.runner.run_once()
    assert counting.selects == [(head + 1, runtime.runner.head())]


class FailingCoupons(CouponsProjection):
    """The coupons read model, broken: it raises on every coupon issued."""

    def on_issued(self, conn: Connection, event: Any, position: int) -> None:
        raise RuntimeError("coupon handler is broken")


@pytest.fixture
def broken_runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(dataclasses.replace(settings, read_your_writes_timeout=0.5))
    rt.runner.projections["coupons"] = FailingCoupons()
    yield rt
    rt.close()


@pytest.fixture
async def broken_client(broken_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    broken_runtime.start_projections()
    app = create_app(runtime=broken_runtime, migrate_on_start=False, run_projections=False)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://patron.test"
    ) as http:
        yield http
    broken_runtime.runner.stop()
    if broken_runtime._async_engine is not None:
        await broken_runtime._async_engine.dispose()


async def test_a_failing_read_model_stops_only_itself(
    broken_client: httpx.AsyncClient, broken_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="patron.projections")
    # Registration records the member, their loyalty account and a welcome coupon.
    payload = await register(broken_client)
    token = payload["token"]
    assert payload["member"]["name"] == "Ann Lee"

    # The profile does not read coupons: it answers, without PROJECTION_LAG.
    body = await gql(broken_client, "{ me { name tier } }", token=token)
    assert data(body)["me"]["name"] == "Ann Lee"
    # The wallet reads coupons: it says the read model is behind this client's writes.
    body = await gql(broken_client, "{ me { name coupons { id } } }", token=token)
    assert body["errors"][0]["extensions"]["code"] == "PROJECTION_LAG"
    assert body["errors"][0]["path"] == ["me", "coupons"]

    coupon_event = next(
        n.id for n in broken_runtime.app.recorder.select_notifications(1, 100)
        if broken_runtime.runner.projections["coupons"].handles(n.topic))
    head = broken_runtime.runner.head()
    reached = positions(broken_runtime)
    # Coupons stays before the batch that holds the failing event; the others move on.
    assert reached["coupons"] < coupon_event
    assert all(reached[name] == head for name in reached if name != "coupons")

    status = {s.name: s for s in broken_runtime.runner.status()}
    assert status["coupons"].last_error.startswith(f"at position {coupon_event}: RuntimeError")
    assert all(s.last_error is None for name, s in status.items() if name != "coupons")
    ready = await broken_client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["projections"] == (
        f"degraded: coupons stopped at position {reached['coupons']} "
        f"(failing event {coupon_event})")

    # A log line per back-off step, naming the read model and the position.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        steps = [r.getMessage() for r in caplog.records if "projection coupons failed" in
                 r.getMessage()]
        if len(steps) >= 2:
            break
        await asyncio.sleep(0.1)
    assert steps[0].startswith(f"projection coupons failed at position {coupon_event} "
                               "(attempt 1, RuntimeError at tests/test_spine.py:")
    assert "(attempt 2, RuntimeError at " in steps[1]
    assert all("Ann" not in step for step in steps)  # ids and positions, no personal data


async def test_a_query_that_reads_no_read_model_does_not_wait(
    settings: Settings,
) -> None:
    runtime = Runtime(dataclasses.replace(settings, read_your_writes_timeout=0.3))
    app = create_app(runtime=runtime, migrate_on_start=False, run_projections=False)
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://patron.test"
        ) as http:
            payload = await register(http)  # projections are not running: nothing applied
            auditor = token_for(Role.AUDITOR)
            ahead = {"X-Patron-Min-Position": str(payload["position"])}
            history = """query($id: ID!) { memberHistory(id: $id) { totalCount } }"""
            member_id = runtime.app.recorder.select_notifications(1, 1)[0].originator_id
            body = await gql(http, history, {"id": to_base64("Member", str(member_id))},
                             token=auditor, headers=ahead)
            assert data(body)["memberHistory"]["totalCount"] == 1
            body = await gql(http, "{ members { totalCount } }", token=token_for(Role.ADMIN),
                             headers=ahead)
            assert body["errors"][0]["extensions"]["code"] == "PROJECTION_LAG"
    finally:
        if runtime._async_engine is not None:
            await runtime._async_engine.dispose()
        runtime.close()



async def test_an_operator_skips_the_failing_event_and_status_shows_it(
    broken_client: httpx.AsyncClient, broken_runtime: Runtime, database_url: str
) -> None:
    payload = await register(broken_client)
    coupons = broken_runtime.runner.projections["coupons"]
    coupon_event = next(n.id for n in broken_runtime.app.recorder.select_notifications(1, 100)
                        if coupons.handles(n.topic))
    env = {"PATRON_DATABASE_URL": database_url, "PATRON_SECRET_KEY": TEST_SECRET}
    cli = CliRunner()

    shown = cli.invoke(main, ["projections", "event", str(coupon_event)], env=env)
    assert shown.exit_code == 0, shown.output
    assert "Coupon.Issued" in shown.output and "coupons" in shown.output
    refused = cli.invoke(main, ["projections", "skip", "coupons", str(coupon_event)], env=env)
    assert refused.exit_code != 0  # a reason is required
    wrong = cli.invoke(main, ["projections", "skip", "coupons", "1", "--reason", "x"], env=env)
    assert wrong.exit_code != 0 and "does not handle" in wrong.output

    skipped = cli.invoke(main, ["projections", "skip", "coupons", str(coupon_event),
                                "--reason", "welcome coupon of a broken release",
                                "--by", "ops-1"], env=env)
    assert skipped.exit_code == 0, skipped.output

    # The live runner picks the skip up on its next attempt and catches up past it.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if positions(broken_runtime)["coupons"] == broken_runtime.runner.head():
            break
        await asyncio.sleep(0.1)
    assert positions(broken_runtime)["coupons"] == broken_runtime.runner.head()
    body = await gql(broken_client, "{ me { name coupons { id } } }", token=payload["token"])
    assert data(body)["me"] == {"name": "Ann Lee", "coupons": []}
    ready = await broken_client.get("/readyz")
    assert ready.json()["status"] == "ready"

    status = cli.invoke(main, ["projections", "status"], env=env)
    assert status.exit_code == 0, status.output
    assert (f"coupons at position {coupon_event}, by ops-1 on" in status.output
            and "welcome coupon of a broken release" in status.output)
    as_json = cli.invoke(main, ["projections", "status", "--json"], env=env)
    entry = next(s for s in json.loads(as_json.output) if s["name"] == "coupons")
    assert entry["last_error"] is None
    assert entry["skipped"][0][:3] == [coupon_event, "welcome coupon of a broken release",
                                       "ops-1"]
