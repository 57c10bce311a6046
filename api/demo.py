"""A deterministic demo population, written through the real command path.

Same seed, same members: names, profiles, preferences, consents, tags and statuses are
drawn from a seeded generator, so demos and screenshots are reproducible.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import date, timedelta

from api.runtime import Runtime
from domain.metadata import Channel, EventMetadata, Role

FIRST = ["Li", "Wei", "Mei", "Jun", "Anna", "Lucas", "Sofia", "Chen", "Yuki", "Omar", "Lena",
         "Ravi", "Hana", "Mateo", "Zara", "Ming", "Ivy", "Noah", "Aisha", "Tom"]
LAST = ["Wang", "Zhang", "Liu", "Chen", "Müller", "Silva", "Tanaka", "Khan", "Rossi", "Kim",
        "Novak", "Garcia", "Dubois", "Smith", "Ahmed", "Huang", "Zhao", "Lin", "Sato", "Brown"]
CITIES = [("Shanghai", "Shanghai"), ("Beijing", "Beijing"), ("Hangzhou", "Zhejiang"),
          ("Shenzhen", "Guangdong"), ("Chengdu", "Sichuan"), ("Berlin", "Berlin"),
          ("Lisbon", "Lisboa"), ("Osaka", "Osaka")]
CATEGORIES = ["outdoor", "electronics", "beauty", "books", "home", "fashion", "toys", "grocery",
              "sports", "baby"]
BRANDS = ["northpeak", "lumen", "aurora", "kestrel", "hearth", "velvet", "orbit", "greenleaf"]
OCCUPATIONS = ["engineer", "teacher", "designer", "nurse", "student", "retired", "merchant",
               "civil servant"]
TAGS = [("vip", "top spender in pilot"), ("influencer", "large social following"),
        ("wholesale", "buys for a shop"), ("at-risk", "complained twice this quarter")]


def seed_demo(
    runtime: Runtime,
    members: int = 50,
    seed: int = 7,
    progress: Callable[[int], None] | None = None,
) -> list[uuid.UUID]:
    rng = random.Random(seed)
    correlation = f"demo-seed-{seed}"
    created: list[uuid.UUID] = []

    def meta(actor: str, role: Role, channel: Channel, reason: str | None = None) -> EventMetadata:
        return EventMetadata(
            actor_id=actor, actor_role=role, channel=channel, correlation_id=correlation,
            causation_id=None, request_id=uuid.uuid4().hex, reason=reason,
        )

    today = runtime.clock.today()
    channels = [Channel.WEB, Channel.APP, Channel.MINI_PROGRAM, Channel.STORE]
    for index in range(members):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, region = rng.choice(CITIES)
        channel = rng.choice(channels)
        birthday = date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
        details = {
            "name": f"{first} {last}",
            "email": f"{first.lower()}.{last.lower()}{index}@example.com".replace("ü", "u"),
            "phone": f"+86 138{rng.randrange(10**7, 10**8)}",
            "gender": rng.choice(["female", "male", "non_binary", "undisclosed"]),
            "birthday": min(birthday, today).isoformat(),
            "occupation": rng.choice(OCCUPATIONS),
            "education": rng.choice(["secondary", "vocational", "bachelor", "master"]),
            "income_band": rng.choice(["low", "lower_middle", "middle", "upper_middle", "high"]),
            "city": city,
            "region": region,
            "preferred_channel": channel.value,
            "language": rng.choice(["zh-CN", "en", "de", "pt-PT", "ja"]),
        }
        if rng.random() < 0.2:  # some members leave their profile incomplete
            for field in ("occupation", "education", "income_band"):
                details.pop(field)
        member_id = runtime.members.register(details, meta("anonymous", Role.ANONYMOUS, channel))
        mid = member_id.aggregate_id
        created.append(mid)
        self_meta = meta(str(mid), Role.MEMBER, rng.choice(channels))
        runtime.members.set_preferences(
            mid,
            {
                "categories": rng.sample(CATEGORIES, rng.randrange(1, 4)),
                "brands": rng.sample(BRANDS, rng.randrange(0, 3)),
                "price_sensitivity": rng.choice(["low", "medium", "high"]),
                "ui": {"theme": rng.choice(["light", "dark", "system"]),
                       "font_size": rng.choice(["medium", "large"])},
                "delivery": {
                    "time_window": rng.choice(["any", "morning", "evening", "weekend"]),
                    "packaging": rng.sample(["eco", "gift_wrap", "minimal"], rng.randrange(0, 2)),
                    "default_address": {
                        "recipient": details["name"], "line1": f"{rng.randrange(1, 999)} Demo Road",
                        "city": city, "region": region, "country": "CN",
                    },
                },
            },
            self_meta,
        )
        for channel_name in ("sms", "email", "app_push"):
            if rng.random() < 0.5:
                runtime.members.set_consent(mid, "marketing", channel_name, True, self_meta)
        if rng.random() < 0.7:
            runtime.members.set_consent(mid, "personalisation", "all", True, self_meta)
        if rng.random() < 0.15:
            tag, reason = rng.choice(TAGS)
            runtime.members.tag(mid, tag, meta("demo-admin", Role.ADMIN, Channel.ADMIN, reason))
        if rng.random() < 0.05:
            runtime.members.set_status(
                mid, "blocked", meta("demo-admin", Role.ADMIN, Channel.ADMIN, "chargeback fraud")
            )
        if progress:
            progress(1)
    return created
