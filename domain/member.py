"""The Member aggregate: one unified profile per shopper, whatever channel they come from.

Personal data (name, email, phone, birthday, addresses) lives only in the `personal`
attribute of events and of the aggregate. The persistence layer encrypts exactly that
attribute with the member's own data key, so erasing the member (destroying the key) makes
it unreadable everywhere while the rest of the history stays intact and verifiable.

Command methods validate first and only then trigger an event, so a rejected command
records nothing. The decorated `_private` methods are the events; their bodies are the
state changes replayed when the aggregate is reconstructed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import Enum, StrEnum
from typing import Any

from email_validator import EmailNotValidError, validate_email
from eventsourcing.domain import Aggregate, event

from domain.aggregate import RecordedAggregate
from domain.errors import (
    ErasedError,
    InvalidTransitionError,
    NotFoundError,
    ValidationError,
)
from domain.metadata import EventMetadata


class Gender(StrEnum):
    FEMALE = "female"
    MALE = "male"
    NON_BINARY = "non_binary"
    UNDISCLOSED = "undisclosed"


class Education(StrEnum):
    PRIMARY = "primary"
    SECONDARY = "secondary"
    VOCATIONAL = "vocational"
    BACHELOR = "bachelor"
    MASTER = "master"
    DOCTORATE = "doctorate"
    OTHER = "other"


class IncomeBand(StrEnum):
    LOW = "low"
    LOWER_MIDDLE = "lower_middle"
    MIDDLE = "middle"
    UPPER_MIDDLE = "upper_middle"
    HIGH = "high"


class ShoppingChannel(StrEnum):
    WEB = "web"
    APP = "app"
    MINI_PROGRAM = "mini_program"
    STORE = "store"


class PriceSensitivity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class LayoutDensity(StrEnum):
    COMPACT = "compact"
    COMFORTABLE = "comfortable"
    SPACIOUS = "spacious"


class Theme(StrEnum):
    LIGHT = "light"
    DARK = "dark"
    SYSTEM = "system"
    HIGH_CONTRAST = "high_contrast"


class FontSize(StrEnum):
    SMALL = "small"
    MEDIUM = "medium"
    LARGE = "large"
    EXTRA_LARGE = "extra_large"


class DeliveryTimeWindow(StrEnum):
    ANY = "any"
    MORNING = "morning"
    AFTERNOON = "afternoon"
    EVENING = "evening"
    WEEKEND = "weekend"


class Packaging(StrEnum):
    STANDARD = "standard"
    ECO = "eco"
    GIFT_WRAP = "gift_wrap"
    MINIMAL = "minimal"


class ConsentPurpose(StrEnum):
    MARKETING = "marketing"
    PERSONALISATION = "personalisation"
    DATA_SHARING = "data_sharing"


class ConsentChannel(StrEnum):
    SMS = "sms"
    EMAIL = "email"
    APP_PUSH = "app_push"
    ALL = "all"


MARKETING_CHANNELS = (ConsentChannel.SMS, ConsentChannel.EMAIL, ConsentChannel.APP_PUSH)


class MemberStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    CLOSED = "closed"


# Personal data: encrypted under the member's key and gone when they are erased. Occupation
# and city identify a person together with the rest; gender, education, income band and
# region are coarse enough to stay for segment figures after erasure. (Events recorded
# before occupation and city moved here hold them in `profile`; read models blank them on
# erasure.)
PERSONAL_FIELDS = ("name", "email", "phone", "birthday", "occupation", "city")
PROFILE_FIELDS = (
    "gender",
    "education",
    "income_band",
    "region",
    "preferred_channel",
    "language",
)
REQUIRED_FIELDS = ("name", "email")
# Fields a member must fill for their profile to count as complete (loyalty rewards it).
COMPLETION_FIELDS = (
    "name",
    "email",
    "phone",
    "birthday",
    "gender",
    "occupation",
    "education",
    "income_band",
    "city",
    "region",
)

_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,19}$")
_LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_MAX_TEXT = 200
_MAX_INTERESTS = 50


def _enum_value(enum: type[Enum], value: Any, field: str) -> str:
    try:
        return str(enum(value).value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum)
        raise ValidationError(
            f"unknown {field} {value!r}; expected one of: {allowed}", field
        ) from None


def _text(value: Any, field: str, *, max_length: int = _MAX_TEXT) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must not be blank", field)
    text = " ".join(value.split())
    if len(text) > max_length:
        raise ValidationError(f"{field} must be at most {max_length} characters", field)
    return text


def _email(value: Any) -> str:
    if not isinstance(value, str):
        raise ValidationError("email must be a string", "email")
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValidationError(f"invalid email: {error}", "email") from None


def _phone(value: Any) -> str:
    digits = sum(ch.isdigit() for ch in value) if isinstance(value, str) else 0
    if not isinstance(value, str) or not _PHONE.match(value.strip()) or not 6 <= digits <= 20:
        raise ValidationError("phone must be 6-20 digits, optionally with a leading +", "phone")
    return value.strip()


def _birthday(value: Any, today: date) -> str:
    if isinstance(value, datetime):
        value = value.date()
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise ValidationError(
                "birthday must be an ISO date (YYYY-MM-DD)", "birthday"
            ) from None
    if not isinstance(value, date):
        raise ValidationError("birthday must be a date", "birthday")
    if value > today:
        raise ValidationError("birthday cannot be in the future", "birthday")
    if value.year < today.year - 130:
        raise ValidationError("birthday is implausibly far in the past", "birthday")
    return value.isoformat()


def _language(value: Any) -> str:
    if not isinstance(value, str) or not _LANGUAGE.match(value.strip()):
        raise ValidationError("language must be a BCP-47 tag such as 'en' or 'zh-CN'", "language")
    return value.strip()


def validate_profile_fields(
    fields: Mapping[str, Any], today: date, *, registering: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Normalise profile fields and split them into personal and non-personal parts.

    A value of None clears an optional field; required fields cannot be cleared.
    """
    unknown = set(fields) - set(PERSONAL_FIELDS) - set(PROFILE_FIELDS)
    if unknown:
        raise ValidationError(f"unknown profile field(s): {', '.join(sorted(unknown))}")
    if registering:
        for field in REQUIRED_FIELDS:
            if fields.get(field) is None:
                raise ValidationError(f"{field} is required", field)
    personal: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    for field, value in fields.items():
        target = personal if field in PERSONAL_FIELDS else profile
        if value is None:
            if field in REQUIRED_FIELDS:
                raise ValidationError(f"{field} cannot be removed", field)
            target[field] = None
            continue
        validators = {
            "name": lambda v: _text(v, "name", max_length=100),
            "email": _email,
            "phone": _phone,
            "birthday": lambda v: _birthday(v, today),
            "gender": lambda v: _enum_value(Gender, v, "gender"),
            "occupation": lambda v: _text(v, "occupation", max_length=100),
            "education": lambda v: _enum_value(Education, v, "education"),
            "income_band": lambda v: _enum_value(IncomeBand, v, "income_band"),
            "city": lambda v: _text(v, "city", max_length=100),
            "region": lambda v: _text(v, "region", max_length=100),
            "preferred_channel": lambda v: _enum_value(ShoppingChannel, v, "preferred_channel"),
            "language": _language,
        }
        target[field] = validators[field](value)
    return personal, profile


def _interests(values: Iterable[Any], field: str) -> list[str]:
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValidationError(f"{field} must be a list of names", field)
    cleaned: list[str] = []
    for value in values:
        item = _text(value, field, max_length=64).lower()
        if item not in cleaned:
            cleaned.append(item)
    if len(cleaned) > _MAX_INTERESTS:
        raise ValidationError(f"at most {_MAX_INTERESTS} {field} may be listed", field)
    return cleaned


def validate_address(value: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {"recipient", "line1", "line2", "city", "region", "postal_code", "country", "phone"}
    unknown = set(value) - allowed
    if unknown:
        raise ValidationError(
            f"unknown address field(s): {', '.join(sorted(unknown))}", "delivery.default_address"
        )
    address: dict[str, Any] = {}
    for part in ("recipient", "line1", "city", "country"):
        address[part] = _text(value.get(part), f"delivery.default_address.{part}")
    for part in ("line2", "region", "postal_code"):
        if value.get(part) is not None:
            address[part] = _text(value[part], f"delivery.default_address.{part}")
    if value.get("phone") is not None:
        address["phone"] = _phone(value["phone"])
    return address


def validate_preferences(
    preferences: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Normalise preference sections; the default address is personal data and split off."""
    sections = {"categories", "brands", "price_sensitivity", "ui", "delivery"}
    unknown = set(preferences) - sections
    if unknown:
        raise ValidationError(f"unknown preference section(s): {', '.join(sorted(unknown))}")
    public: dict[str, Any] = {}
    personal: dict[str, Any] = {}
    if "categories" in preferences:
        public["categories"] = _interests(preferences["categories"] or [], "categories")
    if "brands" in preferences:
        public["brands"] = _interests(preferences["brands"] or [], "brands")
    if "price_sensitivity" in preferences:
        value = preferences["price_sensitivity"]
        public["price_sensitivity"] = (
            None if value is None else _enum_value(PriceSensitivity, value, "price_sensitivity")
        )
    if "ui" in preferences:
        ui = preferences["ui"] or {}
        unknown_ui = set(ui) - {"layout_density", "theme", "font_size"}
        if unknown_ui:
            raise ValidationError(f"unknown ui preference(s): {', '.join(sorted(unknown_ui))}")
        enums = {"layout_density": LayoutDensity, "theme": Theme, "font_size": FontSize}
        public["ui"] = {
            key: _enum_value(enums[key], value, f"ui.{key}")
            for key, value in ui.items()
            if value is not None
        }
    if "delivery" in preferences:
        delivery = preferences["delivery"] or {}
        unknown_delivery = set(delivery) - {
            "default_address",
            "pickup_point",
            "time_window",
            "packaging",
        }
        if unknown_delivery:
            raise ValidationError(
                f"unknown delivery preference(s): {', '.join(sorted(unknown_delivery))}"
            )
        section: dict[str, Any] = {}
        if delivery.get("pickup_point") is not None:
            section["pickup_point"] = _text(delivery["pickup_point"], "delivery.pickup_point")
        if delivery.get("time_window") is not None:
            section["time_window"] = _enum_value(
                DeliveryTimeWindow, delivery["time_window"], "delivery.time_window"
            )
        if delivery.get("packaging") is not None:
            section["packaging"] = sorted(
                {_enum_value(Packaging, p, "delivery.packaging") for p in delivery["packaging"]}
            )
        public["delivery"] = section
        address = delivery.get("default_address")
        personal["default_address"] = None if address is None else validate_address(address)
    return public, personal


def is_profile_complete(values: Mapping[str, Any]) -> bool:
    return all(values.get(field) not in (None, "") for field in COMPLETION_FIELDS)


def normalise_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not _TAG.match(tag.strip().lower()):
        raise ValidationError(
            "tag must be 1-40 characters of lowercase letters, digits, '-' or '_'", "tag"
        )
    return tag.strip().lower()


class Member(RecordedAggregate):
    """A shop member. Every change is an event that carries who made it and why."""

    @classmethod
    def register(
        cls, details: Mapping[str, Any], today: date, meta: EventMetadata,
        now: datetime | None = None,
    ) -> Member:
        """A new member. `now` is the business clock's time: the member joined then (a
        demo year or an import registers members in the past), not when the event was
        written."""
        personal, profile = validate_profile_fields(details, today, registering=True)
        if meta.actor_role.is_staff:
            meta.require_reason()
        return cls._create(cls.Registered, personal=personal, profile=profile,
                           meta=meta.as_dict(), timestamp=now)

    class Registered(Aggregate.Created):
        personal: dict[str, Any] | None
        profile: dict[str, Any]

    @event(Registered)
    def __init__(
        self, personal: dict[str, Any] | None, profile: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        self.personal: dict[str, Any] | None = dict(personal) if personal is not None else None
        self.profile: dict[str, Any] = dict(profile)
        self.preferences: dict[str, Any] = {}
        self.consents: dict[str, dict[str, Any]] = {}
        self.tags: dict[str, dict[str, Any]] = {}
        self.status: str = MemberStatus.ACTIVE.value
        self.status_reason: str | None = None
        self.erased: bool = False
        self.registration_channel: str = meta["channel"]

    # -- commands -------------------------------------------------------------------------

    def update_profile(
        self, changes: Mapping[str, Any], today: date, meta: EventMetadata
    ) -> None:
        self._require_changeable(meta)
        if not changes:
            raise ValidationError("no profile fields to change")
        personal, profile = validate_profile_fields(changes, today, registering=False)
        self._profile_updated(personal=personal or None, profile=profile, meta=meta.as_dict())

    def set_preferences(self, preferences: Mapping[str, Any], meta: EventMetadata) -> None:
        self._require_changeable(meta)
        if not preferences:
            raise ValidationError("no preferences to set")
        public, personal = validate_preferences(preferences)
        self._preferences_set(
            preferences=public, personal=personal or None, meta=meta.as_dict()
        )

    def set_consent(
        self, purpose: Any, channel: Any, granted: bool, meta: EventMetadata
    ) -> None:
        self._require_changeable(meta, allow_blocked=True)
        purpose_value = _enum_value(ConsentPurpose, purpose, "purpose")
        channel_value = _enum_value(ConsentChannel, channel, "channel")
        if purpose_value == ConsentPurpose.MARKETING.value:
            if ConsentChannel(channel_value) not in MARKETING_CHANNELS:
                raise ValidationError(
                    "marketing consent is given per channel: sms, email or app_push", "channel"
                )
        elif channel_value != ConsentChannel.ALL.value:
            raise ValidationError(f"{purpose_value} consent applies to channel 'all'", "channel")
        if not isinstance(granted, bool):
            raise ValidationError("granted must be true or false", "granted")
        self._trigger(
            self.ConsentChanged, None, meta, purpose=purpose_value, channel=channel_value,
            granted=granted,
        )

    def tag(self, tag: Any, meta: EventMetadata) -> None:
        self._require_not_erased()
        meta.require_reason()
        name = normalise_tag(tag)
        if name in self.tags:
            raise InvalidTransitionError(
                f"member is already tagged {name!r}", current_state="tagged", field="tag"
            )
        self._trigger(self.Tagged, None, meta, tag=name)

    def untag(self, tag: Any, meta: EventMetadata) -> None:
        self._require_not_erased()
        meta.require_reason()
        name = normalise_tag(tag)
        if name not in self.tags:
            raise NotFoundError(f"member is not tagged {name!r}", "tag")
        self._untagged(tag=name, meta=meta.as_dict())

    def set_status(self, status: Any, meta: EventMetadata) -> None:
        self._require_not_erased()
        meta.require_reason()
        new_status = _enum_value(MemberStatus, status, "status")
        if new_status == self.status:
            raise InvalidTransitionError(
                f"member is already {self.status}", current_state=self.status, field="status"
            )
        if self.status == MemberStatus.CLOSED.value:
            raise InvalidTransitionError(
                f"cannot change status from {self.status} to {new_status}: closed is final",
                current_state=self.status,
                field="status",
            )
        self._status_changed(status=new_status, meta=meta.as_dict())

    def erase(self, meta: EventMetadata) -> None:
        """Crypto-shredding: the event only marks the erasure; destroying the key does the rest."""
        self._require_not_erased()
        meta.require_reason()
        self._erased(meta=meta.as_dict())

    # -- queries on state ------------------------------------------------------------------

    @property
    def is_profile_complete(self) -> bool:
        return is_profile_complete({**(self.personal or {}), **self.profile})

    def consent_granted(self, purpose: ConsentPurpose, channel: ConsentChannel) -> bool:
        entry = self.consents.get(f"{purpose.value}:{channel.value}")
        return bool(entry and entry["granted"])

    def _require_not_erased(self) -> None:
        if self.erased:
            raise ErasedError("member has been erased")

    def _require_changeable(self, meta: EventMetadata, *, allow_blocked: bool = False) -> None:
        self._require_not_erased()
        if self.status == MemberStatus.CLOSED.value or (
            self.status == MemberStatus.BLOCKED.value and not allow_blocked
        ):
            raise InvalidTransitionError(
                f"member is {self.status}", current_state=self.status
            )
        if meta.actor_role.is_staff:
            meta.require_reason()

    # -- events ----------------------------------------------------------------------------

    @event("ProfileUpdated")
    def _profile_updated(
        self, personal: dict[str, Any] | None, profile: dict[str, Any], meta: dict[str, Any]
    ) -> None:
        if personal is not None and self.personal is not None:
            self.personal.update(personal)
        self.profile.update(profile)

    @event("PreferencesSet")
    def _preferences_set(
        self,
        preferences: dict[str, Any],
        personal: dict[str, Any] | None,
        meta: dict[str, Any],
    ) -> None:
        self.preferences.update(preferences)
        if personal is not None and self.personal is not None:
            self.personal.update(personal)

    class ConsentChanged(RecordedAggregate.Event):
        """Explicit class because the consent record needs the event's own timestamp."""

        purpose: str
        channel: str
        granted: bool

        @property
        def key(self) -> str:
            return f"{self.purpose}:{self.channel}"

        def record(self) -> dict[str, Any]:
            """The consent as members and auditors see it: what, how, by whom and when."""
            return {
                "purpose": self.purpose,
                "channel": self.channel,
                "granted": self.granted,
                "source": self.meta["channel"],
                "actor_id": self.meta["actor_id"],
                "at": self.timestamp.isoformat(),
            }

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Member)
            aggregate.consents[self.key] = self.record()

    class Tagged(RecordedAggregate.Event):
        tag: str

        def apply(self, aggregate: Aggregate) -> None:
            assert isinstance(aggregate, Member)
            aggregate.tags[self.tag] = {
                "reason": self.meta.get("reason"),
                "by": self.meta["actor_id"],
                "at": self.timestamp.isoformat(),
            }

    @event("Untagged")
    def _untagged(self, tag: str, meta: dict[str, Any]) -> None:
        self.tags.pop(tag, None)

    @event("StatusChanged")
    def _status_changed(self, status: str, meta: dict[str, Any]) -> None:
        self.status = status
        self.status_reason = meta.get("reason")

    @event("Erased")
    def _erased(self, meta: dict[str, Any]) -> None:
        self.erased = True
        self.personal = None
