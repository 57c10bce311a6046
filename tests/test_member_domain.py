"""The Member aggregate as a specification: pure domain, no storage.

Every rejected command must raise a typed error and record nothing; every accepted command
records exactly one event that carries who did it, through which channel and why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import pytest
from eventsourcing.application import Application

from domain.errors import (
    DomainError,
    ErasedError,
    ErrorCode,
    InvalidTransitionError,
    NotFoundError,
    ReasonRequiredError,
    ValidationError,
)
from domain.member import ConsentChannel, ConsentPurpose, Member, normalise_tag
from domain.metadata import Channel, EventMetadata, Role

TODAY = date(2024, 6, 15)
ADDRESS = {"recipient": "Ann Lee", "line1": "1 Lake Road", "city": "Hangzhou", "country": "CN"}
FULL_PROFILE = {
    "name": "Ann Lee",
    "email": "ann@example.com",
    "phone": "+86 13812345678",
    "birthday": "1990-04-01",
    "gender": "female",
    "occupation": "engineer",
    "education": "master",
    "income_band": "middle",
    "city": "Hangzhou",
    "region": "Zhejiang",
}


def meta(
    role: Role = Role.MEMBER,
    channel: Channel = Channel.WEB,
    reason: str | None = None,
    actor_id: str = "actor-1",
    request_id: str = "req-1",
) -> EventMetadata:
    return EventMetadata(
        actor_id=actor_id,
        actor_role=role,
        channel=channel,
        correlation_id="corr-1",
        causation_id="cause-1",
        request_id=request_id,
        reason=reason,
    )


def admin(reason: str | None = "verified by support ticket 42") -> EventMetadata:
    return meta(Role.ADMIN, Channel.ADMIN, reason=reason, actor_id="admin-1")


def agent(reason: str | None = "customer called the hotline") -> EventMetadata:
    return meta(Role.AGENT, Channel.ADMIN, reason=reason, actor_id="agent-1")


def register(**details: Any) -> Member:
    fields = {"name": "Ann Lee", "email": "ann@example.com", **details}
    return Member.register(fields, TODAY, meta(Role.ANONYMOUS))


def registered(**details: Any) -> Member:
    """A member whose registration events have already been collected."""
    member = register(**details)
    member.collect_events()
    return member


def assert_rejected_without_events(
    member: Member,
    command: Callable[[], Any],
    error: type[DomainError],
    field: str | None = None,
) -> DomainError:
    state_before = copy.deepcopy(vars(member))
    with pytest.raises(error) as caught:
        command()
    assert caught.value.field == field
    assert member.collect_events() == []
    assert vars(member) == state_before
    return caught.value


def only_event(member: Member) -> Any:
    events = member.collect_events()
    assert len(events) == 1, events
    return events[0]


# -- registration ---------------------------------------------------------------------------


def test_registration_records_one_event_with_personal_data_kept_apart_from_the_profile() -> None:
    member = register(region="Hangzhou", phone="+86 13812345678", language="zh-CN")

    event = only_event(member)

    assert type(event).__qualname__ == "Member.Registered"
    assert event.personal == {
        "name": "Ann Lee",
        "email": "ann@example.com",
        "phone": "+86 13812345678",
    }
    assert event.profile == {"region": "Hangzhou", "language": "zh-CN"}
    assert member.status == "active"
    assert member.erased is False
    assert member.registration_channel == "web"
    assert member.preferences == {}
    assert member.consents == {}
    assert member.tags == {}


def test_registration_normalises_whitespace_in_text_fields() -> None:
    member = register(name="  Ann    Lee ", region=" New   York ")
    assert member.personal is not None
    assert member.personal["name"] == "Ann Lee"
    assert member.profile["region"] == "New York"


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("  ann@example.com  ", "ann@example.com"),
        ("ann@EXAMPLE.Com", "ann@example.com"),
    ],
)
def test_email_is_trimmed_and_its_domain_lowercased(given: str, stored: str) -> None:
    member = register(email=given)
    assert member.personal is not None
    assert member.personal["email"] == stored


def test_a_birthday_given_as_a_date_is_stored_as_an_iso_string() -> None:
    member = register(birthday=date(1990, 4, 1))
    assert member.personal is not None
    assert member.personal["birthday"] == "1990-04-01"


def test_a_birthday_of_today_is_accepted() -> None:
    member = register(birthday=TODAY.isoformat())
    assert member.personal is not None
    assert member.personal["birthday"] == TODAY.isoformat()


@pytest.mark.parametrize(
    ("details", "field"),
    [
        ({"name": "   "}, "name"),
        ({"name": ""}, "name"),
        ({"name": None}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"email": None}, "email"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "ann@"}, "email"),
        ({"email": 42}, "email"),
        ({"birthday": (TODAY + timedelta(days=1)).isoformat()}, "birthday"),
        ({"birthday": "1850-01-01"}, "birthday"),
        ({"birthday": "01/04/1990"}, "birthday"),
        ({"birthday": 19900401}, "birthday"),
        ({"gender": "robot"}, "gender"),
        ({"education": "kindergarten"}, "education"),
        ({"income_band": "billionaire"}, "income_band"),
        ({"preferred_channel": "carrier_pigeon"}, "preferred_channel"),
        ({"language": "english"}, "language"),
        ({"language": "EN"}, "language"),
        ({"language": "e"}, "language"),
        ({"phone": "call me"}, "phone"),
        ({"phone": "123"}, "phone"),
        ({"phone": "+" + "1" * 25}, "phone"),
        ({"occupation": " "}, "occupation"),
        ({"region": "x" * 101}, "region"),
    ],
    ids=lambda value: str(value)[:40] if isinstance(value, dict) else str(value),
)
def test_invalid_registration_details_are_rejected_naming_the_field(
    details: dict[str, Any], field: str
) -> None:
    fields = {"name": "Ann Lee", "email": "ann@example.com", **details}
    with pytest.raises(ValidationError) as caught:
        Member.register(fields, TODAY, meta(Role.ANONYMOUS))
    assert caught.value.field == field
    assert caught.value.code is ErrorCode.VALIDATION


def test_a_birthday_in_the_future_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(ValidationError, match="future"):
        register(birthday=(TODAY + timedelta(days=1)).isoformat())


def test_a_birthday_more_than_130_years_ago_is_rejected_as_implausible() -> None:
    with pytest.raises(ValidationError, match="implausibl"):
        register(birthday=date(TODAY.year - 131, 1, 1))


def test_an_unknown_enum_value_lists_the_allowed_values() -> None:
    with pytest.raises(ValidationError) as caught:
        register(gender="robot")
    for allowed in ("female", "male", "non_binary", "undisclosed"):
        assert allowed in caught.value.message


def test_an_unknown_registration_field_is_rejected_naming_it() -> None:
    with pytest.raises(ValidationError, match="favourite_colour") as caught:
        register(favourite_colour="blue")
    assert caught.value.field is None


def test_staff_registering_a_member_must_give_a_reason() -> None:
    details = {"name": "Ann Lee", "email": "ann@example.com"}
    with pytest.raises(ReasonRequiredError) as caught:
        Member.register(details, TODAY, admin(reason=None))
    assert caught.value.code is ErrorCode.REASON_REQUIRED
    assert caught.value.field == "meta.reason"

    member = Member.register(details, TODAY, agent())
    assert only_event(member).meta["reason"] == "customer called the hotline"


# -- profile updates ------------------------------------------------------------------------


def test_a_profile_update_changes_only_the_fields_given() -> None:
    member = registered(region="Hangzhou", occupation="teacher", phone="+86 13812345678")

    member.update_profile({"region": "Shanghai", "phone": "+86 13900000000"}, TODAY, meta())

    event = only_event(member)
    assert type(event).__qualname__ == "Member.ProfileUpdated"
    assert event.personal == {"phone": "+86 13900000000"}
    assert event.profile == {"region": "Shanghai"}
    assert member.profile == {"region": "Shanghai"}
    assert member.personal == {
        "name": "Ann Lee",
        "email": "ann@example.com",
        "phone": "+86 13900000000",
        "occupation": "teacher",  # personal: erased with the member
    }


def test_a_profile_update_without_personal_fields_records_no_personal_part() -> None:
    member = registered()
    member.update_profile({"region": "Shanghai"}, TODAY, meta())
    assert only_event(member).personal is None


def test_optional_fields_are_cleared_with_none() -> None:
    member = registered(region="Hangzhou", phone="+86 13812345678")

    member.update_profile({"region": None, "phone": None}, TODAY, meta())

    assert member.profile["region"] is None
    assert member.personal is not None
    assert member.personal["phone"] is None


@pytest.mark.parametrize("field", ["name", "email"])
def test_name_and_email_cannot_be_cleared(field: str) -> None:
    member = registered()
    error = assert_rejected_without_events(
        member,
        lambda: member.update_profile({field: None}, TODAY, meta()),
        ValidationError,
        field,
    )
    assert "cannot be removed" in error.message


def test_an_empty_profile_update_is_rejected() -> None:
    member = registered()
    assert_rejected_without_events(
        member, lambda: member.update_profile({}, TODAY, meta()), ValidationError
    )


def test_a_birthday_in_the_future_is_rejected_and_nothing_is_recorded() -> None:
    member = registered(birthday="1990-04-01")
    tomorrow = (TODAY + timedelta(days=1)).isoformat()
    assert_rejected_without_events(
        member,
        lambda: member.update_profile({"birthday": tomorrow}, TODAY, meta()),
        ValidationError,
        "birthday",
    )
    assert member.personal is not None
    assert member.personal["birthday"] == "1990-04-01"


def test_one_invalid_field_rejects_the_whole_profile_update() -> None:
    member = registered(region="Hangzhou")
    assert_rejected_without_events(
        member,
        lambda: member.update_profile({"region": "Shanghai", "gender": "robot"}, TODAY, meta()),
        ValidationError,
        "gender",
    )
    assert member.profile["region"] == "Hangzhou"


def test_an_unknown_field_in_a_profile_update_is_rejected_and_nothing_is_recorded() -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.update_profile({"shoe_size": 42}, TODAY, meta()),
        ValidationError,
    )


@pytest.mark.parametrize("staff", [admin, agent], ids=["admin", "agent"])
def test_staff_changing_a_members_profile_must_give_a_reason(
    staff: Callable[..., EventMetadata],
) -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.update_profile({"region": "Shanghai"}, TODAY, staff(reason=None)),
        ReasonRequiredError,
        "meta.reason",
    )
    assert_rejected_without_events(
        member,
        lambda: member.update_profile({"region": "Shanghai"}, TODAY, staff(reason="   ")),
        ReasonRequiredError,
        "meta.reason",
    )

    member.update_profile({"region": "Shanghai"}, TODAY, staff())
    assert only_event(member).meta["reason"]


@pytest.mark.parametrize("staff", [admin, agent], ids=["admin", "agent"])
def test_staff_changing_preferences_or_consent_must_give_a_reason(
    staff: Callable[..., EventMetadata],
) -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.set_preferences({"categories": ["books"]}, staff(reason=None)),
        ReasonRequiredError,
        "meta.reason",
    )
    assert_rejected_without_events(
        member,
        lambda: member.set_consent("marketing", "sms", True, staff(reason=None)),
        ReasonRequiredError,
        "meta.reason",
    )


def test_a_member_changes_their_own_profile_without_giving_a_reason() -> None:
    member = registered()
    member.update_profile({"region": "Shanghai"}, TODAY, meta(Role.MEMBER))
    assert only_event(member).meta["reason"] is None


def test_a_reason_longer_than_500_characters_is_rejected() -> None:
    with pytest.raises(ValidationError) as caught:
        admin(reason="x" * 501)
    assert caught.value.field == "meta.reason"


def test_a_reason_is_trimmed_and_a_blank_reason_counts_as_none() -> None:
    assert admin(reason="  because  ").reason == "because"
    assert admin(reason="   ").reason is None


# -- preferences ----------------------------------------------------------------------------


def test_preference_sections_replace_earlier_values_of_the_same_section_only() -> None:
    member = registered()
    member.set_preferences(
        {"categories": ["Books", "outdoor"], "brands": ["lumen"], "ui": {"theme": "dark"}},
        meta(),
    )
    member.set_preferences({"categories": ["toys"], "ui": {"font_size": "large"}}, meta())

    assert member.preferences == {
        "categories": ["toys"],
        "brands": ["lumen"],
        "ui": {"font_size": "large"},
    }


def test_interests_are_lowercased_deduplicated_and_keep_their_order() -> None:
    member = registered()
    member.set_preferences({"categories": ["Outdoor", "books", "outdoor", " BOOKS "]}, meta())
    assert member.preferences["categories"] == ["outdoor", "books"]


def test_a_section_set_to_none_is_emptied() -> None:
    member = registered()
    member.set_preferences({"categories": ["books"], "price_sensitivity": "high"}, meta())
    member.set_preferences({"categories": None, "price_sensitivity": None}, meta())
    assert member.preferences == {"categories": [], "price_sensitivity": None}


def test_the_default_address_is_personal_data_and_kept_out_of_the_preferences() -> None:
    member = registered()

    member.set_preferences(
        {"delivery": {"default_address": ADDRESS, "time_window": "evening"}}, meta()
    )

    event = only_event(member)
    assert event.preferences == {"delivery": {"time_window": "evening"}}
    assert event.personal == {"default_address": ADDRESS}
    assert member.preferences == {"delivery": {"time_window": "evening"}}
    assert member.personal is not None
    assert member.personal["default_address"] == ADDRESS


def test_replacing_the_delivery_section_without_an_address_clears_the_address() -> None:
    member = registered()
    member.set_preferences({"delivery": {"default_address": ADDRESS}}, meta())
    member.set_preferences({"delivery": {"pickup_point": "Locker 7"}}, meta())
    assert member.personal is not None
    assert member.personal["default_address"] is None
    assert member.preferences["delivery"] == {"pickup_point": "Locker 7"}


def test_an_address_missing_a_required_part_is_rejected_naming_the_part() -> None:
    member = registered()
    incomplete = {key: value for key, value in ADDRESS.items() if key != "line1"}
    assert_rejected_without_events(
        member,
        lambda: member.set_preferences({"delivery": {"default_address": incomplete}}, meta()),
        ValidationError,
        "delivery.default_address.line1",
    )


def test_packaging_choices_are_validated_deduplicated_and_sorted() -> None:
    member = registered()
    member.set_preferences({"delivery": {"packaging": ["minimal", "eco", "eco"]}}, meta())
    assert member.preferences["delivery"]["packaging"] == ["eco", "minimal"]
    member.collect_events()

    assert_rejected_without_events(
        member,
        lambda: member.set_preferences({"delivery": {"packaging": ["bubble_wrap"]}}, meta()),
        ValidationError,
        "delivery.packaging",
    )


@pytest.mark.parametrize(
    ("preferences", "field"),
    [
        ({"wishlist": ["a"]}, None),
        ({"ui": {"wallpaper": "cats"}}, None),
        ({"ui": {"theme": "neon"}}, "ui.theme"),
        ({"delivery": {"drone": True}}, None),
        ({"delivery": {"time_window": "midnight"}}, "delivery.time_window"),
        ({"price_sensitivity": "extreme"}, "price_sensitivity"),
        ({"categories": ["   "]}, "categories"),
        ({"brands": [f"brand{i}" for i in range(51)]}, "brands"),
    ],
)
def test_invalid_preferences_are_rejected_and_nothing_is_recorded(
    preferences: dict[str, Any], field: str | None
) -> None:
    member = registered()
    assert_rejected_without_events(
        member, lambda: member.set_preferences(preferences, meta()), ValidationError, field
    )


def test_empty_preferences_are_rejected() -> None:
    member = registered()
    assert_rejected_without_events(
        member, lambda: member.set_preferences({}, meta()), ValidationError
    )


# -- consent --------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["sms", "email", "app_push"])
def test_marketing_consent_is_given_per_messaging_channel(channel: str) -> None:
    member = registered()
    member.set_consent("marketing", channel, True, meta())
    assert member.consents[f"marketing:{channel}"]["granted"] is True


def test_marketing_consent_for_all_channels_at_once_is_rejected() -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.set_consent("marketing", "all", True, meta()),
        ValidationError,
        "channel",
    )


@pytest.mark.parametrize("purpose", ["personalisation", "data_sharing"])
@pytest.mark.parametrize("channel", ["sms", "email", "app_push"])
def test_personalisation_and_data_sharing_consent_apply_to_channel_all_only(
    purpose: str, channel: str
) -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.set_consent(purpose, channel, True, meta()),
        ValidationError,
        "channel",
    )
    member.set_consent(purpose, "all", True, meta())
    assert member.consents[f"{purpose}:all"]["granted"] is True


@pytest.mark.parametrize(
    ("purpose", "channel", "granted", "field"),
    [
        ("spam", "sms", True, "purpose"),
        ("marketing", "fax", True, "channel"),
        ("marketing", "sms", "yes", "granted"),
        ("marketing", "sms", 1, "granted"),
    ],
)
def test_invalid_consent_is_rejected_and_nothing_is_recorded(
    purpose: Any, channel: Any, granted: Any, field: str
) -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.set_consent(purpose, channel, granted, meta()),
        ValidationError,
        field,
    )


def test_a_consent_record_names_the_source_channel_the_actor_and_the_event_time() -> None:
    member = registered()

    member.set_consent("marketing", "email", True, meta(channel=Channel.APP, actor_id="m-1"))

    event = only_event(member)
    assert type(event).__qualname__ == "Member.ConsentChanged"
    assert member.consents["marketing:email"] == {
        "purpose": "marketing",
        "channel": "email",
        "granted": True,
        "source": "app",
        "actor_id": "m-1",
        "at": event.timestamp.isoformat(),
    }


def test_withdrawing_consent_keeps_a_record_that_it_is_withdrawn() -> None:
    member = registered()
    member.set_consent("personalisation", "all", True, meta())
    member.set_consent("personalisation", "all", False, meta(channel=Channel.STORE))
    record = member.consents["personalisation:all"]
    assert record["granted"] is False
    assert record["source"] == "store"


def test_consent_is_absent_until_given_and_follows_the_latest_decision() -> None:
    member = registered()
    sms = (ConsentPurpose.MARKETING, ConsentChannel.SMS)
    assert member.consent_granted(*sms) is False
    member.set_consent("marketing", "sms", True, meta())
    assert member.consent_granted(*sms) is True
    assert member.consent_granted(ConsentPurpose.MARKETING, ConsentChannel.EMAIL) is False
    member.set_consent("marketing", "sms", False, meta())
    assert member.consent_granted(*sms) is False


# -- tags -----------------------------------------------------------------------------------


def test_tagging_requires_a_reason_whoever_tags() -> None:
    member = registered()
    for who in (admin(reason=None), meta(Role.MEMBER)):
        error = assert_rejected_without_events(
            member, lambda who=who: member.tag("vip", who), ReasonRequiredError, "meta.reason"
        )
        assert error.code is ErrorCode.REASON_REQUIRED


def test_tags_are_trimmed_and_lowercased_and_record_who_tagged_and_why() -> None:
    member = registered()

    member.tag("  VIP ", admin())

    event = only_event(member)
    assert type(event).__qualname__ == "Member.Tagged"
    assert event.tag == "vip"
    assert member.tags == {
        "vip": {
            "reason": "verified by support ticket 42",
            "by": "admin-1",
            "at": event.timestamp.isoformat(),
        }
    }


@pytest.mark.parametrize("tag", ["", "   ", "has space", "-leading", "emoji🙂", "x" * 41, 7])
def test_malformed_tags_are_rejected(tag: Any) -> None:
    member = registered()
    assert_rejected_without_events(member, lambda: member.tag(tag, admin()), ValidationError, "tag")


@pytest.mark.parametrize("tag", ["vip", "at-risk", "wholesale_2024", "a", "x" * 40])
def test_well_formed_tags_are_accepted(tag: str) -> None:
    assert normalise_tag(tag) == tag


def test_tagging_twice_with_the_same_tag_is_an_invalid_transition() -> None:
    member = registered()
    member.tag("vip", admin())
    member.collect_events()
    error = assert_rejected_without_events(
        member, lambda: member.tag("VIP", admin()), InvalidTransitionError, "tag"
    )
    assert isinstance(error, InvalidTransitionError)
    assert error.current_state == "tagged"
    assert error.code is ErrorCode.INVALID_TRANSITION


def test_untagging_removes_the_tag() -> None:
    member = registered()
    member.tag("vip", admin())
    member.collect_events()
    member.untag("VIP", admin())
    assert type(only_event(member)).__qualname__ == "Member.Untagged"
    assert member.tags == {}


def test_untagging_a_tag_the_member_does_not_have_is_not_found() -> None:
    member = registered()
    error = assert_rejected_without_events(
        member, lambda: member.untag("vip", admin()), NotFoundError, "tag"
    )
    assert error.code is ErrorCode.NOT_FOUND


def test_untagging_requires_a_reason() -> None:
    member = registered()
    member.tag("vip", admin())
    member.collect_events()
    assert_rejected_without_events(
        member, lambda: member.untag("vip", admin(reason=None)), ReasonRequiredError, "meta.reason"
    )
    assert "vip" in member.tags


# -- status ---------------------------------------------------------------------------------


def test_changing_status_requires_a_reason_which_is_kept_as_the_status_reason() -> None:
    member = registered()
    assert_rejected_without_events(
        member,
        lambda: member.set_status("blocked", admin(reason=None)),
        ReasonRequiredError,
        "meta.reason",
    )
    member.set_status("blocked", admin(reason="chargeback fraud"))
    assert type(only_event(member)).__qualname__ == "Member.StatusChanged"
    assert member.status == "blocked"
    assert member.status_reason == "chargeback fraud"


def test_setting_the_current_status_again_is_rejected_naming_the_current_state() -> None:
    member = registered()
    error = assert_rejected_without_events(
        member, lambda: member.set_status("active", admin()), InvalidTransitionError, "status"
    )
    assert isinstance(error, InvalidTransitionError)
    assert error.current_state == "active"
    assert "active" in error.message


def test_an_unknown_status_is_rejected() -> None:
    member = registered()
    assert_rejected_without_events(
        member, lambda: member.set_status("suspended", admin()), ValidationError, "status"
    )


def test_a_blocked_member_can_be_reactivated() -> None:
    member = registered()
    member.set_status("blocked", admin())
    member.set_status("active", admin(reason="cleared by review"))
    assert member.status == "active"
    assert member.status_reason == "cleared by review"


@pytest.mark.parametrize("target", ["active", "blocked"])
def test_closed_is_final(target: str) -> None:
    member = registered()
    member.set_status("closed", admin())
    member.collect_events()
    error = assert_rejected_without_events(
        member, lambda: member.set_status(target, admin()), InvalidTransitionError, "status"
    )
    assert isinstance(error, InvalidTransitionError)
    assert error.current_state == "closed"
    assert "final" in error.message


def test_a_blocked_member_cannot_change_profile_or_preferences_but_can_change_consent() -> None:
    member = registered()
    member.set_status("blocked", admin())
    member.collect_events()

    for command in (
        lambda: member.update_profile({"city": "Shanghai"}, TODAY, meta()),
        lambda: member.set_preferences({"categories": ["books"]}, meta()),
    ):
        error = assert_rejected_without_events(member, command, InvalidTransitionError)
        assert isinstance(error, InvalidTransitionError)
        assert error.current_state == "blocked"

    member.set_consent("marketing", "sms", False, meta())
    assert member.consents["marketing:sms"]["granted"] is False


def test_a_closed_member_cannot_change_profile_preferences_or_consent() -> None:
    member = registered()
    member.set_status("closed", admin())
    member.collect_events()
    for command in (
        lambda: member.update_profile({"city": "Shanghai"}, TODAY, meta()),
        lambda: member.set_preferences({"categories": ["books"]}, meta()),
        lambda: member.set_consent("marketing", "sms", False, meta()),
    ):
        error = assert_rejected_without_events(member, command, InvalidTransitionError)
        assert isinstance(error, InvalidTransitionError)
        assert error.current_state == "closed"


# -- erasure --------------------------------------------------------------------------------


def test_erasure_requires_a_reason() -> None:
    member = registered()
    assert_rejected_without_events(
        member, lambda: member.erase(admin(reason=None)), ReasonRequiredError, "meta.reason"
    )
    assert member.erased is False
    assert member.personal is not None


def test_erasing_a_member_drops_their_personal_data_but_keeps_the_rest() -> None:
    member = registered(region="Hangzhou")
    member.erase(admin(reason="GDPR erasure request"))

    event = only_event(member)
    assert type(event).__qualname__ == "Member.Erased"
    assert member.erased is True
    assert member.personal is None
    assert member.profile == {"region": "Hangzhou"}
    assert member.is_profile_complete is False


def test_an_erased_member_rejects_every_further_command() -> None:
    member = registered()
    member.tag("vip", admin())
    member.erase(admin())
    member.collect_events()

    commands = [
        lambda: member.update_profile({"region": "Shanghai"}, TODAY, meta()),
        lambda: member.set_preferences({"categories": ["books"]}, meta()),
        lambda: member.set_consent("marketing", "sms", True, meta()),
        lambda: member.tag("new", admin()),
        lambda: member.untag("vip", admin()),
        lambda: member.set_status("blocked", admin()),
        lambda: member.erase(admin()),
    ]
    for command in commands:
        error = assert_rejected_without_events(member, command, ErasedError)
        assert error.code is ErrorCode.ERASED


# -- metadata -------------------------------------------------------------------------------


def test_every_event_carries_who_did_it_through_which_channel_and_in_which_request() -> None:
    member = Member.register(
        {"name": "Ann Lee", "email": "ann@example.com"},
        TODAY,
        meta(Role.ANONYMOUS, Channel.MINI_PROGRAM, actor_id="anonymous", request_id="r0"),
    )
    member.update_profile({"region": "Shanghai"}, TODAY, meta(request_id="r1"))
    member.set_preferences({"categories": ["books"]}, meta(channel=Channel.APP, request_id="r2"))
    member.set_consent("marketing", "sms", True, meta(channel=Channel.STORE, request_id="r3"))
    member.tag("vip", meta(Role.ADMIN, Channel.ADMIN, "top spender", "admin-1", "r4"))
    member.untag("vip", meta(Role.ADMIN, Channel.ADMIN, "mistake", "admin-1", "r5"))
    member.set_status("blocked", meta(Role.AGENT, Channel.ADMIN, "fraud", "agent-1", "r6"))
    member.erase(meta(Role.ADMIN, Channel.ADMIN, "erasure request", "admin-1", "r7"))

    events = member.collect_events()

    assert [type(e).__qualname__ for e in events] == [
        "Member.Registered",
        "Member.ProfileUpdated",
        "Member.PreferencesSet",
        "Member.ConsentChanged",
        "Member.Tagged",
        "Member.Untagged",
        "Member.StatusChanged",
        "Member.Erased",
    ]
    for index, event in enumerate(events):
        assert set(event.meta) == {
            "actor_id",
            "actor_role",
            "channel",
            "correlation_id",
            "causation_id",
            "request_id",
            "reason",
        }
        assert event.meta["request_id"] == f"r{index}"
        assert event.meta["correlation_id"] == "corr-1"
        assert event.meta["causation_id"] == "cause-1"
    assert events[0].meta["actor_role"] == "anonymous"
    assert events[0].meta["channel"] == "mini_program"
    assert events[2].meta["channel"] == "app"
    assert events[6].meta == {
        "actor_id": "agent-1",
        "actor_role": "agent",
        "channel": "admin",
        "correlation_id": "corr-1",
        "causation_id": "cause-1",
        "request_id": "r6",
        "reason": "fraud",
    }


def test_event_metadata_round_trips_through_its_dict_form() -> None:
    original = agent()
    assert EventMetadata.from_dict(original.as_dict()) == original


def test_only_agents_and_admins_count_as_staff() -> None:
    assert {role for role in Role if role.is_staff} == {Role.AGENT, Role.ADMIN}


# -- profile completeness -------------------------------------------------------------------


def test_a_profile_is_complete_when_every_completion_field_is_filled() -> None:
    member = registered(**FULL_PROFILE)
    assert member.is_profile_complete is True


def test_a_profile_without_the_optional_details_is_incomplete() -> None:
    assert registered().is_profile_complete is False


@pytest.mark.parametrize("missing", [f for f in FULL_PROFILE if f not in ("name", "email")])
def test_a_profile_missing_any_completion_field_is_incomplete(missing: str) -> None:
    details = {k: v for k, v in FULL_PROFILE.items() if k != missing}
    assert registered(**details).is_profile_complete is False


def test_clearing_a_completion_field_makes_the_profile_incomplete_again() -> None:
    member = registered(**FULL_PROFILE)
    member.update_profile({"occupation": None}, TODAY, meta())
    assert member.is_profile_complete is False


def test_language_and_preferred_channel_are_not_needed_for_completeness() -> None:
    member = registered(**FULL_PROFILE)
    assert "language" not in member.profile
    assert "preferred_channel" not in member.profile
    assert member.is_profile_complete is True


# -- reconstruction -------------------------------------------------------------------------


def test_reconstructing_a_member_from_its_events_yields_the_same_state() -> None:
    app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    member = register(**FULL_PROFILE)
    member.update_profile({"region": "Shanghai", "phone": None}, TODAY, meta())
    member.set_preferences(
        {
            "categories": ["books"],
            "ui": {"theme": "dark"},
            "delivery": {"default_address": ADDRESS, "packaging": ["eco"]},
        },
        meta(),
    )
    member.set_consent("marketing", "sms", True, meta(channel=Channel.APP))
    member.set_consent("personalisation", "all", True, meta())
    member.tag("vip", admin())
    member.tag("wholesale", admin())
    member.untag("vip", admin())
    member.set_status("blocked", admin(reason="chargeback"))
    app.save(member)

    copy = app.repository.get(member.id)

    assert isinstance(copy, Member)
    assert copy.version == member.version == 9
    for attribute in (
        "personal",
        "profile",
        "preferences",
        "consents",
        "tags",
        "status",
        "status_reason",
        "erased",
        "registration_channel",
    ):
        assert getattr(copy, attribute) == getattr(member, attribute), attribute
    assert copy.is_profile_complete == member.is_profile_complete
    assert vars(copy) == vars(member)


def test_reconstructing_an_erased_member_yields_no_personal_data() -> None:
    app: Application[Any] = Application(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    member = register(region="Hangzhou")
    member.erase(admin())
    app.save(member)

    copy = app.repository.get(member.id)

    assert isinstance(copy, Member)
    assert copy.erased is True
    assert copy.personal is None
    assert copy.profile == {"region": "Hangzhou"}
    with pytest.raises(ErasedError):
        copy.update_profile({"region": "Shanghai"}, TODAY, meta())
