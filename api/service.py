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
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application, Repository
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Transcoder
from eventsourcing.utils import get_topic
from sqlalchemy.exc import DBAPIError

from api.event_loading import OneTripRepository
from api.personal_data import DataKeyStore, PersonalDataCipher, PersonalDataMapper
from domain.clock import Clock
from domain.coupon import Coupon, CouponSource
from domain.email_reservation import EmailReservation, email_key, reservation_id
from domain.errors import ConcurrencyConflictError, ConflictError, NotFoundError
from domain.loyalty import CreditSource, LoyaltyAccount, account_id_for
from domain.loyalty_rules import LoyaltyRules
from domain.member import Member
from domain.metadata import EventMetadata
from domain.order import Order
from domain.pricing import CouponTerms
from domain.recommender import RecommenderRegistry

log = logging.getLogger("patron.service")

A = TypeVar("A", bound=Aggregate)

MAX_ATTEMPTS = 12


class PatronApplication(Application[UUID]):
    """The event store: aggregates in, events out, personal data encrypted on the way."""

    name = "Patron"

    def __init__(self, env: Mapping[str, str], keys: DataKeyStore, snapshot_interval: int) -> None:
        self.keys = keys
        # Accounts and orders grow long too: a loyal member's account gains events forever.
        self.snapshotting_intervals = {  # type: ignore[misc]
            Member: snapshot_interval,
            LoyaltyAccount: snapshot_interval,
            Order: snapshot_interval,
            # Gains an event per training, activation and scheduled interval, forever.
            RecommenderRegistry: snapshot_interval,
        }
        super().__init__({**env, "IS_SNAPSHOTTING_ENABLED": "y"})

    def construct_repository(self) -> Repository[UUID]:
        """On PostgreSQL a load is one statement (snapshot and later events together)."""
        library = super().construct_repository()
        return OneTripRepository(
            event_store=library.event_store,
            snapshot_store=library.snapshot_store,
            cache_maxsize=None if library.cache is None else getattr(library.cache, "maxsize", 0),
            fastforward=library.fastforward,
            fastforward_skipping=library.fastforward_skipping,
            deepcopy_from_cache=library.deepcopy_from_cache,
        )

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


T = TypeVar("T")


class Session:
    """The aggregates one command loads and creates; they are saved together, atomically.

    The event store records all their new events in one transaction, so a command that
    touches an order, a loyalty account and a coupon either happens entirely or not at all.
    """

    def __init__(self, app: PatronApplication) -> None:
        self.app = app
        self._aggregates: dict[UUID, Aggregate] = {}

    def find(self, aggregate_type: type[A], aggregate_id: UUID) -> A | None:
        known = self._aggregates.get(aggregate_id)
        if known is None:
            try:
                known = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                return None
            self._aggregates[aggregate_id] = known
        return known if isinstance(known, aggregate_type) else None

    def get(self, aggregate_type: type[A], aggregate_id: UUID) -> A:
        aggregate = self.find(aggregate_type, aggregate_id)
        if aggregate is None:
            raise NotFoundError(f"{aggregate_type.__name__} {aggregate_id} not found")
        return aggregate

    def add(self, aggregate: A) -> A:
        self._aggregates[aggregate.id] = aggregate
        return aggregate

    @property
    def aggregates(self) -> list[Aggregate]:
        return list(self._aggregates.values())


@dataclass(frozen=True)
class Outcome(Generic[T]):
    value: T
    position: int | None


class UnitOfWork:
    """Load, decide, save — retried on a version clash with a concurrent writer."""

    def __init__(self, app: PatronApplication, on_recorded: Callable[[int], None]) -> None:
        self.app = app
        self.on_recorded = on_recorded

    def get(self, aggregate_type: type[A], aggregate_id: UUID) -> A:
        return Session(self.app).get(aggregate_type, aggregate_id)

    def run(self, decide: Callable[[Session], T]) -> Outcome[T]:
        """Run `decide` on fresh state and save what it changed; retry on a clash.

        Pools no longer pre-ping: a connection that died while idle (a database restart)
        fails its first statement instead. The event store retries its own reads and writes
        on a fresh connection; a data-key lookup (SQLAlchemy) that meets one fails before
        anything is written, so the whole command is run again, once.
        """
        retried_dead_connection = False
        for attempt in range(1, MAX_ATTEMPTS + 1):
            session = Session(self.app)
            try:
                value = decide(session)
                recordings = self.app.save(*session.aggregates)
            except DBAPIError as error:
                if not error.connection_invalidated or retried_dead_connection:
                    raise
                retried_dead_connection = True
                log.warning("dead database connection; running the command again once")
                continue
            except IntegrityError:
                log.info("version clash (attempt %d); retrying", attempt)
                # Exponential backoff with full jitter spreads out a crowd of writers.
                time.sleep(random.uniform(0, min(0.25, 0.002 * 2**attempt)))
                continue
            position = max((r.notification.id for r in recordings), default=None)
            if position is not None:
                self.on_recorded(position)
            return Outcome(value, position)
        raise ConcurrencyConflictError("the data is being changed concurrently; try again")

    def change(
        self, aggregate_type: type[A], aggregate_id: UUID, decide: Callable[[A], Any]
    ) -> CommandResult:
        def load_and_decide(session: Session) -> A:
            aggregate = session.get(aggregate_type, aggregate_id)
            decide(aggregate)
            return aggregate

        return self.result_of(self.run(load_and_decide))

    def create(self, make: Callable[[], A]) -> CommandResult:
        return self.result_of(self.run(lambda session: session.add(make())))

    @staticmethod
    def result_of(outcome: Outcome[A]) -> CommandResult:
        aggregate = outcome.value
        return CommandResult(aggregate.id, aggregate.version, outcome.position)


class ReservationOutcome(StrEnum):
    """What `MemberService.reserve_email` found for one member (the backfill reports it)."""

    RESERVED = "reserved"
    ALREADY_HELD = "already_held"
    CONFLICT = "conflict"
    NO_EMAIL = "no_email"


class MemberService:
    def __init__(
        self,
        uow: UnitOfWork,
        clock: Clock,
        keys: DataKeyStore,
        rules: LoyaltyRules,
        secret: str,
    ) -> None:
        self.uow = uow
        self.clock = clock
        self.keys = keys
        self.rules = rules
        # Keys the email reservations' ids (see domain.email_reservation).
        self._secret = secret

    # -- one member per email ----------------------------------------------------------------

    def _hold_email(self, session: Session, member_id: str, email: str) -> None:
        """Reserve `email` for the member in this unit of work, or fail with CONFLICT.

        A reservation whose holder no longer has that address — erased (their data key is
        gone), or holding another address after an interrupted write or before the backfill
        — is stale: it is released and taken over in the same save, so an address can never
        stay locked by someone who does not use it.
        """
        reservation_key = reservation_id(self._secret, email)
        reservation = session.find(EmailReservation, reservation_key)
        if reservation is None:
            session.add(EmailReservation.take(reservation_key, member_id))
            return
        holder = reservation.holder
        if holder is not None and holder != member_id and not self._still_uses(
            session, holder, email
        ):
            reservation.release(holder)
        reservation.hold_for(member_id)

    def _still_uses(self, session: Session, member_id: str, email: str) -> bool:
        member = session.find(Member, UUID(member_id))
        if member is None or member.erased or not member.personal:
            return False
        current = member.personal.get("email")
        return isinstance(current, str) and email_key(current) == email_key(email)

    def _release_email(self, session: Session, member_id: str, email: str) -> None:
        reservation = session.find(EmailReservation, reservation_id(self._secret, email))
        if reservation is not None:
            reservation.release(member_id)

    def reserve_email(self, member_id: UUID) -> ReservationOutcome:
        """Give an existing member the reservation of their email (the upgrade backfill).

        Members registered before reservations existed have none; run over every member in
        registration order, the first to register an address keeps it and later duplicates
        are reported as CONFLICT (by id) for staff to resolve. Safe beside live traffic: it
        is an ordinary unit of work.
        """

        def decide(session: Session) -> ReservationOutcome:
            member = session.get(Member, member_id)
            email = (member.personal or {}).get("email") if not member.erased else None
            if not isinstance(email, str):
                return ReservationOutcome.NO_EMAIL
            existing = session.find(EmailReservation, reservation_id(self._secret, email))
            if existing is not None and existing.holder == str(member_id):
                return ReservationOutcome.ALREADY_HELD
            try:
                self._hold_email(session, str(member_id), email)
            except ConflictError:
                return ReservationOutcome.CONFLICT
            return ReservationOutcome.RESERVED

        return self.uow.run(decide).value

    def reserve_all_emails(self, batch_size: int = 500) -> dict[ReservationOutcome, list[str]]:
        """`reserve_email` for every member ever registered, oldest first, read from the
        event store itself (not a read model that may lag). Returns member ids by outcome."""
        report: dict[ReservationOutcome, list[str]] = {o: [] for o in ReservationOutcome}
        # The application's recorder is an ApplicationRecorder: it lists notifications.
        recorder: Any = self.uow.app.recorder
        topic = get_topic(Member.Registered)
        start = 1
        while True:
            batch = recorder.select_notifications(start, batch_size, topics=[topic])
            for notification in batch:
                member_id = notification.originator_id
                report[self.reserve_email(UUID(str(member_id)))].append(str(member_id))
            if len(batch) < batch_size:
                return report
            start = batch[-1].id + 1

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
        """A new member, their loyalty account and their first-order welcome coupon."""

        def decide(session: Session) -> Member:
            now = self.clock.now()
            member = session.add(Member.register(details, now.date(), meta, now))
            self._hold_email(session, str(member.id), member.personal["email"])
            account = session.add(LoyaltyAccount.open(str(member.id), now, meta))
            if self.rules.welcome_coupon_value:
                terms = CouponTerms("fixed", self.rules.welcome_coupon_value,
                                    self.rules.welcome_coupon_min_spend)
                session.add(Coupon.issue(
                    uuid5(account.id, "welcome"), str(member.id), CouponSource.WELCOME, terms,
                    now, now + timedelta(days=self.rules.welcome_coupon_valid_days), "welcome",
                    now, meta,
                ))
            self._award_profile_completion(member, account, now, meta)
            return member

        return self.uow.result_of(self.uow.run(decide))

    def update_profile(
        self, member_id: UUID, changes: Mapping[str, Any], meta: EventMetadata
    ) -> CommandResult:
        def decide(session: Session) -> Member:
            now = self.clock.now()
            member = session.get(Member, member_id)
            before = member.personal.get("email") if member.personal else None
            member.update_profile(changes, now.date(), meta)
            after = member.personal.get("email") if member.personal else None
            if isinstance(after, str) and (
                before is None or email_key(after) != email_key(before)
            ):
                # Release and take in the same save: the old address is free exactly when
                # the new one is held.
                if before is not None:
                    self._release_email(session, str(member_id), before)
                self._hold_email(session, str(member_id), after)
            account = session.find(LoyaltyAccount, account_id_for(str(member_id)))
            if account is None:
                account = session.add(LoyaltyAccount.open(str(member_id), now, meta))
            self._award_profile_completion(member, account, now, meta)
            return member

        return self.uow.result_of(self.uow.run(decide))

    def _award_profile_completion(
        self, member: Member, account: LoyaltyAccount, now: datetime, meta: EventMetadata
    ) -> None:
        """Once in a member's life, for filling in their whole profile."""
        if member.is_profile_complete and self.rules.profile_completion_points:
            account.credit(
                CreditSource.PROFILE_COMPLETION, str(member.id),
                self.rules.profile_completion_points, self.rules, now, meta,
                once_marker="profile_completion",
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
        and the personal data is already unreadable in the meantime.

        The email's reservation is released in the same save, so the address can register
        again. The address is read while the key still exists and kept across retries; if
        the key was destroyed by an earlier, interrupted erasure, the reservation is left
        behind but is stale (its holder is erased) and the next registration takes it over.
        """
        emails: list[str] = []

        def decide(session: Session) -> Member:
            member = session.get(Member, member_id)
            email = (member.personal or {}).get("email")
            if isinstance(email, str) and not emails:
                emails.append(email)
            member.erase(meta)  # validates (reason, not yet erased) before anything happens
            for held in emails:
                self._release_email(session, str(member_id), held)
            self.keys.destroy(str(member.id))
            return member

        return self.uow.result_of(self.uow.run(decide))
