"""`member_profiles`: one row per member, the profile every frontend and agent reads.

Every value is derived from the event alone (its timestamp, not the wall clock), so a
rebuild from position zero reproduces the live table exactly.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from domain.loyalty import LoyaltyAccount
from domain.member import Member, is_profile_complete
from projections.engine import Handler, Projection
from projections.tables import member_profiles, member_tags

DEFAULT_TIER = "regular"


def _birthday(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


class MemberProfilesProjection(Projection):
    name = "member_profiles"
    tables = (member_profiles, member_tags)

    def handlers(self) -> dict[type, Handler]:
        return {
            Member.Registered: self.on_registered,
            Member.ProfileUpdated: self.on_profile_updated,
            Member.PreferencesSet: self.on_preferences_set,
            Member.ConsentChanged: self.on_consent_changed,
            Member.Tagged: self.on_tagged,
            Member.Untagged: self.on_untagged,
            Member.StatusChanged: self.on_status_changed,
            Member.Erased: self.on_erased,
            LoyaltyAccount.TierChanged: self.on_tier_changed,
        }

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _load(conn: Connection, member_id: str) -> dict[str, Any]:
        row = conn.execute(
            select(member_profiles).where(member_profiles.c.member_id == member_id)
        ).one()
        return dict(row._mapping)

    @staticmethod
    def _touch(row: dict[str, Any], event: Any, position: int) -> dict[str, Any]:
        activity = dict(row["channel_activity"])
        channel = event.meta["channel"]
        activity[channel] = activity.get(channel, 0) + 1
        return {
            "version": event.originator_version,
            "updated_at": event.timestamp,
            "position": position,
            "channel_activity": activity,
        }

    def _save(self, conn: Connection, event: Any, position: int, **values: Any) -> None:
        member_id = str(event.originator_id)
        row = self._load(conn, member_id)
        changes = {**self._touch(row, event, position), **values}
        merged = {**row, **changes}
        changes["profile_complete"] = is_profile_complete(merged)
        conn.execute(
            update(member_profiles)
            .where(member_profiles.c.member_id == member_id)
            .values(**changes)
        )

    @staticmethod
    def _personal_values(personal: dict[str, Any] | None) -> dict[str, Any]:
        if not personal:
            return {}
        values: dict[str, Any] = {}
        for field in ("name", "email", "phone"):
            if field in personal:
                values[field] = personal[field]
        if "birthday" in personal:
            values["birthday"] = _birthday(personal["birthday"])
        if "default_address" in personal:
            values["default_address"] = personal["default_address"]
        return values

    # -- handlers ---------------------------------------------------------------------------

    def on_registered(self, conn: Connection, event: Any, position: int) -> None:
        personal = event.personal or {}
        profile = event.profile
        values = {
            "member_id": str(event.originator_id),
            "version": event.originator_version,
            "name": personal.get("name"),
            "email": personal.get("email"),
            "phone": personal.get("phone"),
            "birthday": _birthday(personal.get("birthday")),
            "default_address": None,
            **{field: profile.get(field) for field in (
                "gender", "occupation", "education", "income_band", "city", "region",
                "preferred_channel", "language",
            )},
            "preferences": {},
            "consents": {},
            "status": "active",
            "status_reason": None,
            "tier": DEFAULT_TIER,
            # Registered with personal=None means the key was destroyed: erased member.
            "erased": event.personal is None,
            "erased_at": None,
            "registration_channel": event.meta["channel"],
            "channel_activity": {event.meta["channel"]: 1},
            "registered_at": event.timestamp,
            "updated_at": event.timestamp,
            "position": position,
        }
        values["profile_complete"] = is_profile_complete(values)
        conn.execute(insert(member_profiles).values(**values))

    def on_profile_updated(self, conn: Connection, event: Any, position: int) -> None:
        self._save(conn, event, position, **event.profile, **self._personal_values(event.personal))

    def on_preferences_set(self, conn: Connection, event: Any, position: int) -> None:
        row = self._load(conn, str(event.originator_id))
        preferences = {**row["preferences"], **event.preferences}
        self._save(
            conn, event, position, preferences=preferences,
            **self._personal_values(event.personal),
        )

    def on_consent_changed(self, conn: Connection, event: Any, position: int) -> None:
        row = self._load(conn, str(event.originator_id))
        consents = {**row["consents"], event.key: event.record()}
        self._save(conn, event, position, consents=consents)

    def on_tagged(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(
            insert(member_tags).values(
                member_id=str(event.originator_id),
                tag=event.tag,
                reason=event.meta.get("reason"),
                tagged_by=event.meta["actor_id"],
                tagged_at=event.timestamp,
            )
        )
        self._save(conn, event, position)

    def on_untagged(self, conn: Connection, event: Any, position: int) -> None:
        conn.execute(
            delete(member_tags).where(
                (member_tags.c.member_id == str(event.originator_id))
                & (member_tags.c.tag == event.tag)
            )
        )
        self._save(conn, event, position)

    def on_status_changed(self, conn: Connection, event: Any, position: int) -> None:
        self._save(
            conn, event, position, status=event.status, status_reason=event.meta.get("reason")
        )

    def on_tier_changed(self, conn: Connection, event: Any, position: int) -> None:
        """The profile shows the member's tier; the loyalty account decides it."""
        conn.execute(
            update(member_profiles)
            .where(member_profiles.c.member_id == event.member_id)
            .values(tier=event.tier)
        )

    def on_erased(self, conn: Connection, event: Any, position: int) -> None:
        self._save(
            conn,
            event,
            position,
            name=None,
            email=None,
            phone=None,
            birthday=None,
            default_address=None,
            erased=True,
            erased_at=event.timestamp,
        )
