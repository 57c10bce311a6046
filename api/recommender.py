"""Training, storing and switching recommender models.

A training run reads only read models: the behaviour signals (up to the event position
the `recommendation_signals` projection has reached, which the version records), the
catalogue, and for cold start the members' tier, city and segments. It fits outside any
transaction (it takes seconds), writes the model file content-addressed by its SHA-256,
and then records `ModelTrained` on the registry — so a version never names a file that
is not stored. Activation is one event; serving loads the file of the active version,
verifies its checksum and swaps it in whole, so a request sees the old model or the new
one, never a mixture.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from api.catalogue_readmodels import load_catalogue
from api.readmodels import required_instant
from api.service import CommandResult, Session, UnitOfWork
from domain.clock import Clock
from domain.metadata import EventMetadata, Role
from domain.recommendation.context import MemberContext
from domain.recommendation.interactions import InteractionWeights, Signal, SignalKind
from domain.recommendation.trained import (
    TrainedRecommender,
    TrainingParams,
    checksum,
    load_trained,
    train_recommender,
)
from domain.recommender import (
    REGISTRY_ID,
    RecommenderRegistry,
    loses_to_baseline,
    require_admin,
)
from projections.recommender_tables import (
    recommendation_consents,
    recommendation_signals,
    recommender_artifacts,
    recommender_models,
)
from projections.segment_tables import segment_members, segments
from projections.tables import member_profiles, projection_tracking

log = logging.getLogger("patron.recommender")

SIGNALS_PROJECTION = "recommendation_signals"
# A scheduled model replaces the serving one only if its offline precision is at least
# this share of the serving model's: a bad week of data must not silently make it worse.
AUTO_ACTIVATE_MIN_SHARE = 0.9


@dataclass(frozen=True, slots=True)
class TrainingData:
    signals: list[Signal]
    baskets: list[set[str]]
    contexts: dict[str, MemberContext]
    segment_names: dict[str, str]
    catalogue: dict[str, Any]
    position: int


@dataclass(frozen=True, slots=True)
class TrainingReport:
    version: int
    activated: bool
    data_position: int
    interactions: int
    members: int
    products: int
    seconds: float
    metrics: dict[str, Any]
    position: int | None = None
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


def read_training_data(conn: Connection) -> TrainingData:
    """Everything a training run learns from, as of the signals projection's position.

    The position is read first: every signal row at or below it was committed with it.
    """
    position = int(conn.scalar(select(projection_tracking.c.position).where(
        projection_tracking.c.name == SIGNALS_PROJECTION)) or 0)
    signals: list[Signal] = []
    baskets: dict[str, set[str]] = {}
    for row in conn.execute(select(recommendation_signals).where(
            recommendation_signals.c.position <= position).order_by(
            recommendation_signals.c.signal_id)):
        signals.append(signal_of(row._mapping))
        if row.order_id is not None:
            baskets.setdefault(row.order_id, set()).add(row.product_id)
    consenting = set(conn.scalars(select(recommendation_consents.c.member_id).where(
        recommendation_consents.c.personalisation.is_(True))))
    return TrainingData(signals, [baskets[key] for key in sorted(baskets)],
                        member_contexts(conn, consenting), segment_names(conn),
                        load_catalogue(conn), position)


def signal_of(row: Any) -> Signal:
    return Signal(user=row["member_id"], item=row["product_id"], kind=SignalKind(row["kind"]),
                  at=required_instant(row["occurred_at"]), stars=row["stars"],
                  dwell_seconds=row["dwell_seconds"], quantity=row["quantity"])


def member_contexts(conn: Connection, member_ids: set[str]) -> dict[str, MemberContext]:
    """Tier, city and segments of consenting members (the others have no context)."""
    if not member_ids:
        return {}
    wanted = sorted(member_ids)
    profiles = {row.member_id: row for row in conn.execute(
        select(member_profiles.c.member_id, member_profiles.c.tier, member_profiles.c.city)
        .where(member_profiles.c.member_id.in_(wanted)
               & member_profiles.c.erased.is_(False)))}
    joined: dict[str, list[str]] = {}
    for row in conn.execute(select(segment_members.c.member_id, segment_members.c.segment_id)
                            .where(segment_members.c.member_id.in_(wanted))):
        joined.setdefault(row.member_id, []).append(row.segment_id)
    return {member_id: MemberContext(tier=row.tier, city=row.city,
                                     segments=tuple(sorted(joined.get(member_id, ()))))
            for member_id, row in profiles.items()}


def segment_names(conn: Connection) -> dict[str, str]:
    return {row.segment_id: row.name
            for row in conn.execute(select(segments.c.segment_id, segments.c.name))}


class ModelStore:
    """Model files by checksum, and the few most recently used ones loaded in memory."""

    def __init__(self, engine: Engine, cached: int = 3) -> None:
        self.engine = engine
        self.cached = cached
        self._loaded: OrderedDict[str, TrainedRecommender] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, payload: bytes, now: datetime) -> str:
        digest = checksum(payload)
        # Same content, same address: a file stored concurrently by another trainer is
        # this one, so losing the insert race is success.
        with contextlib.suppress(IntegrityError), self.engine.begin() as conn:
            stored = conn.scalar(select(recommender_artifacts.c.checksum).where(
                recommender_artifacts.c.checksum == digest))
            if stored is None:
                conn.execute(insert(recommender_artifacts).values(
                    checksum=digest, created_at=now, size=len(payload), payload=payload))
        return digest

    def load(self, digest: str) -> TrainedRecommender:
        with self._lock:
            model = self._loaded.get(digest)
            if model is not None:
                self._loaded.move_to_end(digest)
                return model
        with self.engine.connect() as conn:
            payload = conn.scalar(select(recommender_artifacts.c.payload).where(
                recommender_artifacts.c.checksum == digest))
        if payload is None:
            raise LookupError(f"model file {digest[:12]}… is missing from recommender_artifacts")
        model = load_trained(bytes(payload), digest)
        with self._lock:
            self._loaded[digest] = model
            while len(self._loaded) > self.cached:
                self._loaded.popitem(last=False)
        return model


class RecommenderService:
    def __init__(self, uow: UnitOfWork, clock: Clock, engine: Engine,
                 weights: InteractionWeights | None = None, retrain_hours: float = 24.0) -> None:
        self.uow = uow
        self.clock = clock
        self.engine = engine
        self.params = TrainingParams(weights=weights or InteractionWeights())
        self.retrain_hours = retrain_hours
        self.store = ModelStore(engine)
        self._training = threading.Lock()

    # -- registry ---------------------------------------------------------------------------

    def registry(self) -> RecommenderRegistry | None:
        return Session(self.uow.app).find(RecommenderRegistry, REGISTRY_ID)

    def _open(self, session: Session) -> RecommenderRegistry:
        registry = session.find(RecommenderRegistry, REGISTRY_ID)
        if registry is None:
            registry = session.add(RecommenderRegistry.open(self.clock.now()))
        return registry

    def model_exists(self, version: int) -> bool:
        registry = self.registry()
        return registry is not None and version in registry.versions

    def versions(self) -> list[dict[str, Any]]:
        """Every version, oldest first, with its state, read from the registry's events
        (for the command line: right even when no projection runs in this process)."""
        versions: dict[int, dict[str, Any]] = {}
        for event in self.uow.app.events.get(REGISTRY_ID):
            if isinstance(event, RecommenderRegistry.ModelTrained):
                versions[event.version] = {
                    "version": event.version, "state": "trained",
                    "trained_at": event.timestamp, "trained_by": event.meta["actor_id"],
                    "interactions": event.interactions, "metrics": event.metrics}
            elif isinstance(event, RecommenderRegistry.ModelActivated):
                if event.previous is not None:
                    versions[event.previous]["state"] = "retired"
                versions[event.version]["state"] = "active"
        return [versions[version] for version in sorted(versions)]

    def trained(self, version: int) -> TrainedRecommender:
        """The fitted model of `version` (loaded once, checksum verified)."""
        registry = self.registry()
        if registry is None:
            raise LookupError("no model has been trained yet")
        return self.store.load(registry.checksum_of(version))

    # -- training ---------------------------------------------------------------------------

    def train(self, meta: EventMetadata, *, activate: bool = True,
              progress: Callable[[str], None] | None = None,
              only_if_better: bool = False, force: bool = False) -> TrainingReport:
        """Train on the read models as they are, record the version, optionally activate.

        `only_if_better` (the scheduler's choice) activates only when the new model's
        offline precision is at least AUTO_ACTIVATE_MIN_SHARE of the serving one's. A model
        that loses to the popularity baseline is recorded but not activated unless `force`.
        """
        if meta.actor_role is not Role.SYSTEM:
            require_admin(meta, "train the recommender")
            meta.require_reason()
        say = progress or (lambda message: log.info("training: %s", message))
        with self._training:  # one training at a time per process: it uses both cores
            with self.engine.connect() as conn:
                say("reading signals, catalogue and member contexts")
                data = read_training_data(conn)
            now = self.clock.now()
            outcome = train_recommender(
                data.signals, data.catalogue, now, baskets=data.baskets,
                contexts=data.contexts, segment_names=data.segment_names,
                params=self.params, progress=say)
            say("storing the model file")
            digest = self.store.save(outcome.model.to_bytes(), now)

        note: list[str] = []

        def record(session: Session) -> tuple[int, bool]:
            registry = self._open(session)
            version = registry.record_trained(
                digest, data.position, outcome.interactions, outcome.members,
                outcome.products, outcome.seconds, self.params.as_dict(), outcome.metrics,
                self.clock.now(), meta)
            switch = activate
            refusal = registry.serves_only_if_forced(version)
            if switch and refusal and not force:
                note.append(f"not activated: {loses_to_baseline(outcome.metrics)}; activate "
                            "it with force and a reason to serve it anyway")
                switch = False
            if switch and only_if_better and registry.active is not None:
                switch = self._better(outcome.metrics, registry.active, note)
            if switch:
                registry.activate(version, self.clock.now(), meta, force=force)
            return version, switch

        result = self.uow.run(record)
        version, activated = result.value
        say(f"recorded version {version}" + (" and activated it" if activated else ""))
        return TrainingReport(version, activated, data.position, outcome.interactions,
                              outcome.members, outcome.products, round(outcome.seconds, 3),
                              outcome.metrics, result.position, "; ".join(note) or None)

    def _better(self, metrics: dict[str, Any], active: int, note: list[str]) -> bool:
        serving = self._metrics_of(active)
        new = (metrics.get("hybrid") or {}).get("precision")
        old = (serving.get("hybrid") or {}).get("precision")
        if new is None or old is None or new >= AUTO_ACTIVATE_MIN_SHARE * old:
            return True
        note.append(f"not activated: precision {new} is below {AUTO_ACTIVATE_MIN_SHARE:.0%} "
                    f"of version {active}'s {old}")
        return False

    def _metrics_of(self, version: int) -> dict[str, Any]:
        with self.engine.connect() as conn:
            metrics = conn.scalar(select(recommender_models.c.metrics).where(
                recommender_models.c.version == version))
        return dict(metrics or {})

    def activate(self, version: int, meta: EventMetadata, force: bool = False) -> CommandResult:
        """Serve `version`: a newer one, or an older one to roll back."""
        require_admin(meta, "switch the serving model")
        meta.require_reason()

        def decide(session: Session) -> RecommenderRegistry:
            registry = self._open(session)
            registry.activate(version, self.clock.now(), meta, force=force)
            return registry

        outcome = self.uow.run(decide)
        self.trained(version)  # load it now, so the first request after the switch is fast
        return self.uow.result_of(outcome)

    # -- scheduling -------------------------------------------------------------------------

    def slot(self, now: datetime) -> str | None:
        if self.retrain_hours <= 0:
            return None
        interval = timedelta(hours=self.retrain_hours)
        epoch = datetime(2000, 1, 1, tzinfo=UTC)
        start = epoch + interval * ((now - epoch) // interval)
        return start.isoformat()

    def train_if_due(self, meta: EventMetadata) -> TrainingReport | None:
        """The scheduler's step: once per interval across all servers, and only when
        behaviour arrived since the last version (or none exists)."""
        slot = self.slot(self.clock.now())
        if slot is None:
            return None
        registry = self.registry()
        if registry is not None and registry.last_scheduled is not None \
                and slot <= registry.last_scheduled:
            return None
        if registry is not None and registry.latest and not self._new_signals_since(registry):
            return None

        def claim(session: Session) -> bool:
            return self._open(session).schedule_training(slot, self.clock.now(), meta)

        if not self.uow.run(claim).value:
            return None
        started = time.perf_counter()
        report = self.train(meta, only_if_better=True)
        log.info("scheduled training: version %d in %.1fs", report.version,
                 time.perf_counter() - started)
        return report

    def _new_signals_since(self, registry: RecommenderRegistry) -> bool:
        with self.engine.connect() as conn:
            trained_on = conn.scalar(select(recommender_models.c.data_position).where(
                recommender_models.c.version == registry.latest))
            newest = conn.scalar(select(func.max(recommendation_signals.c.position)))
        return trained_on is None or (newest or 0) > trained_on

    # -- what serves ------------------------------------------------------------------------

    def active_version(self, conn: Connection) -> int | None:
        return conn.scalar(select(recommender_models.c.version).where(
            recommender_models.c.state == "active"))

