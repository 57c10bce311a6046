"""Behaviour tracking, session links and product reviews: on the service and through the API.

Consent is checked on what the event store holds (the recorded BehaviourBatch events and
their metadata), not on a read model: "not attached to the member" means that nothing
recorded for the batch names them. "Nothing recorded" is checked against the head position.
"""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.behaviour import ANONYMOUS_SESSION_PREFIX
from api.runtime import Runtime
from domain.behaviour import MAX_BATCH, BehaviourBatch, ProductReview, SessionLink
from domain.clock import AdjustableClock
from domain.errors import (
    ConcurrencyConflictError,
    DomainError,
    ErasedError,
    IdempotencyConflictError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from domain.loyalty import CreditSource
from domain.metadata import Channel, EventMetadata, Role
from tests.graphql import data, gql, token_for
from tests.shop import stocked
from tests.test_orders_api import (
    ADMIN,
    AGENT,
    deliver,
    head,
    line,
    loyalty,
    mutate,
    ok,
    pay,
    place,
    shopper,
)

SESSION = "web-session-0001"


def meta(actor: str, role: Role = Role.MEMBER, reason: str | None = None) -> EventMetadata:
    request_id = uuid.uuid4().hex
    return EventMetadata(actor, role, Channel.APP, f"corr-{actor}", None, request_id, reason)


ANON = meta("anonymous", Role.ANONYMOUS)


def view(product: str = "tent-2p", **extra: Any) -> dict[str, Any]:
    return {"kind": "product_viewed", "product_id": product, "category": "Outdoor",
            "brand": "Lumen", "price": 6_500, "dwell_seconds": 12, **extra}


def search(words: str) -> dict[str, Any]:
    return {"kind": "searched", "keywords": words, "result_count": 4}


def register(runtime: Runtime, name: str = "Rita") -> uuid.UUID:
    return runtime.members.register(
        {"name": name, "email": f"{name.lower()}-{uuid.uuid4().hex[:6]}@example.com"}, ANON
    ).aggregate_id


def consent(runtime: Runtime, member: uuid.UUID, granted: bool) -> None:
    runtime.members.set_consent(member, "personalisation", "all", granted, meta(str(member)))


def recorded(runtime: Runtime, aggregate_id: uuid.UUID) -> list[Any]:
    """The aggregate's events as stored (decoded, personal data decrypted if possible)."""
    return list(runtime.app.events.get(aggregate_id))


def stored_states(runtime: Runtime) -> bytes:
    with runtime.sync_engine.connect() as conn:
        table = runtime.app.recorder.events_table_name  # type: ignore[attr-defined]
        states = conn.execute(text(f"SELECT state FROM {table}")).scalars().all()
    return b"".join(bytes(s) for s in states)


def fails(call: Any, error: type[DomainError]) -> DomainError:
    with pytest.raises(error) as caught:
        call()
    return caught.value


# -- tracking: validation and idempotency --------------------------------------------------


def test_a_bad_event_is_named_by_position_and_field_and_nothing_is_recorded(
    runtime: Runtime, clock: AdjustableClock
) -> None:
    track = runtime.behaviour.track
    before = head(runtime)
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([view(), {"kind": "product_viewed"}], "events.1.product_id"),
        ([view(), view(), {"kind": "teleported", "product_id": "x"}], "events.2.kind"),
        ([{"kind": "searched", "keywords": "  "}], "events.0.keywords"),
        ([view(occurred_at=clock.now() + timedelta(hours=1))], "events.0.occurred_at"),
        ([view(occurred_at=clock.now() - timedelta(days=8))], "events.0.occurred_at"),
        ([view(occurred_at=clock.now().replace(tzinfo=None))], "events.0.occurred_at"),
        ([view(), view(dwell_seconds=-1)], "events.1.dwell_seconds"),
        ([view(price=True)], "events.0.price"),
        ([{"kind": "shared", "product_id": "x", "share_channel": "carrier-pigeon"}],
         "events.0.share_channel"),
        ([view(), "not an event"], "events.1"),  # type: ignore[list-item]
        ([], "events"),
        ([view()] * (MAX_BATCH + 1), "events"),
    ]
    for items, field in cases:
        error = fails(lambda items=items: track(None, SESSION, items, "k", ANON),
                      ValidationError)
        assert error.field == field, (items[:3], error.message)
    # Anonymous behaviour needs a (well-formed, unreserved) session, and a batch key.
    assert fails(lambda: track(None, None, [view()], "k", ANON), ValidationError).field == (
        "session_id")
    assert fails(lambda: track(None, "short", [view()], "k", ANON), ValidationError).field == (
        "session_id")
    reserved = f"{ANONYMOUS_SESSION_PREFIX}{uuid.uuid4().hex}"
    assert fails(lambda: track(None, reserved, [view()], "k", ANON),
                 ValidationError).field == "session_id"
    assert fails(lambda: track(None, SESSION, [view()], " ", ANON),
                 ValidationError).field == "batch_key"
    assert head(runtime) == before
    # The largest batch is fine.
    result = track(None, SESSION, [view(f"p{i}") for i in range(MAX_BATCH)], "big", ANON)
    assert (result.accepted, result.attributed) == (MAX_BATCH, False)
    assert head(runtime) == before + 1  # one event for the whole batch


def test_a_resent_batch_is_recorded_once_and_a_reused_key_is_a_conflict(
    runtime: Runtime, clock: AdjustableClock
) -> None:
    member = register(runtime)
    consent(runtime, member, True)
    items = [view(), search("two person tent")]
    first = runtime.behaviour.track(member, None, items, "batch-1", meta(str(member)))
    assert first.position is not None and (first.accepted, first.attributed) == (2, True)
    before = head(runtime)
    clock.advance(timedelta(minutes=3))  # a resend comes later; "now" differs
    again = runtime.behaviour.track(member, None, items, "batch-1", meta(str(member)))
    assert (again.aggregate_id, again.accepted, again.attributed) == (
        first.aggregate_id, 2, True)
    assert again.position is None and head(runtime) == before
    # Consent withdrawn since: the resend still answers as the first batch did.
    consent(runtime, member, False)
    before = head(runtime)
    resent = runtime.behaviour.track(member, None, items, "batch-1", meta(str(member)))
    assert resent.attributed is True and head(runtime) == before
    with pytest.raises(IdempotencyConflictError):
        runtime.behaviour.track(member, None, [view("other")], "batch-1", meta(str(member)))
    assert head(runtime) == before
    # Keys are per sender: the same key from a session or another member is another batch.
    other = runtime.behaviour.track(None, SESSION, items, "batch-1", ANON)
    assert other.aggregate_id != first.aggregate_id and other.position is not None
    # A session named like the member cannot take the member's batch ids.
    squatter = runtime.behaviour.track(None, str(member), items, "batch-2", ANON)
    mine = runtime.behaviour.track(member, None, [view()], "batch-2", meta(str(member)))
    assert squatter.aggregate_id != mine.aggregate_id and mine.position is not None


def test_two_identical_batches_sent_at_once_are_recorded_once(runtime: Runtime) -> None:
    barrier = threading.Barrier(2)
    results = []

    def send() -> None:
        barrier.wait()
        results.append(runtime.behaviour.track(None, SESSION, [view()], "same", ANON))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 2 and results[0].aggregate_id == results[1].aggregate_id
    assert sorted(r.position is None for r in results) == [False, True]
    assert len(recorded(runtime, results[0].aggregate_id)) == 1


# -- tracking: consent and attribution -------------------------------------------------------


def test_consent_decides_attribution_and_changes_take_effect_from_the_next_batch(
    runtime: Runtime,
) -> None:
    member = register(runtime)
    own = meta(str(member))

    def batch(key: str) -> tuple[Any, BehaviourBatch.Recorded]:
        result = runtime.behaviour.track(member, "app-session-42", [view(), search("boots")],
                                         key, own)
        (event,) = recorded(runtime, result.aggregate_id)
        assert isinstance(event, BehaviourBatch.Recorded)
        return result, event

    # No consent yet: counted, but nothing recorded names the member or their session.
    result, event = batch("b1")
    assert result.attributed is False and result.accepted == 2
    assert event.member_id is None
    assert event.session_id is not None and event.session_id.startswith(
        ANONYMOUS_SESSION_PREFIX)
    assert event.meta["actor_id"] == "anonymous" and event.meta["actor_role"] == "anonymous"
    assert str(member) not in repr(vars(event)) and "corr-" not in repr(event.meta)
    assert event.events[1]["keywords"] == "boots"  # anonymous: nobody's personal data
    _, second = batch("b2")
    assert second.session_id != event.session_id  # each anonymous batch stands alone

    consent(runtime, member, True)
    result, event = batch("b3")
    assert result.attributed is True
    assert (event.member_id, event.session_id) == (str(member), "app-session-42")
    assert event.meta["actor_id"] == str(member)
    assert event.events[1]["keywords"] is None
    assert event.personal == {"keywords": {"1": "boots"}}

    consent(runtime, member, False)
    result, event = batch("b4")
    assert result.attributed is False and event.member_id is None

    # A closed account is not personalised either; an erased member is refused.
    consent(runtime, member, True)
    runtime.members.set_status(member, "closed", meta("admin", Role.ADMIN, "asked to leave"))
    assert batch("b5")[0].attributed is False
    runtime.members.erase(member, meta("admin", Role.ADMIN, "gdpr"))
    before = head(runtime)
    with pytest.raises(ErasedError):
        runtime.behaviour.track(member, None, [view()], "b6", own)
    assert head(runtime) == before
    with pytest.raises(NotFoundError):
        runtime.behaviour.track(uuid.uuid4(), None, [view()], "b7", own)


def test_a_members_search_words_are_encrypted_and_gone_after_erasure(
    runtime: Runtime,
) -> None:
    member = register(runtime)
    consent(runtime, member, True)
    words = "orthopaedic hiking insoles xq7"
    result = runtime.behaviour.track(member, None, [search(words), view()], "s1",
                                     meta(str(member)))
    assert result.attributed is True
    assert words.encode() not in stored_states(runtime)
    assert b"tent-2p" in stored_states(runtime)  # what was viewed stays readable
    (event,) = recorded(runtime, result.aggregate_id)
    assert event.personal == {"keywords": {"0": words}}

    runtime.members.erase(member, meta("admin", Role.ADMIN, "gdpr"))
    (event,) = recorded(runtime, result.aggregate_id)
    assert event.personal is None
    assert event.events[0]["kind"] == "searched" and event.events[0]["keywords"] is None


# -- sessions -----------------------------------------------------------------------------


def test_an_anonymous_session_is_tracked_then_linked_once_to_one_member(
    runtime: Runtime,
) -> None:
    tracked = runtime.behaviour.track(None, SESSION, [view(), search("stove")], "a1", ANON)
    (event,) = recorded(runtime, tracked.aggregate_id)
    assert (event.member_id, event.session_id, tracked.attributed) == (None, SESSION, False)

    ann, bob, cid = register(runtime, "Ann"), register(runtime, "Bob"), register(runtime, "Cid")
    consent(runtime, ann, True)
    consent(runtime, bob, True)
    linked = runtime.behaviour.link_session(SESSION, ann, meta(str(ann)))
    assert linked.linked is True and linked.position is not None
    link = runtime.uow.get(SessionLink, linked.aggregate_id)
    assert (link.session_id, link.member_id) == (SESSION, str(ann))

    before = head(runtime)
    again = runtime.behaviour.link_session(SESSION, ann, meta(str(ann)))
    assert (again.linked, again.position, again.aggregate_id) == (
        True, None, linked.aggregate_id)
    conflict = fails(lambda: runtime.behaviour.link_session(SESSION, bob, meta(str(bob))),
                     ConcurrencyConflictError)
    assert conflict.code.value == "CONFLICT"
    # Without consent, the session stays anonymous: nothing records the link.
    unlinked = runtime.behaviour.link_session("cid-session-77", cid, meta(str(cid)))
    assert (unlinked.linked, unlinked.position) == (False, None)
    with pytest.raises(ValidationError):
        runtime.behaviour.link_session("bad id!", ann, meta(str(ann)))
    with pytest.raises(ValidationError):
        runtime.behaviour.link_session(f"{ANONYMOUS_SESSION_PREFIX}{uuid.uuid4().hex}", ann,
                                       meta(str(ann)))
    assert head(runtime) == before


# -- reviews ------------------------------------------------------------------------------

LINES = [{"product_id": "p1", "sku": "S1", "name": "Mug", "category": "Kitchen",
          "brand": "Clay", "quantity": 2, "unit_price": 3_000},
         {"product_id": "p2", "sku": "S2", "name": "Tea", "quantity": 1, "unit_price": 5_000}]


def paid_order(runtime: Runtime, member: uuid.UUID) -> uuid.UUID:
    own = meta(str(member))
    order = runtime.orders.place(member, stocked(runtime, LINES), None, 0, uuid.uuid4().hex,
                                 own).aggregate_id
    runtime.orders.pay(order, "card", runtime.orders.get(order).total, None, "pay", own)
    return order


def delivered_order(runtime: Runtime, member: uuid.UUID) -> uuid.UUID:
    order = paid_order(runtime, member)
    runtime.orders.mark_delivered(order, meta("agent", Role.AGENT, "courier confirmed"))
    return order


def review_lots(runtime: Runtime, member: uuid.UUID) -> list[dict[str, Any]]:
    account = runtime.loyalty.account(member)
    return [lot for lot in account.lots.values() if lot["source"] == CreditSource.REVIEW]


def test_reviews_need_stars_and_a_delivered_line_of_ones_own_order(runtime: Runtime) -> None:
    member = register(runtime)
    own = meta(str(member))
    review = runtime.behaviour.review_product
    undelivered = paid_order(runtime, member)
    order = delivered_order(runtime, member)
    stranger = register(runtime, "Sam")
    before = head(runtime)
    for stars in (0, 6, True, "5", None):
        error = fails(lambda stars=stars: review(member, order, "L1", stars, "nice", own),
                      ValidationError)
        assert error.field == "stars"
    assert fails(lambda: review(member, order, "L1", 4, "x" * 5001, own),
                 ValidationError).field == "text"
    assert fails(lambda: review(member, order, "L9", 4, None, own),
                 NotFoundError).field == "line_id"
    assert fails(lambda: review(stranger, order, "L1", 4, None, meta(str(stranger))),
                 NotFoundError).field == "order_id"
    assert fails(lambda: review(member, uuid.uuid4(), "L1", 4, None, own),
                 NotFoundError).code.value == "NOT_FOUND"
    error = fails(lambda: review(member, undelivered, "L1", 4, "quick", own),
                  InvalidTransitionError)
    assert isinstance(error, InvalidTransitionError) and error.current_state == "paid"
    assert head(runtime) == before
    assert review_lots(runtime, member) == []


def test_review_points_come_once_per_line_and_only_with_text(runtime: Runtime) -> None:
    member = register(runtime)
    own = meta(str(member))
    order = delivered_order(runtime, member)
    points = runtime.rules.review_points

    first = runtime.behaviour.review_product(member, order, "L1", 3, None, own)
    assert (first.points_awarded, first.stars, first.text, first.product_id) == (
        0, 3, None, "p1")
    assert review_lots(runtime, member) == []
    revised = runtime.behaviour.review_product(member, order, "L1", 4, "  Sturdy mug ", own)
    assert (revised.aggregate_id, revised.version) == (first.aggregate_id, 2)
    assert (revised.points_awarded, revised.stars, revised.text) == (points, 4, "Sturdy mug")
    before = head(runtime)
    retried = runtime.behaviour.review_product(member, order, "L1", 4, "Sturdy mug", own)
    assert (retried.points_awarded, retried.position) == (0, None)
    assert head(runtime) == before
    again = runtime.behaviour.review_product(member, order, "L1", 5, "Even better", own)
    assert (again.points_awarded, again.version) == (0, 3)
    other_line = runtime.behaviour.review_product(member, order, "L2", 5, "Good tea", own)
    assert other_line.points_awarded == points and other_line.product_id == "p2"
    # The older loyalty entry point shares the once-per-line marker.
    runtime.loyalty.award_review(member, order, "L1", "Sturdy mug", own)
    assert [lot["points"] for lot in review_lots(runtime, member)] == [points, points]

    review = runtime.uow.get(ProductReview, first.aggregate_id)
    assert (review.stars, review.text, review.line_id, review.category) == (
        5, "Even better", "L1", "kitchen")
    # The review text is the member's personal data: encrypted, and gone with erasure.
    assert b"Even better" not in stored_states(runtime)
    runtime.members.erase(member, meta("admin", Role.ADMIN, "gdpr"))
    assert runtime.uow.get(ProductReview, first.aggregate_id).text is None
    with pytest.raises(ErasedError):
        runtime.behaviour.review_product(member, order, "L1", 2, None, own)


def test_two_reviews_of_one_line_at_once_earn_the_points_once(runtime: Runtime) -> None:
    member = register(runtime)
    order = delivered_order(runtime, member)
    barrier = threading.Barrier(2)
    results: list[Any] = []
    errors: list[BaseException] = []

    def write(words: str) -> None:
        barrier.wait()
        try:
            results.append(runtime.behaviour.review_product(member, order, "L1", 5, words,
                                                            meta(str(member))))
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in ("Great mug", "Lovely")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert sorted(r.points_awarded for r in results) == [0, runtime.rules.review_points]
    assert len(review_lots(runtime, member)) == 1
    review = runtime.uow.get(ProductReview, results[0].aggregate_id)
    assert review.version == 2 and review.text in ("Great mug", "Lovely")


# -- through the API ------------------------------------------------------------------------

USER_ERRORS = "userErrors { field message code }"
TRACK = f"""
mutation T($input: TrackBehaviourInput!) {{
  trackBehaviour(input: $input) {{ accepted attributed position {USER_ERRORS} }}
}}
"""
LINK = f"""
mutation L($input: LinkSessionInput!) {{
  linkSession(input: $input) {{ linked sessionId position {USER_ERRORS} }}
}}
"""
REVIEW = f"""
mutation R($input: ReviewProductInput!) {{
  reviewProduct(input: $input) {{
    review {{ reviewId orderId lineId productId stars text version }}
    pointsAwarded position {USER_ERRORS}
  }}
}}
"""
SET_CONSENT = f"""
mutation C($input: SetConsentInput!) {{
  setConsent(input: $input) {{ position {USER_ERRORS} }}
}}
"""


def api_view(product: str = "tent-2p", **extra: Any) -> dict[str, Any]:
    return {"kind": "PRODUCT_VIEWED", "productId": product, "category": "outdoor",
            "brand": "lumen", "price": 6_500, "dwellSeconds": 30, **extra}


async def track(client: httpx.AsyncClient, events: list[dict[str, Any]], key: str,
                token: str | None = None, session: str | None = None,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    body = await gql(client, TRACK, {"input": {"events": events, "batchKey": key,
                                               "sessionId": session}},
                     token=token, headers=headers)
    payload: dict[str, Any] = data(body)["trackBehaviour"]
    return payload


async def test_tracking_through_the_api_names_bad_events_and_respects_consent(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    runtime = live_runtime
    ann = await shopper(client, "Ann Lee")
    before = head(runtime)
    bad = await track(client, [api_view(), {"kind": "ADDED_TO_CART"}], "k1", ann.token)
    assert bad["userErrors"] == [{"field": "events.1.productId", "code": "VALIDATION",
                                  "message": "events[1] (added_to_cart) needs a productId"}]
    assert (bad["accepted"], bad["position"]) == (None, None)
    searched = await track(client, [{"kind": "SEARCHED"}], "k1", ann.token)
    assert searched["userErrors"][0]["field"] == "events.0.keywords"
    nobody = await track(client, [api_view()], "k1")
    assert nobody["userErrors"][0] == {
        "field": "sessionId", "code": "VALIDATION",
        "message": "anonymous behaviour needs a session id"}
    for token in (AGENT, ADMIN, token_for(Role.AUDITOR, "auditor-1")):
        staff = await track(client, [api_view()], "k1", token, session=SESSION)
        assert staff["userErrors"][0]["code"] == "FORBIDDEN"
    too_many = await track(client, [api_view()] * (MAX_BATCH + 1), "k1", ann.token)
    assert too_many["userErrors"][0]["field"] == "events"
    assert head(runtime) == before

    # Without consent: accepted, not attributed.
    events = [api_view(), {"kind": "SEARCHED", "keywords": "rain jacket", "resultCount": 9},
              {"kind": "SHARED", "productId": "tent-2p", "shareChannel": "WECHAT"},
              api_view("stove", occurredAt=(runtime.clock.now() - timedelta(days=2))
                       .isoformat())]
    first = await track(client, events, "k1", ann.token, headers={"X-Patron-Channel": "app"})
    assert (first["accepted"], first["attributed"], first["userErrors"]) == (4, False, [])
    assert first["position"] > before
    resent = await track(client, events, "k1", ann.token)
    assert (resent["accepted"], resent["attributed"], resent["position"]) == (4, False, None)
    reused = await track(client, [api_view()], "k1", ann.token)
    assert reused["userErrors"][0]["code"] == "IDEMPOTENCY_CONFLICT"

    granted = data(await gql(client, SET_CONSENT, {"input": {
        "purpose": "PERSONALISATION", "channel": "ALL", "granted": True}}, token=ann.token))
    assert granted["setConsent"]["userErrors"] == []
    second = await track(client, events, "k2", ann.token, session="ann-phone-session")
    assert (second["accepted"], second["attributed"]) == (4, True)
    batch = runtime.uow.get(BehaviourBatch, runtime.behaviour.batch_id_for(
        uuid.UUID(ann.member_id), "ann-phone-session", "k2"))
    assert (batch.member_id, batch.session_id, batch.count) == (
        ann.member_id, "ann-phone-session", 4)
    (event,) = recorded(runtime, batch.id)
    assert event.meta["channel"] == "web" and event.events[2]["share_channel"] == "wechat"
    assert event.personal == {"keywords": {"1": "rain jacket"}}

    # Anonymous shoppers are tracked by session, then the session is linked on sign-in.
    anonymous = await track(client, [api_view("lamp")], "a1", session=SESSION)
    assert (anonymous["accepted"], anonymous["attributed"]) == (1, False)
    unauthenticated = data(await gql(client, LINK, {"input": {"sessionId": SESSION}}))
    assert unauthenticated["linkSession"]["userErrors"][0]["code"] == "UNAUTHENTICATED"
    linked = data(await gql(client, LINK, {"input": {"sessionId": SESSION}},
                            token=ann.token))["linkSession"]
    assert (linked["linked"], linked["sessionId"], linked["userErrors"]) == (
        True, SESSION, [])
    bob = await shopper(client, "Bob Ray")
    taken = data(await gql(client, LINK, {"input": {"sessionId": SESSION}},
                           token=bob.token))["linkSession"]
    assert taken["userErrors"][0]["code"] == "CONFLICT" and taken["linked"] is None
    bad_session = data(await gql(client, LINK, {"input": {"sessionId": "no"}},
                                 token=bob.token))["linkSession"]
    assert bad_session["userErrors"][0]["field"] == "sessionId"
    not_consenting = data(await gql(client, LINK, {"input": {"sessionId": "bob-session-1"}},
                                    token=bob.token))["linkSession"]
    assert (not_consenting["linked"], not_consenting["position"]) == (False, None)


async def test_a_batch_of_five_hundred_events_goes_through_in_one_request(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client, "Ann Lee")
    events = [api_view(f"p-{i}") for i in range(MAX_BATCH)]
    result = await track(client, events, "bulk", ann.token)
    assert (result["accepted"], result["userErrors"]) == (MAX_BATCH, [])


async def test_reviewing_a_delivered_purchase_through_the_api_earns_points_once(
    client: httpx.AsyncClient, live_runtime: Runtime
) -> None:
    ann = await shopper(client, "Ann Lee")
    order = await place(client, ann, [line("tent-2p", 1, 6_500, category="Outdoor"),
                                      line("mug", 1, 3_000)])
    order = await pay(client, ann, order)
    early = await mutate(client, REVIEW, {"orderId": order["id"], "lineId": "L1",
                                          "stars": 5, "text": "Great"}, ann.token)
    assert early["userErrors"][0]["code"] == "INVALID_TRANSITION"
    await deliver(client, order)
    bob = await shopper(client, "Bob Ray")
    before = head(live_runtime)
    stars = await mutate(client, REVIEW, {"orderId": order["id"], "lineId": "L1",
                                          "stars": 6}, ann.token)
    assert stars["userErrors"] == [{"field": "stars", "code": "VALIDATION",
                                    "message": "stars go from 1 to 5"}]
    assert (stars["review"], stars["pointsAwarded"]) == (None, None)
    staff = await mutate(client, REVIEW, {"orderId": order["id"], "lineId": "L1",
                                          "stars": 4}, AGENT)
    assert staff["userErrors"][0]["code"] == "FORBIDDEN"
    not_his = await mutate(client, REVIEW, {"orderId": order["id"], "lineId": "L1",
                                            "stars": 1, "text": "Meh"}, bob.token)
    assert not_his["userErrors"][0]["code"] == "NOT_FOUND"
    malformed = await mutate(client, REVIEW, {"orderId": "nonsense", "lineId": "L1",
                                              "stars": 1}, ann.token)
    assert malformed["userErrors"][0]["field"] == "orderId"
    assert head(live_runtime) == before

    written = ok(await mutate(client, REVIEW, {"orderId": order["id"], "lineId": "L1",
                                               "stars": 5, "text": "Dry all night"},
                              ann.token))
    points = live_runtime.rules.review_points
    assert written["pointsAwarded"] == points
    assert {k: written["review"][k] for k in ("orderId", "lineId", "productId", "stars",
                                              "text", "version")} == {
        "orderId": order["id"], "lineId": "L1", "productId": "tent-2p", "stars": 5,
        "text": "Dry all night", "version": 1}
    # Read-your-writes: the member's account already shows the review points.
    account = await loyalty(client, ann)
    assert [lot["points"] for lot in account["lots"] if lot["source"] == "review"] == [points]
    revised = ok(await mutate(client, REVIEW, {"orderId": order["id"], "lineId": "L1",
                                               "stars": 4, "text": "Dry, a bit heavy"},
                              ann.token))
    assert (revised["pointsAwarded"], revised["review"]["stars"],
            revised["review"]["version"]) == (0, 4, 2)
    assert revised["review"]["reviewId"] == written["review"]["reviewId"]
    account = await loyalty(client, ann)
    assert [lot["points"] for lot in account["lots"] if lot["source"] == "review"] == [points]
