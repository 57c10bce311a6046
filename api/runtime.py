"""Wiring: one object that owns the engines, the event store, services and projections.

The server, the CLI, the tests and the benchmarks all build a `Runtime`, so every entry
point runs the same code path.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from api.after_sales import AfterSalesService
from api.behaviour import BehaviourService
from api.campaigns import CampaignService
from api.catalogue import CatalogueService
from api.commerce import LoyaltyService, OrderService
from api.config import Settings
from api.consistency import (
    ProjectionNotifications,
    ReadGate,
    ReadModelChanges,
    WriteTracker,
    announce_on_commit,
    install_read_gate,
    owners_of_tables,
    require_for_this_task,
    wait_for_position,
)
from api.experiments import ExperimentService
from api.outbound import OutboundDispatcher, OutboxRecorder, WebhookDelivery
from api.payments import PaymentService
from api.personal_data import DataKeyStore
from api.recommendations import RecommendationService
from api.recommender import RecommenderService
from api.scheduler import Scheduler
from api.segments import SegmentService
from api.service import MemberService, PatronApplication, UnitOfWork
from api.shipping import ShippingService, load_pickup_points
from domain.clock import Clock, SystemClock
from domain.loyalty_rules import LoyaltyRules
from projections.campaign_results import CampaignResultsProjection
from projections.case_queue import CaseQueueProjection
from projections.catalogue import CatalogueProjection
from projections.coupons import CouponsProjection
from projections.database import DatabaseConfig
from projections.engine import ReadModel, ReadModelRunner
from projections.experiment_results import ExperimentResultsProjection
from projections.loyalty import LoyaltyProjection
from projections.member_behaviour import MemberBehaviourProjection
from projections.member_profiles import MemberProfilesProjection
from projections.notifications import NotificationsProjection
from projections.orders import OrdersProjection
from projections.recommendation_signals import RecommendationSignalsProjection
from projections.recommender_models import RecommenderModelsProjection
from projections.service_kpis import ServiceKpisProjection
from projections.shipment_tracking import ShipmentTrackingProjection

log = logging.getLogger("patron.runtime")

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def all_projections(rules: LoyaltyRules | None = None) -> list[ReadModel]:
    """Every read model; `rules` give member_behaviour its interest half-life."""
    return [MemberProfilesProjection(), OrdersProjection(), LoyaltyProjection(),
            CouponsProjection(), ShipmentTrackingProjection(), NotificationsProjection(),
            CaseQueueProjection(), ServiceKpisProjection(), MemberBehaviourProjection(rules),
            CampaignResultsProjection(), CatalogueProjection(),
            RecommendationSignalsProjection(), RecommenderModelsProjection(),
            ExperimentResultsProjection()]


def alembic_config(database: DatabaseConfig) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = database.url
    return config


def migrate(database: DatabaseConfig) -> None:
    """Apply read-model migrations, then let the event store create its own tables."""
    engine = database.create_sync_engine()
    try:
        with engine.begin() as conn:
            config = alembic_config(database)
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
    finally:
        engine.dispose()
    # Constructing the application creates the event-store tables if they are missing.
    keys_engine = database.create_sync_engine()
    try:
        app = PatronApplication(
            database.eventsourcing_env(), DataKeyStore(keys_engine), snapshot_interval=50
        )
        app.close()
    finally:
        keys_engine.dispose()


def migrations_current(engine: Engine, database: DatabaseConfig) -> bool:
    head = ScriptDirectory.from_config(alembic_config(database)).get_current_head()
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current == head


def postgres_conninfo(database: DatabaseConfig) -> str:
    env = database.eventsourcing_env()
    parts = {
        "dbname": env["POSTGRES_DBNAME"],
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
    }
    if env["POSTGRES_PASSWORD"]:
        parts["password"] = env["POSTGRES_PASSWORD"]
    return make_conninfo(**parts)


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        database = settings.database
        self.sync_engine = database.create_sync_engine()
        self.keys = DataKeyStore(self.sync_engine, ttl=settings.data_key_cache_seconds)
        self.changes = ReadModelChanges()
        self.app = PatronApplication(
            database.eventsourcing_env(), self.keys, settings.snapshot_interval
        )
        self.runner = ReadModelRunner(
            self.sync_engine,
            self.app.recorder,  # type: ignore[arg-type]
            self.app.mapper,
            all_projections(settings.loyalty_rules),
            batch_size=settings.projection_batch_size,
            # On PostgreSQL, NOTIFY wakes the runner; polling is only a safety net there.
            poll_interval=settings.projection_poll_interval * (10 if database.is_postgres else 1),
            listen_conninfo=postgres_conninfo(database) if database.is_postgres else None,
            on_commit=self.changes.notify,
            # On PostgreSQL each batch's commit NOTIFYs waiters in other processes.
            announce=announce_on_commit if database.is_postgres else None,
        )
        # Waiters here whose read models another process runs are woken by its NOTIFY
        # (PostgreSQL); on SQLite they poll (the SQLite default is one process).
        self.notifications = (
            ProjectionNotifications(postgres_conninfo(database), self.changes)
            if database.is_postgres else None
        )
        self.uow = UnitOfWork(self.app, on_recorded=lambda _position: self.runner.nudge())
        self.rules = settings.loyalty_rules
        self.members = MemberService(
            self.uow, self.clock, self.keys, self.rules, settings.secret_key
        )
        self.orders = OrderService(self.uow, self.clock, self.rules)
        self.payments = PaymentService(self.uow, self.clock, self.orders)
        self.loyalty = LoyaltyService(self.uow, self.clock, self.rules)
        self.shipping = ShippingService(self.uow, self.clock, self.rules, load_pickup_points())
        self.after_sales = AfterSalesService(self.uow, self.clock, self.rules, self.shipping)
        self.behaviour = BehaviourService(self.uow, self.clock, self.rules, self.loyalty)
        self.segments = SegmentService(self.uow, self.clock, self.rules)
        self.campaigns = CampaignService(self.uow, self.clock, self.rules, self.sync_engine)
        self.experiments = ExperimentService(self.uow, self.clock, self.sync_engine)
        self.catalogue = CatalogueService(self.uow, self.clock)
        self.recommender = RecommenderService(
            self.uow, self.clock, self.sync_engine, settings.recommender_weights,
            settings.recommender_retrain_hours)
        self.recommendations = RecommendationService(
            self.recommender, self.clock, settings.recommender_weights,
            settings.recommender_max_per_category)
        self.webhooks = WebhookDelivery(self.sync_engine)
        self.outbound = OutboundDispatcher(
            self.sync_engine,
            [self.webhooks, OutboxRecorder(self.sync_engine, self.clock)],
            self.clock,
        )
        self.scheduler = Scheduler(
            self.sync_engine, self.clock, self.rules, self.loyalty, self.orders, self.shipping,
            self.after_sales, self.outbound, self.segments, campaigns=self.campaigns,
            recommender=self.recommender,
        )
        self.writes = WriteTracker()
        self._async_engine: AsyncEngine | None = None

    @property
    def async_engine(self) -> AsyncEngine:
        if self._async_engine is None:
            self._async_engine = self.settings.database.create_async_engine()
            # Queries wait for the projections whose tables they read, and no others.
            install_read_gate(self._async_engine, owners_of_tables(self.runner.projections))
        return self._async_engine

    @property
    def projection_names(self) -> list[str]:
        return list(self.runner.projections)

    async def wait_for_read_models(
        self, position: int | None, names: list[str] | None = None
    ) -> None:
        """Read-your-writes: wait (bounded) until `names` include `position`.

        Woken by this process's runner when it leads them, else by another process's
        runner through NOTIFY (PostgreSQL), else by polling the database.
        Without `names` (a mutation about to read its payload) it waits for every read model
        except those this runner is backing off from, and gates the rest of the task's reads:
        a payload that reads a failing read model waits for it alone, the others answer.
        """
        def healthy() -> list[str]:
            failing = self.runner.failing()
            return [name for name in self.projection_names if name not in failing]

        gate = self.read_gate(position) if names is None and position else None
        if gate is not None:
            require_for_this_task(gate)
        await wait_for_position(
            self.async_engine,
            healthy if names is None else names,
            position or 0,
            self.settings.read_your_writes_timeout,
            local=self.runner.reached,
            changes=self.changes,
            notifications=self.notifications,
        )
        if gate is not None and position:  # the payload's reads of these need not ask again
            gate.satisfied.update(name for name in self.projection_names
                                  if (self.runner.reached([name]) or 0) >= position)

    def read_gate(self, wanted: int) -> ReadGate:
        """For one query: each read waits for the projections it reads to reach `wanted`."""
        return ReadGate(wanted, lambda names, position: self.wait_for_read_models(position, names))

    def start_projections(self) -> None:
        self.runner.start()

    async def aclose(self) -> None:
        self.runner.stop()
        if self._async_engine is not None:
            await self._async_engine.dispose()
            self._async_engine = None
        self.close()

    def close(self) -> None:
        self.scheduler.stop()
        self.runner.stop()
        if self.notifications is not None:
            self.notifications.stop()
        self.webhooks.close()
        self.app.close()
        self.sync_engine.dispose()
