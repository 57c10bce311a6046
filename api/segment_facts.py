"""The facts a segment rule sees of a member, taken from their profile and loyalty tier.

Kept apart from domain.segment_rules so the domain stays free of read-model imports; this
is the one place that decides how each profile figure maps to a rule field:

- total_spent is the profile's purchase_total, which is already net of refunds.
- Interests are the listed (top) categories and brands with their share; one outside the
  listed top has share 0 for a rule. Without consent to personalisation the profile has no
  interests, and the rule sees them as unknown (None), so no interest condition, negated
  or not, selects such a member.
- RFM scores, the last purchase, average order value and repurchase rate are missing
  (None) until a first purchase.
"""

from __future__ import annotations

from api.profile_readmodels import MemberProfile
from domain.segment_rules import Facts


def facts_from_profile(profile: MemberProfile, tier: str) -> Facts:
    rfm = profile.rfm
    interests = None
    if profile.personalised:
        interests = {
            **{("category", s.key): s.share for s in profile.category_interests},
            **{("brand", s.key): s.share for s in profile.brand_interests},
        }
    return Facts(
        tier=str(tier) if tier else None,
        lifecycle=str(profile.lifecycle.name),
        shopper_type=str(profile.shopper_type.name),
        price_band=str(profile.price_band) if profile.price_band else None,
        purchases=profile.purchases,
        orders_placed=profile.orders_placed,
        reviews=profile.reviews,
        total_spent=profile.purchase_total,
        average_order_value=profile.average_order_value,
        repurchase_rate=profile.repurchase_rate,
        purchases_per_30_days=profile.purchases_per_30_days,
        rfm_recency=rfm.recency if rfm else None,
        rfm_frequency=rfm.frequency if rfm else None,
        rfm_monetary=rfm.monetary if rfm else None,
        last_purchase=profile.last_purchase_at,
        last_activity=profile.last_activity_at,
        joined=profile.joined_at,
        interests=interests,
        tags=frozenset(str(tag.name) for tag in profile.tags),
    )
