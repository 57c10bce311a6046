"""The service layer: turns commands into events, one aggregate per unit of work.

Commands are synchronous (the `eventsourcing` library is), so the API runs them in a
worker thread. Each command loads the aggregate, lets it decide, and saves; a concurrent
writer that saved first makes the save fail on the aggregate's version, and the command
is retried on fresh state, so no update is ever lost.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Transcoder

from api.personal_data import DataKeyStore, PersonalDataCipher, PersonalDataMapper
from domain.clock import Clock
from domain.errors import ConcurrencyConflictError, NotFoundError
from domain.member import Member
from domain.metadata import EventMetadata

log = logging.getLogger("patron.service")

A = TypeVar("A", bound=Aggregate)

MAX_ATTEMPTS = 12


class PatronApplication(Application[UUID]):
    """The event store: aggregates in, events out, personal data encrypted on the way."""

    name = "Patron"

    def __init__(self, env: Mapping[str, str], keys: DataKeyStore, snapshot_interval: int) -> None:
        self.keys = keys
        self.snapshotting_intervals = {Member: snapshot_interval}  # type: ignore[misc]
        super().__init__({**env, "IS_SNAPSHOTTING_ENABLED": "y"})

    def construct_mapper(self) -> PersonalDataMapper:
        transcoder: Transcoder = self.construct_transcoder()
        mapper = PersonalDataMapper(transcoder=transcoder)
        mapper.personal_data = PersonalDataCipher(self.keys)
        return mapper


@dataclass(frozen=True)
class CommandResult:
    aggregate_id: UUID
    version: int
    # Global position of the last event recorded; None if the command recorded nothing.
    position: int | None


class UnitOfWork:
    """Load, decide, save — retried on a version clash with a concurrent writer."""

    def __init__(self, app: PatronApplication, on_recorded: Callable[[int], None]) -> None:
        self.app = app
        self.on_recorded = on_recorded

    def get(self, aggregate_type: type[A], aggregate_id: UUID) -> A:
        try:
            aggregate = self.app.repository.get(aggregate_id)
        except AggregateNotFoundError:
            raise NotFoundError(f"{aggregate_type.__name__} {aggregate_id} not found") from None
        if not isinstance(aggregate, aggregate_type):
            raise NotFoundError(f"{aggregate_type.__name__} {aggregate_id} not found")
        return aggregate

    def save(self, aggregate: Aggregate) -> CommandResult:
        recordings = self.app.save(aggregate)
        position = recordings[-1].notification.id if recordings else None
        if position is not None:
            self.on_recorded(position)
        return CommandResult(aggregate.id, aggregate.version, position)

    def create(self, make: Callable[[], A]) -> CommandResult:
        return self.save(make())

    def change(
        self, aggregate_type: type[A], aggregate_id: UUID, decide: Callable[[A], Any]
    ) -> CommandResult:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            aggregate = self.get(aggregate_type, aggregate_id)
            decide(aggregate)
            try:
                return self.save(aggregate)
            except IntegrityError:
                log.info("version clash on %s (attempt %d); retrying", aggregate_id, attempt)
                # Exponential backoff with full jitter spreads out a crowd of writers.
                time.sleep(random.uniform(0, min(0.25, 0.002 * 2**attempt)))
        raise ConcurrencyConflictError(
            f"{aggregate_type.__name__} {aggregate_id} is being changed concurrently; try again"
        )


class MemberService:
    def __init__(self, uow: UnitOfWork, clock: Clock, keys: DataKeyStore) -> None:
        self.uow = uow
        self.clock = clock
        self.keys = keys

    def get(self, member_id: UUID, version: int | None = None) -> Member:
        if version is None:
            return self.uow.get(Member, member_id)
        try:
            member = self.uow.app.repository.get(member_id, version=version)
        except AggregateNotFoundError:
            raise NotFoundError(f"Member {member_id} not found") from None
        if not isinstance(member, Member):
            raise NotFoundError(f"Member {member_id} not found")
        return member

    def register(self, details: Mapping[str, Any], meta: EventMetadata) -> CommandResult:
        return self.uow.create(lambda: Member.register(details, self.clock.today(), meta))

    def update_profile(
        self, member_id: UUID, changes: Mapping[str, Any], meta: EventMetadata
    ) -> CommandResult:
        return self.uow.change(
            Member, member_id, lambda m: m.update_profile(changes, self.clock.today(), meta)
        )

    def set_preferences(
        self, member_id: UUID, preferences: Mapping[str, Any], meta: EventMetadata
    ) -> CommandResult:
        return self.uow.change(Member, member_id, lambda m: m.set_preferences(preferences, meta))

    def set_consent(
        self, member_id: UUID, purpose: str, channel: str, granted: bool, meta: EventMetadata
    ) -> CommandResult:
        return self.uow.change(
            Member, member_id, lambda m: m.set_consent(purpose, channel, granted, meta)
        )

    def tag(self, member_id: UUID, tag: str, meta: EventMetadata) -> CommandResult:
        return self.uow.change(Member, member_id, lambda m: m.tag(tag, meta))

    def untag(self, member_id: UUID, tag: str, meta: EventMetadata) -> CommandResult:
        return self.uow.change(Member, member_id, lambda m: m.untag(tag, meta))

    def set_status(self, member_id: UUID, status: str, meta: EventMetadata) -> CommandResult:
        return self.uow.change(Member, member_id, lambda m: m.set_status(status, meta))

    def erase(self, member_id: UUID, meta: EventMetadata) -> CommandResult:
        """Destroy the key first: if recording the event then fails, a retry completes it,
        and the personal data is already unreadable in the meantime."""

        def decide(member: Member) -> None:
            member.erase(meta)  # validates (reason, not yet erased) before anything happens
            self.keys.destroy(str(member.id))

        return self.uow.change(Member, member_id, decide)
