"""A/B experiments on recommendations: which variant a member sees, what they were shown
and clicked, and how sure the results are.

An admin defines an experiment on one placement (home feed, product page, cart, search)
with 2 to 10 variants; each variant names a strategy (and optionally a trained model
version to serve instead of the active one) and a whole-percent share of the traffic, the
shares summing to exactly 100. Stopping is the only other command: a stopped experiment
stays, with its results, and can never run again.

**One running experiment per placement.** Two experiments on one placement would fight
over the same lists, so each placement has a small `ExperimentSlot` aggregate (its id
derived from the placement) that a define occupies and a stop frees, in the same unit of
work as the experiment's own event. Two admins defining at once both write the slot's
next version; optimistic concurrency lets one save and makes the other decide again, and
find the placement taken. The slot also keeps when each experiment ran, so an impression
buffered by a frontend is attributed to the experiment that ran when it was *shown*.

**Assignment is a pure function** of the experiment, the member and the variants
(`assign_variant`): the same member sees the same variant on every server, at every
request, with nothing stored; two experiments hash differently, so being in one
experiment's treatment says nothing about another's.

**Feedback comes in batches** (`ImpressionBatch`, `ClickBatch`), one aggregate each, like
behaviour (see domain/behaviour.py): the id derives from the member and the sender's
batch key, so a resent batch records once. Each item carries the experiment and variant
it counts for, stamped by the service from the slot and `assign_variant` (`stamp`) —
never taken from the client, who could otherwise pick the variant its clicks count for.

**Confidence** (`wilson_interval`, `difference_interval`): the read side reports rates
with 95% intervals, so an admin can tell a winner from noise.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Self, TypeGuard
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.aggregate import RecordedAggregate
from domain.errors import InvalidTransitionError, ReasonRequiredError, ValidationError
from domain.metadata import EventMetadata
from domain.recommendation.placement import Placement, Strategy
from domain.segments import require_admin

SLOT_NAMESPACE = UUID("c3a1e7d9-4b2f-4f6a-8e05-9d7b1a3c5e42")

MAX_NAME = 100
MAX_VARIANT_NAME = 40
MIN_VARIANTS = 2
MAX_VARIANTS = 10
TOTAL_SHARE = 100
# Assignment resolution: a bucket is 0.01% of the traffic.
BUCKETS = 10_000

MAX_BATCH = 500
# Frontends buffer feedback like behaviour: up to a week late, never from the future.
MAX_AGE = timedelta(days=7)
CLOCK_SKEW = timedelta(minutes=5)
MAX_PRODUCT_ID = 100
MAX_POSITION = 100
# A payment converts a click this long after it.
CONVERSION_WINDOW = timedelta(days=7)

# The two-sided 95% normal quantile.
Z_95 = 1.959963984540054


class ExperimentStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


# -- variants ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: how its lists are made, and its share of the members."""

    name: str
    share: int
    strategy: Strategy
    # Serve with this trained model version instead of the active one.
    model_version: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "share": self.share, "strategy": self.strategy.value,
                "model_version": self.model_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Variant:
        version = data.get("model_version")
        return cls(name=str(data["name"]), share=int(data["share"]),
                   strategy=Strategy(data["strategy"]),
                   model_version=int(version) if version is not None else None)


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_variant(value: Any, index: int) -> Variant:
    prefix = f"variants.{index}"
    if isinstance(value, Variant):
        value = value.as_dict()
    if not isinstance(value, Mapping):
        raise ValidationError(f"variants[{index}] must be an object", prefix)
    name = value.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError(f"name variants[{index}]", f"{prefix}.name")
    if len(name.strip()) > MAX_VARIANT_NAME:
        raise ValidationError(f"variants[{index}].name must be at most {MAX_VARIANT_NAME} "
                              "characters", f"{prefix}.name")
    share = value.get("share")
    if not _whole(share) or not 1 <= share <= TOTAL_SHARE:
        raise ValidationError(f"variants[{index}].share must be a whole percent from 1 to "
                              f"{TOTAL_SHARE}", f"{prefix}.share")
    try:
        strategy = Strategy(value.get("strategy", ""))
    except ValueError:
        allowed = ", ".join(s.value for s in Strategy)
        raise ValidationError(f"variants[{index}].strategy must be one of: {allowed}",
                              f"{prefix}.strategy") from None
    version = value.get("model_version")
    if version is not None and (not _whole(version) or version < 1):
        raise ValidationError(f"variants[{index}].model_version must be a positive whole "
                              "number", f"{prefix}.model_version")
    return Variant(name=name.strip(), share=share, strategy=strategy, model_version=version)


def validate_variants(value: Any) -> list[Variant]:
    """2 to 10 variants with distinct names whose shares add up to exactly 100%.

    Exactly 100, not "at most": traffic left unassigned would be a silent extra control
    group that nobody measures.
    """
    if not isinstance(value, Sequence) or isinstance(value, str | bytes):
        raise ValidationError("variants must be a list", "variants")
    if not MIN_VARIANTS <= len(value) <= MAX_VARIANTS:
        raise ValidationError(f"an experiment has {MIN_VARIANTS} to {MAX_VARIANTS} variants",
                              "variants")
    variants = [validate_variant(item, index) for index, item in enumerate(value)]
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        key = variant.name.casefold()
        if key in seen:
            raise ValidationError(f"variant name {variant.name!r} is used twice",
                                  f"variants.{index}.name")
        seen.add(key)
    total = sum(v.share for v in variants)
    if total != TOTAL_SHARE:
        raise ValidationError(f"the variants' shares add up to {total}%; they must add up "
                              f"to exactly {TOTAL_SHARE}%", "variants")
    return variants


def experiment_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError("name the experiment", "name")
    name = value.strip()
    if len(name) > MAX_NAME:
        raise ValidationError(f"name must be at most {MAX_NAME} characters", "name")
    return name


def validate_placement(value: Any, field: str = "placement") -> Placement:
    try:
        return Placement(value)
    except ValueError:
        allowed = ", ".join(p.value for p in Placement)
        raise ValidationError(f"placement must be one of: {allowed}", field) from None


# -- assignment -------------------------------------------------------------------------------


def bucket_of(experiment_id: str, member_id: str) -> int:
    """The member's bucket (0..9999) in this experiment: SHA-256 of "experiment:member".

    A cryptographic hash, not Python's `hash()`, so every process and every release agrees;
    salted with the experiment, so assignments in two experiments are independent.
    """
    digest = hashlib.sha256(f"{experiment_id}:{member_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_variant(experiment_id: str, member_id: str, variants: Sequence[Variant]) -> Variant:
    """The variant this member sees in this experiment: always the same one.

    Buckets are handed out in the order the variants were defined, each variant taking
    `share` percent of them (share x 100 buckets).
    """
    if not variants:
        raise ValueError("an experiment has variants")
    bucket = bucket_of(str(experiment_id), str(member_id))
    upper = 0
    for variant in variants:
        upper += variant.share * BUCKETS // TOTAL_SHARE
        if bucket < upper:
            return variant
    return variants[-1]  # unreachable when the shares add up to 100


# -- the experiment ---------------------------------------------------------------------------


class Experiment(RecordedAggregate):
    @classmethod
    def define(cls, experiment_id: UUID, name: Any, placement: Any, variants: Any,
               now: datetime, meta: EventMetadata, request_hash: str = "") -> Experiment:
        """A running experiment, from now. Checks everything before recording anything."""
        require_admin(meta, "define experiments")
        checked_name = experiment_name(name)
        checked_placement = validate_placement(placement)
        checked_variants = validate_variants(variants)
        meta.require_reason()
        return cls._create(
            cls.Defined, id=experiment_id, timestamp=now, name=checked_name,
            placement=checked_placement.value,
            variants=[v.as_dict() for v in checked_variants], request_hash=request_hash,
            meta=meta.as_dict(),
        )

    class Defined(Aggregate.Created):
        name: str
        placement: str
        variants: list[dict[str, Any]]
        request_hash: str

    def __init__(self, name: str, placement: str, variants: list[dict[str, Any]],
                 request_hash: str, meta: dict[str, Any]) -> None:
        self.name = name
        self.placement = placement
        self.variant_data = [dict(v) for v in variants]
        # Fingerprint of the define request, to tell a retry from a reuse of its key.
        self.request_hash = request_hash
        self.defined_by = meta
        self.status: str = ExperimentStatus.RUNNING.value
        self.stopped_at: str | None = None
        self.stop_reason: str | None = None

    @property
    def variants(self) -> list[Variant]:
        return [Variant.from_dict(v) for v in self.variant_data]

    @property
    def is_running(self) -> bool:
        return self.status == ExperimentStatus.RUNNING.value

    def assign(self, member_id: str) -> Variant:
        return assign_variant(str(self.id), member_id, self.variants)

    def stop(self, reason: str | None, now: datetime, meta: EventMetadata) -> None:
        """Stop for good: the placement is free for another experiment, the results stay."""
        require_admin(meta, "stop experiments")
        if not self.is_running:
            raise InvalidTransitionError("the experiment is already stopped",
                                         current_state=self.status, attempted="stop")
        why = (reason or "").strip() or meta.reason
        if not why:
            raise ReasonRequiredError()
        self._trigger(self.Stopped, now, meta, reason=why)

    class Stopped(RecordedAggregate.Event):
        reason: str

        def apply(self, experiment: Any) -> None:
            experiment.status = ExperimentStatus.STOPPED.value
            experiment.stopped_at = self.timestamp.isoformat()
            experiment.stop_reason = self.reason


class ExperimentSlot(RecordedAggregate):
    """A placement's right to run one experiment at a time, and who held it when.

    Changed in the unit of work of every define and stop, so concurrent defines on one
    placement clash on its version and only one of them can succeed.
    """

    @staticmethod
    def id_for(placement: Placement | str) -> UUID:
        return uuid5(SLOT_NAMESPACE, f"experiment-slot:{Placement(placement).value}")

    @classmethod
    def open(cls, placement: Placement | str, now: datetime,
             meta: EventMetadata) -> ExperimentSlot:
        checked = Placement(placement)
        return cls._create(cls.Opened, id=cls.id_for(checked), timestamp=now,
                           placement=checked.value, meta=meta.as_dict())

    class Opened(Aggregate.Created):
        placement: str

    def __init__(self, placement: str, meta: dict[str, Any]) -> None:
        self.placement = placement
        self.running: str | None = None
        # Every experiment that ran here: experiment_id, started_at, ended_at (ISO or None).
        self.runs: list[dict[str, str | None]] = []

    def occupy(self, experiment_id: UUID | str, now: datetime, meta: EventMetadata) -> None:
        if self.running is not None:
            raise InvalidTransitionError(
                f"the {self.placement} placement already runs experiment {self.running}; "
                "stop it first", current_state="occupied", field="placement",
                attempted="define")
        self._trigger(self.Occupied, now, meta, experiment_id=str(experiment_id))

    class Occupied(RecordedAggregate.Event):
        experiment_id: str

        def apply(self, slot: Any) -> None:
            slot.running = self.experiment_id
            slot.runs.append({"experiment_id": self.experiment_id,
                              "started_at": self.timestamp.isoformat(), "ended_at": None})

    def free(self, experiment_id: UUID | str, now: datetime, meta: EventMetadata) -> None:
        if self.running != str(experiment_id):
            raise InvalidTransitionError(
                f"experiment {experiment_id} does not run on the {self.placement} placement",
                current_state="free" if self.running is None else "occupied",
                attempted="stop")
        self._trigger(self.Freed, now, meta, experiment_id=str(experiment_id))

    class Freed(RecordedAggregate.Event):
        experiment_id: str

        def apply(self, slot: Any) -> None:
            slot.running = None
            slot.runs[-1] = {**slot.runs[-1], "ended_at": self.timestamp.isoformat()}

    def experiment_at(self, moment: datetime) -> str | None:
        """The experiment that ran here at `moment` (from its define, until its stop)."""
        for run in reversed(self.runs):
            started = datetime.fromisoformat(str(run["started_at"]))
            ended = run["ended_at"]
            if started <= moment and (ended is None or moment < datetime.fromisoformat(ended)):
                return str(run["experiment_id"])
        return None


# -- feedback ---------------------------------------------------------------------------------


def _item_time(item: Mapping[str, Any], key: str, what: str, index: int,
               now: datetime) -> datetime:
    moment = item.get(key) or now
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValidationError(f"{what}[{index}].{key} needs a time zone",
                              f"{what}.{index}.{key}")
    if moment > now + CLOCK_SKEW or moment < now - MAX_AGE:
        raise ValidationError(f"{what}[{index}].{key} must be within the last "
                              f"{MAX_AGE.days} days and not in the future",
                              f"{what}.{index}.{key}")
    return moment.astimezone(UTC)


def _feedback_item(item: Any, index: int, now: datetime, what: str,
                   time_key: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise ValidationError(f"{what}[{index}] must be an object", f"{what}.{index}")
    placement = validate_placement(item.get("placement"), f"{what}.{index}.placement")
    product_id = item.get("product_id")
    if (not isinstance(product_id, str) or not product_id.strip()
            or len(product_id.strip()) > MAX_PRODUCT_ID):
        raise ValidationError(f"{what}[{index}].product_id must be text of 1 to "
                              f"{MAX_PRODUCT_ID} characters", f"{what}.{index}.product_id")
    checked: dict[str, Any] = {"placement": placement.value,
                               "product_id": product_id.strip()}
    if time_key == "shown_at":
        position = item.get("position")
        if not _whole(position) or not 1 <= position <= MAX_POSITION:
            raise ValidationError(f"{what}[{index}].position must be a whole number from 1 "
                                  f"to {MAX_POSITION}", f"{what}.{index}.position")
        checked["position"] = position
    checked[time_key] = _item_time(item, time_key, what, index, now).isoformat()
    # Stamped by the service (see `stamp`), whatever the client sent.
    checked["experiment_id"] = None
    checked["variant"] = None
    return checked


def _feedback_batch(items: Any, now: datetime, what: str, time_key: str
                    ) -> list[dict[str, Any]]:
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise ValidationError(f"{what} must be a list", what)
    if not items:
        raise ValidationError(f"send at least one of the {what}", what)
    if len(items) > MAX_BATCH:
        raise ValidationError(f"at most {MAX_BATCH} {what} per batch", what)
    return [_feedback_item(item, index, now, what, time_key)
            for index, item in enumerate(items)]


def validate_impressions(items: Any, now: datetime) -> list[dict[str, Any]]:
    """1-500 impressions (placement, product_id, 1-based position, shown_at), normalised;
    an error names the item's index and field, e.g. `impressions.3.position`."""
    return _feedback_batch(items, now, "impressions", "shown_at")


def validate_clicks(items: Any, now: datetime) -> list[dict[str, Any]]:
    """1-500 clicks (placement, product_id, clicked_at), normalised, like impressions."""
    return _feedback_batch(items, now, "clicks", "clicked_at")


# Given a placement and a moment: the experiment that ran there then, and its variants.
ExperimentLookup = Callable[[str, datetime], tuple[str, Sequence[Variant]] | None]


def stamp(items: list[dict[str, Any]], time_key: str, member_id: str,
          experiment_at: ExperimentLookup) -> list[dict[str, Any]]:
    """Items with the experiment that ran on their placement when they happened and the
    member's variant in it (both None outside any experiment)."""
    stamped = []
    for item in items:
        found = experiment_at(item["placement"], datetime.fromisoformat(item[time_key]))
        if found is None:
            stamped.append({**item, "experiment_id": None, "variant": None})
            continue
        experiment_id, variants = found
        variant = assign_variant(experiment_id, member_id, variants)
        stamped.append({**item, "experiment_id": experiment_id, "variant": variant.name})
    return stamped


class FeedbackBatch(RecordedAggregate):
    """A batch of what a member was shown or clicked, as one event, recorded once (its id
    comes from the sender's batch key). Subclasses only name their event, so impressions
    and clicks stay distinct in the event store."""

    @classmethod
    def record(cls, batch_id: UUID, member_id: str, items: list[dict[str, Any]],
               request_hash: str, now: datetime, meta: EventMetadata) -> Self:
        return cls._create(cls.Recorded, id=batch_id, timestamp=now, member_id=member_id,
                           items=items, request_hash=request_hash, meta=meta.as_dict())

    class Recorded(Aggregate.Created):
        member_id: str
        items: list[dict[str, Any]]
        request_hash: str

    def __init__(self, member_id: str, items: list[dict[str, Any]], request_hash: str,
                 meta: dict[str, Any]) -> None:
        self.member_id = member_id
        self.count = len(items)
        self.in_experiments = sum(1 for item in items if item.get("experiment_id"))
        self.request_hash = request_hash


class ImpressionBatch(FeedbackBatch):
    """Recommended products a member was shown."""

    class Recorded(FeedbackBatch.Recorded):
        """Items: placement, product_id, position, shown_at, experiment_id | None,
        variant | None."""


class ClickBatch(FeedbackBatch):
    """Recommended products a member clicked."""

    class Recorded(FeedbackBatch.Recorded):
        """Items: placement, product_id, clicked_at, experiment_id | None, variant | None."""


# -- confidence -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A rate (or a difference of rates) and its confidence interval."""

    value: float
    low: float
    high: float


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """The rate successes/trials with its Wilson score interval (95% by default).

    Wilson rather than the textbook p ± z·sqrt(p(1-p)/n): click-through and conversion
    rates are small and early samples are small, where that interval collapses to zero
    width at 0 successes and strays below 0; Wilson's stays inside [0, 1] and keeps its
    coverage. None without trials. Successes beyond the trials (more clicks than recorded
    impressions, if a frontend lost some) are capped at the trials for the interval.
    """
    if trials <= 0:
        return None
    rate = successes / trials
    p = min(max(successes, 0), trials) / trials
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / denominator
    return Interval(value=rate, low=max(0.0, centre - half), high=min(1.0, centre + half))


def difference_interval(control_successes: int, control_trials: int, successes: int,
                        trials: int, z: float = Z_95) -> Interval | None:
    """The difference of a variant's rate minus the control's, with a 95% interval from
    the normal approximation of the difference of two independent proportions:
    (p2 - p1) ± z·sqrt(p1(1-p1)/n1 + p2(1-p2)/n2). An interval that excludes 0 means the
    variant differs from the control. None unless both have trials."""
    if control_trials <= 0 or trials <= 0:
        return None
    p1 = min(max(control_successes, 0), control_trials) / control_trials
    p2 = min(max(successes, 0), trials) / trials
    difference = p2 - p1
    half = z * math.sqrt(p1 * (1 - p1) / control_trials + p2 * (1 - p2) / trials)
    return Interval(value=difference, low=difference - half, high=difference + half)
