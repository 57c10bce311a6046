"""`member_profiles`: one row per member, the profile every frontend and agent reads.

Every value is derived from the event alone (its timestamp, not the wall clock), so a
rebuild from position zero reproduces the live table exactly.

Batched: the profiles (and tags) a batch touches are read in one SELECT each, changed in
memory, and written back in one bulk upsert (see projections/batch_work.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from eventsourcing.persistence import Notification
from eventsourcing.utils import get_topic

from domain.loyalty import LoyaltyAccount
from domain.member import Member, is_profile_complete
from projections.batch_work import BatchWork
from projections.engine import Handler, ReadModel
from projections.tables import member_profiles, member_tags

DEFAULT_TIER = "regular"


def _birthday(value: str | None) -> date | None:
    return date.fromisoformat(value) if value else None


class MemberProfilesProjection(ReadModel):
    name = "member_profiles"
    tables = (member_profiles, member_tags)
    batched = True

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

    # -- the batch --------------------------------------------------------------------------

    def prepare(self, work: BatchWork, events: Sequence[tuple[Any, int]]) -> None:
        members = set()
        tags = set()
        for event, _position in events:
            if isinstance(event, LoyaltyAccount.TierChanged):
                members.add(event.member_id)
                continue
            member_id = str(event.originator_id)
            members.add(member_id)
            if isinstance(event, Member.Tagged | Member.Untagged):
                tags.add((member_id, event.tag))
        work.prefetch(member_profiles, members)
        if tags:
            work.prefetch(member_tags, tags)

    def data_key_owner(self, notification: Notification) -> str | None:
        """Member events may carry personal data, encrypted with the member's own key."""
        if notification.topic in _MEMBER_TOPICS:
            return str(notification.originator_id)
        return None

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _load(work: BatchWork, member_id: str) -> dict[str, Any]:
        row = work.get(member_profiles, member_id)
        if row is None:
            raise LookupError(f"member profile {member_id} is not projected")
        return row

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

    def _save(self, work: BatchWork, event: Any, position: int, **values: Any) -> None:
        member_id = str(event.originator_id)
        row = self._load(work, member_id)
        merged = {**row, **self._touch(row, event, position), **values}
        merged["profile_complete"] = is_profile_complete(merged)
        work.upsert(member_profiles, merged)

    @staticmethod
    def _personal_values(personal: dict[str, Any] | None) -> dict[str, Any]:
        if not personal:
            return {}
        values: dict[str, Any] = {}
        for field in ("name", "email", "phone", "occupation", "city"):
            if field in personal:
                values[field] = personal[field]
        if "birthday" in personal:
            values["birthday"] = _birthday(personal["birthday"])
        if "default_address" in personal:
            values["default_address"] = personal["default_address"]
        return values

    # -- handlers ---------------------------------------------------------------------------

    def on_registered(self, work: BatchWork, event: Any, position: int) -> None:
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
                "gender", "education", "income_band", "region", "preferred_channel", "language",
            )},
            # Personal since they moved out of `profile` (older events hold them there).
            "occupation": personal.get("occupation", profile.get("occupation")),
            "city": personal.get("city", profile.get("city")),
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
        work.insert(member_profiles, values)

    def on_profile_updated(self, work: BatchWork, event: Any, position: int) -> None:
        self._save(work, event, position, **event.profile, **self._personal_values(event.personal))

    def on_preferences_set(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, str(event.originator_id))
        preferences = {**row["preferences"], **event.preferences}
        self._save(
            work, event, position, preferences=preferences,
            **self._personal_values(event.personal),
        )

    def on_consent_changed(self, work: BatchWork, event: Any, position: int) -> None:
        row = self._load(work, str(event.originator_id))
        consents = {**row["consents"], event.key: event.record()}
        self._save(work, event, position, consents=consents)

    def on_tagged(self, work: BatchWork, event: Any, position: int) -> None:
        work.insert(
            member_tags,
            {
                "member_id": str(event.originator_id),
                "tag": event.tag,
                "reason": event.meta.get("reason"),
                "tagged_by": event.meta["actor_id"],
                "tagged_at": event.timestamp,
            },
        )
        self._save(work, event, position)

    def on_untagged(self, work: BatchWork, event: Any, position: int) -> None:
        work.delete(member_tags, (str(event.originator_id), event.tag))
        self._save(work, event, position)

    def on_status_changed(self, work: BatchWork, event: Any, position: int) -> None:
        self._save(
            work, event, position, status=event.status, status_reason=event.meta.get("reason")
        )

    def on_tier_changed(self, work: BatchWork, event: Any, position: int) -> None:
        """The profile shows the member's tier; the loyalty account decides it."""
        work.update(member_profiles, event.member_id, tier=event.tier)

    def on_erased(self, work: BatchWork, event: Any, position: int) -> None:
        self._save(
            work,
            event,
            position,
            name=None,
            email=None,
            phone=None,
            birthday=None,
            occupation=None,
            city=None,
            default_address=None,
            erased=True,
            erased_at=event.timestamp,
        )


_MEMBER_TOPICS = frozenset(
    get_topic(cls) for cls in (
        Member.Registered, Member.ProfileUpdated, Member.PreferencesSet,
        Member.ConsentChanged, Member.Tagged, Member.Untagged, Member.StatusChanged,
        Member.Erased,
    )
)
