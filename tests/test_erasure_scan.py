"""Erasure leaves nothing behind: a member with distinctive values in every personal field
and every text a member can write, erased, then every table of the database and the log
searched for any of those values.

Distinctive values (no English word, no demo data contains them) make a plain substring
search across every row's text an honest detector: a value found anywhere after erasure is
personal data that escaped the member's key.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import inspect, text

from api.runtime import Runtime
from domain.clock import AdjustableClock
from tests.graphql import data, gql, register
from tests.test_after_sales_api import MESSAGE, open_case
from tests.test_orders_api import ADMIN, AGENT, Shopper, line, mutate, ok, pay, place
from tests.test_shipments_api import ANSWER, COMPLAIN, RATE, deliver_parcel, ship

SECRETS = {
    "name": "Zephyrine Quillfeather",
    "email": "zq.vexmoor@example.com",
    "phone": "+8613977553311",
    "occupation": "Vexmoorist",
    "city": "Quillhaven",
    "address": "77 Brambleyquist Lane",
    "recipient": "Zeph Brambleyquist",
    "printed name": "For Xandrelle",
    "gift message": "Glimmerfrost wishes",
    "search": "snorkelwump",
    "review": "Plumbagorix review",
    "rating comment": "Trundlewhisk courier",
    "complaint": "Fizzlecrumb box",
    "case detail": "Wobblenook detail",
    "case evidence": "Grizzleplank notes",
    "case message": "Mumbleferret message",
}


def everything_stored(runtime: Runtime) -> str:
    """Every row of every table, the event store's included, as one lower-cased text."""
    chunks: list[str] = []
    with runtime.sync_engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        value = bytes(value).decode("utf-8", "replace")
                    chunks.append(str(value))
    return "\n".join(chunks).lower()


async def test_nothing_a_member_gave_or_wrote_survives_their_erasure(
    client: httpx.AsyncClient, live_runtime: Runtime, clock: AdjustableClock,
    caplog: Any,
) -> None:
    caplog.set_level(logging.DEBUG)
    registered = await register(
        client, name=SECRETS["name"], email=SECRETS["email"], phone=SECRETS["phone"],
        birthday="1979-02-13", occupation=SECRETS["occupation"], city=SECRETS["city"],
        region="Snarfleshire")  # not personal: kept, and the scan's control
    member = Shopper(registered)
    address = {"recipient": SECRETS["recipient"], "line1": SECRETS["address"],
               "city": SECRETS["city"], "country": "CN", "phone": SECRETS["phone"]}
    prefs = await gql(client, """mutation($input: SetMemberPreferencesInput!) {
        setMemberPreferences(input: $input) { userErrors { field message } } }""",
        {"input": {"delivery": {"defaultAddress": address}}}, token=member.token)
    assert data(prefs)["setMemberPreferences"]["userErrors"] == []
    consent = await gql(client, """mutation { setConsent(input: {purpose: PERSONALISATION,
        channel: ALL, granted: true}) { userErrors { field } } }""", token=member.token)
    assert data(consent)["setConsent"]["userErrors"] == []
    tracked = await gql(client, """mutation($input: TrackBehaviourInput!) {
        trackBehaviour(input: $input) { userErrors { field message } } }""",
        {"input": {"batchKey": uuid.uuid4().hex, "events": [
            {"kind": "SEARCHED", "keywords": SECRETS["search"], "resultCount": 3}]}},
        token=member.token)
    assert data(tracked)["trackBehaviour"]["userErrors"] == []

    order = await pay(client, member, await place(client, member, [line("tent-2p", 2, 6_500)]))
    parcel = await ship(client, order, address=address, packaging={
        "giftWrap": True, "printedName": SECRETS["printed name"],
        "giftMessage": SECRETS["gift message"]})
    await deliver_parcel(client, parcel, clock.now() - timedelta(minutes=5))
    ok(await mutate(client, RATE, {"shipmentId": parcel["id"], "speed": 4,
                                   "courierAttitude": 2, "packagingCondition": 3,
                                   "comment": SECRETS["rating comment"]}, member.token))
    ok(await mutate(client, COMPLAIN, {"shipmentId": parcel["id"],
                                       "text": SECRETS["complaint"]}, member.token))
    ok(await mutate(client, ANSWER, {"shipmentId": parcel["id"], "text": "Sorry."}, AGENT))
    reviewed = await gql(client, """mutation($input: ReviewProductInput!) {
        reviewProduct(input: $input) { userErrors { field message } } }""",
        {"input": {"orderId": order["id"], "lineId": "L1", "stars": 4,
                   "text": SECRETS["review"]}}, token=member.token)
    assert data(reviewed)["reviewProduct"]["userErrors"] == []
    case = ok(await open_case(client, member.token, order, reasonDetail=SECRETS["case detail"],
                              evidence={"notes": SECRETS["case evidence"]}))["case"]
    ok(await mutate(client, MESSAGE, {"caseId": case["id"], "body": SECRETS["case message"]},
                    member.token))

    # Before erasure the read models do hold some of it (staff need it): the scan can see.
    await live_runtime.wait_for_read_models(live_runtime.runner.head())
    assert SECRETS["city"].lower() in everything_stored(live_runtime)

    erased = await gql(client, """mutation($id: ID!) { eraseMember(input: {memberId: $id,
        reason: "GDPR request"}) { userErrors { code } } }""", {"id": member.id}, token=ADMIN)
    assert data(erased)["eraseMember"]["userErrors"] == []
    live_runtime.runner.run_once()
    await live_runtime.wait_for_read_models(live_runtime.runner.head())

    stored = everything_stored(live_runtime)
    logged = caplog.text.lower()
    assert "snarfleshire" in stored  # the scan reads what erasure left
    leaks = {what: where for what, value in SECRETS.items()
             for where, found in (("tables", stored), ("log", logged))
             if value.lower() in found}
    assert leaks == {}
