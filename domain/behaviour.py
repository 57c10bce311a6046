"""Behaviour: what shoppers look at, search for, put in carts, wish for and share.

Behaviour arrives in volume (millions of events per busy member), so it is never part of
the Member aggregate: each batch a frontend sends becomes an aggregate of its own with one
event, written once and never loaded again by a command. A member's commands therefore
cost the same whether they have ten behaviour events or ten million; only projections
read behaviour.

Consent decides attribution when a batch is recorded: with consent to personalisation the
batch names the member; without it the batch is anonymous and only counts towards
aggregate statistics. Anonymous sessions are tracked under a session id; when the shopper
signs in, a `SessionLink` ties the session to the member (once, to one member), and
projections attribute the session's behaviour to them if they consent.

Search keywords a member types are personal data: in a member's batch they travel in the
event's `personal` attribute, encrypted under the member's key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import ConcurrencyConflictError, ValidationError
from domain.metadata import EventMetadata


class BehaviourKind(StrEnum):
    PRODUCT_VIEWED = "product_viewed"
    SEARCHED = "searched"
    ADDED_TO_CART = "added_to_cart"
    REMOVED_FROM_CART = "removed_from_cart"
    WISH_LISTED = "wish_listed"
    SHARED = "shared"


class ShareChannel(StrEnum):
    WECHAT = "wechat"
    WEIBO = "weibo"
    EMAIL = "email"
    LINK = "link"
    OTHER = "other"


MAX_BATCH = 500
# Frontends buffer: behaviour may arrive up to a week late, but never from the future.
MAX_AGE = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)
MAX_DWELL_SECONDS = 24 * 3600
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:-]{8,100}$")


def _text(item: Mapping[str, Any], key: str, max_length: int, index: int) -> str | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.strip()) > max_length:
        raise ValidationError(f"events[{index}].{key} must be text of at most {max_length} "
                              "characters", f"events.{index}.{key}")
    return value.strip() or None


def _count(item: Mapping[str, Any], key: str, maximum: int, index: int) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise ValidationError(f"events[{index}].{key} must be a whole number from 0 to "
                              f"{maximum}", f"events.{index}.{key}")
    return value


def validate_session_id(value: Any) -> str:
    if not isinstance(value, str) or not _SESSION_ID.match(value):
        raise ValidationError("a session id is 8-100 letters, digits or . _ : -", "session_id")
    return value


def validate_behaviour(item: Mapping[str, Any], index: int, now: datetime) -> dict[str, Any]:
    """One behaviour event, normalised; raises naming the event's index and field."""
    if not isinstance(item, Mapping):
        raise ValidationError(f"events[{index}] must be an object", f"events.{index}")
    try:
        kind = BehaviourKind(item.get("kind", ""))
    except ValueError:
        allowed = ", ".join(k.value for k in BehaviourKind)
        raise ValidationError(f"events[{index}].kind must be one of: {allowed}",
                              f"events.{index}.kind") from None
    occurred_at = item.get("occurred_at") or now
    if not isinstance(occurred_at, datetime) or occurred_at.tzinfo is None:
        raise ValidationError(f"events[{index}].occurred_at needs a time zone",
                              f"events.{index}.occurred_at")
    if occurred_at > now + CLOCK_SKEW or occurred_at < now - MAX_AGE:
        raise ValidationError(f"events[{index}].occurred_at must be within the last "
                              f"{MAX_AGE.days} days", f"events.{index}.occurred_at")
    product_id = _text(item, "product_id", 100, index)
    if kind != BehaviourKind.SEARCHED and not product_id:
        raise ValidationError(f"events[{index}] ({kind.value}) needs a product_id",
                              f"events.{index}.product_id")
    keywords = _text(item, "keywords", 200, index)
    if kind == BehaviourKind.SEARCHED and not keywords:
        raise ValidationError(f"events[{index}] (searched) needs keywords",
                              f"events.{index}.keywords")
    share_channel = None
    if kind == BehaviourKind.SHARED:
        try:
            share_channel = ShareChannel(item.get("share_channel") or "other").value
        except ValueError:
            allowed = ", ".join(c.value for c in ShareChannel)
            raise ValidationError(f"events[{index}].share_channel must be one of: {allowed}",
                                  f"events.{index}.share_channel") from None
    category = _text(item, "category", 100, index)
    brand = _text(item, "brand", 100, index)
    return {
        "kind": kind.value,
        "occurred_at": occurred_at.astimezone(UTC).isoformat(),
        "product_id": product_id,
        "category": category.lower() if category else None,
        "brand": brand.lower() if brand else None,
        "price": _count(item, "price", 10**12, index),
        "dwell_seconds": (_count(item, "dwell_seconds", MAX_DWELL_SECONDS, index)
                          if kind == BehaviourKind.PRODUCT_VIEWED else None),
        "keywords": keywords if kind == BehaviourKind.SEARCHED else None,
        "result_count": (_count(item, "result_count", 10**9, index)
                         if kind == BehaviourKind.SEARCHED else None),
        "share_channel": share_channel,
    }


def validate_batch(items: Sequence[Mapping[str, Any]], now: datetime) -> list[dict[str, Any]]:
    if not items:
        raise ValidationError("send at least one behaviour event", "events")
    if len(items) > MAX_BATCH:
        raise ValidationError(f"at most {MAX_BATCH} behaviour events per batch", "events")
    return [validate_behaviour(item, i, now) for i, item in enumerate(items)]


class BehaviourBatch(RecordedAggregate):
    """One batch of behaviour as one event. Its id derives from the sender's batch key, so
    a resent batch is recognised (the id exists) and recorded once."""

    @classmethod
    def record(
        cls,
        batch_id: UUID,
        member_id: str | None,
        session_id: str | None,
        events: list[dict[str, Any]],
        request_hash: str,
        now: datetime,
        meta: EventMetadata,
    ) -> BehaviourBatch:
        if member_id is None and session_id is None:
            raise ValidationError("behaviour belongs to a member or a session", "session_id")
        if member_id is not None:
            # The member's search words are theirs: encrypted under their key.
            public = [{**e, "keywords": None} for e in events]
            keywords = {str(i): e["keywords"] for i, e in enumerate(events) if e["keywords"]}
            personal: dict[str, Any] | None = {"keywords": keywords} if keywords else None
        else:
            public, personal = events, None
        return cls._create(
            cls.Recorded, id=batch_id, timestamp=now, member_id=member_id,
            session_id=session_id, events=public, personal=personal,
            request_hash=request_hash, meta=meta.as_dict(),
        )

    class Recorded(Aggregate.Created):
        member_id: str | None
        session_id: str | None
        events: list[dict[str, Any]]
        personal: dict[str, Any] | None
        request_hash: str

    def __init__(self, member_id: str | None, session_id: str | None,
                 events: list[dict[str, Any]], personal: dict[str, Any] | None,
                 request_hash: str, meta: dict[str, Any]) -> None:
        self.member_id = member_id
        self.session_id = session_id
        self.count = len(events)
        self.request_hash = request_hash


class SessionLink(RecordedAggregate):
    """An anonymous session, tied to the member who signed in during it: once, to one."""

    @classmethod
    def link(cls, link_id: UUID, session_id: str, member_id: str, now: datetime,
             meta: EventMetadata) -> SessionLink:
        return cls._create(cls.Linked, id=link_id, timestamp=now,
                           session_id=validate_session_id(session_id), member_id=member_id,
                           meta=meta.as_dict())

    class Linked(Aggregate.Created):
        session_id: str
        member_id: str

    def __init__(self, session_id: str, member_id: str, meta: dict[str, Any]) -> None:
        self.session_id = session_id
        self.member_id = member_id

    def check_member(self, member_id: str) -> None:
        """Linking again to the same member is a harmless retry; to another is refused."""
        if self.member_id != member_id:
            raise ConcurrencyConflictError("this session already belongs to another member")


class ProductReview(RecordedAggregate):
    """A member's review of a purchased line: stars and, optionally, text (personal data).

    One per order line; writing again revises it. The loyalty engine awards review points
    once per line, for a review with text.
    """

    @classmethod
    def write(cls, review_id: UUID, member_id: str, order_id: str, line: Mapping[str, Any],
              stars: Any, text: str | None, now: datetime,
              meta: EventMetadata) -> ProductReview:
        return cls._create(
            cls.Written, id=review_id, timestamp=now, member_id=member_id, order_id=order_id,
            line_id=line["line_id"], product_id=line.get("product_id"),
            category=line.get("category"), brand=line.get("brand"),
            stars=validate_stars(stars), personal=_review_text(text), meta=meta.as_dict(),
        )

    class Written(Aggregate.Created):
        member_id: str
        order_id: str
        line_id: str
        product_id: str | None
        category: str | None
        brand: str | None
        stars: int
        personal: dict[str, Any] | None

    def __init__(self, member_id: str, order_id: str, line_id: str, product_id: str | None,
                 category: str | None, brand: str | None, stars: int,
                 personal: dict[str, Any] | None, meta: dict[str, Any]) -> None:
        self.member_id = member_id
        self.order_id = order_id
        self.line_id = line_id
        self.product_id = product_id
        self.category = category
        self.brand = brand
        self.stars = stars
        self.text: str | None = (personal or {}).get("text")

    @property
    def has_text(self) -> bool:
        return bool(self.text)

    def revise(self, stars: Any, text: str | None, now: datetime, meta: EventMetadata) -> bool:
        """False when nothing changed (a retried request)."""
        checked = validate_stars(stars)
        personal = _review_text(text)
        if checked == self.stars and (personal or {}).get("text") == self.text:
            return False
        self._trigger(
            self.Revised, now, meta, member_id=self.member_id, stars=checked, personal=personal,
        )
        return True

    class Revised(RecordedAggregate.Event):
        member_id: str
        stars: int
        personal: dict[str, Any] | None

        def apply(self, review: Any) -> None:
            review.stars = self.stars
            review.text = (self.personal or {}).get("text")


def validate_stars(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 5:
        raise ValidationError("stars go from 1 to 5", "stars")
    return value


def _review_text(text: Any) -> dict[str, Any] | None:
    if text is None:
        return None
    if not isinstance(text, str) or len(text.strip()) > 5000:
        raise ValidationError("a review is text of at most 5000 characters", "text")
    return {"text": text.strip()} if text.strip() else None
