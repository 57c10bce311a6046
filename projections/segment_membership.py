"""Live segment membership, decided inside the "member_behaviour" projection.

Membership is a conclusion about a member's profile, and the profile is computed from the
rows this projection keeps (behaviour_tables). Deciding it here, in the transaction that
folds each event in, means a member joins or leaves at the time of the event that made
the rule hold or stop holding, from exactly the facts as they were then: a rebuild from
zero records the same history, and no other projection's progress matters.

When membership is decided:

- after every event that changes a member's facts (behaviour, a linked session, orders
  placed, paid or refunded, reviews, consent to personalisation, tier changes): that member,
  against every active segment, as of the event's time;
- when a segment is defined or its rule changes: every member, against that segment;
- at each `SegmentReview` (one per `segment_review_minutes`, recorded by the scheduler):
  every member, against every active segment, with the RFM base taken once. This is how
  changes that need no event of the member's own arrive: decay, "within N days",
  lifecycle, quintiles that move as other members buy.

Archiving a segment makes every member leave it; erasing a member removes them from every
segment and deletes their join and leave history (the daily counts keep the numbers).

The thresholds and weights of the rules file in force when an event is processed decide;
a rebuild applies the rules in force then.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, case, delete, func, insert, select, update

from domain.loyalty_rules import ProfileRules, Tier
from domain.profile import RfmBase, RfmScores, aware, build_profile, rfm_from_counts
from domain.segment_rules import TAGS, Rule, Verdict, evaluate, parse_rule
from domain.segments import SegmentState, facts_from_profile
from projections.behaviour_tables import behaviour_consents, member_activity, member_interests
from projections.commerce_tables import utc
from projections.segment_tables import (
    segment_daily,
    segment_members,
    segment_membership_changes,
    segments,
)

Row = dict[str, Any]
JOINED = "joined"
LEFT = "left"
# Facts that need the RFM base: the scores, and tags (loyal and high_value read them).
RFM_FACTS = frozenset({"rfm_recency", "rfm_frequency", "rfm_monetary", TAGS})


@dataclass(frozen=True)
class ActiveSegment:
    segment_id: str
    rule: Rule

    @property
    def needs_rfm(self) -> bool:
        return bool(self.rule.fields & RFM_FACTS)


@dataclass(frozen=True)
class MemberFacts:
    """What the rows say of one member: enough to build their profile."""

    activity: Row
    personalised: bool
    interests: list[Row]


def rfm_counts_query(activity: Mapping[str, Any]) -> Any:
    """Buyers in the base, and how many are at or below this member on R, F and M."""
    a = member_activity.c
    return select(
        func.count(),
        func.sum(case((a.last_purchase_at <= utc(activity["last_purchase_at"]), 1), else_=0)),
        func.sum(case((a.purchases <= activity["purchases"], 1), else_=0)),
        func.sum(case((a.purchase_total <= activity["purchase_total"], 1), else_=0)),
    ).where(a.purchases > 0)


def _why(verdict: Verdict) -> list[dict[str, Any]]:
    return [reason.as_dict() for reason in verdict.why]


class SegmentMembership:
    def __init__(self, rules: ProfileRules) -> None:
        self.rules = rules
        self._parsed: dict[str, Rule] = {}

    def _rule(self, text: str) -> Rule:
        """Stored rules are canonical and always parse; parse each text once."""
        rule = self._parsed.get(text)
        if rule is None:
            rule = self._parsed[text] = parse_rule(text)
        return rule

    def active(self, conn: Connection) -> list[ActiveSegment]:
        rows = conn.execute(select(segments.c.segment_id, segments.c.rule)
                            .where(segments.c.state == SegmentState.ACTIVE.value)
                            .order_by(segments.c.segment_id))
        return [ActiveSegment(row.segment_id, self._rule(row.rule)) for row in rows]

    # -- segments ---------------------------------------------------------------------------

    def on_defined(self, conn: Connection, event: Any, position: int) -> None:
        at = event.timestamp
        conn.execute(insert(segments).values(
            segment_id=str(event.originator_id), name=event.name,
            description=event.description, rule=event.rule,
            state=SegmentState.ACTIVE.value, defined_at=utc(at), updated_at=utc(at),
            archived_at=None, size=0, evaluated_at=None, position=position))
        self.evaluate_everyone(
            conn, [ActiveSegment(str(event.originator_id), self._rule(event.rule))], at,
            position)

    def on_updated(self, conn: Connection, event: Any, position: int) -> None:
        segment_id = str(event.originator_id)
        conn.execute(update(segments).where(segments.c.segment_id == segment_id).values(
            name=event.name, description=event.description, rule=event.rule,
            updated_at=utc(event.timestamp), position=position))
        if "rule" in event.changed:
            self.evaluate_everyone(
                conn, [ActiveSegment(segment_id, self._rule(event.rule))], event.timestamp,
                position)

    def on_archived(self, conn: Connection, event: Any, position: int) -> None:
        segment_id = str(event.originator_id)
        members = list(conn.scalars(select(segment_members.c.member_id).where(
            segment_members.c.segment_id == segment_id)))
        self._leave(conn, segment_id, members, event.timestamp, position)
        conn.execute(update(segments).where(segments.c.segment_id == segment_id).values(
            state=SegmentState.ARCHIVED.value, archived_at=utc(event.timestamp),
            updated_at=utc(event.timestamp), position=position))

    def on_review(self, conn: Connection, event: Any, position: int) -> None:
        self.evaluate_everyone(conn, self.active(conn), event.timestamp, position)

    # -- members ----------------------------------------------------------------------------

    def member_changed(self, conn: Connection, member_id: str, at: datetime,
                       position: int) -> None:
        """The member's facts changed at `at`: decide their place in every active segment."""
        active = self.active(conn)
        if not active:
            return
        facts = self._member_facts(conn, member_id)
        current = {row.segment_id: row.why for row in conn.execute(
            select(segment_members.c.segment_id, segment_members.c.why).where(
                segment_members.c.member_id == member_id))}
        if facts is None:  # not (or no longer) a member the projection knows
            for segment_id in sorted(current):
                self._leave(conn, segment_id, [member_id], at, position)
            return
        rfm = None
        if any(s.needs_rfm for s in active) and facts.activity["purchases"]:
            counts = conn.execute(rfm_counts_query(facts.activity)).one()
            rfm = rfm_from_counts(*counts)
        verdicts = self._verdicts(member_id, facts, rfm, active, at)
        for segment in active:
            verdict = verdicts[segment.segment_id]
            member = segment.segment_id in current
            if verdict.matched and not member:
                self._join(conn, segment.segment_id, {member_id: verdict}, at, position)
            elif verdict.matched:
                self._refresh(conn, segment.segment_id, {member_id: verdict},
                              {member_id: current[segment.segment_id]}, at)
            elif member:
                self._leave(conn, segment.segment_id, [member_id], at, position)

    def member_erased(self, conn: Connection, member_id: str, at: datetime,
                      position: int) -> None:
        """Out of every segment, and no history of their joins and leaves is kept."""
        current = sorted(conn.scalars(select(segment_members.c.segment_id).where(
            segment_members.c.member_id == member_id)))
        for segment_id in current:
            self._leave(conn, segment_id, [member_id], at, position)
        conn.execute(delete(segment_membership_changes).where(
            segment_membership_changes.c.member_id == member_id))

    def evaluate_everyone(self, conn: Connection, active: list[ActiveSegment], at: datetime,
                          position: int) -> None:
        """Every known member against `active`, with the rows loaded once for all."""
        if not active:
            return
        activities = [self._aware(row) for row in conn.execute(
            select(member_activity).order_by(member_activity.c.member_id))]
        consents = {row.member_id: bool(row.personalisation and not row.erased)
                    for row in conn.execute(select(behaviour_consents))}
        interests: dict[str, list[Row]] = defaultdict(list)
        for row in conn.execute(select(member_interests)):
            interests[row.member_id].append(dict(row._mapping))
        base = RfmBase.of(activities) if any(s.needs_rfm for s in active) else None
        verdicts: dict[str, dict[str, Verdict]] = defaultdict(dict)
        for activity in activities:
            member_id = activity["member_id"]
            facts = MemberFacts(activity, consents.get(member_id, False),
                                interests.get(member_id, []))
            rfm = base.scores(activity) if base is not None else None
            for segment_id, verdict in self._verdicts(member_id, facts, rfm, active,
                                                      at).items():
                verdicts[segment_id][member_id] = verdict
        for segment in active:
            decided = verdicts[segment.segment_id]
            current = {row.member_id: row.why for row in conn.execute(
                select(segment_members.c.member_id, segment_members.c.why).where(
                    segment_members.c.segment_id == segment.segment_id))}
            matched = {m: v for m, v in decided.items() if v.matched}
            self._join(conn, segment.segment_id,
                       {m: v for m, v in matched.items() if m not in current}, at, position)
            self._refresh(conn, segment.segment_id,
                          {m: v for m, v in matched.items() if m in current}, current, at)
            self._leave(conn, segment.segment_id, sorted(set(current) - set(matched)), at,
                        position)
            conn.execute(update(segments)
                         .where(segments.c.segment_id == segment.segment_id)
                         .values(evaluated_at=utc(at)))

    # -- deciding ---------------------------------------------------------------------------

    @staticmethod
    def _aware(row: Any) -> Row:
        return {key: aware(value) if isinstance(value, datetime) else value
                for key, value in row._mapping.items()}

    def _member_facts(self, conn: Connection, member_id: str) -> MemberFacts | None:
        row = conn.execute(select(member_activity).where(
            member_activity.c.member_id == member_id)).one_or_none()
        if row is None:
            return None
        consent = conn.execute(select(behaviour_consents).where(
            behaviour_consents.c.member_id == member_id)).one_or_none()
        interests = [dict(r._mapping) for r in conn.execute(
            select(member_interests).where(member_interests.c.member_id == member_id))]
        return MemberFacts(self._aware(row),
                           bool(consent and consent.personalisation and not consent.erased),
                           interests)

    def _verdicts(self, member_id: str, facts: MemberFacts, rfm: RfmScores | None,
                  active: Iterable[ActiveSegment], at: datetime) -> dict[str, Verdict]:
        at = at.astimezone(UTC)
        profile = build_profile(member_id, facts.activity, facts.personalised,
                                facts.interests if facts.personalised else [], rfm, at,
                                self.rules)
        seen = facts_from_profile(profile, facts.activity["tier"] or Tier.REGULAR.value)
        return {s.segment_id: evaluate(s.rule, seen, at) for s in active}

    # -- recording --------------------------------------------------------------------------

    def _join(self, conn: Connection, segment_id: str, joining: Mapping[str, Verdict],
              at: datetime, position: int) -> None:
        if not joining:
            return
        ordered = sorted(joining)
        conn.execute(insert(segment_members), [
            {"segment_id": segment_id, "member_id": m, "joined_at": utc(at),
             "why": _why(joining[m]), "evaluated_at": utc(at)} for m in ordered])
        self._record_changes(conn, segment_id, ordered, JOINED, at, position)

    @staticmethod
    def _refresh(conn: Connection, segment_id: str, staying: Mapping[str, Verdict],
                 recorded: Mapping[str, Any], at: datetime) -> None:
        """Still members: record `why` again where its facts moved (and only there, so a
        review of a large, quiet base writes little)."""
        changed = [(m, _why(staying[m])) for m in sorted(staying)]
        changed = [(m, why) for m, why in changed if why != recorded.get(m)]
        if not changed:
            return
        t = segment_members.c
        conn.execute(
            update(segment_members)
            .where(t.segment_id == segment_id, t.member_id == bindparam("m"))
            .values(why=bindparam("w"), evaluated_at=bindparam("e")),
            [{"m": m, "w": why, "e": utc(at)} for m, why in changed])

    def _leave(self, conn: Connection, segment_id: str, leaving: list[str], at: datetime,
               position: int) -> None:
        if not leaving:
            return
        conn.execute(delete(segment_members).where(
            segment_members.c.segment_id == segment_id,
            segment_members.c.member_id.in_(leaving)))
        self._record_changes(conn, segment_id, leaving, LEFT, at, position)

    @staticmethod
    def _record_changes(conn: Connection, segment_id: str, member_ids: list[str],
                        change: str, at: datetime, position: int) -> None:
        conn.execute(insert(segment_membership_changes), [
            {"segment_id": segment_id, "member_id": m, "position": position,
             "change": change, "at": utc(at)} for m in member_ids])
        delta = len(member_ids) if change == JOINED else -len(member_ids)
        size = int(conn.scalar(select(segments.c.size).where(
            segments.c.segment_id == segment_id)) or 0) + delta
        conn.execute(update(segments).where(segments.c.segment_id == segment_id)
                     .values(size=size))
        day: date = at.astimezone(UTC).date()
        key = (segment_daily.c.segment_id == segment_id) & (segment_daily.c.day == day)
        row = conn.execute(select(segment_daily).where(key)).one_or_none()
        joined, left = (len(member_ids), 0) if change == JOINED else (0, len(member_ids))
        if row is None:
            conn.execute(insert(segment_daily).values(
                segment_id=segment_id, day=day, joins=joined, leaves=left, size=size))
        else:
            conn.execute(update(segment_daily).where(key).values(
                joins=row.joins + joined, leaves=row.leaves + left, size=size))
