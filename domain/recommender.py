"""The recommender's model registry: which model versions exist and which one serves.

One aggregate for the whole shop, because a version number must be unique and "the
active model" must be one answer: training records `ModelTrained` (the next version,
the checksum of the model file, the event position its data reached, its parameters and
offline metrics), and `ModelActivated` switches serving to a version — a later version,
or an earlier one to roll back — naming the version it replaces, so an auditor can replay
which model served at any moment. Two trainers finishing at once both get a version:
optimistic concurrency makes the second retry on top of the first.

`TrainingScheduled` lets schedulers on several servers agree that one of them trains in
an interval (the first to record the interval wins), instead of all of them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate

from domain.errors import ForbiddenError, InvalidTransitionError, NotFoundError, ValidationError
from domain.metadata import EventMetadata, Role

REGISTRY_ID = uuid5(UUID("0b6f3d2a-5e41-4c8f-9a7d-3f2e1c6b8a90"), "recommender-registry")
_CHECKSUM = re.compile(r"^[0-9a-f]{64}$")


def require_admin(meta: EventMetadata, attempted: str) -> None:
    if meta.actor_role is not Role.ADMIN:
        raise ForbiddenError(f"only admins may {attempted}")


def loses_to_baseline(metrics: dict[str, Any]) -> str | None:
    """Why a model should not serve on its own offline evaluation, or None if it may.

    A model whose precision is below the popularity baseline's, measured on the same
    held-out split, would make every list worse than showing what sells: it serves only
    when an admin forces it, with a reason.
    """
    model = (metrics.get("hybrid") or {}).get("precision")
    baseline = (metrics.get("popularity") or {}).get("precision")
    if model is None or baseline is None or model >= baseline:
        return None
    return (f"its offline precision@{metrics.get('k', 10)} ({model:.3f}) is below the "
            f"popularity baseline's ({baseline:.3f})")


class RecommenderRegistry(Aggregate):
    @classmethod
    def open(cls, now: datetime) -> RecommenderRegistry:
        return cls._create(cls.Opened, id=REGISTRY_ID, timestamp=now)

    class Opened(Aggregate.Created):
        pass

    def __init__(self) -> None:
        # The checksum of version n is checksums[n - 1]: versions are numbered 1, 2, …
        # with no gaps (a list rather than a dict keyed by int, so that a snapshot, which
        # is JSON, restores it as it was).
        self.checksums: list[str] = []
        self.active: int | None = None
        self.last_scheduled: str | None = None
        # Versions that lost to the popularity baseline on their own evaluation.
        self.below_baseline: list[int] = []

    @property
    def latest(self) -> int:
        return len(self.checksums)

    @property
    def versions(self) -> range:
        return range(1, self.latest + 1)

    def record_trained(self, checksum: str, data_position: int, interactions: int,
                       members: int, products: int, training_seconds: float,
                       params: dict[str, Any], metrics: dict[str, Any], now: datetime,
                       meta: EventMetadata) -> int:
        """Record a trained model as the next version and return that version."""
        if not _CHECKSUM.match(checksum):
            raise ValueError("a model checksum is 64 lower-case hex digits")
        version = self.latest + 1
        self.trigger_event(self.ModelTrained, version=version, checksum=checksum,
                           data_position=data_position, interactions=interactions,
                           members=members, products=products,
                           training_seconds=round(training_seconds, 3), params=params,
                           metrics=metrics, timestamp=now, meta=meta.as_dict())
        return version

    class ModelTrained(Aggregate.Event):
        version: int
        checksum: str
        data_position: int
        interactions: int
        members: int
        products: int
        training_seconds: float
        params: dict[str, Any]
        metrics: dict[str, Any]
        meta: dict[str, Any]

        def apply(self, registry: Any) -> None:
            registry.checksums.append(self.checksum)
            if loses_to_baseline(self.metrics):
                # setdefault: a snapshot taken before this list existed restores without it.
                registry.__dict__.setdefault("below_baseline", []).append(self.version)

    def serves_only_if_forced(self, version: int) -> str | None:
        """Why `version` may serve only when forced (it lost to the baseline), or None."""
        if version in getattr(self, "below_baseline", []):
            return f"version {version} lost to the popularity baseline on its evaluation"
        return None

    def activate(self, version: int, now: datetime, meta: EventMetadata,
                 force: bool = False) -> bool:
        """Serve `version` from now on; False when it already serves (a retried request).

        A version that lost to the popularity baseline serves only when forced (by an admin,
        whose reason the event keeps).
        """
        if version not in self.versions:
            raise NotFoundError(f"there is no model version {version}", "version")
        if version == self.active:
            return False
        refusal = self.serves_only_if_forced(version)
        if refusal and not force:
            raise ValidationError(
                f"{refusal}; activate it with force and a reason to serve it anyway", "force"
            )
        self.trigger_event(self.ModelActivated, version=version, previous=self.active,
                           forced=bool(refusal), timestamp=now, meta=meta.as_dict())
        return True

    class ModelActivated(Aggregate.Event):
        version: int
        previous: int | None
        # True when it lost to the popularity baseline and an admin served it anyway.
        forced: bool
        meta: dict[str, Any]

        def apply(self, registry: Any) -> None:
            registry.active = self.version

    def schedule_training(self, slot: str, now: datetime, meta: EventMetadata) -> bool:
        """Claim the scheduled training of interval `slot`; False if already claimed."""
        if self.last_scheduled is not None and slot <= self.last_scheduled:
            return False
        self.trigger_event(self.TrainingScheduled, slot=slot, timestamp=now,
                           meta=meta.as_dict())
        return True

    class TrainingScheduled(Aggregate.Event):
        slot: str
        meta: dict[str, Any]

        def apply(self, registry: Any) -> None:
            registry.last_scheduled = self.slot

    def checksum_of(self, version: int) -> str:
        if version not in self.versions:
            raise NotFoundError(f"there is no model version {version}", "version")
        return self.checksums[version - 1]

    def require_active(self) -> int:
        if self.active is None:
            raise InvalidTransitionError("no model has been activated yet", "no_model")
        return self.active
