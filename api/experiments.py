"""Commands for A/B experiments: defining and stopping them, and recording what members
were shown and clicked.

Defining and stopping change two aggregates in one unit of work: the experiment and its
placement's `ExperimentSlot`. Concurrent defines on one placement both write the slot's
next version, so one of them is refused by the event store, decides again, and finds the
placement taken (INVALID_TRANSITION on `placement`); at most one experiment runs on a
placement, whatever runs concurrently, on however many servers.

An experiment's id derives from the admin and their idempotency key, so a retried define
finds the experiment it created; the same key with another definition is an
IDEMPOTENCY_CONFLICT. A variant may pin a trained model version; the version must be one
the registry's read model (`recommender_models`) lists, else a VALIDATION error on that
variant's `model_version`.

Impressions and clicks come in batches from the signed-in member's frontend. Each item is
stamped here with the experiment that ran on its placement when the item happened (from
the slot, which is authoritative, not a read model that may lag) and the member's
variant (`assign_variant`); whatever the client might claim about experiments is never
read. A batch's id derives from the member and the batch key, so a resent batch records
once; the same key with another content is an IDEMPOTENCY_CONFLICT on `batch_key`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import Engine, select

from api.commerce import check_key, request_hash
from api.service import CommandResult, Session, UnitOfWork
from domain.clock import Clock
from domain.errors import (
    ErasedError,
    IdempotencyConflictError,
    NotFoundError,
    ValidationError,
)
from domain.experiments import (
    ClickBatch,
    Experiment,
    ExperimentSlot,
    ImpressionBatch,
    Variant,
    stamp,
    validate_clicks,
    validate_impressions,
)
from domain.member import Member
from domain.metadata import EventMetadata
from domain.segments import require_admin
from projections.recommender_tables import recommender_models

EXPERIMENT_NAMESPACE = uuid.UUID("8e4a2c6f-1d3b-4a97-b5e0-6c2f9d8a1b47")
IMPRESSION_NAMESPACE = uuid.UUID("1f7b3e95-c2a4-4d68-9e1b-5a0c8d2f6e73")
CLICK_NAMESPACE = uuid.UUID("b9d5a1c3-7e2f-4b80-a6d4-3c1e5f9a7b02")


@dataclass(frozen=True)
class FeedbackResult(CommandResult):
    """A recorded (or re-sent) batch: how many items it holds, and how many of them count
    for an experiment. A re-sent batch answers as the first did, with no position."""

    recorded: int
    in_experiments: int


class ExperimentService:
    def __init__(self, uow: UnitOfWork, clock: Clock, engine: Engine) -> None:
        self.uow = uow
        self.clock = clock
        # The read models' database: for the trained model versions.
        self.engine = engine

    def experiment_id_for(self, admin_id: str, key: str) -> UUID:
        return uuid.uuid5(EXPERIMENT_NAMESPACE, f"{admin_id}:{check_key(key)}")

    def get(self, experiment_id: UUID) -> Experiment:
        return self.uow.get(Experiment, experiment_id)

    # -- defining and stopping --------------------------------------------------------------

    def define(self, name: Any, placement: Any, variants: Any, key: str,
               meta: EventMetadata) -> CommandResult:
        """Start an experiment on a placement that runs none; it runs until stopped."""
        require_admin(meta, "define experiments")
        experiment_id = self.experiment_id_for(meta.actor_id, key)
        fingerprint = request_hash("define experiment", name, placement, _plain(variants))

        def decide(session: Session) -> Experiment:
            existing = session.find(Experiment, experiment_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    raise IdempotencyConflictError(
                        "this idempotency key was already used for a different experiment")
                return existing
            now = self.clock.now()
            experiment = Experiment.define(experiment_id, name, placement, variants, now,
                                           meta, request_hash=fingerprint)
            self._require_trained_models(experiment.variants)
            slot_id = ExperimentSlot.id_for(experiment.placement)
            slot = session.find(ExperimentSlot, slot_id)
            if slot is None:
                slot = session.add(ExperimentSlot.open(experiment.placement, now, meta))
            slot.occupy(experiment_id, now, meta)
            return session.add(experiment)

        return self.uow.result_of(self.uow.run(decide))

    def _require_trained_models(self, variants: list[Variant]) -> None:
        wanted = {v.model_version for v in variants if v.model_version is not None}
        if not wanted:
            return
        with self.engine.connect() as conn:
            known = set(conn.scalars(select(recommender_models.c.version).where(
                recommender_models.c.version.in_(sorted(wanted)))))
        for index, variant in enumerate(variants):
            if variant.model_version is not None and variant.model_version not in known:
                raise ValidationError(
                    f"there is no trained model version {variant.model_version}",
                    f"variants.{index}.model_version")

    def stop(self, experiment_id: UUID, meta: EventMetadata) -> CommandResult:
        """Stop for good (with the reason in `meta`): the placement is free again."""
        require_admin(meta, "stop experiments")

        def decide(session: Session) -> Experiment:
            experiment = session.find(Experiment, experiment_id)
            if experiment is None:
                raise NotFoundError(f"experiment {experiment_id} not found", "experiment_id")
            now = self.clock.now()
            experiment.stop(meta.reason, now, meta)
            session.get(ExperimentSlot, ExperimentSlot.id_for(experiment.placement)).free(
                experiment_id, now, meta)
            return experiment

        return self.uow.result_of(self.uow.run(decide))

    # -- feedback ---------------------------------------------------------------------------

    def record_impressions(self, member_id: UUID, batch_key: str,
                           items: Sequence[Mapping[str, Any]],
                           meta: EventMetadata) -> FeedbackResult:
        """Record up to 500 impressions (placement, product_id, position, shown_at) of the
        member, each stamped with its experiment and variant."""
        return self._record(ImpressionBatch, IMPRESSION_NAMESPACE, "impressions", "shown_at",
                            validate_impressions, member_id, batch_key, items, meta)

    def record_clicks(self, member_id: UUID, batch_key: str,
                      items: Sequence[Mapping[str, Any]],
                      meta: EventMetadata) -> FeedbackResult:
        """Record up to 500 clicks (placement, product_id, clicked_at) of the member, each
        stamped with its experiment and variant."""
        return self._record(ClickBatch, CLICK_NAMESPACE, "clicks", "clicked_at",
                            validate_clicks, member_id, batch_key, items, meta)

    def batch_id_for(self, namespace: UUID, member_id: UUID, key: str) -> UUID:
        try:
            checked = check_key(key)
        except ValidationError as error:
            raise ValidationError(error.message.replace("an idempotency key", "a batch key"),
                                  "batch_key") from None
        return uuid.uuid5(namespace, f"member:{member_id}:{checked}")

    def _record(
        self,
        batch_type: type[ImpressionBatch] | type[ClickBatch],
        namespace: UUID,
        what: str,
        time_key: str,
        validate: Callable[[Any, datetime], list[dict[str, Any]]],
        member_id: UUID,
        batch_key: str,
        items: Sequence[Mapping[str, Any]],
        meta: EventMetadata,
    ) -> FeedbackResult:
        batch_id = self.batch_id_for(namespace, member_id, batch_key)
        # The content as sent (a missing time defaults to "now", which differs on a resend).
        fingerprint = request_hash(what, _plain(items))

        def decide(s: Session) -> tuple[ImpressionBatch | ClickBatch, int]:
            existing = s.find(batch_type, batch_id)
            if existing is not None:
                if existing.request_hash != fingerprint:
                    conflict = IdempotencyConflictError(
                        "this batch key was already used for a different batch")
                    conflict.field = "batch_key"
                    raise conflict
                return existing, existing.in_experiments
            now = self.clock.now()
            checked = validate(items, now)
            member = s.get(Member, member_id)
            if member.erased:
                raise ErasedError("member has been erased")
            stamped = stamp(checked, time_key, str(member_id), _experiments_of(s))
            batch = s.add(batch_type.record(batch_id, str(member_id), stamped, fingerprint,
                                            now, meta))
            return batch, batch.in_experiments

        outcome = self.uow.run(decide)
        batch, in_experiments = outcome.value
        return FeedbackResult(batch.id, batch.version, outcome.position, recorded=batch.count,
                              in_experiments=in_experiments)


def _experiments_of(session: Session) -> Callable[[str, datetime],
                                                  tuple[str, list[Variant]] | None]:
    """Which experiment ran on a placement at a moment, by its slot, and its variants."""

    def experiment_at(placement: str, moment: datetime) -> tuple[str, list[Variant]] | None:
        slot = session.find(ExperimentSlot, ExperimentSlot.id_for(placement))
        experiment_id = slot.experiment_at(moment) if slot is not None else None
        if experiment_id is None:
            return None
        return experiment_id, session.get(Experiment, UUID(experiment_id)).variants

    return experiment_at


def _plain(value: Any) -> Any:
    """Input as JSON-able data for a fingerprint (variants may be given as dataclasses)."""
    if isinstance(value, Variant):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [_plain(v) for v in value]
    return value


__all__ = ["ExperimentService", "FeedbackResult"]
